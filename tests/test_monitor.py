"""synthaug.diffusion.monitor: the layout of fit's sample grids, one named row per class."""

from __future__ import annotations

from synthaug.diffusion.monitor import GRID_IMAGES, grid_rows
from synthaug.storage.rundir import POOL_CLASS

NAMES = ["adipose", "background", "debris", "lymphocytes"]


def test_a_class_conditional_grid_has_one_row_per_trained_class_named_after_it():
    rows = grid_rows(-1, list(range(4)), [0, 2, 3], NAMES)
    assert rows.names == ["adipose", "debris", "lymphocytes"]  # the classes the run trained, not every class of the data
    per_row = len(rows.labels) // 3
    assert per_row >= 4 and len(rows.labels) >= GRID_IMAGES
    assert rows.labels == [0] * per_row + [2] * per_row + [3] * per_row == rows.classes


def test_a_one_class_model_fills_two_rows_of_its_class():
    rows = grid_rows(2, None, [0, 2], NAMES)
    assert rows.names == ["debris", "debris"] and rows.labels is None and rows.classes == [2] * GRID_IMAGES
    pool = grid_rows(POOL_CLASS, [4], [0, 2], NAMES)  # a class-conditional pool model: the null label
    assert pool.names == ["unlabeled pool"] * 2 and pool.labels == [4] * GRID_IMAGES
