"""The figures of evaluate's report."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.core.figures import figure_png, image_rows_png
from synthaug.evaluation.intervals import t_interval
from synthaug.evaluation.summary import unit_values


def accuracy_vs_size_png(results: dict) -> bytes:
    return figure_png(accuracy_vs_size_figure(results))


def accuracy_vs_size_figure(results: dict) -> Figure:
    """Test ACC, AUC (and balanced ACC where the rows have it) of every arm: against real training-set size, one line
    per arm, when the regimes differ in size; as one point per arm when they do not. Means over subsets (seeds
    averaged), bars: 95 % t interval over subsets, where a point has two or more; the title says which."""
    table, split = pd.DataFrame(results["rows"]), results.get("split", "test")
    one_size = table["n_real"].nunique() == 1
    metrics = ["acc", "auc", *(["bacc"] if f"{split}_bacc" in table and table[f"{split}_bacc"].notna().any() else [])]
    figure = Figure(figsize=(5.5 * len(metrics), 4.2 if not one_size else 3.6 + 0.08 * table["arm"].nunique()), layout="tight")
    axes = figure.subplots(1, len(metrics))
    for ax, metric in zip(axes, metrics):
        for i, (arm, group) in enumerate(table.groupby("arm", sort=False)):
            points = []
            for size, at in group.groupby("n_real"):
                r = t_interval(unit_values(at, f"{split}_{metric}").to_numpy())
                points.append((size, r["mean"], r["mean"] - r["lo"], r["hi"] - r["mean"]))
            xs, ys, lo, hi = map(np.array, zip(*sorted(points)))
            lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)  # one subset: no interval, no bar
            if one_size:  # one regime: the arms side by side, so that no arm hides behind another
                ax.errorbar([i], ys, yerr=[lo, hi], marker="o", capsize=3, linestyle="none", label=arm)
            else:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=arm)
        if one_size:
            arms = list(dict.fromkeys(table["arm"]))
            ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=7)
            ax.set_xlabel(f"arm ({int(table['n_real'].iloc[0])} real training images)")
        else:
            if table["n_real"].max() > 4 * table["n_real"].min():
                ax.set_xscale("log")
            ax.set_xlabel("real training images")
        ax.set_ylabel(f"{split} {'balanced ACC' if metric == 'bacc' else metric.upper()}")
        ax.grid(alpha=0.3)
    if not one_size:
        axes[0].legend(fontsize=7)
    figure.suptitle(f"{results['data']['source']}: mean over subsets; {_bars_said(table)}")
    return figure


def _bars_said(table: pd.DataFrame) -> str:
    """What the interval bars of the figure are, from the subsets behind each point (one subset: no interval)."""
    units = table.groupby(["arm", "n_real"])["subset_seed"].nunique()
    lo, hi = int(units.min()), int(units.max())
    if hi < 2:
        return "one subset per point: no interval bars"
    counted = f"{lo} subsets" if lo == hi else f"{max(lo, 2)}-{hi} subsets"
    return f"bars: 95 % t interval over {counted}" + (" (none where a point has one subset)" if lo < 2 else "")


def real_beside_synthetic_png(real, synthetic, classes: list[int], class_names: list[str], title: str, per_class: int = 8) -> bytes:
    """One row per class, named: `per_class` real training images, a gap, then `per_class` synthetic ones (ImageSets)."""
    h, w, c = real.images.shape[1:]
    strips = []
    for cls in classes:
        row = np.zeros((2 * per_class + 1, h, w, c), np.uint8)
        r_idx, s_idx = np.flatnonzero(real.labels == cls)[:per_class], np.flatnonzero(synthetic.labels == cls)[:per_class]
        row[: len(r_idx)] = real.images[r_idx]
        row[per_class + 1 : per_class + 1 + len(s_idx)] = synthetic.images[s_idx]
        strips.append(np.concatenate(list(row), axis=1))
    return image_rows_png(strips, [class_names[cls] for cls in classes], title)
