"""synthaug.evaluation.intervals: coverage measured by simulation, known cases, and the too-few-units verdict."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.evaluation.intervals import MIN_UNITS, gain_interval, t_interval, verdict

TRIALS = 2000


def coverage(interval_of, draws: np.ndarray, truth: float) -> float:
    hits = [(lambda r: r["lo"] <= truth <= r["hi"])(interval_of(d)) for d in draws]
    return float(np.mean(hits))


def percentile_bootstrap(values, n_boot: int = 2000, seed: int = 0) -> dict:
    """The interval synthaug used before (percentile bootstrap of the mean): kept here to show the test rejects it."""
    values = np.asarray(values, dtype=float)
    means = values[np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))].mean(1)
    return {"lo": float(np.percentile(means, 2.5)), "hi": float(np.percentile(means, 97.5))}


@pytest.mark.parametrize("units", [3, 5, 10])
@pytest.mark.parametrize("effect", [0.0, 0.7])
def test_the_t_interval_over_units_covers_95_percent(units, effect):
    draws = np.random.default_rng([units, int(effect * 10)]).normal(effect, 1.0, size=(TRIALS, units))
    assert abs(coverage(t_interval, draws, effect) - 0.95) <= 0.02


@pytest.mark.parametrize("units", [3, 5])
def test_the_old_percentile_bootstrap_fails_the_same_check(units):
    draws = np.random.default_rng(units).normal(0.0, 1.0, size=(400, units))
    assert coverage(percentile_bootstrap, draws, 0.0) < 0.93


@pytest.mark.parametrize("units", [3, 5, 10])
@pytest.mark.parametrize("mix", ["units", "test set", "both", "both, units larger"])
@pytest.mark.parametrize("effect", [0.0, 0.01])
def test_the_interval_with_test_set_noise_covers_95_percent(units, mix, effect):
    """Per-image differences = effect + unit effect + test-image effect (shared by every unit) + noise; the truth is the
    effect over new subsets *and* new test images, so the image effects must be in the interval."""
    images = 300
    sd_unit, sd_image = {"units": (0.02, 0.02), "test set": (0.002, 0.3), "both": (0.01, 0.15), "both, units larger": (0.015, 0.1)}[mix]
    rng = np.random.default_rng([units, len(mix), int(effect * 100)])
    hits = []
    for _ in range(TRIALS):
        per_image = (effect + rng.normal(0, sd_unit, (units, 1)) + rng.normal(0, sd_image, (1, images))
                     + rng.normal(0, 0.2, (units, images)))
        r = gain_interval(per_image.mean(1), per_image)
        hits.append(r["lo"] <= effect <= r["hi"])
    assert abs(np.mean(hits) - 0.95) <= 0.02, f"coverage {np.mean(hits):.3f}"


def test_without_test_set_noise_a_shared_test_set_makes_intervals_too_narrow():
    """Why the per-image term exists: the units-only interval misses a test-set effect that all units share."""
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(500):
        per_image = rng.normal(0, 0.002, (5, 1)) + rng.normal(0, 0.3, (1, 300)) + rng.normal(0, 0.2, (5, 300))
        r = gain_interval(per_image.mean(1))
        hits.append(r["lo"] <= 0 <= r["hi"])
    assert np.mean(hits) < 0.8


def test_known_cases_and_verdicts():
    r = t_interval([0.01, 0.02, 0.03])
    assert r["mean"] == pytest.approx(0.02) and r["units"] == 3 and r["df"] == 2
    assert r["hi"] - r["mean"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) x se
    assert np.isnan(t_interval([0.5])["lo"]) and verdict(t_interval([0.5])) == "too few units"
    many = [0.02, 0.03, 0.025, 0.028, 0.022]
    assert len(many) == MIN_UNITS and verdict(t_interval(many)) == "higher"
    assert verdict(t_interval([-x for x in many])) == "lower"
    assert verdict(t_interval([0.02, -0.02, 0.01, -0.01, 0.0])) == "no difference shown"
    assert verdict(t_interval(many[:3])) == "too few units"  # an interval above 0 from 3 units is still no "yes"
    # identical per-image rows: no spread between units, the test set's noise alone
    per_image = np.tile(np.array([1.0, 0.0, 0.0, -1.0, 1.0, 0.0]), (5, 1))
    g = gain_interval(per_image.mean(1), per_image)
    assert g["test_noise"] and g["mean"] == pytest.approx(1 / 6) and g["lo"] < 0 < g["hi"]
