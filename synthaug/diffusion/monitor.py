"""What `fit` shows while it trains: sample grids from the EMA weights, and how many grid images copy a training image.

At 10 images per class a small DDPM starts to reproduce its training images; the copy fraction in
metrics.csv (and printed at every grid) shows when, measured with the audit's copy threshold: the
`audit.copy_quantile` quantile of the real val images' correlation with their nearest training image.
"""

from __future__ import annotations

import numpy as np

from synthaug.storage.pixels import encode_png
from synthaug.core.errors import UserError
from synthaug.storage.files import atomic_write_bytes
from synthaug.reference.filters import CopyFilter, copy_filter
from synthaug.recipe.recipe import Recipe
from synthaug.storage.rundir import POOL_CLASS, RunDir, open_run
from synthaug.diffusion.sampling import image_grid, sample_images

GRID_SIZE = 16


class Monitor:
    """Writes `samples/<model_dir>/step_<N>.png` and measures the grid's copy fraction (None without a val split)."""

    def __init__(self, recipe: Recipe, device):
        self.run = RunDir(recipe.run_dir)
        self.quantile = recipe.audit.copy_quantile
        self.copies: CopyFilter | None
        try:
            self.copies = copy_filter(open_run(recipe), device)
        except UserError:  # e.g. a folder dataset without a val split: grids only
            self.copies = None

    def grid(self, unet, noise_scheduler, model_dir: str, class_idx: int, labels: list[int] | None, step: int,
             seed: int) -> tuple[np.ndarray, float | None]:
        """The grid (uint8 (H, W, C)), written to samples/, and the fraction of its images that copy a training image."""
        images = sample_images(unet, noise_scheduler, labels, GRID_SIZE, seed)
        grid = image_grid(images)
        atomic_write_bytes(self.run.sample_grid(model_dir, step), encode_png(grid))
        if self.copies is None or class_idx == POOL_CLASS:  # the pool's model has no class to compare with
            return grid, None
        classes = np.array([labels[i % len(labels)] for i in range(len(images))] if labels else [class_idx] * len(images))
        copied = sum(int((~self.copies(images[classes == c], int(c))).sum()) for c in np.unique(classes))
        fraction = copied / len(images)
        print(f"{model_dir}: step {step}: {copied} of {len(images)} grid images are near-copies of training images "
              f"(a real image of a new patient: about {1 - self.quantile:.0%})", flush=True)
        return grid, fraction
