"""synthaug.audit: planted copies caught and named, fidelity figures, the cached feature classifier, one-line errors.

The blob run (`blob_run` in conftest) is shared with test_filters.py: its feature classifier is trained once.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import BLOB_CLASSIFIER, BLOB_NAMES, BLOB_SIZE, blob_images, make_images, make_run, planted_set, run_train_images, \
    tiny_recipe_dict, write_medmnist_npz, write_synthetic
from PIL import Image

from synthaug.auditing.audit import audit, read_audit_summary
from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.reference.filters import confidence_filter, copy_filter
from synthaug.storage.rundir import open_run


def test_audit_flags_planted_copies_only_and_names_them(blob_run, tmp_path, monkeypatch):
    images, labels, kinds = planted_set(blob_run)
    folder = tmp_path / "synthetic"
    files = write_synthetic(folder, images, labels, BLOB_NAMES)
    report = audit(blob_run, folder, show_progress=False)

    flagged = {f["file"] for f in report["memorization"]["flagged"]}
    assert flagged == {f for f, kind in zip(files, kinds) if kind in ("exact", "noised", "mirrored")}
    mirrored = {f["file"]: f["mirrored"] for f in report["memorization"]["flagged"]}
    assert [mirrored[f] for f, kind in zip(files, kinds) if kind == "mirrored"] == [True, True]
    assert report["memorization"]["per_class"]["malignant"]["flagged"] == 3
    assert report["memorization"]["per_class"]["malignant"]["flagged_fraction"] == pytest.approx(3 / 11)
    on_disk = json.loads((folder / "audit.json").read_text())
    assert {f["file"] for f in on_disk["memorization"]["flagged"]} == flagged
    markdown = (folder / "audit.md").read_text()
    assert all(f"`{name}`" in markdown for name in flagged)
    for figure in ("audit_closest_pairs.png", "audit_similarity.png"):
        assert Image.open(folder / figure).size[0] > 100
    overall = report["fidelity"]["overall"]
    assert overall["n"] == 22 and overall["fd_synthetic"] > 0 and overall["fd_test"] > 0 and overall["fd_val"] > 0
    assert 0 <= overall["precision_test"] <= 1 and 0 <= overall["coverage_synthetic"] <= 1

    # The classifier and the real features are cached per run: a second audit does not train again.
    assert (blob_run / "audit" / "features.pt").is_file()
    monkeypatch.setattr("synthaug.reference.realdata.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = audit(blob_run, folder, show_progress=False)
    assert again["fidelity"] == report["fidelity"] and again["memorization"] == report["memorization"]

    summary = read_audit_summary(folder)
    assert summary["flagged"] == 6 and summary["fd_synthetic"] == overall["fd_synthetic"] and not summary["stale"]
    write_synthetic(folder, images[:3], labels[:3], BLOB_NAMES)  # the set changed after the audit
    assert read_audit_summary(folder)["stale"]


def test_audit_with_other_k_and_quantile(blob_run, tmp_path):
    images, labels, _ = planted_set(blob_run)
    write_synthetic(tmp_path / "s", images, labels, BLOB_NAMES)
    argv = ["audit", "--run", str(blob_run), "--synthetic", str(tmp_path / "s"), "--set", "audit.k=2", "--set", "audit.copy_quantile=0.5"]
    assert main([*argv, "--no-progress"]) == 0
    loose = json.loads((tmp_path / "s" / "audit.json").read_text())
    assert loose["command"].startswith(f"synthaug audit --run {blob_run}") and "--set audit.k=2 --set audit.copy_quantile=0.5" in loose["command"]
    assert loose["command"] in (tmp_path / "s" / "audit.md").read_text()
    assert loose["settings"]["k"] == 2
    # At the median of the real images' similarity, about half the new images are over it too.
    assert loose["memorization"]["overall"]["flagged"] > 6
    # The threshold is calibrated on real val (half its images are over its median); test, out of sample, is near that.
    assert loose["memorization"]["overall"]["real_val_over_threshold"] == pytest.approx(0.5, abs=0.03)
    assert loose["memorization"]["overall"]["real_test_over_threshold"] == pytest.approx(0.5, abs=0.15)


def test_per_class_copy_rate_and_label_fidelity_show_the_class_that_fails(blob_run, tmp_path):
    """malignant's synthetic images are half copies of its training images; the 'normal, benign' images look like
    malignant ones. The per-class tables of audit.json and audit.md name each failure in its own class."""
    train, train_labels = run_train_images(blob_run)
    copies = train[train_labels == 0][:4]
    images = np.concatenate([copies, blob_images(4, 0, seed=99), blob_images(8, 0, seed=98)])
    labels = [0] * 8 + [1] * 8
    folder = tmp_path / "mislabelled"
    write_synthetic(folder, images, labels, BLOB_NAMES)
    report = audit(blob_run, folder, show_progress=False)

    copy_rate = report["memorization"]["per_class"]
    assert copy_rate["malignant"]["flagged_fraction"] == 0.5 and copy_rate["malignant"]["train_images"] == 30
    assert copy_rate["normal, benign"]["flagged_fraction"] < 0.5
    assert {row["real_val_over_threshold"] for row in copy_rate.values()} <= {0.05}  # val calibrated it: 1 in 20 over at 0.99
    fidelity = report["label_fidelity"]
    judge = fidelity["judge"]
    assert judge["selected_on"] == "val" and judge["train_images"] == 60 and judge["val_acc"] > 0.9
    malignant, benign = fidelity["per_class"]["malignant"], fidelity["per_class"]["normal, benign"]
    assert malignant["own_class_fraction"] == 1 and malignant["assigned_to"] == {"malignant": 8, "normal, benign": 0}
    assert benign["own_class_fraction"] <= 1 / 8 and benign["assigned_to"]["malignant"] >= 7
    assert benign["real_val_own_class_fraction"] > 0.9 and benign["real_test_own_class_fraction"] > 0.9  # the judge knows real ones
    assert fidelity["overall"]["n_synthetic"] == 16
    on_disk = json.loads((folder / "audit.json").read_text())
    assert on_disk["label_fidelity"] == fidelity and on_disk["memorization"]["per_class"] == copy_rate
    markdown = (folder / "audit.md").read_text()
    assert "## Per class: copy rate and label fidelity" in markdown
    assert "| malignant | 30 | 8 | 4 (50.00 %) |" in markdown
    assert f"| normal, benign | 8 | {benign['own_class']} ({100 * benign['own_class_fraction']:.2f} %) |" in markdown
    assert "selected on real val" in markdown and f"real val accuracy is {judge['val_acc']:.3f}" in markdown
    summary = read_audit_summary(folder)
    assert summary["label_fidelity"] == fidelity["overall"]["own_class_fraction"]
    assert summary["label_fidelity_real_val"] == fidelity["overall"]["real_val_own_class_fraction"]
    assert summary["label_fidelity_lowest"] == {"class": "normal, benign", "synthetic": benign["own_class_fraction"],
                                                "real_val": benign["real_val_own_class_fraction"]}


def test_a_run_of_some_classes_of_a_dataset_audits_and_filters(tmp_path):
    """data.classes: [0, 3] of an 8-class set: the feature classifier has one output per class of the run (a binary
    problem, whose val metrics the harness computes), and the audit and both filters speak in the run's labels."""
    write_medmnist_npz(tmp_path / "data", "bloodmnist", classes=8, channels=3, per_class=(12, 8, 8))
    data = {"medmnist": "bloodmnist", "root": str(tmp_path / "data"), "classes": [0, 3]}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "two", evaluate=BLOB_CLASSIFIER))
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe).root
    names = json.loads((run / "classes.json").read_text())["class_names"]
    assert len(names) == 8
    images, labels = make_images(6, 8, 28, 3, seed=9)
    mine = np.isin(labels, [0, 3])
    folder = tmp_path / "synthetic"
    write_synthetic(folder, images[mine], labels[mine], names)
    with pytest.warns(UserWarning, match="MD5"):
        report = audit(run, folder, show_progress=False)
    assert report["settings"]["feature_classifier_training"]["val"]["acc"] > 0.9
    assert list(report["label_fidelity"]["per_class"]) == [names[0], names[3]]
    assert all(row["own_class_fraction"] == 1 for row in report["label_fidelity"]["per_class"].values())
    assert list(report["memorization"]["per_class"]) == [names[0], names[3]]
    with pytest.warns(UserWarning, match="MD5"):
        keep = confidence_filter(open_run(run), 0.5, show_progress=False)
    assert keep.describe()["classes"] == [0, 3]
    assert keep(images[labels == 3], 3).all() and not keep(images[labels == 3], 0).any()
    with pytest.raises(ValueError, match="not a class of the run"):
        keep(images[labels == 1], 1)
    with pytest.warns(UserWarning, match="MD5"):
        assert set(copy_filter(open_run(run)).thresholds) == {0, 3}


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2


def _cli_error(capsys, *argv) -> str:
    assert main(["audit", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err  # may also hold the fixture's "MD5 differs" warning
    errors = [line for line in err.splitlines() if line.startswith("synthaug audit: error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_bad_inputs_are_one_line_errors(blob_run, tmp_path, capsys):
    assert "no such directory" in _cli_error(capsys, "--run", str(tmp_path / "nowhere"))
    (tmp_path / "not-a-run").mkdir()
    assert "not a synthaug run" in _cli_error(capsys, "--run", str(tmp_path / "not-a-run"))
    assert "no such directory" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(tmp_path / "missing"))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "metadata.csv: not found" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(empty))
    write_synthetic(empty, np.zeros((0, BLOB_SIZE, BLOB_SIZE, 1), np.uint8), [], BLOB_NAMES)
    assert "no synthetic images" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(empty))

    big = tmp_path / "big"
    write_synthetic(big, np.zeros((2, 32, 32, 1), np.uint8), [0, 1], BLOB_NAMES)
    assert "32x32 pixels, expected 28x28" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(big))
    rgb = tmp_path / "rgb"
    write_synthetic(rgb, np.zeros((2, BLOB_SIZE, BLOB_SIZE, 3), np.uint8), [0, 1], BLOB_NAMES)
    assert "mode RGB, expected grayscale" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(rgb))
    foreign = tmp_path / "foreign"
    (foreign / "other").mkdir(parents=True)
    Image.fromarray(np.zeros((BLOB_SIZE, BLOB_SIZE), np.uint8)).save(foreign / "other" / "5_000000.png")
    pd.DataFrame({"file_name": ["other/5_000000.png"], "label": [5], "class_name": ["other"]}).to_csv(foreign / "metadata.csv", index=False)
    assert "label(s) [5] are not classes of the run" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(foreign))
    assert "audit.copy_quantile: " in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(big), "--set", "audit.copy_quantile=1.5")
    assert "may only change audit.*" in _cli_error(capsys, "--run", str(blob_run), "--set", "data.size=64")
    with pytest.raises(UserError, match="audit.k: "):
        open_run(blob_run, ["audit.k=0"])
    assert "not a torch device" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(big), "--device", "gpu0")
    elsewhere = tmp_path / "elsewhere"
    write_synthetic(elsewhere, np.zeros((2, BLOB_SIZE, BLOB_SIZE, 1), np.uint8), [0, 1], BLOB_NAMES, run=tmp_path / "another-run")
    assert "was generated from the run" in _cli_error(capsys, "--run", str(blob_run), "--synthetic", str(elsewhere))


def test_variations_are_checked_against_the_other_training_images(blob_run, tmp_path):
    """A variation may resemble its own source (intended, reported apart); resembling another training image is a copy."""
    train, train_labels = run_train_images(blob_run)
    indices = json.loads((blob_run / "classes.json").read_text())["train_indices"]
    rng = np.random.default_rng(3)
    images, labels, sources, kinds = [], [], [], []
    for c in (0, 1):
        rows = np.flatnonzero(train_labels == c)
        for j in rows[:4]:  # lightly noised versions of their own source: close to it by design
            images.append(np.clip(train[j].astype(float) + rng.normal(0, 6, train[j].shape), 0, 255).astype(np.uint8))
            labels.append(c), sources.append(indices[j]), kinds.append("own source")
        images.append(train[rows[5]]), labels.append(c), sources.append(indices[rows[6]]), kinds.append("copies another")
    folder = tmp_path / "variations"
    files = write_synthetic(folder, np.stack(images), labels, BLOB_NAMES)
    table = pd.read_csv(folder / "metadata.csv")
    table["source_index"] = sources
    table.to_csv(folder / "metadata.csv", index=False)

    report = audit(blob_run, folder, show_progress=False)
    flagged = {f["file"] for f in report["memorization"]["flagged"]}
    assert flagged == {f for f, kind in zip(files, kinds) if kind == "copies another"}
    closeness = report["memorization"]["variations"]
    assert closeness["overall"]["n"] == 10 and closeness["overall"]["median_source_correlation"] > 0.95
    markdown = (folder / "audit.md").read_text()
    assert "## Variations of real images" in markdown and "not anonymous data" in markdown


def test_copies_of_unlabeled_pool_images_are_flagged_apart(tmp_path):
    from conftest import BLOB_CLASSIFIER, blob_images, make_run, tiny_recipe_dict, write_blob_npz

    from synthaug.recipe.recipe import recipe_from_dict

    write_blob_npz(tmp_path / "data", (40, 20, 60))
    data = {"medmnist": "breastmnist", "root": str(tmp_path / "data"), "subset": {"per_class": 20, "seed": 0}, "unlabeled": {}}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "pooled", model={"conditioning": "class_conditional"},
                                               evaluate=BLOB_CLASSIFIER))
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe).root
    pool_indices = json.loads((run / "classes.json").read_text())["unlabeled"]["indices"]
    with np.load(tmp_path / "data" / "breastmnist.npz") as npz:
        train, train_labels = npz["train_images"][..., None], npz["train_labels"][:, 0].astype(int)
    copied = [i for i in pool_indices if train_labels[i] == 0][:2] + [i for i in pool_indices if train_labels[i] == 1][:1]
    images = np.concatenate([train[copied], blob_images(6, 0, seed=99), blob_images(6, 1, seed=99)])
    labels = [int(train_labels[i]) for i in copied] + [0] * 6 + [1] * 6
    folder = tmp_path / "synthetic"
    write_synthetic(folder, images, labels, BLOB_NAMES)
    report = audit(run, folder, show_progress=False)
    pool = report["memorization"]["pool"]
    assert pool["pool_images"] == 40 and pool["flagged"] == 3
    assert report["memorization"]["overall"]["flagged"] == 0  # not copies of the labelled images
    assert "## Copies of unlabeled pool images" in (folder / "audit.md").read_text()


def test_the_similarity_figure_draws_a_class_without_synthetic_images_without_a_warning():
    """A top-up set leaves its largest classes out; their panels say so instead of dividing an empty density by zero."""
    import warnings
    from types import SimpleNamespace

    from synthaug.auditing.plots import similarity_png

    rng = np.random.default_rng(0)
    data = SimpleNamespace(classes=[0, 1], class_names=["rare", "head"], test=SimpleNamespace(labels=np.array([0, 0, 1, 1] * 5)))
    synthetic = SimpleNamespace(labels=np.zeros(12, dtype=int))  # class 1 ("head") has none
    nearest = {"synthetic": SimpleNamespace(correlation=rng.uniform(0.5, 0.9, 12)), "test": SimpleNamespace(correlation=rng.uniform(0.5, 0.9, 20))}
    feature_nn = {"synthetic": rng.uniform(0, 1, 12), "test": rng.uniform(0, 1, 20)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = similarity_png(data, synthetic, nearest, feature_nn, {0: 0.8, 1: 0.8})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
