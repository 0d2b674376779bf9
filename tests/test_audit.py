"""synthaug.audit: metrics with known answers, planted copies caught and named, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import synthaug.audit as audit_module
import synthaug.metrics as metrics_module
from synthaug.audit import audit
from synthaug.classifier import extract_features, weights_sha256
from synthaug.filters import confidence_filter, copy_filter
from synthaug.metrics import frechet_distance, knn_distances, nearest_by_correlation, prdc
from synthaug.rundir import open_run
from synthaug.cli import main
from synthaug.errors import UserError
from synthaug.models import SmallCNN
from synthaug.recipe import recipe_from_dict
from synthaug.rundir import safe_name
from synthaug.train import prepare_run
from tests.conftest import tiny_recipe_dict

SIZE = 28
CLASS_NAMES = ["malignant", "normal, benign"]  # breastmnist's, the npz below poses as it


def blob_images(n: int, label: int, seed: int) -> np.ndarray:
    """Grey images of a few soft blobs, on the left half for class 0 and the right half for class 1.

    Different images correlate about 0.5-0.85, so a copy (about 1.0) stands well apart.
    """
    rng = np.random.default_rng([seed, label])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.zeros((n, SIZE, SIZE, 1), np.uint8)
    for i in range(n):
        field = np.zeros((SIZE, SIZE))
        for _ in range(6):
            cx, cy, width = rng.uniform(0, SIZE / 2) + label * SIZE / 2, rng.uniform(0, SIZE), rng.uniform(1.5, 3.5)
            field += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        out[i, ..., 0] = np.clip(field / field.max() * 200 + rng.normal(0, 4, field.shape) + 20, 0, 255)
    return out


# The feature classifier of the blob runs: enough steps (0.4 s) to tell left blobs from right ones with confidence.
BLOB_CLASSIFIER = {"classifier": "small_cnn", "width": 8, "steps": 60, "lr": 1e-2, "batch_size": 16, "seeds": [0]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory (recipe.yaml + classes.json, as `fit` writes them first) over a blob npz; generator subset 30/class."""
    root = tmp_path_factory.mktemp("audit")
    arrays = {}
    for split, n, seed in (("train", 40, 0), ("val", 20, 1), ("test", 60, 2)):
        images = np.concatenate([blob_images(n, c, seed) for c in (0, 1)])
        arrays[f"{split}_images"] = images[..., 0]
        arrays[f"{split}_labels"] = np.repeat([0, 1], n)[:, None].astype(np.uint8)
    (root / "data").mkdir()
    np.savez_compressed(root / "data" / "breastmnist.npz", **arrays)
    data = {"medmnist": "breastmnist", "root": str(root / "data"), "subset": {"per_class": 30, "seed": 0}}
    recipe = recipe_from_dict(tiny_recipe_dict(data, root / "runs", "blobs", evaluate=BLOB_CLASSIFIER))
    with pytest.warns(UserWarning, match="MD5"):
        run, _, _ = prepare_run(recipe, is_main=True)
    return run.root


def run_train_images(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images the run's generator saw, and their labels."""
    indices = json.loads((run / "classes.json").read_text())["train_indices"]
    with np.load(run.parent.parent / "data" / "breastmnist.npz") as npz:
        return npz["train_images"][indices][..., None], npz["train_labels"][indices, 0].astype(int)


def write_synthetic(folder: Path, images: np.ndarray, labels: list[int]) -> list[str]:
    """A folder in `synthaug generate`'s layout: <class>/<label>_<i>.png and metadata.csv."""
    files = []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"{safe_name(CLASS_NAMES[label])}/{label}_{i:06d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / name)
        files.append(name)
    pd.DataFrame({"file_name": files, "label": labels, "class_name": [CLASS_NAMES[c] for c in labels]}).to_csv(folder / "metadata.csv", index=False)
    return files


def planted_set(run: Path) -> tuple[np.ndarray, list[int], dict[str, str]]:
    """Per class: an exact, a lightly noised and a mirrored copy of training images, six new images, two of pure noise."""
    train, train_labels = run_train_images(run)
    rng = np.random.default_rng(7)
    images, labels, kinds = [], [], []
    for c in (0, 1):
        mine = train[train_labels == c]
        noised = np.clip(mine[3].astype(float) + rng.normal(0, 6, mine[3].shape), 0, 255).astype(np.uint8)
        for kind, img in (("exact", mine[0]), ("noised", noised), ("mirrored", mine[5][:, ::-1])):
            images.append(img), labels.append(c), kinds.append(kind)
        for img in blob_images(6, c, seed=99):  # new draws from the real distribution
            images.append(img), labels.append(c), kinds.append("ordinary")
        for _ in range(2):
            images.append(rng.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8)), labels.append(c), kinds.append("noise")
    return np.stack(images), labels, kinds


# ---------------------------------------------------------------------------------------------
# Metrics with known answers


def test_frechet_distance_is_zero_on_itself_and_matches_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    shifted = rng.normal(size=(20000, 4)) + np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(a, shifted) == pytest.approx(5.0, rel=0.03)  # |mean difference|^2, same covariance
    wider = rng.normal(size=(20000, 4)) * 2.0
    assert frechet_distance(a, wider) == pytest.approx(4 * (1 + 4 - 2 * 2), rel=0.05)  # tr(1 + 4 - 2*sqrt(4)) per dim


def test_frechet_distance_of_image_features_grows_with_noise():
    torch.manual_seed(0)
    net = SmallCNN(1, 2, width=8).eval()
    images = np.concatenate([blob_images(64, c, seed=3) for c in (0, 1)])
    feats = extract_features(net, images, torch.device("cpu"))
    rng = np.random.default_rng(1)
    distances = []
    for sigma in (5, 20, 60):
        noisy = np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)
        distances.append(frechet_distance(feats, extract_features(net, noisy, torch.device("cpu"))))
    assert frechet_distance(feats, feats) == pytest.approx(0, abs=1e-6)
    assert 0 < distances[0] < distances[1] < distances[2]


def test_prdc_known_answers():
    rng = np.random.default_rng(0)
    k = 5
    real = rng.normal(size=(300, 8))
    # The same set: every real ball holds its centre and its k neighbours, so density is (k + 1) / k.
    assert prdc(real, real, k) == pytest.approx({"precision": 1, "recall": 1, "density": (k + 1) / k, "coverage": 1})
    # Two far clusters; the fake set is one of them: faithful (precision 1) but half the diversity.
    left, right = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 100
    half = prdc(np.concatenate([left, right]), left, k)
    assert half["precision"] == 1 and half["recall"] == 0.5 and half["coverage"] == 0.5
    # Disjoint: nothing.
    assert prdc(left, right, k) == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}
    # Half the fake points are far outliers: precision halves; the other half still lands in nearly every real ball.
    outliers = prdc(real, np.concatenate([real[:150], rng.normal(size=(150, 8)) + 100]), k)
    assert outliers["precision"] == 0.5 and outliers["coverage"] > 0.9
    with pytest.raises(ValueError, match="k=5"):
        prdc(real[:5], real, k)


def test_chunked_searches_match_dense_answers(monkeypatch):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, (70, 6, 6, 1), dtype=np.uint8)
    queries = np.concatenate([keys[[3, 40]], keys[[9]][:, :, ::-1], rng.integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)])
    monkeypatch.setattr(metrics_module, "CHUNK_ELEMENTS", 36 * 8)  # 8 rows per chunk: many blocks
    found = nearest_by_correlation(queries, keys, mirror=True)
    flat = lambda x: (lambda r: r / np.linalg.norm(r, axis=1, keepdims=True))(x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(1, keepdims=True))  # noqa: E731
    dense = np.maximum(flat(queries.astype(float)) @ flat(keys.astype(float)).T, flat(queries[:, :, ::-1].astype(float)) @ flat(keys.astype(float)).T)
    np.testing.assert_allclose(found.correlation, dense.max(1), atol=1e-5)
    assert found.index[:3].tolist() == [3, 40, 9] and found.mirrored[:3].tolist() == [False, False, True]
    points = torch.tensor(rng.normal(size=(50, 3)))
    dist, idx = knn_distances(points, points, 2, exclude_self=True)
    full = torch.cdist(points, points).fill_diagonal_(float("inf"))
    np.testing.assert_allclose(dist, full.topk(2, largest=False).values.numpy(), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# The audit end to end, and the filter


def test_audit_flags_planted_copies_only_and_names_them(run_dir, tmp_path, monkeypatch):
    images, labels, kinds = planted_set(run_dir)
    folder = tmp_path / "synthetic"
    files = write_synthetic(folder, images, labels)
    report = audit(run_dir, folder, show_progress=False)

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
    assert 0 <= overall["precision_test"] <= 1 and overall["coverage_synthetic"] is not None

    # The classifier and the real features are cached per run: a second audit does not train again.
    assert (run_dir / "audit" / "features.pt").is_file()
    monkeypatch.setattr("synthaug.reference.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = audit(run_dir, folder, show_progress=False)
    assert again["fidelity"] == report["fidelity"] and again["memorization"] == report["memorization"]

    summary = audit_module.read_audit_summary(folder)
    assert summary["flagged"] == 6 and summary["fd_synthetic"] == overall["fd_synthetic"] and not summary["stale"]
    write_synthetic(folder, images[:3], labels[:3])  # the set changed after the audit
    assert audit_module.read_audit_summary(folder)["stale"]


def test_copy_filter_rejects_copies_and_keeps_new_images(run_dir):
    images, labels, kinds = planted_set(run_dir)
    keep_copy = copy_filter(open_run(run_dir))
    assert keep_copy.mirror and set(keep_copy.thresholds) == {0, 1}
    for c in (0, 1):
        mine = np.array([label == c for label in labels])
        keep = keep_copy(images[mine], c)
        assert keep.dtype == bool and keep.tolist() == [kind not in ("exact", "noised", "mirrored") for kind, m in zip(kinds, mine) if m]
    assert keep_copy(images[:4], 0).tolist() == keep_copy(images[:4], 0).tolist()  # deterministic
    assert json.dumps(keep_copy.describe())


def test_audit_with_other_k_and_quantile(run_dir, tmp_path):
    images, labels, _ = planted_set(run_dir)
    write_synthetic(tmp_path / "s", images, labels)
    argv = ["audit", "--run", str(run_dir), "--synthetic", str(tmp_path / "s"), "--set", "audit.k=2", "--set", "audit.copy_quantile=0.5"]
    assert main([*argv, "--no-progress"]) == 0
    loose = json.loads((tmp_path / "s" / "audit.json").read_text())
    assert loose["command"].startswith(f"synthaug audit --run {run_dir}") and "--set audit.k=2 --set audit.copy_quantile=0.5" in loose["command"]
    assert loose["command"] in (tmp_path / "s" / "audit.md").read_text()
    assert loose["settings"]["k"] == 2
    # At the median of the real images' similarity, about half the new images are over it too.
    assert loose["memorization"]["overall"]["flagged"] > 6
    assert loose["memorization"]["overall"]["real_test_over_threshold"] == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2


def _cli_error(capsys, *argv) -> str:
    assert main(["audit", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err  # may also hold the fixture's "MD5 differs" warning
    errors = [line for line in err.splitlines() if line.startswith("synthaug audit: error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_bad_inputs_are_one_line_errors(run_dir, tmp_path, capsys):
    assert "no such directory" in _cli_error(capsys, "--run", str(tmp_path / "nowhere"))
    (tmp_path / "not-a-run").mkdir()
    assert "not a synthaug run" in _cli_error(capsys, "--run", str(tmp_path / "not-a-run"))
    assert "no such directory" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(tmp_path / "missing"))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "metadata.csv: not found" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(empty))
    write_synthetic(empty, np.zeros((0, SIZE, SIZE, 1), np.uint8), [])
    assert "no synthetic images" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(empty))

    big = tmp_path / "big"
    write_synthetic(big, np.zeros((2, 32, 32, 1), np.uint8), [0, 1])
    assert "32x32 pixels, expected 28x28" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(big))
    rgb = tmp_path / "rgb"
    write_synthetic(rgb, np.zeros((2, SIZE, SIZE, 3), np.uint8), [0, 1])
    assert "mode RGB, expected grayscale" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(rgb))
    foreign = tmp_path / "foreign"
    (foreign / "other").mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(foreign / "other" / "5_000000.png")
    pd.DataFrame({"file_name": ["other/5_000000.png"], "label": [5], "class_name": ["other"]}).to_csv(foreign / "metadata.csv", index=False)
    assert "label(s) [5] are not classes of the run" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(foreign))
    assert "audit.copy_quantile: " in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(big), "--set", "audit.copy_quantile=1.5")
    assert "may only change audit.*" in _cli_error(capsys, "--run", str(run_dir), "--set", "data.size=64")
    with pytest.raises(UserError, match="audit.k: "):
        open_run(run_dir, ["audit.k=0"])
    assert "not a torch device" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(big), "--device", "gpu0")
    (big / "manifest.json").write_text(json.dumps({"run": str(tmp_path / "another-run")}))
    assert "was generated from the run" in _cli_error(capsys, "--run", str(run_dir), "--synthetic", str(big))


def untrained_blob_run(tmp_path: Path, name: str, **sections):
    """A run over a blob npz (train 10, val 10, test 30 per class) whose models are untrained UNets (generation
    only needs model folders), sampled in 3 steps. Returns the RunDir, the npz arrays and the npz path."""
    from diffusers import DDPMPipeline

    from synthaug.models import build_noise_scheduler, build_unet

    arrays = {}
    for split, n, seed in (("train", 10, 0), ("val", 10, 1), ("test", 30, 2)):
        arrays[f"{split}_images"] = np.concatenate([blob_images(n, c, seed) for c in (0, 1)])[..., 0]
        arrays[f"{split}_labels"] = np.repeat([0, 1], n)[:, None].astype(np.uint8)
    npz = tmp_path / "data" / "breastmnist.npz"
    npz.parent.mkdir()
    np.savez(npz, **arrays)
    data = {"medmnist": "breastmnist", "root": str(npz.parent)}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", name, generate={"steps": 3}, **sections))
    with pytest.warns(UserWarning, match="MD5"):
        run, _, _ = prepare_run(recipe, is_main=True)
    info = json.loads(run.classes.read_text())
    for seed, model_dir in enumerate(info["models"].values()):
        torch.manual_seed(seed)
        unet = build_unet(recipe.model, 1, 2)
        DDPMPipeline(unet=unet, scheduler=build_noise_scheduler(recipe.diffusion)).save_pretrained(str(run.model(model_dir)))
    return run, arrays, npz


def test_generate_reject_copies_redraws_copies_and_keeps_the_count(tmp_path):
    """A generator that reproduces its training images: with --reject-copies those images are redrawn, the count holds."""
    from synthaug.generate import generate

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


def test_confidence_filter_keeps_confident_images_and_rejects_wrong_labels(run_dir, monkeypatch):
    new = {c: blob_images(12, c, seed=99) for c in (0, 1)}  # unseen draws from the real distribution
    keep = confidence_filter(open_run(run_dir), 0.5, show_progress=False)
    assert keep.name == "low_confidence" and (run_dir / "audit" / "features.pt").is_file()  # the audit's cached classifier
    for c in (0, 1):
        right, wrong = keep(new[c], c), keep(new[c], 1 - c)
        assert right.dtype == bool and right.shape == (12,)
        assert right.all() and not wrong.any()  # the same images under the wrong label are all rejected
        np.testing.assert_allclose(keep.confidence(new[c], c) + keep.confidence(new[c], 1 - c), 1, atol=1e-5)
    # The threshold decides: at the median of the probabilities about half the images go.
    probs = keep.confidence(new[0], 0)
    tau = float(np.median(probs))
    strict = confidence_filter(open_run(run_dir), tau, show_progress=False)
    assert strict(new[0], 0).tolist() == (probs >= tau).tolist() and 0 < strict(new[0], 0).sum() < 12

    described = keep.describe()
    assert described["threshold"] == 0.5 and described["classifier"]["steps"] == BLOB_CLASSIFIER["steps"]
    assert described["classifier"]["classifier"] == "small_cnn" and described["classifier"]["seed"] == 0
    assert 1 <= described["selected_step"] <= BLOB_CLASSIFIER["steps"] and described["val"]["acc"] > 0.9
    assert len(described["weights_sha256"]) == 64 and "wall" not in json.dumps(described)
    # A second build loads the cached classifier (no training) and describes itself identically: same generation_id.
    monkeypatch.setattr("synthaug.reference.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = confidence_filter(open_run(run_dir), 0.5, show_progress=False)
    assert json.dumps(again.describe(), sort_keys=True) == json.dumps(described, sort_keys=True)
    assert strict.describe()["weights_sha256"] == described["weights_sha256"] and strict.describe() != described
    with torch.no_grad():  # other weights, another hash
        next(again.model.parameters()).add_(1e-3)
    assert weights_sha256(again.model) != described["weights_sha256"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        confidence_filter(open_run(run_dir), 1.0)


def test_generate_filter_confidence_redraws_unconfident_images_and_counts_them(tmp_path):
    """Untrained UNets draw noise; the classifier is unsure of it, so a threshold inside its probabilities
    rejects some first candidates: those are redrawn, the others are the very images of an unfiltered set."""
    from synthaug.generate import generate

    run, _, _ = untrained_blob_run(tmp_path, "unsure", train={"augment": []}, evaluate=BLOB_CLASSIFIER)
    with pytest.warns(UserWarning, match="MD5"):  # the audit data (val, test) is read too
        keep = confidence_filter(open_run(run.root), 0.5, show_progress=False)
    plain = generate(run.root, per_class=16, out=tmp_path / "plain", show_progress=False)
    before = pd.read_csv(plain / "metadata.csv")
    manifest = json.loads((plain / "manifest.json").read_text())
    assert all(e["kept"] == 16 and e["dropped"] == 0 and e["rejected"] == {} for e in manifest["classes"].values())
    pixels = lambda folder, names: np.stack([np.asarray(Image.open(folder / n))[..., None] for n in names])  # noqa: E731
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


def test_generate_filter_confidence_bad_values_are_one_line_errors(run_dir, tmp_path, capsys):
    for bad in ("1.5", "0", "1"):
        argv = ["generate", "--run", str(run_dir), "--per-class", "1", "--out", str(tmp_path / "out"), "--filter-confidence", bad, "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("synthaug generate: error: ")]
        assert len(errors) == 1 and errors[0].startswith("synthaug generate: error: --filter-confidence: ") and "Traceback" not in err
    data = {"medmnist": "breastmnist", "root": str(run_dir.parent.parent / "data")}
    with pytest.raises(UserError, match="generate.filter_confidence: "):
        recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "x", generate={"filter_confidence": 1.5}))
    assert recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", "x", generate={"filter_confidence": 0.8})).generate.filter_confidence == 0.8
