"""Sampling primitives: inference schedulers, the one `denoise` loop and sample grids (no disk).

Every image carries its own torch.Generator, so the noise of image i of class c depends on its seed
alone; `generate` adds the fixed blocks that keep the arithmetic independent of the batch as well.
`generate`, the training sample grids and `SynthaugPipeline` (pipeline.py) all sample through `denoise`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from synthaug.storage.pixels import to_uint8
from synthaug.diffusion.unet import null_class
from synthaug.core.runtime import seeded_generator

SAMPLERS = ("dpm-solver++", "ddim", "ddpm")


DEFAULT_STEPS = {"dpm-solver++": 20, "ddim": 50, "ddpm": None}  # None: every training timestep


def sampling_scheduler(train_scheduler: DDPMScheduler, sampler: str, steps: int | None):
    """The inference scheduler for `sampler`, configured from the training scheduler, with its timesteps set."""
    config = train_scheduler.config
    if sampler == "dpm-solver++":
        # Without thresholding DPM-Solver++ diverges to saturated noise on small pixel-space models (FINDINGS.md).
        scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", thresholding=True)
    elif sampler == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    elif sampler == "ddpm":
        scheduler = DDPMScheduler.from_config(config)
    else:
        raise ValueError(f"sampler must be one of {SAMPLERS}")
    steps = steps or DEFAULT_STEPS[sampler] or config.num_train_timesteps
    scheduler.set_timesteps(steps)
    return scheduler


def image_generator(seed: int, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
    """The generator of image `index` of class `class_idx`: seeded from (seed, class, index) alone.

    `attempt` > 0: the redraw of a candidate that a filter rejected `attempt` times.
    """
    return seeded_generator(seed, class_idx, index) if attempt == 0 else seeded_generator(seed, class_idx, index, attempt)


@torch.inference_mode()
def denoise(
    unet: UNet2DModel,
    scheduler,
    generators: list[torch.Generator],
    labels: list[int] | None = None,
    guidance_scale: float = 1.0,
    init: torch.Tensor | None = None,
    start: int = 0,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> torch.Tensor:
    """Sample one image per generator; returns float (N, C, H, W) in [-1, 1] on the UNet's device.

    `labels` are needed for class-conditional UNets; `guidance_scale` != 1 applies classifier-free
    guidance against the UNet's null class. `init` (float (N, C, H, W) in [-1, 1]) turns sampling into
    variation of those images (SDEdit): each is noised to the level of `scheduler.timesteps[start]` with
    its generator's noise and denoised over the remaining steps. `progress` wraps the timesteps, e.g. a
    pipeline's `progress_bar`; it only watches the loop.
    """
    device, dtype = unet.device, unet.dtype
    size, channels = unet.config.sample_size, unet.config.in_channels
    shape = (len(generators), channels, size, size)
    noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    timesteps = scheduler.timesteps
    if init is None:
        sample = noise * scheduler.init_noise_sigma
    else:
        if hasattr(scheduler, "set_begin_index"):  # multistep solvers count their steps from here
            scheduler.set_begin_index(start)
        timesteps = timesteps[start:]
        sample = scheduler.add_noise(init.to(device, dtype), noise, timesteps[:1].repeat(len(generators)))
    class_labels = None
    guided = False
    if null_class(unet) is not None:
        if labels is None:
            raise ValueError("a class-conditional UNet needs labels")
        class_labels = torch.tensor(labels, device=device)
        guided = guidance_scale != 1.0
        if guided:
            class_labels = torch.cat([class_labels, torch.full_like(class_labels, null_class(unet))])
    for t in timesteps if progress is None else progress(timesteps):
        model_in = scheduler.scale_model_input(sample, t)
        if guided:
            cond, uncond = unet(torch.cat([model_in, model_in]), t, class_labels=class_labels).sample.chunk(2)
            model_out = uncond + guidance_scale * (cond - uncond)
        else:
            model_out = unet(model_in, t, class_labels=class_labels).sample
        step_kwargs = {"generator": generators} if isinstance(scheduler, DDPMScheduler) else {}
        sample = scheduler.step(model_out, t, sample, **step_kwargs).prev_sample
    return sample.clamp(-1, 1)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (H', W', C) array with the images tiled in rows."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = img
    return canvas


def sample_images(unet: UNet2DModel, train_scheduler: DDPMScheduler, labels: list[int] | None, n: int, seed: int) -> np.ndarray:
    """`n` images (DPM-Solver++, 20 steps) as uint8 (N, H, W, C), for sample grids; the labels cycle over the images."""
    scheduler = sampling_scheduler(train_scheduler, "dpm-solver++", 20)
    generators = [image_generator(seed, -1, i) for i in range(n)]
    grid_labels = None if labels is None else [labels[i % len(labels)] for i in range(n)]
    return to_uint8(denoise(unet, scheduler, generators, grid_labels))


def variation_start(strength: float, steps: int) -> int:
    """The scheduler step a variation of `strength` starts at: it is denoised over the last round(strength x steps) steps (at least 1)."""
    return steps - max(1, min(steps, round(strength * steps)))
