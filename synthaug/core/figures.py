"""Figures as PNG bytes (matplotlib's object API: no global pyplot state, no display)."""

from __future__ import annotations

import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

DPI = 110
ROW_INCHES = 0.7  # a 28 px image drawn ~77 px tall: small images enlarged until a reader can see them


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes (110 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def image_rows_png(strips: list[np.ndarray], names: list[str], title: str = "") -> bytes:
    """Rows of images, each named at its left: `strips` are uint8 (H, W, C) arrays of one height (images side by side).
    Each row is drawn at least ROW_INCHES tall (pixels enlarged as they are, nearest neighbour), never below its own size."""
    h, w, c = strips[0].shape
    row, gap, top = max(ROW_INCHES, h / DPI), 0.12, 0.3 if title else 0.0
    height = len(strips) * row * (1 + gap) + top
    figure = Figure(figsize=(row * max(s.shape[1] for s in strips) / h, height))
    # The axes fill the figure; the names lie outside on the left, and the PNG's tight bounding box takes them in.
    figure.subplots_adjust(left=0, right=1, bottom=0, top=1 - top / height, hspace=gap)
    axes = figure.subplots(len(strips), 1, squeeze=False)
    for ax, strip, name in zip(axes[:, 0], strips, names):
        ax.imshow(strip[..., 0] if c == 1 else strip, cmap="gray" if c == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    return figure_png(figure)
