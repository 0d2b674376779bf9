"""synthaug.stats: the paired bootstrap confidence interval, against cases with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from synthaug.evaluation.intervals import paired_bootstrap_ci


def test_paired_bootstrap_ci_known_cases():
    assert paired_bootstrap_ci([0.02, 0.02, 0.02]) == pytest.approx((0.02, 0.02, 0.02))
    mean, lo, hi = paired_bootstrap_ci([0.0, 0.0, 0.1])
    assert mean == pytest.approx(0.1 / 3) and lo == 0.0 and hi == pytest.approx(0.1)  # includes 0
    # Against the exact bootstrap distribution (all 4^4 resamples equally likely).
    diffs = np.array([0.01, 0.03, 0.04, 0.08])
    exact = np.array([diffs[list(c)].mean() for c in itertools.product(range(4), repeat=4)])
    mean, lo, hi = paired_bootstrap_ci(diffs, n_boot=200_000)
    assert mean == pytest.approx(0.04)
    assert lo == pytest.approx(np.percentile(exact, 2.5), abs=0.003) and hi == pytest.approx(np.percentile(exact, 97.5), abs=0.003)
    assert lo > 0  # all differences positive: the CI excludes 0
