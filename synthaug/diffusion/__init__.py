"""The diffusion models: the UNet and its noise schedule, the training objective, `fit` under Accelerate (jobs,
checkpoints, sample grids) and the sampling primitives with the one `denoise` loop."""
