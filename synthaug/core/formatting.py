"""Number formatters shared by every report (markdown tables of evaluate, audit and sweep)."""

from __future__ import annotations

import math


def fixed(value, digits: int = 3) -> str:
    """`value` with `digits` decimals; n/a when missing."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def significant(value, digits: int = 4) -> str:
    """`value` to `digits` significant figures; n/a when missing."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def mean_std(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
