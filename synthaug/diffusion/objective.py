"""What one training step of a diffusion model draws and minimizes: the batch with its label-preserving symmetries,
noise, timesteps and guidance dropout, all from one seeded generator, and the min-SNR loss weights."""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_snr

from synthaug.data.symmetries import random_symmetries
from synthaug.recipe.recipe import Recipe


def augment_batch(x: torch.Tensor, augments: list[str], gen: torch.Generator) -> torch.Tensor:
    """The recipe's `train.augment` symmetries of a batch (N, C, H, W), drawn from `gen` (`symmetries.random_symmetries`).

    hflip's draw comes first, as it did before train.augment existed, so old recipes give the same weights.
    """
    return random_symmetries(x, gen, hflip="hflip" in augments, vflip="vflip" in augments, rot90="rot90" in augments)


def training_batch(recipe: Recipe, job, num_classes: int, gen: torch.Generator, device, idx: torch.Tensor | None = None):
    """One micro-batch: images, noise, timesteps and (for the conditional model) labels with CFG dropout.

    `idx`: the batch's images, when the caller draws them (DP-SGD's Poisson sampling); the rest is drawn from `gen`."""
    cfg = recipe.train
    n = job.images.shape[0]
    labelled = cfg.batch_size if job.pool is None else max(1, round(cfg.labelled_share * cfg.batch_size))
    if idx is None and cfg.balanced_batches and job.labels is not None:  # each class equally likely, then each of its images
        counts = torch.bincount(job.labels).to(torch.float64)
        idx = torch.multinomial((1.0 / counts[job.labels]).cpu(), labelled, replacement=True, generator=gen)
    elif idx is None:
        idx = torch.randint(n, (labelled,), generator=gen)
    x = job.images[idx.to(device)]
    pool_idx = None
    if job.pool is not None and labelled < cfg.batch_size:  # the rest of the batch: unlabeled images
        pool_idx = torch.randint(job.pool.shape[0], (cfg.batch_size - labelled,), generator=gen)
        x = torch.cat([x, job.pool[pool_idx.to(device)]])
    x = augment_batch(x, cfg.augment, gen)
    noise = torch.randn(x.shape, generator=gen).to(device)
    t = torch.randint(recipe.diffusion.num_train_timesteps, (len(x),), generator=gen).to(device)
    labels = None
    if job.labels is not None:
        labels = job.labels[idx.to(device)]
        if pool_idx is not None:
            labels = torch.cat([labels, torch.full((len(pool_idx),), num_classes, dtype=labels.dtype, device=device)])
        drop = (torch.rand(len(x), generator=gen) < recipe.model.cfg_dropout).to(device)
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    return x, noise, t, labels


def min_snr_weight(noise_scheduler, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' training examples apply them."""
    snr = compute_snr(noise_scheduler, t)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr
