"""What one training step of a diffusion model draws and minimizes: the batch with its label-preserving symmetries,
noise, timesteps and guidance dropout, all from one seeded generator, and the min-SNR loss weights."""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_snr

from synthaug.recipe.recipe import Recipe


def augment_batch(x: torch.Tensor, augments: list[str], gen: torch.Generator) -> torch.Tensor:
    """Random label-preserving symmetries of a batch (N, C, H, W), drawn from `gen` in a fixed order.

    hflip's draw comes first, as it did before train.augment existed, so old recipes give the same weights.
    """
    n = x.shape[0]

    def chosen(p_true: torch.Tensor) -> torch.Tensor:
        return p_true.to(x.device)[:, None, None, None]

    if "hflip" in augments:
        x = torch.where(chosen(torch.rand(n, generator=gen) < 0.5), x.flip(-1), x)
    if "vflip" in augments:
        x = torch.where(chosen(torch.rand(n, generator=gen) < 0.5), x.flip(-2), x)
    if "rot90" in augments:
        quarter = torch.randint(4, (n,), generator=gen)
        for k in (1, 2, 3):  # square images: a quarter turn keeps the shape
            x = torch.where(chosen(quarter == k), x.rot90(k, (-2, -1)), x)
    return x


def training_batch(recipe: Recipe, job, num_classes: int, gen: torch.Generator, device):
    """One micro-batch: images, noise, timesteps and (for the conditional model) labels with CFG dropout."""
    cfg = recipe.train
    n = job.images.shape[0]
    labelled = cfg.batch_size if job.pool is None else max(1, round(cfg.labelled_share * cfg.batch_size))
    idx = torch.randint(n, (labelled,), generator=gen)
    x = job.images[idx.to(device)]
    pool_idx = None
    if job.pool is not None and labelled < cfg.batch_size:  # the rest of the batch: unlabeled images
        pool_idx = torch.randint(job.pool.shape[0], (cfg.batch_size - labelled,), generator=gen)
        x = torch.cat([x, job.pool[pool_idx.to(device)]])
    x = augment_batch(x, cfg.augment, gen)
    noise = torch.randn(x.shape, generator=gen).to(device)
    t = torch.randint(recipe.diffusion.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
    labels = None
    if job.labels is not None:
        labels = job.labels[idx.to(device)]
        if pool_idx is not None:
            labels = torch.cat([labels, torch.full((len(pool_idx),), num_classes, dtype=labels.dtype, device=device)])
        drop = (torch.rand(cfg.batch_size, generator=gen) < recipe.model.cfg_dropout).to(device)
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    return x, noise, t, labels


def min_snr_weight(noise_scheduler, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' training examples apply them."""
    snr = compute_snr(noise_scheduler, t)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr
