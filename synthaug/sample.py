"""Sampling: turn trained UNets into images.

`denoise` is the one sampling loop (used for training-time grids and by `generate`). Every image
carries its own torch.Generator, so image i of class c depends on its seed alone, never on which
batch or process it was drawn in.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from synthaug.data import to_uint8
from synthaug.models import null_class
from synthaug.rundir import atomic_write_bytes

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


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from a tuple of integers (negative ones allowed), well mixed."""
    entropy = [k % 2**64 for k in key]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state % 2**63))


def image_generator(seed: int, class_idx: int, index: int) -> torch.Generator:
    """The generator of image `index` of class `class_idx`: seeded from (seed, class, index) alone."""
    return seeded_generator(seed, class_idx, index)


@torch.inference_mode()
def denoise(
    unet: UNet2DModel,
    scheduler,
    generators: list[torch.Generator],
    labels: list[int] | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """Sample one image per generator; returns float (N, C, H, W) in [-1, 1] on the UNet's device.

    `labels` are needed for class-conditional UNets; `guidance_scale` != 1 applies classifier-free
    guidance against the UNet's null class.
    """
    device, dtype = unet.device, unet.dtype
    size, channels = unet.config.sample_size, unet.config.in_channels
    shape = (len(generators), channels, size, size)
    sample = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    sample = sample * scheduler.init_noise_sigma
    class_labels = None
    guided = False
    if null_class(unet) is not None:
        if labels is None:
            raise ValueError("a class-conditional UNet needs labels")
        class_labels = torch.tensor(labels, device=device)
        guided = guidance_scale != 1.0
        if guided:
            class_labels = torch.cat([class_labels, torch.full_like(class_labels, null_class(unet))])
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(sample, t)
        if guided:
            cond, uncond = unet(torch.cat([model_in, model_in]), t, class_labels=class_labels).sample.chunk(2)
            model_out = uncond + guidance_scale * (cond - uncond)
        else:
            model_out = unet(model_in, t, class_labels=class_labels).sample
        step_kwargs = {"generator": generators} if isinstance(scheduler, DDPMScheduler) else {}
        sample = scheduler.step(model_out, t, sample, **step_kwargs).prev_sample
    return sample.clamp(-1, 1)


def image_grid(images: np.ndarray, columns: int | None = None) -> Image.Image:
    """uint8 (N, H, W, C) -> one PIL image with the images tiled in rows."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = img
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_sample_grid(
    unet: UNet2DModel, train_scheduler: DDPMScheduler, path: Path, labels: list[int] | None, n: int, seed: int
) -> None:
    """A grid of `n` images (DPM-Solver++, 20 steps) written atomically to `path`."""
    scheduler = sampling_scheduler(train_scheduler, "dpm-solver++", 20)
    generators = [image_generator(seed, -1, i) for i in range(n)]
    grid_labels = None if labels is None else [labels[i % len(labels)] for i in range(n)]
    images = to_uint8(denoise(unet, scheduler, generators, grid_labels))
    atomic_write_bytes(path, png_bytes(image_grid(images)))
