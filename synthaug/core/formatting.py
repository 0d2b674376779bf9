"""Number formatters shared by every report (markdown tables of evaluate, audit and sweep)."""

from __future__ import annotations

import math


def fixed(value, digits: int = 3) -> str:
    """`value` with `digits` decimals; n/a when missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def significant(value, digits: int = 4) -> str:
    """`value` to `digits` significant figures; n/a when missing."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def gain_points(mean: float, lo: float, hi: float) -> str:
    """A gain (a difference of two scores in [0, 1]) in points with its 95 % interval: `+1.2 points [+0.3, +2.1]`;
    without bounds (one subset) `+1.2 points [no interval]`."""
    interval = "no interval" if lo is None or math.isnan(lo) else f"{100 * lo:+.1f}, {100 * hi:+.1f}"
    return f"{100 * mean:+.1f} points [{interval}]"


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def mean_std(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
