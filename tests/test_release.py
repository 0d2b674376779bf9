"""synthaug.sharing.release (A's side) and synthaug.data.release (B's side): a finished, audited set packed with its
gates, soft labels and no trace of A's machine; refusals in one line; B reads it by class name and checks every file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import BLOB_CLASSIFIER, BLOB_NAMES, BLOB_SIZE, blob_images, make_run, planted_set, tiny_recipe_dict, write_blob_npz, write_synthetic

from synthaug.auditing.audit import audit
from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.data.release import read_release
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.sharing.release import Gates, release

SITE = {"side": "A", "reserve": 0.5, "seed": 0}


@pytest.fixture(scope="module")
def site_a(tmp_path_factory):
    """Site A's run over a blob npz (the train split's half outside B's reserve), an audited set of 8 new blob images
    per class, and the same with planted copies of A's training images (audited too)."""
    root = tmp_path_factory.mktemp("site-a")
    write_blob_npz(root / "data", (40, 20, 60))
    data = {"medmnist": "breastmnist", "root": str(root / "data"), "site": SITE}
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe_from_dict(tiny_recipe_dict(data, root / "runs", "site-a", evaluate=BLOB_CLASSIFIER))).root
    honest = audited_set(root / "honest", run, np.concatenate([blob_images(8, c, seed=123) for c in (0, 1)]), [0] * 8 + [1] * 8)
    planted, labels, _ = planted_set(run)
    copies = audited_set(root / "copies", run, planted, labels)
    return {"root": root, "run": run, "honest": honest, "copies": copies}


def audited_set(folder, run, images, labels):
    """A finished set of `run` (manifest.json naming it), audited."""
    write_synthetic(folder, images, labels, BLOB_NAMES)
    audit(run, folder, show_progress=False)
    write_synthetic(folder, images, labels, BLOB_NAMES, run=run)  # the same metadata.csv, and the manifest of a finished set
    return folder


def test_a_release_holds_the_set_its_audit_and_card_and_nothing_of_the_site(site_a, tmp_path):
    out = release(site_a["honest"], tmp_path / "rel", teacher=True, show_progress=False)
    manifest = json.loads((out / "release.json").read_text())
    assert manifest["counts"] == {BLOB_NAMES[0]: 8, BLOB_NAMES[1]: 8} and manifest["soft_labels"]
    assert manifest["teacher"]["selected_on"] == "val" and manifest["teacher"]["val"]["acc"] is not None
    assert all(g["passed"] for g in manifest["gates"]) and not manifest["gates_overridden"]
    table = pd.read_csv(out / "metadata.csv")
    assert np.allclose(table[["soft_0", "soft_1"]].sum(1), 1, atol=1e-5)
    assert (table[["soft_0", "soft_1"]].to_numpy().argmax(1) == table["label"]).mean() > 0.8  # the teacher knows the blobs
    assert {"README.md", "audit.json", "audit.md", "recipe.yaml"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("audit_*.png")) and not (out / "model").exists()  # the audit's figures show real images
    for path in out.rglob("*"):
        if path.suffix in (".json", ".md", ".yaml", ".csv"):
            text = path.read_text()
            assert str(site_a["root"]) not in text and str(tmp_path) not in text, path.name
    assert "Gates" in (out / "README.md").read_text()
    from synthaug.auditing.audit import read_audit_summary
    assert not read_audit_summary(out)["stale"]  # the audit describes the released images (none dropped)


def test_refusals_are_one_line(site_a, tmp_path, capsys):
    unaudited = tmp_path / "unaudited"
    write_synthetic(unaudited, blob_images(4, 0, seed=5), [0] * 4, BLOB_NAMES, run=site_a["run"])
    with pytest.raises(UserError, match="unaudited; run `synthaug audit"):
        release(unaudited, tmp_path / "r1", show_progress=False)
    unfinished = tmp_path / "unfinished"
    write_synthetic(unfinished, blob_images(4, 0, seed=5), [0] * 4, BLOB_NAMES)  # no manifest: generation never finished
    with pytest.raises(UserError, match="not a finished synthetic set"):
        release(unfinished, tmp_path / "r2", show_progress=False)
    with pytest.raises(UserError, match=r"release gate failed: near-copy rate .* \(real val images' rate"):
        release(site_a["copies"], tmp_path / "r3", show_progress=False)
    assert not (tmp_path / "r3").exists()
    (tmp_path / "taken").mkdir()
    assert main(["release", "--synthetic", str(site_a["honest"]), "--out", str(tmp_path / "taken"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err


def test_an_overridden_gate_is_released_and_said(site_a, tmp_path):
    out = release(site_a["copies"], tmp_path / "rel", gates=Gates(), override=True, show_progress=False)
    manifest = json.loads((out / "release.json").read_text())
    assert manifest["gates_overridden"] and not manifest["gates"][0]["passed"]
    assert "--override-gates" in (out / "README.md").read_text()
    loose = release(site_a["copies"], tmp_path / "loose", gates=Gates(max_copy_rate=0.5), show_progress=False)
    assert json.loads((loose / "release.json").read_text())["gates"][0]["threshold"] == 0.5


def test_the_teacher_filter_drops_what_the_teacher_doubts(site_a, tmp_path):
    images = np.concatenate([blob_images(6, 0, seed=9), blob_images(2, 1, seed=9)])  # two right-blob images labelled class 0
    wrong = audited_set(tmp_path / "wrong", site_a["run"], images, [0] * 8)
    out = release(wrong, tmp_path / "rel", teacher_filter=0.5, show_progress=False)
    manifest = json.loads((out / "release.json").read_text())
    assert manifest["teacher"]["dropped"][BLOB_NAMES[0]] == 2 and manifest["counts"][BLOB_NAMES[0]] == 6


def test_b_reads_a_release_by_class_name_and_refuses_changed_or_missing_files(site_a, tmp_path):
    out = release(site_a["honest"], tmp_path / "rel", teacher=True, show_progress=False)
    reversed_names = [BLOB_NAMES[1], BLOB_NAMES[0], "other"]  # B lists the classes in another order, and one more
    got = read_release(out, reversed_names, [0, 1, 2], BLOB_SIZE, 1)
    assert np.array_equal(np.bincount(got.images.labels), [8, 8])
    table = pd.read_csv(out / "metadata.csv")
    # B's class 0 is A's class 1: its images are the right-blob ones, and the soft labels moved with the names
    assert got.soft_labels.shape == (16, 3) and not got.soft_labels[:, 2].any()
    assert np.allclose(got.soft_labels[got.images.labels == 0, 0], table.loc[table["label"] == 1, "soft_1"].to_numpy(), atol=1e-6)
    with pytest.raises(UserError, match=r"has class 'malignant', which this data does not name"):
        read_release(out, ["benign", "normal"], [0, 1], BLOB_SIZE, 1)
    with pytest.raises(UserError, match=rf"^\S+\.png: {BLOB_SIZE}x{BLOB_SIZE} pixels, expected {2 * BLOB_SIZE}x{2 * BLOB_SIZE} like this data's"):
        read_release(out, BLOB_NAMES, [0, 1], 2 * BLOB_SIZE, 1)  # B's data at another size: one line, never a stack trace
    with pytest.raises(UserError, match=r"image mode L, expected RGB, 3 channels like this data's images \(use a release made at"):
        read_release(out, BLOB_NAMES, [0, 1], BLOB_SIZE, 3)
    first = out / table["file_name"].iloc[0]
    first.write_bytes(first.read_bytes() + b"x")
    with pytest.raises(UserError, match="SHA-256 differs"):
        read_release(out, BLOB_NAMES, [0, 1], BLOB_SIZE, 1)
    first.unlink()
    with pytest.raises(UserError, match="listed in release.json but missing"):
        read_release(out, BLOB_NAMES, [0, 1], BLOB_SIZE, 1)
    with pytest.raises(UserError, match="not a folder made by `synthaug release`"):
        read_release(site_a["honest"], BLOB_NAMES, [0, 1], BLOB_SIZE, 1)


def test_site_b_evaluates_a_release_with_pretraining_soft_labels_and_the_references(site_a, tmp_path):
    from synthaug.evaluation.regimes import Arm, arm_data, load_regime
    from synthaug.storage.rundir import open_run
    from synthaug.study.experiment import experiment

    rel = release(site_a["honest"], tmp_path / "rel", teacher=True, show_progress=False)
    data = {"medmnist": "breastmnist", "root": str(site_a["root"] / "data"), "site": {**SITE, "side": "B"}}
    arms = ["real", "real+synthetic+soft", "pretrain", "pretrain+soft", "model-sharing", "real+site-a"]
    evaluate = {"classifier": "small_cnn", "width": 4, "steps": 6, "batch_size": 8, "eval_every": 3, "seeds": [0], "ratios": [1],
                "arms": arms, "release": str(rel), "pretrain_steps": 4, "finetune_lr": 5e-4,
                "regimes": [{"per_class": 5, "seed": 0}, {"per_class": 5, "seed": 1}]}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "site-b", evaluate=evaluate))
    with pytest.warns(UserWarning, match="MD5"):
        results = experiment(recipe, tmp_path / "report", show_progress=False)
    rows = pd.DataFrame(results["rows"])
    assert sorted(rows["arm"].unique()) == sorted(a + (" 1x" if a == "real+synthetic+soft" else "") for a in arms) and len(rows) == 12
    assert (rows.loc[rows["arm"].str.startswith("pretrain"), "n_synthetic"] == 16).all()
    assert (rows.loc[rows["arm"] == "real+site-a", "steps"] == 4 + 6).all()  # the ceiling trains as long as model sharing's two stages
    assert not any((tmp_path / "runs").rglob("models"))  # a release: no generator fitted at B
    # the first stages (pretrain, pretrain+soft, A's classifier) do not depend on B's subset: trained once, shared
    assert len(list((tmp_path / "report" / "cache").glob("*.first-stage.pt"))) == 3
    best = results["best_baseline"]["5/class"]["arm"]
    assert best == "real"  # neither reference arm may be chosen as the best arm without synthetic data
    from synthaug.evaluation.report import best_synthetic
    assert best_synthetic(results, "5/class")["arm"] in ("real+synthetic+soft 1x", "pretrain", "pretrain+soft")
    # the raw-sharing ceiling: B's 10 images and A's 40, which never overlap B's reserve
    regime = load_regime(open_run(tmp_path / "runs" / "site-b-5pc-s0"), need_synthetic=False, show_progress=False)
    ceiling = arm_data(regime, Arm("real+site-a", None))
    assert len(ceiling) == 50 and not set(regime.other_site_indices) & set(regime.train_indices)


def test_reference_arms_need_a_site_b_recipe(site_a, tmp_path):
    from synthaug.study.experiment import experiment

    data = {"medmnist": "breastmnist", "root": str(site_a["root"] / "data"), "subset": {"per_class": 5}}
    evaluate = {"classifier": "small_cnn", "width": 4, "steps": 2, "batch_size": 8, "seeds": [0], "arms": ["real", "model-sharing"]}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "no-site", evaluate=evaluate))
    with pytest.warns(UserWarning, match="MD5"), pytest.raises(UserError, match="model-sharing uses site A's real images.*data.site with side B"):
        experiment(recipe, tmp_path / "report", show_progress=False)


def test_every_membership_attack_of_the_audit_is_a_gate_but_not_its_real_image_baseline():
    from synthaug.sharing.release import gate_results

    copies = {"flagged": 1, "n_synthetic": 100, "flagged_fraction": 0.01, "real_val_over_threshold": 0.01}
    attack = lambda auc: {"auc": auc, "auc_interval": [auc - 0.02, auc + 0.02], "coin": {"auc_interval": [0.47, 0.53]}}  # noqa: E731
    report = {"memorization": {"overall": copies},
              "membership": {"model": {"loss t=200": attack(0.51), "calibrated t=200": attack(0.62)},
                             "released": {"images": 100, "pixels": attack(0.50)}, "baseline": {"pixels": attack(0.9)}}}
    gates = {g["gate"]: g["passed"] for g in gate_results(report, Gates())}
    assert gates == {"near-copy rate": True, "membership inference AUC (model / loss t=200)": True,
                     "membership inference AUC (model / calibrated t=200)": False, "membership inference AUC (released / pixels)": True}
    assert all(g["passed"] for g in gate_results(report, Gates(max_membership_auc=0.65)))
