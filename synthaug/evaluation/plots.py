"""The figures of evaluate's report."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.evaluation.intervals import paired_bootstrap_ci
from synthaug.core.figures import figure_png


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
