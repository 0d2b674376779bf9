"""The evaluation's numbers: the best baseline is chosen on val among the arms without synthetic data, gains are
measured against it, and the CAS ratio."""

from __future__ import annotations

import pytest
from conftest import TINY_EVAL

from synthaug.recipe.sections import EvaluateConfig
from synthaug.evaluation.summary import summarise


def row(arm, seed, val, test, kind=None):
    return {"regime": "4/class", "arm": arm, "kind": kind or arm, "subset_seed": 0, "seed": seed, "n_real_used": 8,
            "n_synthetic": 0, "steps": 6, "val_acc": val, "val_auc": val, "test_acc": test, "test_auc": test}


def test_best_baseline_is_chosen_on_val_never_on_test():
    rows = [row("real", s, 0.60, 0.90) for s in (0, 1)] + [row("real+classic", s, 0.70, 0.50) for s in (0, 1)]
    rows += [row("real+synthetic 1x", 0, 0.8, 0.62), row("real+synthetic 1x", 1, 0.8, 0.58), row("synthetic", 0, 0.5, 0.45), row("synthetic", 1, 0.5, 0.45)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    chosen = results["best_baseline"]["4/class"]
    assert chosen["arm"] == "real+classic" and chosen["val"] == {"real": 0.60, "real+classic": 0.70}  # real tests better, but val decides
    gain = next(g for g in results["gains"] if g.get("best_baseline") and g["arm"] == "real+synthetic 1x")
    assert gain["vs"] == "real+classic" and gain["dacc"] == pytest.approx(0.10)
    assert chosen["cas"]["ratio"] == pytest.approx(0.5) and chosen["cas"]["pairs"] == 2


def test_self_training_on_the_pool_competes_for_best_baseline():
    rows = [row("real", s, 0.60, 0.60) for s in (0, 1)] + [row("real+classic", s, 0.70, 0.70) for s in (0, 1)]
    rows += [row("real+pseudo+classic t0.9", s, 0.75, 0.72, "real+pseudo+classic") for s in (0, 1)]
    rows += [row("real+replace+classic p0.25", s, 0.74, 0.75, "real+replace+classic") for s in (0, 1)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    assert results["best_baseline"]["4/class"]["arm"] == "real+pseudo+classic t0.9"
    against = [g for g in results["gains"] if g.get("best_baseline")]
    assert [(g["arm"], g["vs"]) for g in against] == [("real+replace+classic p0.25", "real+pseudo+classic t0.9")]
    assert against[0]["dacc"] == pytest.approx(0.03)
