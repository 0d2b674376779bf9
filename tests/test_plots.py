"""synthaug.evaluation.plots: each figure draws what its title says."""

from __future__ import annotations

import numpy as np

from synthaug.evaluation.plots import accuracy_vs_size_figure


def results(subsets: int, sizes=(8,)) -> dict:
    rng = np.random.default_rng(0)
    rows = [{"regime": f"{n}/class", "arm": arm, "n_real": 2 * n, "subset_seed": s, "seed": seed,
             "test_acc": 0.7 + 0.05 * rng.random(), "test_auc": 0.8 + 0.05 * rng.random()}
            for n in sizes for arm in ("real", "real+synthetic 1x") for s in range(subsets) for seed in (0, 1)]
    return {"rows": rows, "data": {"source": "tiny"}}


def bar_lengths(figure) -> list[float]:
    """The vertical extent of every interval bar drawn."""
    return [float(np.ptp(seg[:, 1])) for ax in figure.axes for c in ax.containers for lines in c.lines[2] for seg in lines.get_segments()]


def test_interval_bars_are_drawn_where_the_title_promises_them():
    for sizes in ((8,), (4, 8)):
        figure = accuracy_vs_size_figure(results(3, sizes))
        assert "bars: 95 % t interval over 3 subsets" in figure._suptitle.get_text()
        assert bar_lengths(figure) and min(bar_lengths(figure)) > 0


def test_one_subset_draws_no_bars_and_the_title_says_so():
    figure = accuracy_vs_size_figure(results(1))
    title = figure._suptitle.get_text()
    assert "no interval bars" in title and "bars: 95 %" not in title
    assert all(length == 0 for length in bar_lengths(figure))
