"""The figures of audit's report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from synthaug.core.figures import figure_png


def closest_pairs_png(data, synthetic, files: list[str], near, thresholds: dict[int, float], count: int) -> bytes:
    """The `count` synthetic images most correlated with a training image, each beside that (mirrored if so) training image."""
    order = np.argsort(-near.correlation, kind="stable")[:count]
    columns = min(4, len(order))
    rows = math.ceil(len(order) / columns)
    figure = Figure(figsize=(2.6 * columns, 1.55 * rows + 0.4))
    figure.suptitle("closest synthetic / training pairs (red: over the copy threshold)", fontsize=9)
    gray = synthetic.channels == 1
    for slot, i in enumerate(order):
        train_image = near.matched_view(data.train.images[near.index[i]], i)
        pair = np.concatenate([synthetic.images[i], np.full_like(synthetic.images[i][:, :2], 255), train_image], axis=1)
        axis = figure.add_subplot(rows, columns, slot + 1)
        axis.imshow(pair[..., 0] if gray else pair, cmap="gray" if gray else None, vmin=0, vmax=255)
        flagged = near.correlation[i] >= thresholds[int(synthetic.labels[i])]
        axis.set_title(
            f"{Path(files[i]).name}\nr={near.correlation[i]:.3f} vs train #{data.train_indices[near.index[i]]}{' (mirror)' if near.mirrored[i] else ''}",
            fontsize=6,
            color="red" if flagged else "black",
        )
        axis.axis("off")
    return figure_png(figure)


def similarity_png(data, synthetic, nearest: dict, feature_nn: dict[str, np.ndarray], thresholds: dict[int, float]) -> bytes:
    """Per class: histograms of the nearest-training-image correlation (pixels) and distance (features), synthetic vs real
    test (the out-of-sample baseline; the copy threshold drawn is calibrated on real val)."""
    columns = len(data.classes)
    figure = Figure(figsize=(3.2 * columns, 5.2), layout="constrained")
    for col, c in enumerate(data.classes):
        synth, test = synthetic.labels == c, data.test.labels == c
        drawn = synth.any()  # a top-up set leaves its largest classes out: an empty density is a division by zero
        top = figure.add_subplot(2, columns, col + 1)
        bins = np.linspace(min(nearest["synthetic"].correlation.min(), nearest["test"].correlation.min()), 1.0, 40)
        top.hist(nearest["test"].correlation[test], bins=bins, alpha=0.6, density=True, label="real test -> train")
        if drawn:
            top.hist(nearest["synthetic"].correlation[synth], bins=bins, alpha=0.6, density=True, label="synthetic -> train")
        top.axvline(thresholds[c], color="red", linewidth=1, label="copy threshold (real val)")
        top.set_title(f"{data.class_names[c]}: {'pixel correlation' if drawn else 'no synthetic images'}", fontsize=8)
        top.tick_params(labelsize=6)
        bottom = figure.add_subplot(2, columns, columns + col + 1)
        # A few far-off synthetic images would squeeze the rest into one bar: the last bin holds everything beyond.
        reach = float(np.quantile(np.concatenate([feature_nn["synthetic"], feature_nn["test"]]), 0.98)) or 1.0
        edges = np.linspace(0, reach, 40)
        bottom.hist(np.minimum(feature_nn["test"][test], reach), bins=edges, alpha=0.6, density=True, label="real test -> train")
        if drawn:
            bottom.hist(np.minimum(feature_nn["synthetic"][synth], reach), bins=edges, alpha=0.6, density=True, label="synthetic -> train")
        bottom.set_title(f"{data.class_names[c]}: feature distance (last bin: beyond)", fontsize=8)
        bottom.tick_params(labelsize=6)
        if col == 0:
            top.legend(fontsize=6)
    return figure_png(figure)
