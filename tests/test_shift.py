"""synthaug.data.shift: the evaluated site's acquisition shift (data.shift) — no change by default, a stain and
illumination change otherwise, on the evaluated site's real images only (never on the other site's)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_run, tiny_recipe_dict, write_medmnist_npz

from synthaug.core.errors import UserError
from synthaug.data.shift import shift_images
from synthaug.evaluation.evaluate import load_eval_data
from synthaug.evaluation.regimes import load_regime
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.recipe.sections import ShiftConfig
from synthaug.storage.rundir import open_run

STUDY_SHIFT = {"hed_scale": [1.5, 0.5, 1.0], "hed_bias": [0.0, 0.0, 0.05], "brightness": -0.08}


def test_the_default_shift_changes_nothing_and_a_stain_shift_changes_colour_not_layout():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(shift_images(images, ShiftConfig()), images) and shift_images(images, None) is images
    shifted = shift_images(images, ShiftConfig(**STUDY_SHIFT))
    assert shifted.dtype == np.uint8 and shifted.shape == images.shape
    assert 5 < np.abs(shifted.astype(int) - images).mean() < 60
    # a pixel-wise colour map: equal pixels stay equal, so the image's layout is kept
    flat = images.reshape(-1, 3)
    same = np.flatnonzero((flat == flat[0]).all(1))
    assert (shifted.reshape(-1, 3)[same] == shifted.reshape(-1, 3)[0]).all()
    with pytest.raises(UserError, match="data.shift: a stain shift needs RGB images"):
        shift_images(images[..., :1], ShiftConfig())


def test_site_b_sees_its_own_images_shifted_and_site_a_images_as_they_are(tmp_path):
    write_medmnist_npz(tmp_path / "data", "bloodmnist", classes=8, channels=3, per_class=(12, 3, 3))
    data = {"medmnist": "bloodmnist", "root": str(tmp_path / "data"), "site": {"side": "B", "reserve": 0.5},
            "subset": {"per_class": 2, "seed": 0}}
    plain = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "plain"))
    moved = recipe_from_dict(tiny_recipe_dict({**data, "shift": STUDY_SHIFT}, tmp_path / "runs", "moved"))
    with pytest.warns(UserWarning, match="MD5"):
        regimes = [load_regime(open_run(make_run(r).root), need_synthetic=False, show_progress=False) for r in (plain, moved)]
        evals = [load_eval_data(r, list(range(8)), "cpu") for r in (plain, moved)]
    assert np.array_equal(regimes[1].train.images, shift_images(regimes[0].train.images, ShiftConfig(**STUDY_SHIFT)))
    assert np.array_equal(regimes[0].other_site.images, regimes[1].other_site.images)  # A's scanner, unshifted
    assert not np.array_equal(regimes[0].train.images, regimes[1].train.images)
    assert evals[0].digest != evals[1].digest and not np.array_equal(evals[0].test_images, evals[1].test_images)
