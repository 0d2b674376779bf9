"""The evaluate harness on tiny fixtures: 12 px class folders, a run directory as `fit` writes it, and
a synthetic set in `synthaug generate`'s layout, with a 4-channel SmallCNN trained for a few steps."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_images, tiny_recipe_dict, write_class_folders
from PIL import Image

from synthaug.cli import main
from synthaug.errors import UserError
from synthaug.classifier import classic_augment, train_classifier
from synthaug.evaluate import evaluate
from synthaug.experiment import experiment
from synthaug.recipe import ClassicAugConfig, EvaluateConfig, recipe_from_dict
from synthaug.regimes import expand_arms, load_regime
from synthaug.rundir import RunDir, open_run, safe_name
from synthaug.stats import paired_bootstrap_ci
from synthaug.train import prepare_run

NAMES = ["benign", "malignant"]
TINY_EVAL = {
    "classifier": "small_cnn", "width": 4, "steps": 6, "batch_size": 8, "eval_every": 3,
    "seeds": [0, 1, 2], "ratios": [1, 2], "bootstrap": 200,
}


def write_synthetic(folder, per_class: int, size: int = 12) -> None:
    """A synthetic set in `synthaug generate`'s layout: <class>/<idx>_<i>.png + metadata.csv."""
    images, labels = make_images(per_class, len(NAMES), size, 1, seed=7)
    rows = []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"{safe_name(NAMES[label])}/{label}_{i:06d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(folder / name)
        rows.append({"file_name": name, "label": int(label), "class_name": NAMES[label], "seed": 0})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)


@pytest.fixture
def make_run(tmp_path):
    """A run directory as `fit` leaves it (recipe.yaml, classes.json) with a synthetic set, without training."""
    data = write_class_folders(tmp_path / "images", NAMES, n=12, size=12, channels=1, splits=True)

    def make(name: str, per_class: int, synthetic: int = 16, **evaluate):
        raw = tiny_recipe_dict({"folder": str(data), "size": 12, "subset": {"per_class": per_class}}, tmp_path / "runs", name,
                               evaluate={**TINY_EVAL, **evaluate})
        run, _, _ = prepare_run(recipe_from_dict(raw), is_main=True)
        if synthetic:
            write_synthetic(run.synthetic, synthetic)
        return run.root

    return make


def test_end_to_end_arms_regimes_seeds_and_files(make_run, tmp_path):
    small, large = make_run("tiny-4pc", 4), make_run("tiny-8pc", 8)
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
    gains = pd.DataFrame(results["gains"])
    assert set(gains["vs"]) == {"real", "real+classic"} and (gains["pairs"] == 3).all()
    for regime, chosen in results["best_baseline"].items():  # the best baseline is picked on val, and gains are measured against it
        assert chosen["arm"] == max(("real", "real+classic"), key=lambda b: table[(table.regime == regime) & (table.arm == b)]["val_auc"].mean())
        against = gains[(gains["regime"] == regime) & gains["best_baseline"].fillna(False).astype(bool)]
        assert set(against["vs"]) == {chosen["arm"]} and len(against) == len(arms) - 2
        assert 0 < chosen["cas"]["lo"] <= chosen["cas"]["ratio"] <= chosen["cas"]["hi"]
    for name in ("report.md", "results.json", "accuracy_vs_size.png", "samples_tiny-4pc.png", "samples_tiny-8pc.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Gain over the best arm without synthetic data (chosen on val)" in report and "CAS ratio" in report
    assert "synthaug evaluate ..." in report and "real+synthetic+classic 2x" in report and "6 steps for every arm" in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["regimes"][1]["real_per_class"] == [8, 8] and saved["data"]["test"] == 24


def test_cache_skips_finished_arms_and_force_redoes_them(make_run, tmp_path):
    run, out = make_run("tiny", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1]), tmp_path / "report"
    first = evaluate([run], out, show_progress=False)
    again = evaluate([run], out, show_progress=False)
    assert first["arms_from_cache"] == 0 and again["arms_from_cache"] == 2
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in first["rows"]]
    assert evaluate([run], out, force=True, show_progress=False)["arms_from_cache"] == 0
    changed = evaluate([open_run(run, ["evaluate.steps=4"])], out, show_progress=False)
    assert changed["arms_from_cache"] == 0 and {r["steps"] for r in changed["rows"]} == {4}


def test_reports_can_share_one_cache(make_run, tmp_path):
    run = make_run("tiny", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1])
    cache = tmp_path / "shared-cache"
    first = evaluate([run], tmp_path / "a", show_progress=False, cache_dir=cache)
    second = evaluate([run], tmp_path / "b", show_progress=False, cache_dir=cache)
    assert first["arms_from_cache"] == 0 and second["arms_from_cache"] == 2 and not (tmp_path / "b" / "cache").exists()
    assert [r["test_acc"] for r in second["rows"]] == [r["test_acc"] for r in first["rows"]]


def test_best_baseline_is_chosen_on_val_never_on_test():
    from synthaug.evaluate import summarise

    def row(arm, seed, val, test, kind=None):
        return {"regime": "4/class", "arm": arm, "kind": kind or arm, "subset_seed": 0, "seed": seed, "n_real_used": 8,
                "n_synthetic": 0, "steps": 6, "val_acc": val, "val_auc": val, "test_acc": test, "test_auc": test}

    rows = [row("real", s, 0.60, 0.90) for s in (0, 1)] + [row("real+classic", s, 0.70, 0.50) for s in (0, 1)]
    rows += [row("real+synthetic 1x", 0, 0.8, 0.62), row("real+synthetic 1x", 1, 0.8, 0.58), row("synthetic", 0, 0.5, 0.45), row("synthetic", 1, 0.5, 0.45)]
    results = summarise(rows, EvaluateConfig(**{**TINY_EVAL, "select_on": "acc"}))
    chosen = results["best_baseline"]["4/class"]
    assert chosen["arm"] == "real+classic" and chosen["val"] == {"real": 0.60, "real+classic": 0.70}  # real tests better, but val decides
    gain = next(g for g in results["gains"] if g.get("best_baseline") and g["arm"] == "real+synthetic 1x")
    assert gain["vs"] == "real+classic" and gain["dacc"] == pytest.approx(0.10)
    assert chosen["cas"]["ratio"] == pytest.approx(0.5) and chosen["cas"]["pairs"] == 2


def test_same_seed_same_numbers_other_seed_other_weights():
    images, labels = make_images(10, 2, 12, 1, seed=3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(labels.astype(np.int64))
    cfg = EvaluateConfig(**TINY_EVAL)

    def weights(seed, augment=None):
        model, info = train_classifier(x, y, x, y, cfg, seed, augment=augment, show_progress=False)
        return torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()]), info

    a, info_a = weights(0, ClassicAugConfig())
    b, info_b = weights(0, ClassicAugConfig())
    assert torch.equal(a, b) and info_a.curve == info_b.curve and info_a.best_step in (3, 6)
    assert not torch.equal(a, weights(1, ClassicAugConfig())[0])


def test_leak_guard_refuses_real_arms_that_saw_less_than_the_generator(make_run, tmp_path):
    run = make_run("tiny", 8)
    with pytest.raises(UserError, match="would not see"):
        evaluate([open_run(run, ["data.subset.per_class=4"])], tmp_path / "out", show_progress=False)
    # A superset is fine: the 8-per-class subset contains the 4-per-class one (same subset seed).
    small = make_run("tiny-small", 4)
    regime = load_regime(open_run(small, ["data.subset.per_class=8"]))
    assert regime.train.counts() == [8, 8]
    # A synthetic set sampled from another run's generator: refused.
    (RunDir(small).synthetic / "manifest.json").write_text(json.dumps({"run": str(run), "complete": True}))
    with pytest.raises(UserError, match="was generated from the run"):
        load_regime(open_run(small))
    # Another subset seed draws other images: refused.
    with pytest.raises(UserError, match="would not see"):
        load_regime(open_run(small, ["data.subset.seed=5"]))


def test_too_few_synthetic_images_is_one_clear_error(make_run, tmp_path):
    run = make_run("tiny", 8, synthetic=6)
    with pytest.raises(UserError, match=r"need 16 synthetic images of class 0 \(benign\), found 6.*--ratio 2 \(or --per-class 16\)"):
        evaluate([run], tmp_path / "out", show_progress=False)


def test_cli_exit_codes(make_run, tmp_path, capsys):
    run = make_run("tiny", 4)
    out = tmp_path / "cli"
    assert main(["evaluate", str(run), "--out", str(out), "--no-progress", "--set", "evaluate.seeds=[0]",
                 "--set", "evaluate.arms=[real]"]) == 0
    assert "--set 'evaluate.seeds=[0]'" in (out / "report.md").read_text()
    assert "Only 1 (subset, seed) pair(s) in a regime" in (out / "report.md").read_text()
    assert main(["evaluate", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert main(["evaluate", str(run), "--set", "evaluate.ratios=[0]", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("synthaug evaluate: error:") and "evaluate.ratios" in err[-1]


def test_paired_bootstrap_ci_known_cases():
    assert paired_bootstrap_ci([0.02, 0.02, 0.02]) == pytest.approx((0.02, 0.02, 0.02))
    mean, lo, hi = paired_bootstrap_ci([0.0, 0.0, 0.1])
    assert mean == pytest.approx(0.1 / 3) and lo == 0.0 and hi == pytest.approx(0.1)  # includes 0
    # Against the exact bootstrap distribution (all 4^4 resamples equally likely).
    diffs = np.array([0.01, 0.03, 0.04, 0.08])
    exact = np.array([diffs[list(c)].mean() for c in itertools.product(range(4), repeat=4)])
    mean, lo, hi = paired_bootstrap_ci(diffs, n_boot=200_000)
    assert mean == pytest.approx(0.04)
    assert lo == pytest.approx(np.percentile(exact, 2.5), abs=0.003) and hi == pytest.approx(np.percentile(exact, 97.5), abs=0.003)
    assert lo > 0  # all differences positive: the CI excludes 0


def test_classic_augment_is_seeded_and_stays_in_range():
    x = torch.rand(5, 1, 12, 12) * 2 - 1
    cfg = ClassicAugConfig(vflip=True)
    a = classic_augment(x, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(a, classic_augment(x, cfg, torch.Generator().manual_seed(0)))
    none = ClassicAugConfig(hflip=False, rotate_deg=0, shift=0, brightness=0, contrast=0)
    assert torch.equal(classic_augment(x, none, torch.Generator()), x)


def test_arms_expand_per_ratio():
    names = [a.name for a in expand_arms(EvaluateConfig(ratios=[1, 5]))]
    assert names == ["real", "real+classic", "real+synthetic 1x", "real+synthetic 5x", "real+synthetic+classic 1x",
                     "real+synthetic+classic 5x", "synthetic"]


def test_experiment_fits_generates_and_evaluates_every_regime(tmp_path, breast_root):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", "exp",
                           model={"conditioning": "class_conditional"}, train={"steps": 2},
                           generate={"steps": 2, "sampler": "ddim"},
                           evaluate={**TINY_EVAL, "seeds": [0], "ratios": [1],
                                     "regimes": [{"per_class": 4}, {"fraction": 1.0}]})
    results = experiment(recipe_from_dict(raw), tmp_path / "report", show_progress=False)
    assert [r["run"] for r in results["data"]["regimes"]] == [str(tmp_path / "runs" / "exp-4pc-s0"), str(tmp_path / "runs" / "exp-full")]
    table = pd.read_csv(tmp_path / "report" / "results.csv")
    assert set(table["regime"]) == {"4/class", "100%"} and len(table) == 2 * 5
    # Each regime's generator saw only its own subset; the synthetic set holds what the largest ratio needs.
    assert json.loads((tmp_path / "runs" / "exp-4pc-s0" / "classes.json").read_text())["counts"] == {"0": 4, "1": 4}
    assert len(pd.read_csv(tmp_path / "runs" / "exp-full" / "synthetic" / "metadata.csv")) == 2 * 12


def test_runs_with_different_classifier_settings_are_refused(make_run, tmp_path):
    a, b = make_run("a", 4), make_run("b", 8, steps=4, regimes=[{"per_class": 8}])
    with pytest.raises(UserError, match=r"disagree on evaluate\.steps; set them alike"):
        evaluate([a, b], tmp_path / "out", show_progress=False)  # regimes may differ; steps may not


def test_report_carries_the_audit_summary_once_the_set_is_audited(make_run, tmp_path):
    from synthaug.audit import audit

    run, out = make_run("audited", 4, seeds=[0], arms=["real", "real+synthetic"], ratios=[1]), tmp_path / "report"
    evaluate([run], out_dir=out, show_progress=False)
    assert "Not audited: run `synthaug audit" in (out / "report.md").read_text()
    audit(run, show_progress=False)
    evaluate([run], out_dir=out, show_progress=False)
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 4/class (subset seed 0) |") and "near-copies" not in line and " / " in line)
    assert row.count(" / ") >= 10  # synthetic / test / val for each of the five fidelity metrics
    assert json.loads((out / "results.json").read_text())["data"]["regimes"][0]["audit"]["stale"] is False
