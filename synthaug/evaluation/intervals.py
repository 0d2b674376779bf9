"""Percentile bootstrap intervals over paired units (subset x seed): mean differences and ratios of means."""

from __future__ import annotations

import numpy as np


def bootstrap_means(pairs: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means over the first axis of `n_boot` resamples of the pairs (rows) with replacement: (n_boot, ...)."""
    picks = np.random.default_rng(seed).integers(0, len(pairs), size=(n_boot, len(pairs)))
    return pairs[picks].mean(1)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap_ci(diffs, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap CI (resampling the pairs with replacement)."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return float("nan"), float("nan"), float("nan")
    return (float(diffs.mean()), *percentile_interval(bootstrap_means(diffs, n_boot, seed), level))


def ratio_of_means_ci(num, den, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """mean(num) / mean(den) over paired units, with a percentile bootstrap CI that resamples the pairs."""
    pairs = np.stack([np.asarray(num, dtype=float), np.asarray(den, dtype=float)], axis=1)
    if not len(pairs):
        return float("nan"), float("nan"), float("nan")
    means = bootstrap_means(pairs, n_boot, seed)
    return (float(pairs[:, 0].mean() / pairs[:, 1].mean()), *percentile_interval(means[:, 0] / means[:, 1], level))
