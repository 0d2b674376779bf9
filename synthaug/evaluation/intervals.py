"""Intervals over independent units, pure functions of arrays (no recipe, no run).

The unit of every interval is what is independent: a real training subset with its own generator. Classifier seeds
trained on one subset share that subset and its generator, so they are averaged within the unit first, never counted
as units. Over the n unit means the interval is Student's t, whose coverage holds at any n for normal differences
(a percentile bootstrap over 3-6 units covered only 75-87 %: it knows nothing of the t quantile and shrinks the
spread by (n-1)/n). `benchmarks/interval_coverage.py` and tests/test_intervals.py measure the coverage.

The test set is one sample too, shared by every unit and arm: its sampling noise is common to all units, so no
spread between units shows it. Given each unit's per-test-image differences, `gain_interval` adds it: the variance of
the grand mean under a two-way random-effects model (unit x test image, one observation per cell), estimated from
the ANOVA mean squares, with Satterthwaite's degrees of freedom (capped; see `gain_interval`). A per-image term is
each image's share of the metric: correct or not for ACC; for balanced ACC the same, weighted by `balanced_weights`
so that the terms' mean is the balanced accuracy; for AUC its DeLong components (harness.auc_terms).

A unit without a score (nan: e.g. an arm cached before the metric existed) is left out and counted (`"unscored"`);
with none scored the verdict is "not scored", never "too few units".
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
# Below this many independent units a verdict is "too few to tell" (benchmarks/interval_coverage.py, reports/intervals.md):
# the t interval covers at any n, but at 3 units its half-width is itself uncertain by +-51 % (coefficient of
# variation) and a true gain of one between-unit standard deviation is detected 18 % of the time; at 5 units, 37 %
# and 41 %, and a gain of two standard deviations 90 % of the time (48 % at 3).
MIN_UNITS = 5


def t_interval(values, level: float = LEVEL) -> dict:
    """Mean of independent unit values with its Student-t interval: {"mean", "lo", "hi", "units", "se", "df"}.
    One unit gives no interval (lo, hi are nan)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "units": n, "se": math.nan, "df": math.nan}
    se = float(values.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "units": n, "se": se, "df": float(n - 1)}


def balanced_weights(labels) -> np.ndarray:
    """Each test image's weight N / (K n_c) for an image of class c (K classes present, n_c images of class c, N in
    all): the mean of weighted per-image correctness is the balanced accuracy (the mean recall over the classes)."""
    labels = np.asarray(labels)
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return len(labels) / (len(classes) * counts[index])


def gain_interval(unit_diffs, per_image: np.ndarray | None = None, strata=None, level: float = LEVEL) -> dict:
    """Mean paired difference over independent units, with its interval.

    `unit_diffs`: (n,) each unit's difference (its classifier seeds averaged). `per_image`: optional (n, N) each unit's
    per-test-image difference (e.g. correct under the arm minus correct under the baseline, seeds averaged), whose
    row means are `unit_diffs`; with it the interval also covers the test set's own sampling noise
    (`"test_noise": True`). `strata`: optional (N,) each test image's class, for a metric that fixes each class's share
    (balanced ACC): the test images then vary within their class only, and a gain that differs between classes is no
    noise (counted as noise, a null case covered 97 %). Units whose difference is nan are left out and counted in
    "unscored". Returns {"mean",
    "lo", "hi", "units", "se", "df", "test_noise", "unscored"}."""
    unit_diffs = np.asarray(unit_diffs, dtype=float)
    scored = np.isfinite(unit_diffs)
    unscored = int((~scored).sum())
    unit_diffs = unit_diffs[scored]
    n = len(unit_diffs)
    if per_image is None or n < 2:
        return {**t_interval(unit_diffs, level), "test_noise": False, "unscored": unscored}
    per_image = np.asarray(per_image, dtype=float)[scored]
    images = per_image.shape[1]
    row, col = per_image.mean(1), per_image.mean(0)
    residual = per_image - row[:, None] - col[None, :] + per_image.mean()
    if strata is None:
        image_spread = col.var(ddof=1), images - 1
    else:
        classes, index = np.unique(np.asarray(strata), return_inverse=True)
        within = col - (np.bincount(index, col) / np.bincount(index))[index]
        image_spread = (within ** 2).sum() / (images - len(classes)), images - len(classes)
    # Var(grand mean) = (MS_units + MS_images - MS_residual) / (n N); each term with its degrees of freedom
    terms = [(row.var(ddof=1) / n, n - 1), (image_spread[0] / images, image_spread[1]),
             (-(residual ** 2).sum() / ((n - 1) * (images - 1)) / (n * images), (n - 1) * (images - 1))]
    variance = max(sum(t for t, _ in terms), terms[0][0])  # never below the units' own spread
    se = math.sqrt(variance)
    if variance > 0:
        # Satterthwaite, capped at (n - 1) / (the units' share of the variance): with 3-5 units the units' term is
        # itself uncertain and Satterthwaite alone covered 92.7 % in a mix of both noises; capped, 94.5-96.5 %
        satterthwaite = variance ** 2 / sum(t ** 2 / d for t, d in terms)
        df = max(float(n - 1), min(satterthwaite, (n - 1) * variance / terms[0][0] if terms[0][0] > 0 else satterthwaite))
    else:
        df = float(n - 1)
    mean = float(per_image.mean())
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "units": n, "se": se, "df": df, "test_noise": True,
            "unscored": unscored}


def verdict(interval: dict, min_units: int = MIN_UNITS) -> str:
    """"higher" (the interval above 0), "lower" (below 0), "no difference shown" (it spans 0), "too few units"
    (fewer than `min_units` independent units: no yes or no), or "not scored" (no unit has the score)."""
    if interval["units"] == 0 and interval.get("unscored"):
        return "not scored"
    if interval["units"] < min_units or math.isnan(interval["lo"]):
        return "too few units"
    if interval["lo"] > 0:
        return "higher"
    if interval["hi"] < 0:
        return "lower"
    return "no difference shown"


# ---------------------------------------------------------------------------------------------
# Overlapping units: K subsamples of one training split (evaluate.resample)
#
# A user with one dataset draws K units as subsamples of a fraction f of each class. Such units are not independent:
# they share images, and the dataset itself is one draw, so the spread between them misses the dataset's own
# component and a plain t interval is too narrow (at f = 0.5 and 5 units it covered 69 %, benchmarks/interval_coverage.py).
# Nadeau & Bengio (Machine Learning 2003) widen the variance of the mean of K correlated resamples from s²/K to
# s² (1/K + rho / (1 - rho)), rho the correlation between two resamples' statistics; for random train/test splits they
# take rho = n_test / (n_train + n_test), whence their n_test / n_train. Here the test set is fixed (its own noise is
# `gain_interval`'s per-image term), so their n_test / n_train does not apply: what units share is training images.
# Write a unit's statistic as mu + (1/n) sum over its n = fN images of an image effect a_i (variance s_a²) + noise of
# its own seeds (s_e²). Given the dataset (N images), units are independent, each with variance
# s_a² (1 - f) / n + s_e² (finite-population correction), which the spread s² estimates; the dataset's mean image
# effect, shared by all units, adds s_a² / N = f s_a² / n. Hence Var(mean) = s²/K + f s_a² / n, and
# f s_a² / n <= s² f / (1 - f), with equality when the units' noise all comes from which images they drew
# (s_e = 0). So rho / (1 - rho) = f / (1 - f): exact for image-driven noise, conservative (wider) when the seeds
# add noise of their own; higher-order (non-additive) image effects are shared at rate f^k < f, so they too are
# covered. The estimand is the gain for a training set of fN images from the population the user's data came from.
# When the seeds dominate, the bound widens the interval x sqrt(1 + K f / (1 - f)): recipes cap f at 0.5 (ResampleConfig).


def overlap_inflation(fraction: float) -> float:
    """f / (1 - f): what multiplies the spread of K units drawn as subsamples of a fraction f of one split, added
    to the 1/K of independent units (see above)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return fraction / (1 - fraction)


def resampled_interval(interval: dict, unit_diffs, fraction: float, level: float = LEVEL) -> dict:
    """`interval`, `gain_interval`'s over these `unit_diffs`, for units that are overlapping subsamples (a fraction
    `fraction` of each class of one training split): the corrected resampled t of Nadeau & Bengio with
    rho / (1 - rho) = f / (1 - f), adding f / (1 - f) x the units' spread to its variance (its test-set term, if any,
    unchanged). Degrees of freedom: the units' n - 1, raised by the share of the test set's term as `gain_interval`
    does. Adds {"overlap": fraction}."""
    unit_diffs = np.asarray(unit_diffs, dtype=float)
    unit_diffs = unit_diffs[~np.isnan(unit_diffs)]  # units without a score are left out, as `gain_interval` leaves them
    n = len(unit_diffs)
    if n < 2:
        return {**interval, "overlap": fraction}
    spread = unit_diffs.var(ddof=1)
    units_term = spread * (1 / n + overlap_inflation(fraction))
    variance = interval["se"] ** 2 + spread * overlap_inflation(fraction)
    df = float(n - 1) if units_term <= 0 else max(float(n - 1), min(interval["df"], (n - 1) * variance / units_term))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(variance)
    return {**interval, "lo": interval["mean"] - half, "hi": interval["mean"] + half, "se": math.sqrt(variance), "df": df,
            "overlap": fraction}
