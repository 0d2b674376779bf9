"""Figures of reports, each returned as PNG bytes (matplotlib's object API: no global pyplot state, no display)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from synthaug.stats import paired_bootstrap_ci  # noqa: E402


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes (110 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def accuracy_vs_size_png(results: dict) -> bytes:
    """Test ACC and AUC against real training-set size, one line per arm, 95 % bootstrap CI of the mean."""
    table = pd.DataFrame(results["rows"])
    figure = Figure(figsize=(11, 4.2), layout="tight")
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "auc")):
        for arm, group in table.groupby("arm", sort=False):
            points = []
            for size, at in group.groupby("n_real"):
                values = at[f"test_{metric}"].to_numpy()
                mean, lo, hi = paired_bootstrap_ci(values, results["config"]["bootstrap"])
                points.append((size, mean, mean - lo, hi - mean))
            xs, ys, lo, hi = map(np.array, zip(*sorted(points)))
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=arm)
        if table["n_real"].max() > 4 * table["n_real"].min():
            ax.set_xscale("log")
        ax.set_xlabel("real training images")
        ax.set_ylabel(f"test {metric.upper()}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{results['data']['source']}: mean over seeds, bars = 95 % bootstrap CI of the mean")
    return figure_png(figure)


def real_beside_synthetic_png(real, synthetic, classes: list[int], class_names: list[str], title: str, per_class: int = 8) -> bytes:
    """One row per class: `per_class` real training images, a gap, then `per_class` synthetic ones (ImageSets)."""
    h, w, c = real.images.shape[1:]
    figure = Figure(figsize=(8, 0.55 * len(classes) + 0.6), layout="tight")
    axes = figure.subplots(len(classes), 1, squeeze=False)
    for ax, cls in zip(axes[:, 0], classes):
        row = np.zeros((2 * per_class + 1, h, w, c), np.uint8)
        r_idx, s_idx = np.flatnonzero(real.labels == cls)[:per_class], np.flatnonzero(synthetic.labels == cls)[:per_class]
        row[: len(r_idx)] = real.images[r_idx]
        row[per_class + 1 : per_class + 1 + len(s_idx)] = synthetic.images[s_idx]
        strip = np.concatenate(list(row), axis=1)
        ax.imshow(strip[..., 0] if c == 1 else strip, cmap="gray" if c == 1 else None, vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(class_names[cls], rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title(title, fontsize=9)
    return figure_png(figure)


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
    """Per class: histograms of the nearest-training-image correlation (pixels) and distance (features), synthetic vs real test."""
    columns = len(data.classes)
    figure = Figure(figsize=(3.2 * columns, 5.2), layout="constrained")
    for col, c in enumerate(data.classes):
        synth, test = synthetic.labels == c, data.test.labels == c
        top = figure.add_subplot(2, columns, col + 1)
        bins = np.linspace(min(nearest["synthetic"].correlation.min(), nearest["test"].correlation.min()), 1.0, 40)
        top.hist(nearest["test"].correlation[test], bins=bins, alpha=0.6, density=True, label="real test -> train")
        top.hist(nearest["synthetic"].correlation[synth], bins=bins, alpha=0.6, density=True, label="synthetic -> train")
        top.axvline(thresholds[c], color="red", linewidth=1, label="copy threshold")
        top.set_title(f"{data.class_names[c]}: pixel correlation", fontsize=8)
        top.tick_params(labelsize=6)
        bottom = figure.add_subplot(2, columns, columns + col + 1)
        # A few far-off synthetic images would squeeze the rest into one bar: the last bin holds everything beyond.
        reach = float(np.quantile(np.concatenate([feature_nn["synthetic"], feature_nn["test"]]), 0.98)) or 1.0
        edges = np.linspace(0, reach, 40)
        bottom.hist(np.minimum(feature_nn["test"][test], reach), bins=edges, alpha=0.6, density=True, label="real test -> train")
        bottom.hist(np.minimum(feature_nn["synthetic"][synth], reach), bins=edges, alpha=0.6, density=True, label="synthetic -> train")
        bottom.set_title(f"{data.class_names[c]}: feature distance (last bin: beyond)", fontsize=8)
        bottom.tick_params(labelsize=6)
        if col == 0:
            top.legend(fontsize=6)
    return figure_png(figure)
