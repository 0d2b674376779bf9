"""synthaug.evaluation.summary: the best baseline is chosen on val among the arms without synthetic data, gains are
measured against it over independent subsets (seeds averaged inside each), with the test set's noise when the rows
keep their predictions, and the CAS ratio."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_EVAL

from synthaug.recipe.sections import EvaluateConfig
from synthaug.evaluation.summary import summarise


def row(arm, seed, val, test, kind=None, subset=0, pred=None):
    return {"regime": "4/class", "arm": arm, "kind": kind or arm, "subset_seed": subset, "seed": seed, "n_real_used": 8,
            "n_synthetic": 0, "steps": 6, "val_acc": val, "val_auc": val, "test_acc": test, "test_auc": test,
            **({"test_pred": pred} if pred is not None else {})}


def test_best_baseline_is_chosen_on_val_never_on_test():
    rows = [row("real", s, 0.60, 0.90) for s in (0, 1)] + [row("real+classic", s, 0.70, 0.50) for s in (0, 1)]
    rows += [row("real+synthetic 1x", 0, 0.8, 0.62), row("real+synthetic 1x", 1, 0.8, 0.58), row("synthetic", 0, 0.5, 0.45), row("synthetic", 1, 0.5, 0.45)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    chosen = results["best_baseline"]["4/class"]
    assert chosen["arm"] == "real+classic" and chosen["val"] == {"real": 0.60, "real+classic": 0.70}  # real tests better, but val decides
    gain = next(g for g in results["gains"] if g.get("best_baseline") and g["arm"] == "real+synthetic 1x")
    assert gain["vs"] == "real+classic" and gain["dacc"] == pytest.approx(0.10)
    assert chosen["cas"]["ratio"] == pytest.approx(0.5) and chosen["cas"]["units"] == 1


def test_self_training_on_the_pool_competes_for_best_baseline():
    rows = [row("real", s, 0.60, 0.60) for s in (0, 1)] + [row("real+classic", s, 0.70, 0.70) for s in (0, 1)]
    rows += [row("real+pseudo+classic t0.9", s, 0.75, 0.72, "real+pseudo+classic") for s in (0, 1)]
    rows += [row("real+replace+classic p0.25", s, 0.74, 0.75, "real+replace+classic") for s in (0, 1)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    assert results["best_baseline"]["4/class"]["arm"] == "real+pseudo+classic t0.9"
    against = [g for g in results["gains"] if g.get("best_baseline")]
    assert [(g["arm"], g["vs"]) for g in against] == [("real+replace+classic p0.25", "real+pseudo+classic t0.9")]
    assert against[0]["dacc"] == pytest.approx(0.03)


def test_the_unit_is_the_subset_and_seeds_are_averaged_inside_it():
    """Six subsets x two seeds: six units, not twelve; a seed that disagrees inside a subset moves its unit's mean."""
    rows = []
    for subset in range(6):
        for seed in (0, 1):
            rows += [row("real", seed, 0.6, 0.60, subset=subset), row("real+synthetic 1x", seed, 0.7, 0.62 + 0.02 * seed, subset=subset)]
    gain = next(g for g in summarise(rows, EvaluateConfig(**TINY_EVAL))["gains"] if g["arm"] == "real+synthetic 1x" and g["vs"] == "real")
    assert gain["units"] == 6 and gain["pairs"] == 12 and gain["dacc"] == pytest.approx(0.03)
    assert gain["dacc_lo"] == pytest.approx(0.03) and gain["dacc_verdict"] == "higher"  # every unit +0.03: no spread
    assert not gain["dacc_test_noise"]


def test_test_predictions_add_the_test_sets_own_noise():
    labels = np.array([0, 1] * 50)
    rng = np.random.default_rng(0)
    rows = []
    for subset in range(5):
        base = np.where(rng.random(100) < 0.8, labels, 1 - labels)
        better = np.where(rng.random(100) < 0.3, labels, base)  # a few more right answers
        rows += [row("real", 0, 0.6, float((base == labels).mean()), subset=subset, pred=base.tolist()),
                 row("real+synthetic 1x", 0, 0.7, float((better == labels).mean()), subset=subset, pred=better.tolist())]
    cfg = EvaluateConfig(**TINY_EVAL)
    with_noise = next(g for g in summarise(rows, cfg, labels)["gains"] if g["vs"] == "real" and g["arm"] == "real+synthetic 1x")
    units_only = next(g for g in summarise(rows, cfg)["gains"] if g["vs"] == "real" and g["arm"] == "real+synthetic 1x")
    assert with_noise["dacc_test_noise"] and not units_only["dacc_test_noise"]
    assert with_noise["dacc"] == pytest.approx(units_only["dacc"])
    assert with_noise["dacc_hi"] - with_noise["dacc_lo"] > units_only["dacc_hi"] - units_only["dacc_lo"]
    assert not with_noise["dauc_test_noise"]  # these rows keep no AUC terms: the subsets only


def long_tailed_rows(units: int = 8) -> tuple[list[dict], np.ndarray]:
    """`real+balanced` and `real+topup+balanced` on `units` subsets, each row with its test predictions and the test
    scores that follow from them; the test set is long-tailed (80, 15 and 5 images)."""
    from synthaug.classifier.harness import label_metrics

    labels = np.repeat([0, 1, 2], [80, 15, 5])
    rng = np.random.default_rng(3)
    rows = []
    for subset in range(units):
        for arm, val, right in (("real+balanced", 0.70, 0.7), ("real+topup+balanced", 0.75, 0.75)):
            pred = np.where(rng.random(100) < right, labels, (labels + 1) % 3)
            rows.append({**row(arm, 0, 0.5, float((pred == labels).mean()), subset=subset, pred=pred.tolist()), "val_bacc": val,
                         "test_bacc": label_metrics(labels, pred, 3)["bacc"]})
    return rows, labels


def test_balanced_accuracy_gains_add_the_test_sets_own_noise_with_class_weighted_image_terms():
    rows, labels = long_tailed_rows()
    cfg = EvaluateConfig(**{**TINY_EVAL, "select_on": "bacc"})
    with_noise = next(g for g in summarise(rows, cfg, labels)["gains"] if g.get("best_baseline"))
    units_only = next(g for g in summarise(rows, cfg)["gains"] if g.get("best_baseline"))
    assert with_noise["dbacc_test_noise"] and not units_only["dbacc_test_noise"]
    assert with_noise["dbacc"] == pytest.approx(units_only["dbacc"])  # the weighted image terms average to balanced ACC
    assert with_noise["dbacc_hi"] - with_noise["dbacc_lo"] > units_only["dbacc_hi"] - units_only["dbacc_lo"]


def test_a_unit_without_a_test_score_is_left_out_and_said_not_too_few_units():
    from synthaug.evaluation.report import verdicts

    rows, _ = long_tailed_rows()
    rows[0]["test_bacc"] = float("nan")  # e.g. a row cached before balanced metrics, without its test predictions
    cfg = EvaluateConfig(**{**TINY_EVAL, "select_on": "bacc"})
    results = {**summarise(rows, cfg), "config": cfg.model_dump(mode="json")}
    gain = next(g for g in results["gains"] if g.get("best_baseline"))
    assert gain["units"] == 8 and gain["dbacc_unscored"] == 1 and gain["dbacc_verdict"] != "too few units"
    assert "over 7 independent subset(s) (1 more without a test BACC, left out)" in verdicts(results)[0]
    for r in rows:
        r["test_bacc"] = float("nan")
    results = {**summarise(rows, cfg), "config": cfg.model_dump(mode="json")}
    assert next(g for g in results["gains"] if g.get("best_baseline"))["dbacc_verdict"] == "not scored"
    assert "not scored" in verdicts(results)[0]


def test_an_arm_without_a_val_score_is_never_chosen_as_best_baseline():
    """Arms cached before balanced metrics have val_bacc nan; max() would keep a nan that comes first."""
    from synthaug.evaluation.report import render_evaluate_report, verdicts

    rows, _ = long_tailed_rows(5)
    rows += [{**r, "arm": "real", "kind": "real", "val_bacc": float("nan")} for r in rows if r["arm"] == "real+balanced"]
    rows.sort(key=lambda r: r["arm"] != "real")  # `real` first, as evaluate writes it
    cfg = EvaluateConfig(**{**TINY_EVAL, "select_on": "bacc"})
    results = {**summarise(rows, cfg), "config": cfg.model_dump(mode="json")}
    chosen = results["best_baseline"]["4/class"]
    assert chosen["arm"] is None and chosen["unscored"] == ["real"]
    assert not any(g.get("best_baseline") for g in results["gains"])
    assert verdicts(results)[0].startswith("4/class: not scored: no val BACC for `real`")


def test_each_comparison_is_written_once_when_the_best_baseline_is_real():
    rows = [row("real", s, 0.70, 0.60, subset=s) for s in range(5)] + [row("real+classic", s, 0.60, 0.60, subset=s) for s in range(5)]
    rows += [row("real+synthetic 1x", s, 0.8, 0.62, subset=s) for s in range(5)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    assert results["best_baseline"]["4/class"]["arm"] == "real"
    pairs = [(g["regime"], g["arm"], g["vs"]) for g in results["gains"]]
    assert len(pairs) == len(set(pairs)) == 3  # real+classic and real+synthetic vs real, real+synthetic vs real+classic
    assert [g.get("best_baseline", False) for g in results["gains"]] == [False, True, False]


def test_selecting_on_balanced_accuracy_reports_its_gains_and_verdict():
    from synthaug.evaluation.report import interval_note, verdicts

    def lt(arm, subset, val, test_acc, test_bacc):
        return {**row(arm, 0, 0.5, test_acc, subset=subset), "val_bacc": val, "test_bacc": test_bacc, "test_f1": test_bacc,
                "test_rare_recall": test_bacc - 0.1}

    rows = []
    for subset in range(5):
        rows += [lt("real", subset, 0.60, 0.90, 0.60), lt("real+balanced", subset, 0.70, 0.85, 0.70 + 0.01 * subset),
                 lt("real+topup+balanced", subset, 0.75, 0.84, 0.75 + 0.01 * subset)]
    cfg = EvaluateConfig(**{**TINY_EVAL, "select_on": "bacc"})
    results = summarise(rows, cfg)
    assert results["best_baseline"]["4/class"]["arm"] == "real+balanced"  # re-balancing competes, on val balanced accuracy
    gain = next(g for g in results["gains"] if g.get("best_baseline"))
    assert gain["arm"] == "real+topup+balanced" and gain["dbacc"] == pytest.approx(0.05) and gain["dbacc_verdict"] == "higher"
    assert gain["dacc"] == pytest.approx(-0.01) and "dauc" in gain  # acc and auc kept beside it
    summary = {s["arm"]: s for s in results["summary"]}
    assert summary["real"]["rare_recall_mean"] == pytest.approx(0.5) and summary["real"]["f1_mean"] == pytest.approx(0.6)
    results.update(config=cfg.model_dump(mode="json"))
    assert verdicts(results) == ["4/class: synthetic data helps; `real+topup+balanced` (the synthetic arm chosen on val) vs "
                                 "`real+balanced` (the best baseline chosen on val): +5.0 points test BACC [95 % CI +5.0, +5.0] "
                                 "over 5 independent subset(s)."]
    note = interval_note({"gains": [{**gain, "dacc_test_noise": True, "dbacc_test_noise": True}]})[0]
    assert "ΔACC and ΔBACC also cover the test set's own sampling noise" in note and "weighted N / (K n_c)" in note
    assert "ΔAUC covers the subsets only, **not** the test set's own sampling noise (these rows keep no per-image AUC terms)" in note
    note = interval_note({"gains": [gain]})[0]  # rows without their predictions
    assert "ΔBACC covers the subsets only, **not** the test set's own sampling noise (these rows keep no per-image predictions)" in note


def test_rare_class_recall_gains_only_where_the_subsets_have_rare_classes():
    """A long-tailed top-up is judged on its rare classes too (the long-tail study's second target); balanced subsets,
    whose rows have no rare classes (nan), get no such gain rather than a column of nans."""
    def lt(arm, subset, rare):
        return {**row(arm, 0, 0.5, 0.8, subset=subset), "val_bacc": 0.5, "test_bacc": 0.7, "test_rare_recall": rare}

    rows = [r for subset in range(5) for r in (lt("real+balanced", subset, 0.60), lt("real+topup+balanced", subset, 0.70 + 0.01 * subset))]
    cfg = EvaluateConfig(**{**TINY_EVAL, "select_on": "bacc"})
    gain = next(g for g in summarise(rows, cfg)["gains"] if g.get("best_baseline"))
    assert gain["drare_recall"] == pytest.approx(0.12) and gain["drare_recall_verdict"] == "higher"
    assert gain["drare_recall_test_noise"] is False  # no per-image terms: the subsets only
    balanced = [{**r, "test_rare_recall": float("nan")} for r in rows]
    assert "drare_recall" not in next(g for g in summarise(balanced, cfg)["gains"] if g.get("best_baseline"))


def test_the_verdicts_accuracy_is_named_as_one():
    from synthaug.evaluation.summary import verdict_accuracy

    assert [verdict_accuracy(s) for s in ("auc", "acc", "bacc")] == ["acc", "acc", "bacc"]  # AUC selects; a verdict is on an accuracy


def test_units_drawn_from_one_split_get_the_wider_overlap_interval_and_say_so():
    """evaluate.resample's units share images: the same rows give a wider interval than independent subsets would."""
    rows = []
    for subset, gain in enumerate([0.02, 0.05, 0.03, 0.06, 0.04]):
        rows += [row("real", 0, 0.6, 0.60, subset=subset), row("real+synthetic 1x", 0, 0.7, 0.60 + gain, subset=subset)]
    plain, resampled = (next(g for g in summarise(rows, EvaluateConfig(**TINY_EVAL, **extra))["gains"]
                             if g["arm"] == "real+synthetic 1x" and g["vs"] == "real")
                        for extra in ({}, {"resample": {"units": 5, "fraction": 0.5}}))
    assert "overlap" not in plain and resampled["overlap"] == 0.5
    assert resampled["dacc"] == pytest.approx(plain["dacc"]) and resampled["dacc_lo"] < plain["dacc_lo"]
    assert (resampled["dacc_hi"] - resampled["dacc_lo"]) > 2 * (plain["dacc_hi"] - plain["dacc_lo"])  # sqrt(1 + 5) wider, t(4) both


def auc_rows(units: int, same_in_every_unit: bool = False) -> tuple[list[dict], np.ndarray]:
    """`real` and `real+synthetic 1x` on `units` subsets of a three-class task, each row with its test AUC and its per-image
    AUC terms as evaluate keeps them (6 significant digits); with `same_in_every_unit`, every subset scores the test images alike."""
    from synthaug.classifier.harness import auc_terms, classification_metrics
    from synthaug.evaluation.evaluate import _significant

    labels = np.repeat([0, 1, 2], [60, 30, 10])
    rng = np.random.default_rng(5)
    rows = []
    for subset in range(units):
        if subset == 0 or not same_in_every_unit:
            logits = {arm: rng.normal(0, 1, (100, 3)) + np.eye(3)[labels] * signal for arm, signal in (("real", 1.0), ("real+synthetic 1x", 1.3))}
        for arm, val in (("real", 0.6), ("real+synthetic 1x", 0.7)):
            probs = np.exp(logits[arm]) / np.exp(logits[arm]).sum(1, keepdims=True)
            scores = classification_metrics(labels, probs)
            rows.append({**row(arm, 0, val, scores["acc"], subset=subset), "test_auc": scores["auc"],
                         "test_auc_terms": _significant(auc_terms(labels, probs))})
    return rows, labels


def test_auc_gains_add_the_test_sets_own_noise_from_the_per_image_auc_terms():
    """Two subsets that score the test images alike: over the subsets alone the AUC gain's interval has no width, though
    another test set would give another gain; the AUC terms give it the test set's noise."""
    rows, labels = auc_rows(2, same_in_every_unit=True)
    cfg = EvaluateConfig(**TINY_EVAL)
    gain = next(g for g in summarise(rows, cfg, labels)["gains"] if g["vs"] == "real")
    old = next(g for g in summarise([{k: v for k, v in r.items() if k != "test_auc_terms"} for r in rows], cfg, labels)["gains"]
               if g["vs"] == "real")  # rows made before the terms were kept
    assert gain["dauc_test_noise"] and not old["dauc_test_noise"]
    assert old["dauc_hi"] - old["dauc_lo"] == pytest.approx(0) and gain["dauc_hi"] - gain["dauc_lo"] > 0.02
    auc = {r["arm"]: r["test_auc"] for r in rows[:2]}
    for g in (gain, old):  # the difference of the reported AUCs, though the terms are rounded
        assert g["dauc"] == pytest.approx(auc["real+synthetic 1x"] - auc["real"], abs=1e-12)


def test_auc_gains_cover_the_test_set_only_where_both_arms_rows_keep_the_terms():
    from synthaug.evaluation.report import interval_note

    rows, labels = auc_rows(5)
    cfg = EvaluateConfig(**TINY_EVAL)
    results = summarise(rows, cfg, labels)
    assert interval_note(results)[0].count("each image's DeLong components for AUC") == 1
    del rows[0]["test_auc_terms"]  # one baseline row cached before the terms were kept: that gain covers the subsets only
    results = summarise(rows, cfg, labels)
    gain = next(g for g in results["gains"] if g["vs"] == "real")
    assert not gain["dauc_test_noise"]
    assert "ΔAUC covers the subsets only, **not** the test set's own sampling noise (these rows keep no per-image AUC terms)" in interval_note(results)[0]
