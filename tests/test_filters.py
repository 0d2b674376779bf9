"""synthaug.filters: the near-copy filter and the classifier-confidence filter, alone and through
`synthaug generate --reject-copies / --filter-confidence`.

The blob run (`blob_run` in conftest) is shared with test_audit.py: its feature classifier is trained once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    BLOB_CLASSIFIER,
    blob_images,
    make_run,
    planted_set,
    tiny_recipe_dict,
    write_blob_npz,
)
from PIL import Image

from synthaug.classifier.harness import weights_sha256
from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.data.images import ImageSet
from synthaug.reference.filters import confidence_filter, copy_filter, copy_thresholds, filter_record
from synthaug.reference.metrics import nearest_by_correlation
from synthaug.reference.realdata import load_run_data
from synthaug.generation.generate import generate
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.storage.rundir import RunDir, open_run


def untrained_blob_run(tmp_path: Path, name: str, **sections) -> tuple[RunDir, dict[str, np.ndarray], Path]:
    """A run over a blob npz (train 10, val 10, test 30 per class) whose models are untrained UNets (generation
    only needs model folders), sampled in 3 steps. Returns the RunDir, the npz arrays and the npz path."""
    npz, arrays = write_blob_npz(tmp_path / "data", (10, 10, 30), compressed=False)
    data = {"medmnist": "breastmnist", "root": str(npz.parent)}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", name, generate={"steps": 3}, **sections))
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe, models=True)
    return run, arrays, npz


def pixels(folder: Path, names) -> np.ndarray:
    """The images of a synthetic folder as uint8 (N, H, W, 1)."""
    return np.stack([np.asarray(Image.open(folder / n))[..., None] for n in names])


# ---------------------------------------------------------------------------------------------
# The near-copy filter (generate --reject-copies)


def test_copy_filter_rejects_copies_and_keeps_new_images(blob_run):
    images, labels, kinds = planted_set(blob_run)
    keep_copy = copy_filter(open_run(blob_run))
    assert keep_copy.mirror and set(keep_copy.thresholds) == {0, 1}
    for c in (0, 1):
        mine = np.array([label == c for label in labels])
        keep = keep_copy(images[mine], c)
        assert keep.dtype == bool and keep.tolist() == [kind not in ("exact", "noised", "mirrored") for kind, m in zip(kinds, mine) if m]
        # The decision about an image depends on that image alone, never on the batch it came in (generate relies on it).
        assert [bool(keep_copy(images[mine][i : i + 1], c)[0]) for i in range(int(mine.sum()))] == keep.tolist()
    described = keep_copy.describe()  # what the manifest records: plain JSON, the run's audit.copy_quantile, both classes
    assert json.loads(json.dumps(described)) == described
    assert described["copy_quantile"] == open_run(blob_run).recipe.audit.copy_quantile and described["mirror"] is True
    assert set(described["thresholds"]) == {"0", "1"} and all(0 < t < 1 for t in described["thresholds"].values())


def test_filters_are_calibrated_on_val_and_the_test_split_moves_nothing(blob_run, monkeypatch):
    """The images the filters keep train classifier arms that are scored on real test: test must set no threshold.

    A planted test split of exact copies of training images (nearest-training-image correlation 1) would push a
    test-calibrated copy threshold to 1; the thresholds stay the val-based ones. Planting the same copies in val moves them.
    """
    run = open_run(blob_run)
    real = load_run_data(run)
    quantile = run.recipe.audit.copy_quantile
    val_nearest = nearest_by_correlation(real.val.images, real.train.images, real.mirror, rotations=real.rotations)
    on_val = copy_thresholds(val_nearest, real.val.labels, real.classes, quantile)
    keep_copy = copy_filter(run)
    assert keep_copy.thresholds == pytest.approx(on_val, abs=1e-6) and all(t < 0.99 for t in on_val.values())

    copies = ImageSet(real.train.images.copy(), real.train.labels.copy(), real.train.class_names)
    planted = {"test": dataclasses.replace(real, test=copies), "val": dataclasses.replace(real, val=copies)}
    monkeypatch.setattr("synthaug.reference.filters.load_run_data", lambda r: planted["test"])
    assert copy_filter(run).thresholds == keep_copy.thresholds  # test changed: not one threshold moved
    monkeypatch.setattr("synthaug.reference.filters.load_run_data", lambda r: planted["val"])
    assert all(t > 0.999 for t in copy_filter(run).thresholds.values())  # val changed: the thresholds follow it
    record = filter_record(keep_copy)
    assert record["calibration_split"] == "val" and "real val images" in record["rule"]

    # The confidence filter's classifier is trained on train and selected on val; another test split neither
    # retrains it nor changes a probability (it only makes the cached test features again).
    monkeypatch.setattr("synthaug.reference.filters.load_run_data", lambda r: real)
    keep = confidence_filter(run, 0.5, show_progress=False)
    monkeypatch.setattr("synthaug.reference.filters.load_run_data", lambda r: planted["test"])
    monkeypatch.setattr("synthaug.reference.realdata.train_classifier", lambda *a, **k: pytest.fail("test retrained the classifier"))
    again = confidence_filter(run, 0.5, show_progress=False)
    assert again.describe() == keep.describe() and filter_record(keep)["calibration_split"] == "val"
    probe = blob_images(6, 0, seed=5)
    np.testing.assert_array_equal(again.confidence(probe, 0), keep.confidence(probe, 0))


def test_generate_reject_copies_redraws_copies_and_keeps_the_count(tmp_path):
    """A generator that reproduces its training images: with --reject-copies those images are redrawn, the count holds."""
    run, arrays, npz = untrained_blob_run(tmp_path, "copier", train={"augment": []})
    first = generate(run.root, per_class=3, out=tmp_path / "first", show_progress=False)
    drawn = pd.read_csv(first / "metadata.csv")
    # Make those very images training images: the generator now "copies" three training images per class.
    for c in (0, 1):
        slots = np.flatnonzero(arrays["train_labels"][:, 0] == c)[:3]
        for slot, name in zip(slots, drawn[drawn["label"] == c]["file_name"]):
            arrays["train_images"][slot] = np.asarray(Image.open(first / name))
    np.savez(npz, **arrays)

    with pytest.warns(UserWarning, match="MD5"):
        second = generate(run.root, per_class=3, out=tmp_path / "second", reject_copies=True, show_progress=False)
    table = pd.read_csv(second / "metadata.csv")
    assert table["label"].value_counts().to_dict() == {0: 3, 1: 3}
    assert (table["attempt"] >= 1).all() and set(table["rejected_by"]) == {"near_copy"}
    manifest = json.loads((second / "manifest.json").read_text())
    assert [f["name"] for f in manifest["provenance"]["filters"]] == ["near_copy"]
    for name in table["file_name"]:
        assert not any((np.asarray(Image.open(second / name)) == np.asarray(Image.open(first / old))).all() for old in drawn["file_name"])


# ---------------------------------------------------------------------------------------------
# The classifier-confidence filter (generate --filter-confidence)


def test_confidence_filter_keeps_confident_images_and_rejects_wrong_labels(blob_run, monkeypatch):
    new = {c: blob_images(12, c, seed=99) for c in (0, 1)}  # unseen draws from the real distribution
    keep = confidence_filter(open_run(blob_run), 0.5, show_progress=False)
    assert keep.name == "low_confidence" and (blob_run / "audit" / "features.pt").is_file()  # the audit's cached classifier
    for c in (0, 1):
        right, wrong = keep(new[c], c), keep(new[c], 1 - c)
        assert right.dtype == bool and right.shape == (12,)
        assert right.all() and not wrong.any()  # the same images under the wrong label are all rejected
        np.testing.assert_allclose(keep.confidence(new[c], c) + keep.confidence(new[c], 1 - c), 1, atol=1e-5)
    # The threshold decides: at the median of the probabilities about half the images go.
    probs = keep.confidence(new[0], 0)
    tau = float(np.median(probs))
    strict = confidence_filter(open_run(blob_run), tau, show_progress=False)
    assert strict(new[0], 0).tolist() == (probs >= tau).tolist() and 0 < strict(new[0], 0).sum() < 12

    described = keep.describe()
    assert described["threshold"] == 0.5 and described["classifier"]["steps"] == BLOB_CLASSIFIER["steps"]
    assert described["classifier"]["classifier"] == "small_cnn" and described["classifier"]["seed"] == 0
    assert 1 <= described["selected_step"] <= BLOB_CLASSIFIER["steps"] and described["val"]["acc"] > 0.9
    assert len(described["weights_sha256"]) == 64 and "wall" not in json.dumps(described)
    # A second build loads the cached classifier (no training) and describes itself identically: same generation_id.
    monkeypatch.setattr("synthaug.reference.realdata.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = confidence_filter(open_run(blob_run), 0.5, show_progress=False)
    assert json.dumps(again.describe(), sort_keys=True) == json.dumps(described, sort_keys=True)
    assert strict.describe()["weights_sha256"] == described["weights_sha256"] and strict.describe() != described
    with torch.no_grad():  # other weights, another hash
        next(again.model.parameters()).add_(1e-3)
    assert weights_sha256(again.model) != described["weights_sha256"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        confidence_filter(open_run(blob_run), 1.0)


def test_generate_filter_confidence_redraws_unconfident_images_and_counts_them(tmp_path):
    """Untrained UNets draw noise; the classifier is unsure of it, so a threshold inside its probabilities
    rejects some first candidates: those are redrawn, the others are the very images of an unfiltered set."""
    run, _, _ = untrained_blob_run(tmp_path, "unsure", train={"augment": []}, evaluate=BLOB_CLASSIFIER)
    with pytest.warns(UserWarning, match="MD5"):  # the audit data (val, test) is read too
        keep = confidence_filter(open_run(run.root), 0.5, show_progress=False)
    plain = generate(run.root, per_class=16, out=tmp_path / "plain", show_progress=False)
    before = pd.read_csv(plain / "metadata.csv")
    manifest = json.loads((plain / "manifest.json").read_text())
    assert all(e["kept"] == 16 and e["dropped"] == 0 and e["rejected"] == {} for e in manifest["classes"].values())
    probs = {c: keep.confidence(pixels(plain, before[before["label"] == c]["file_name"]), c) for c in (0, 1)}
    # Threshold: between the middle two probabilities of the class the classifier is less sure of.
    unsure = min((0, 1), key=lambda c: np.median(probs[c]))
    middle = np.sort(probs[unsure])[7:9]
    assert middle[0] < middle[1], "no spread in the classifier's probabilities"
    tau = float(middle.mean())

    with pytest.warns(UserWarning, match="MD5"):
        out = generate(run.root, per_class=16, out=tmp_path / "filtered", filter_confidence=tau, show_progress=False)
    table = pd.read_csv(out / "metadata.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert table["label"].value_counts().to_dict() == {0: 16, 1: 16}
    assert [f["name"] for f in manifest["provenance"]["filters"]] == ["low_confidence"]
    assert manifest["provenance"]["filters"][0]["threshold"] == tau and manifest["recipe"]["generate"]["filter_confidence"] == tau
    assert manifest["provenance"]["filters"][0]["weights_sha256"] == keep.describe()["weights_sha256"]
    for c in (0, 1):
        mine, old = table[table["label"] == c], before[before["label"] == c]
        assert mine["file_name"].tolist() == old["file_name"].tolist()
        images = pixels(out, mine["file_name"])
        assert (keep.confidence(images, c) >= tau).all()  # every image kept is confident enough
        confident = probs[c] >= tau
        assert (mine["attempt"].to_numpy() == 0).tolist() == confident.tolist()  # exactly the unconfident ones redrawn
        assert (images == pixels(plain, old["file_name"])).all(axis=(1, 2, 3)).tolist() == confident.tolist()
        assert all(str(r).split(";") == ["low_confidence"] * a for r, a in zip(mine["rejected_by"], mine["attempt"]) if a)
        entry = manifest["classes"][str(c)]
        assert entry["kept"] == entry["count"] == 16
        assert entry["dropped"] == mine["attempt"].sum() == entry["rejected"].get("low_confidence", 0)
    assert manifest["classes"][str(unsure)]["dropped"] >= 8


def test_generate_filter_confidence_bad_values_are_one_line_errors(blob_run, tmp_path, capsys):
    for bad in ("1.5", "0", "1"):
        argv = ["generate", "--run", str(blob_run), "--per-class", "1", "--out", str(tmp_path / "out"), "--filter-confidence", bad, "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("synthaug generate: error: ")]
        assert len(errors) == 1 and errors[0].startswith("synthaug generate: error: --filter-confidence: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    data = {"medmnist": "breastmnist", "root": str(blob_run.parent.parent / "data")}
    with pytest.raises(UserError, match="generate.filter_confidence: "):
        recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "x", generate={"filter_confidence": 1.5}))
    for inside in (0.001, 0.8, 0.999):  # any probability strictly between 0 and 1 is a valid recipe setting
        recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "x", generate={"filter_confidence": inside}))


def test_a_balanced_judge_trains_on_class_balanced_batches_under_its_own_cache_key(tmp_path, monkeypatch):
    """audit.judge_sampling: balanced (long-tailed data) trains the filter's and the audit's judge with class-balanced
    batches; a judge cached under the uniform setting is not reused for it."""
    write_blob_npz(tmp_path / "data", (40, 20, 60))
    data = {"medmnist": "breastmnist", "root": str(tmp_path / "data"), "subset": {"counts": {"0": 30, "1": 3}, "seed": 0}}
    raw = tiny_recipe_dict(data, tmp_path / "runs", "tail", evaluate=BLOB_CLASSIFIER)
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe_from_dict(raw))
    import synthaug.reference.realdata as realdata
    trained = realdata.train_classifier
    calls = []
    monkeypatch.setattr(realdata, "train_classifier", lambda *a, **k: calls.append(k.get("balanced")) or trained(*a, **k))
    confidence_filter(open_run(run.root), 0.5, show_progress=False)
    confidence_filter(open_run(run.root), 0.5, show_progress=False)  # cached
    assert calls == [False]
    raw["audit"] = {"judge_sampling": "balanced"}
    run.recipe.write_text(yaml.safe_dump(recipe_from_dict(raw).model_dump(mode="json")))
    confidence_filter(open_run(run.root), 0.5, show_progress=False)
    assert calls == [False, True]
