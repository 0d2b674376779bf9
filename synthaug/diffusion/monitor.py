"""What `fit` shows while it trains: sample grids from the EMA weights, one named row per class, and how many of the
grid's images copy a training image.

At 10 images per class a small DDPM starts to reproduce its training images; the grid copy fraction in metrics.csv
(`grid_copy_fraction`, printed at every grid) shows when. A copy is what the audit calls one: an image at or over its
class's copy threshold, the `audit.copy_quantile` quantile of the real val images' correlation with their nearest
training image. The two numbers count different images: the grid's 16 or so images, drawn unfiltered from this
step's weights with 20 DPM-Solver++ steps, against the audit's copy rate of the finished generated set (its sampler
and guidance, after any `generate --reject-copies`). A few grid images are a coarse estimate (3 of 16 is 19 %, with a
95 % interval of about 4-46 %), so read the grid's number as a trend over steps, and the audit's as the set's rate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from synthaug.core.errors import UserError
from synthaug.core.figures import image_rows_png
from synthaug.diffusion.sampling import image_grid, sample_images
from synthaug.recipe.recipe import Recipe
from synthaug.reference.filters import CopyFilter, copy_filter
from synthaug.storage.files import atomic_write_bytes
from synthaug.storage.rundir import POOL_CLASS, RunDir, open_run

GRID_IMAGES = 16  # at least, per grid: enough to see copies start, few enough to sample every `train.sample_every` steps
GRID_COPY_COLUMN = "grid_copy_fraction"  # metrics.csv; files written before it was named so call it "copy_fraction"
OLD_GRID_COPY_COLUMN = "copy_fraction"


class GridRows(NamedTuple):
    """The layout of a model's sample grid: one named row per class (two rows for a one-class model)."""

    names: list[str]  # one per row
    labels: list[int] | None  # the class label each image is sampled with; None: the model takes no label
    classes: list[int]  # the class each image is checked against for copies (POOL_CLASS: none)


def grid_rows(class_idx: int, labels: list[int] | None, classes: list[int], class_names: list[str]) -> GridRows:
    """The rows of the grid of the model of `class_idx` (-1: the class-conditional model, over the run's `classes`;
    POOL_CLASS: the unlabeled pool's); `labels`: the labels the model takes (None: unconditional)."""
    if class_idx >= 0 or class_idx == POOL_CLASS:
        name = "unlabeled pool" if class_idx == POOL_CLASS else class_names[class_idx]
        return GridRows([name, name], None if labels is None else [labels[0]] * GRID_IMAGES, [class_idx] * GRID_IMAGES)
    per_row = max(4, math.ceil(GRID_IMAGES / len(classes)))
    each = [c for c in classes for _ in range(per_row)]
    return GridRows([class_names[c] for c in classes], each, each)


class Monitor:
    """Writes `samples/<model_dir>/step_<N>.png` and measures the grid's copy fraction (None without a val split)."""

    def __init__(self, recipe: Recipe, device):
        self.run = RunDir(recipe.run_dir)
        info = self.run.read_classes()
        self.classes, self.class_names = info.classes, info.class_names
        self.quantile = recipe.audit.copy_quantile
        self.copies: CopyFilter | None
        try:
            self.copies = copy_filter(open_run(recipe), device)
        except UserError:  # e.g. a folder dataset without a val split: grids only
            self.copies = None

    def grid(self, unet, noise_scheduler, model_dir: str, class_idx: int, labels: list[int] | None, step: int,
             seed: int) -> tuple[np.ndarray, float | None]:
        """The grid (uint8 (H, W, C), for trackers), written to samples/ with a name on each row, and the fraction of
        its images that copy a training image."""
        rows = grid_rows(class_idx, labels, self.classes, self.class_names)
        images = sample_images(unet, noise_scheduler, rows.labels, len(rows.classes), seed)
        per_row = len(images) // len(rows.names)
        strips = [np.concatenate(list(images[r * per_row : (r + 1) * per_row]), axis=1) for r in range(len(rows.names))]
        atomic_write_bytes(self.run.sample_grid(model_dir, step), image_rows_png(strips, rows.names, f"{model_dir}, step {step}"))
        grid = image_grid(images, columns=per_row)
        if self.copies is None or class_idx == POOL_CLASS:  # the pool's model has no class to compare with
            return grid, None
        classes = np.array(rows.classes)
        copied = sum(int((~self.copies(images[classes == c], int(c))).sum()) for c in np.unique(classes))
        print(f"{model_dir}: step {step}: {copied} of {len(images)} images of this step's sample grid are near-copies of "
              f"training images (a real image of a new patient: about {1 - self.quantile:.0%}; `synthaug audit` gives the "
              "copy rate of a generated set)", flush=True)
        return grid, copied / len(images)
