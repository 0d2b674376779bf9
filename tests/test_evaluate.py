"""The evaluate harness on tiny fixtures: 12 px class folders, run directories as `fit` writes them and synthetic
sets in `synthaug generate`'s layout (conftest's `eval_run`), with a 4-channel SmallCNN trained for a few steps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_EVAL, make_run

from synthaug.auditing.audit import audit
from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import evaluate
from synthaug.generation.generate import generate
from synthaug.storage.rundir import open_run


def test_end_to_end_arms_regimes_seeds_and_files(eval_run, tmp_path):
    small, large = eval_run("tiny-4pc", 4), eval_run("tiny-8pc", 8)
    out = tmp_path / "report"
    results = evaluate([small, large], out, show_progress=False, command="synthaug evaluate ...")
    table = pd.read_csv(out / "results.csv")
    arms = ["real", "real+classic", "real+synthetic 1x", "real+synthetic 2x", "real+synthetic+classic 1x",
            "real+synthetic+classic 2x", "synthetic"]
    assert len(table) == 2 * len(arms) * 3
    assert sorted(table["arm"].unique()) == sorted(arms)
    assert set(table["regime"]) == {"4/class", "8/class"} and set(table["seed"]) == {0, 1, 2}
    assert set(table["steps"]) == {6}  # every arm trains for the same number of steps
    big = table[table["regime"] == "8/class"].set_index("arm")
    assert big.loc["real", "n_synthetic"].tolist() == [0, 0, 0]
    assert big.loc["real+synthetic 2x", "n_synthetic"].iloc[0] == 32 and big.loc["synthetic", "n_synthetic"].iloc[0] == 16
    assert table["test_acc"].between(0, 1).all() and {"recall_0", "recall_1"} <= set(table.columns)
    assert not {"test_pred", "test_auc_terms"} & set(table.columns)  # one entry a test image: results.json keeps them
    gains = pd.DataFrame(results["gains"])
    assert set(gains["vs"]) == {"real", "real+classic"} and (gains["pairs"] == 3).all() and (gains["units"] == 1).all()
    assert set(gains["dacc_verdict"]) == {"too few units"}  # one subset per regime: seeds are not independent units
    for regime, chosen in results["best_baseline"].items():  # the best baseline is picked on val, and gains are measured against it
        assert chosen["arm"] == max(("real", "real+classic"), key=lambda b: table[(table.regime == regime) & (table.arm == b)]["val_auc"].mean())
        against = gains[(gains["regime"] == regime) & gains["best_baseline"].fillna(False).astype(bool)]
        assert set(against["vs"]) == {chosen["arm"]} and len(against) == len(arms) - 2
        assert chosen["cas"]["ratio"] > 0 and chosen["cas"]["units"] == 1 and np.isnan(chosen["cas"]["lo"])
    for name in ("report.md", "results.json", "accuracy_vs_size.png", "samples_tiny-4pc.png", "samples_tiny-8pc.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Gain over the best arm without synthetic data (chosen on val)" in report and "CAS ratio" in report
    assert "synthaug evaluate ..." in report and "real+synthetic+classic 2x" in report and "6 steps for every arm" in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["regimes"][1]["real_per_class"] == [8, 8] and saved["data"]["test"] == 24


def test_cache_skips_finished_arms_and_force_redoes_them(eval_run, tmp_path):
    run, out = eval_run("tiny", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1]), tmp_path / "report"
    first = evaluate([run], out, show_progress=False)
    again = evaluate([run], out, show_progress=False)
    assert first["arms_from_cache"] == 0 and again["arms_from_cache"] == 2
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in first["rows"]]
    assert [r["test_auc_terms"] for r in again["rows"]] == [r["test_auc_terms"] for r in first["rows"]]  # kept in the cache
    assert all(np.mean(r["test_auc_terms"]) == pytest.approx(r["test_auc"], abs=1e-5) for r in first["rows"])
    assert evaluate([run], out, force=True, show_progress=False)["arms_from_cache"] == 0
    changed = evaluate([open_run(run, ["evaluate.steps=4"])], out, show_progress=False)
    assert changed["arms_from_cache"] == 0 and {r["steps"] for r in changed["rows"]} == {4}


def test_reports_can_share_one_cache(eval_run, tmp_path):
    run = eval_run("tiny", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1])
    cache = tmp_path / "shared-cache"
    first = evaluate([run], tmp_path / "a", show_progress=False, cache_dir=cache)
    second = evaluate([run], tmp_path / "b", show_progress=False, cache_dir=cache)
    assert first["arms_from_cache"] == 0 and second["arms_from_cache"] == 2 and not (tmp_path / "b" / "cache").exists()
    assert [r["test_acc"] for r in second["rows"]] == [r["test_acc"] for r in first["rows"]]


def test_too_few_synthetic_images_is_one_clear_error(eval_run, tmp_path):
    run = eval_run("tiny", 8, synthetic=6)
    with pytest.raises(UserError, match=r"need 16 synthetic images of class 0 \(benign\), found 6.*--ratio 2 \(or --per-class 16\)"):
        evaluate([run], tmp_path / "out", show_progress=False)


def test_cli_exit_codes(eval_run, tmp_path, capsys):
    run = eval_run("tiny", 4)
    out = tmp_path / "cli"
    assert main(["evaluate", "--run", str(run), "--out", str(out), "--no-progress", "--set", "evaluate.seeds=[0]",
                 "--set", "evaluate.arms=[real]"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"report: {out / 'report.md'}"]  # the one line on success
    report = (out / "report.md").read_text()
    assert f"synthaug evaluate --run {run} --set 'evaluate.seeds=[0]'" in report
    assert "1 independent subset(s) in a regime: too few to tell" in report
    assert main(["evaluate", "--run", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert main(["evaluate", "--run", str(run), "--set", "evaluate.ratios=[0]", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("synthaug evaluate: error:") and "evaluate.ratios" in err[-1]


def test_the_older_positional_runs_still_work_and_are_recorded_as_run_flags(eval_run, tmp_path, capsys):
    run = eval_run("tiny", 4)
    out = tmp_path / "old"
    assert main(["evaluate", str(run), "--out", str(out), "--no-progress", "--set", "evaluate.seeds=[0]", "--set", "evaluate.arms=[real]"]) == 0
    assert f"synthaug evaluate --run {run} --set" in (out / "report.md").read_text()
    assert main(["evaluate", str(run), "--run", str(run), "--out", str(tmp_path / "both"), "--no-progress"]) == 2
    assert main(["evaluate", "--out", str(tmp_path / "none"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not also as" in err[0] and "give at least one run directory: --run DIR" in err[1]
    assert not (tmp_path / "both").exists() and not (tmp_path / "none").exists()


def test_two_runs_of_one_subset_are_refused_before_any_work(eval_run, tmp_path, capsys):
    # two generators on the same 4/class subset (seed 0): one report would average them together
    a, b = eval_run("gen-a", 4), eval_run("gen-b", 4, synthetic=0)  # b has no synthetic set: the refusal comes first
    out = tmp_path / "report"
    assert main(["evaluate", "--run", str(a), "--run", str(b), "--out", str(out), "--no-progress"]) == 2
    assert main(["evaluate", "--run", str(a), "--run", str(a), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    first, twice = captured.err.strip().splitlines()
    assert first == (f"synthaug evaluate: error: evaluate: the runs {a} and {b} are both the regime 4/class on subset seed 0, and one "
                     "report would average them together; to compare them, evaluate each in its own report (one evaluate per "
                     "run, a different --out each; --cache may be shared)")
    assert f"the run {a} is given twice" in twice
    assert captured.out == "" and not out.exists()
    with pytest.raises(UserError, match="both the regime 4/class on subset seed 0"):
        evaluate([a, b], out, show_progress=False)
    assert not out.exists()


def test_runs_with_different_classifier_settings_are_refused(eval_run, tmp_path):
    a, b = eval_run("a", 4), eval_run("b", 8, steps=4, regimes=[{"per_class": 8}])
    with pytest.raises(UserError, match=r"disagree on evaluate\.steps; set them alike"):
        evaluate([a, b], tmp_path / "out", show_progress=False)  # regimes may differ; steps may not


def test_report_carries_the_audit_summary_once_the_set_is_audited(eval_run, tmp_path):
    run, out = eval_run("audited", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1]), tmp_path / "report"
    evaluate([run], out_dir=out, show_progress=False)
    assert "Not audited: run `synthaug audit" in (out / "report.md").read_text()
    audit(run, show_progress=False)
    evaluate([run], out_dir=out, show_progress=False)
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 4/class (subset seed 0) |") and "near-copies" not in line and " / " in line)
    assert row.count(" / ") >= 10  # synthetic / test / val for each of the five fidelity metrics
    assert json.loads((out / "results.json").read_text())["data"]["regimes"][0]["audit"]["stale"] is False


def test_replace_arms_and_synthetic_weight(tiny_recipe, tmp_path):
    evaluate_cfg = {**TINY_EVAL, "seeds": [0, 1], "arms": ["real", "real+synthetic", "real+replace", "real+replace+classic"],
                    "ratios": [1], "replace_p": [0.5, 1.0]}
    run = make_run(tiny_recipe("rep", generate={"steps": 4}, evaluate=evaluate_cfg), models=True)
    noise = generate(run.root, per_class=12, out=run.root / "noise", show_progress=False)
    with pytest.raises(UserError, match="this set has none"):  # replace arms need variations of the real images
        evaluate([run.root], tmp_path / "refused", synthetic_dirs=[noise], show_progress=False)
    generate(run.root, per_real=2, from_real=True, strength=[0.3], show_progress=False)
    results = evaluate([run.root], tmp_path / "out", show_progress=False)
    rows = pd.DataFrame(results["rows"])
    assert set(rows["arm"]) == {"real", "real+synthetic 1x", "real+replace p0.5", "real+replace p1",
                                "real+replace+classic p0.5", "real+replace+classic p1"}
    replace = rows[rows["kind"].str.startswith("real+replace")]
    assert (replace["n_synthetic"] == 48).all() and (replace["n_real_used"] == 24).all()  # 2 variations of each real image
    assert rows.groupby("arm")["key"].nunique().eq(2).all()  # one result per seed, each its own arm
    assert {g["arm"] for g in results["gains"] if g.get("best_baseline")} >= {"real+replace p0.5", "real+replace p1"}
    weighted = pd.DataFrame(evaluate([open_run(run.root, ["evaluate.synthetic_weight=0.5"])], tmp_path / "w", show_progress=False)["rows"])
    same = weighted.set_index(["arm", "seed"])["key"], rows.set_index(["arm", "seed"])["key"]
    assert (same[0].loc["real"] == same[1].loc["real"]).all()  # no synthetic sample: the weight changes nothing
    assert (same[0].loc["real+synthetic 1x"] != same[1].loc["real+synthetic 1x"]).all()  # weighted: another arm


def test_each_arm_val_curve_goes_to_tensorboard(eval_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = eval_run("logged", per_class=6, arms=["real", "real+synthetic"], ratios=[1], seeds=[0], log_with=["tensorboard"])
    evaluate([run], tmp_path / "out", show_progress=False)
    logs = next((tmp_path / "out" / "logs").rglob("events.out.tfevents.*")).parent
    tags = EventAccumulator(str(logs)).Reload().Tags()["scalars"]
    assert {"6/class s0/real/seed 0/val_acc", "6/class s0/real+synthetic 1x/seed 0/val_auc"} <= set(tags)


def test_damaged_state_files(eval_run, tmp_path):
    run = eval_run("damaged", per_class=6, arms=["real"], seeds=[0])
    first = evaluate([run], tmp_path / "out", show_progress=False)
    cached = next((tmp_path / "out" / "cache").glob("*.json"))
    cached.write_text("{")
    with pytest.warns(UserWarning, match="damaged cached arm.*training the arm again"):
        again = evaluate([run], tmp_path / "out", show_progress=False)
    assert again["arms_from_cache"] == 0 and again["rows"][0]["test_acc"] == first["rows"][0]["test_acc"]
    real_and_synthetic = eval_run("damaged-audit", per_class=6, arms=["real", "real+synthetic"], ratios=[1], seeds=[0])
    (real_and_synthetic / "synthetic" / "audit.json").write_text("[")
    with pytest.raises(UserError, match="audit.json: damaged audit.json"):
        evaluate([real_and_synthetic], tmp_path / "out2", show_progress=False)
    assert not (tmp_path / "out2" / "cache").exists()  # found before any arm trained


def pooled_run(tmp_path, name="pooled", **evaluate_cfg):
    """A run whose generator learned from the rest of the training split (12 px folders, 4 labelled per class)."""
    from conftest import EVAL_NAMES, tiny_recipe_dict, write_class_folders

    from synthaug.recipe.recipe import recipe_from_dict

    data = write_class_folders(tmp_path / "images", EVAL_NAMES, n=12, size=12, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": 12, "subset": {"per_class": 4}, "unlabeled": {}}, tmp_path / "runs", name,
                           model={"conditioning": "class_conditional"},
                           evaluate={**TINY_EVAL, "seeds": [0, 1], "arms": ["real", "real+classic", "real+pseudo+classic"], **evaluate_cfg})
    return make_run(recipe_from_dict(raw)).root


def test_the_pseudo_label_arm_self_trains_on_the_pool_and_may_be_the_best_baseline(tmp_path, monkeypatch):
    import synthaug.evaluation.evaluate as evaluate_module

    run, out = pooled_run(tmp_path, pseudo_confidence=[0.0001, 0.9999]), tmp_path / "report"
    trained = []
    real_train = evaluate_module.train_classifier
    monkeypatch.setattr(evaluate_module, "train_classifier", lambda *a, **k: trained.append(k["desc"]) or real_train(*a, **k))
    results = evaluate([run], out, show_progress=False)
    rows = pd.DataFrame(results["rows"]).set_index(["arm", "seed"])
    assert (rows.loc["real+pseudo+classic t0.0001", "n_pseudo"] == 16).all()  # every pool image passes a threshold of ~0
    assert (rows.loc["real+pseudo+classic t0.9999", "n_pseudo"] < 16).all()
    assert (rows.loc["real+pseudo+classic t0.0001", "n_synthetic"] == 0).all()
    # One teacher per seed (the real+classic classifier, retrained identically), shared by both thresholds.
    assert sum("real+classic seed" in d for d in trained) == 2 * 2 and len(list((tmp_path / "report/cache").glob("*.pool-*.npy"))) == 2
    best = results["best_baseline"]["4/class"]
    assert set(best["val"]) == {"real", "real+classic", "real+pseudo+classic t0.0001", "real+pseudo+classic t0.9999"}
    trained.clear()
    evaluate([open_run(run, ["evaluate.pseudo_confidence=[0.5]"])], out, show_progress=False)
    assert trained == ["4/class real+pseudo+classic t0.5 seed 0", "4/class real+pseudo+classic t0.5 seed 1"]  # teachers from the cache


def test_the_leak_guard_covers_the_unlabeled_images_the_generator_saw(tmp_path):
    run = pooled_run(tmp_path)
    with pytest.raises(UserError, match=r"learned from 16 unlabeled image\(s\) \(train split\) that the arms here may not use"):
        evaluate([open_run(run, ["data.unlabeled=null"])], tmp_path / "report", show_progress=False)
    with pytest.raises(UserError, match=r"learned from 12 unlabeled image"):
        evaluate([open_run(run, ["data.unlabeled.count=4"])], tmp_path / "report", show_progress=False)


@pytest.mark.parametrize("classes", [[0, 3], [0, 3, 5], None], ids=["2 of 8", "3 of 8", "all 8"])
def test_class_subsets_of_every_size(tmp_path, classes):
    # Two classes of eight used to crash: the classifier has eight outputs, and sklearn's one-vs-rest AUC refused a binary target.
    from conftest import tiny_recipe_dict, write_class_folders

    from synthaug.recipe.recipe import recipe_from_dict

    names = [f"c{i}" for i in range(8)]
    data = write_class_folders(tmp_path / "images", names, n=6, size=12, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": 12, "classes": classes}, tmp_path / "runs", "k",
                           evaluate={**TINY_EVAL, "seeds": [0], "arms": ["real", "real+classic"]})
    results = evaluate([make_run(recipe_from_dict(raw)).root], tmp_path / "out", show_progress=False)
    chosen = classes or list(range(8))
    assert all(0 <= row["test_auc"] <= 1 and 0 <= row["val_auc"] <= 1 for row in results["rows"])
    for row in results["rows"]:
        assert 0 <= row["val_bacc"] <= 1 and 0 <= row["test_f1"] <= 1
        assert [k for k in row if k.startswith("recall_")] == [f"recall_{c}" for c in chosen]
        assert row["test_bacc"] == pytest.approx(np.mean([row[f"recall_{c}"] for c in chosen]))
        assert row["rare_classes"] == chosen  # 6 real images each, below 60
        assert np.mean(row["test_auc_terms"]) == pytest.approx(row["test_auc"], abs=1e-5)  # the AUC over the classes chosen


def test_long_tail_rebalancing_and_topup_arms(tmp_path, monkeypatch):
    import synthaug.evaluation.evaluate as evaluate_module
    from test_regimes import tail_run

    arms = ["real", "real+classic", "real+balanced", "real+logit_adjusted+classic", "real+reweight_inverse", "real+reweight_effective",
            "real+topup", "real+topup+balanced+classic"]
    run = tail_run(tmp_path, arms=arms, select_on="bacc", rare_below=5)  # a --balance set: no synthetic image of the largest class
    trained, real_train = {}, evaluate_module.train_classifier

    def spy(images, labels, *args, **kwargs):
        trained[kwargs["desc"].split(" ")[-3]] = (np.bincount(labels.cpu().numpy(), minlength=3).tolist(), kwargs)
        return real_train(images, labels, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_classifier", spy)
    out = tmp_path / "report"
    results = evaluate([run], out, show_progress=False)
    assert trained["real+topup"][0] == trained["real+topup+balanced+classic"][0] == [8, 8, 8]  # 8, 4, 1 real + 0, 4, 7 synthetic
    assert trained["real"][0] == [8, 4, 1]
    options = {arm: {k for k in ("balanced", "logit_adjust", "sample_weight") if k in kw} for arm, (_, kw) in trained.items()}
    assert options == {"real": set(), "real+classic": set(), "real+balanced": {"balanced"}, "real+logit_adjusted+classic": {"logit_adjust"},
                       "real+reweight_inverse": {"sample_weight"}, "real+reweight_effective": {"sample_weight"}, "real+topup": set(),
                       "real+topup+balanced+classic": {"balanced"}}
    weights = trained["real+reweight_inverse"][1]["sample_weight"].cpu().numpy()
    assert weights[:8].tolist() == [1 / 8] * 8 and weights[-1] == pytest.approx(1.0)  # the tail's one image weighs 8 head images
    rows = pd.DataFrame(results["rows"]).set_index("arm")
    assert rows.loc["real+topup", "n_synthetic"] == 11 and rows.loc["real+balanced", "n_synthetic"] == 0
    assert {"val_bacc", "test_bacc", "test_f1", "test_rare_recall"} <= set(rows.columns) and rows["test_bacc"].between(0, 1).all()
    assert rows.loc["real", "rare_classes"] == [1, 2]
    assert rows.loc["real", "test_rare_recall"] == pytest.approx((rows.loc["real", "recall_1"] + rows.loc["real", "recall_2"]) / 2)
    best = results["best_baseline"][rows["regime"].iloc[0]]
    assert set(best["val"]) == set(arms[:6]) and best["select_on"] == "bacc"
    assert best["arm"] == max(arms[:6], key=lambda a: rows.loc[a, "val_bacc"])  # chosen on val balanced accuracy
    against = [g for g in results["gains"] if g.get("best_baseline")]
    assert {g["arm"] for g in against} == {"real+topup", "real+topup+balanced+classic"} and all("dbacc" in g for g in against)
    assert "points test BACC" in evaluate_module.result_line(results, out)
    report = (out / "report.md").read_text()
    assert "| BACC | macro-F1 | rare-class recall |" in report and "ΔBACC, points [95 % CI]" in report
    assert "Rare classes of" in report and ": middle, tail" in report
    # the settings of one scheme enter only its arms' keys
    assert evaluate([open_run(run, ["evaluate.logit_tau=2"])], out, show_progress=False)["arms_from_cache"] == len(arms) - 1
    assert evaluate([open_run(run, ["evaluate.effective_beta=0.99"])], out, show_progress=False)["arms_from_cache"] == len(arms) - 1
    again = evaluate([open_run(run, ["evaluate.rare_below=median"])], out, show_progress=False)  # no weight changes: all cached
    assert again["arms_from_cache"] == len(arms) and {tuple(r["rare_classes"]) for r in again["rows"]} == {(2,)}
    assert all(r["test_rare_recall"] == r["recall_2"] for r in again["rows"])


def test_rows_cached_before_the_balanced_scores_get_them_from_their_predictions(eval_run, tmp_path):
    run, out = eval_run("old", 4, seeds=[0], arms=["real"]), tmp_path / "report"
    first = evaluate([run], out, show_progress=False)["rows"][0]
    cached = next((out / "cache").glob("*.json"))
    old = {k: v for k, v in json.loads(cached.read_text()).items()
           if k not in ("val_bacc", "test_bacc", "test_f1", "test_rare_recall", "rare_classes", "rebalance", "test_auc_terms")}
    cached.write_text(json.dumps(old))
    again = evaluate([run], out, show_progress=False)
    row = again["rows"][0]
    assert again["arms_from_cache"] == 1 and np.isnan(row["val_bacc"])  # val was not kept: unknown
    assert "test_auc_terms" not in row and "test_auc_terms" in first  # its AUC gains cover the subsets only (summary.paired_gain)
    assert all(row[k] == first[k] for k in ("test_acc", "test_bacc", "test_f1", "test_rare_recall", "rare_classes"))


def test_replace_probability_per_class(tmp_path, monkeypatch):
    import synthaug.evaluation.evaluate as evaluate_module
    from test_regimes import tail_run

    run = tail_run(tmp_path, synthetic=(8, 8, 8), variations=True, arms=["real", "real+replace"], replace_p=[0.25])
    plain = evaluate([run], tmp_path / "out", show_progress=False)
    seen, real_train = [], evaluate_module.train_classifier
    monkeypatch.setattr(evaluate_module, "train_classifier", lambda *a, **k: seen.append(k["replace"].p) or real_train(*a, **k))
    scaled = evaluate([open_run(run, ["evaluate.replace_p_by_class=inverse"])], tmp_path / "out", show_progress=False)
    assert [r["arm"] for r in scaled["rows"]] == ["real", "real+replace p0.25 inverse"] and scaled["arms_from_cache"] == 1
    assert sorted(set(seen[0].cpu().tolist())) == [0.25, 0.5, 1.0]  # 8, 4 and 1 real images: p x 1, x 2, x 8 clipped
    assert scaled["rows"][1]["key"] != plain["rows"][1]["key"]
    by_class = evaluate([open_run(run, ["evaluate.replace_p_by_class={tail: 2}"])], tmp_path / "out", show_progress=False)
    assert by_class["rows"][1]["arm"] == "real+replace p0.25 by class" and sorted(set(seen[1].cpu().tolist())) == [0.25, 0.5]
    with pytest.raises(UserError, match="evaluate.replace_p_by_class: no class 'nope'"):
        evaluate([open_run(run, ["evaluate.replace_p_by_class={nope: 2}"])], tmp_path / "out", show_progress=False)


def test_soft_topup_arms_distil_the_balanced_real_arm_of_their_seed(tmp_path, monkeypatch):
    import synthaug.evaluation.evaluate as evaluate_module
    from test_regimes import tail_run

    from synthaug.evaluation.regimes import Arm, soft_teacher_arm

    assert soft_teacher_arm(Arm("real+topup+soft+balanced+classic", None)).name == "real+balanced+classic"
    assert Arm("real+topup+soft+balanced+classic", None).stream == "real+topup+balanced+classic"  # the hard arm's batches
    assert soft_teacher_arm(Arm("real+synthetic+soft", 1.0)) is None  # a release's soft labels: its own teacher's
    arms = ["real+balanced", "real+topup", "real+topup+soft"]
    run = tail_run(tmp_path, arms=arms, select_on="bacc", rare_below=5)
    trained, models, real_train = [], [], evaluate_module.train_classifier

    def spy(*args, **kwargs):
        model, info = real_train(*args, **kwargs)
        trained.append(kwargs)
        models.append(model.state_dict())
        return model, info

    monkeypatch.setattr(evaluate_module, "train_classifier", spy)
    rows = {r["arm"]: r for r in evaluate([run], tmp_path / "report", show_progress=False)["rows"]}
    # the teacher is the very real+balanced model of the seed: trained once, kept beside its row
    assert [k["desc"].split(" ")[-3] for k in trained] == arms
    assert (tmp_path / "report" / "cache" / f"{rows['real+balanced']['key']}.model.pt").is_file()
    targets = trained[2]["soft_targets"].cpu().numpy()
    assert targets.shape == (24, 3) and np.allclose(targets.sum(1), 1, atol=1e-5)
    assert (targets[:13] == np.eye(3)[[0] * 8 + [1] * 4 + [2]]).all() and not np.isin(targets[13:], (0, 1)).all()  # real: one-hot
    assert rows["real+topup+soft"]["n_synthetic"] == 11
    # a real teacher trains another model on the very same batches
    assert not all(torch.equal(value, models[2][name]) for name, value in models[1].items())
    # a teacher whose probabilities are the labels asked for: exactly the hard-label top-up arm
    monkeypatch.setattr(evaluate_module, "_soft_labels", lambda regime, *_: np.eye(3, dtype=np.float32)[regime.synthetic.images.labels])
    rows = {r["arm"]: r for r in evaluate([run], tmp_path / "one-hot", show_progress=False)["rows"]}
    hard, soft = rows["real+topup"], rows["real+topup+soft"]
    assert soft["key"] != hard["key"]
    same = ("best_step", "val_bacc", "val_auc", "test_acc", "test_auc", "test_pred")
    assert {k: soft[k] for k in same} == {k: hard[k] for k in same}
    assert all(torch.equal(value, models[-1][name]) for name, value in models[-2].items())  # the same weights, to the bit
    assert [{k: v for k, v in p.items() if k != "loss"} for p in soft["curve"]] == [{k: v for k, v in p.items() if k != "loss"} for p in hard["curve"]]
    # the loss, sum of p x log q over the classes against the label's log q alone: equal to float rounding
    assert [p["loss"] for p in soft["curve"]] == pytest.approx([p["loss"] for p in hard["curve"]], rel=1e-6)


def test_a_topup_on_the_sets_own_soft_labels_trains_on_them_and_one_hot_ones_reproduce_the_hard_arm(tmp_path):
    """real+topup+set-soft: the top-up's synthetic images take the set's soft labels (a translated set's s^gamma /
    1 - s^gamma in metadata.csv), never a teacher's; labels equal to the class asked for give the hard arm exactly."""
    from test_regimes import tail_run

    from synthaug.evaluation.regimes import Arm, soft_teacher_arm
    from synthaug.storage.release import SOFT_PREFIX

    assert soft_teacher_arm(Arm("real+topup+set-soft", None)) is None
    assert Arm("real+topup+set-soft+balanced+classic", None).stream == "real+topup+balanced+classic"
    run = tail_run(tmp_path, arms=["real+topup", "real+topup+set-soft"])
    table = pd.read_csv(run / "synthetic" / "metadata.csv")
    for k in range(3):
        table[f"{SOFT_PREFIX}{k}"] = (table["label"] == k).astype(float)
    table.to_csv(run / "synthetic" / "metadata.csv", index=False)
    rows = {r["arm"]: r for r in evaluate([run], tmp_path / "one-hot", show_progress=False)["rows"]}
    hard, soft = rows["real+topup"], rows["real+topup+set-soft"]
    same = ("best_step", "val_acc", "val_auc", "test_acc", "test_pred")
    assert soft["key"] != hard["key"] and {k: soft[k] for k in same} == {k: hard[k] for k in same}
    for k in range(3):  # labels that say otherwise (half the target, half class 0) train another model
        table[f"{SOFT_PREFIX}{k}"] = 0.5 * (table["label"] == k) + 0.5 * (k == 0)
    table.to_csv(run / "synthetic" / "metadata.csv", index=False)
    moved = {r["arm"]: r for r in evaluate([run], tmp_path / "half", show_progress=False)["rows"]}["real+topup+set-soft"]
    assert moved["key"] != soft["key"] and moved["curve"] != soft["curve"]
