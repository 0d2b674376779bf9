"""Figures as PNG bytes (matplotlib's object API: no global pyplot state, no display)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes (110 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
