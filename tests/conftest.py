"""Shared test helpers and fixtures: tiny npz files in medmnist's layout, class folders, tiny recipes, one run-directory
builder (`make_run`), one synthetic-folder writer (`write_synthetic`), and the blob data of the audit and filter tests.

No real data and no trained diffusion model is needed. Test modules import the helpers with `from conftest import ...`
(pytest puts tests/ on sys.path, so that is the very module pytest loaded, whether run as `pytest` or `python -m pytest`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image

from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.recipe.recipe import Recipe, recipe_from_dict, recipe_to_yaml
from synthaug.storage.rundir import ClassesInfo, RunDir, model_dir_name, safe_name
import synthaug.generation.generate as generate_module
from synthaug.cli import main
from synthaug.diffusion.jobs import prepare_run

# Tiny models are dominated by per-op overhead; a second thread only adds contention (measured: a
# [8, 16] UNet forward took 2.4 s with 2 threads on a busy 2-core machine, 43 ms with 1).
torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Real data: npz files in medmnist's layout and class folders


def make_images(n_per_class: int, classes: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class c is a bright square at a class-specific place on a noisy background: learnable, distinct."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
            x0 = (c * size // max(classes, 1)) % (size - size // 3)
            img[size // 4 : size // 4 + size // 3, x0 : x0 + size // 3] = 200 + c * 5
            images.append(img)
            labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def write_medmnist_npz(folder: Path, flag: str, classes: int, channels: int, size: int = 28, per_class=(12, 4, 4)) -> Path:
    """A small file with the six arrays medmnist uses; grayscale images are stored (N, H, W) as medmnist does."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), per_class, (0, 1, 2)):
        images, labels = make_images(n, classes, size, channels, seed)
        arrays[f"{split}_images"] = images[..., 0] if channels == 1 else images
        arrays[f"{split}_labels"] = labels[:, None]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{flag}{'' if size == 28 else f'_{size}'}.npz"
    np.savez_compressed(path, **arrays)
    return path


def write_class_folders(root: Path, names: list[str], n: int, size: int, channels: int, splits: bool = False) -> Path:
    for split in ("train", "val", "test") if splits else ("",):
        images, labels = make_images(n, len(names), size, channels, seed=len(split))
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0] if channels == 1 else img).save(folder / f"img_{i:03d}.png")
    return root


BLOB_SIZE = 28
BLOB_NAMES = ["malignant", "normal, benign"]  # breastmnist's: the blob npz poses as it


def blob_images(n: int, label: int, seed: int) -> np.ndarray:
    """Grey images of a few soft blobs, on the left half for class 0 and the right half for class 1.

    Different images correlate about 0.5-0.85, so a copy (about 1.0) stands well apart.
    """
    rng = np.random.default_rng([seed, label])
    yy, xx = np.mgrid[0:BLOB_SIZE, 0:BLOB_SIZE]
    out = np.zeros((n, BLOB_SIZE, BLOB_SIZE, 1), np.uint8)
    for i in range(n):
        field = np.zeros((BLOB_SIZE, BLOB_SIZE))
        for _ in range(6):
            cx, cy, width = rng.uniform(0, BLOB_SIZE / 2) + label * BLOB_SIZE / 2, rng.uniform(0, BLOB_SIZE), rng.uniform(1.5, 3.5)
            field += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        out[i, ..., 0] = np.clip(field / field.max() * 200 + rng.normal(0, 4, field.shape) + 20, 0, 255)
    return out


def write_blob_npz(folder: Path, per_class: tuple[int, int, int], compressed: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """breastmnist.npz of blob images, `per_class` (train, val, test) images per class; returns the path and the arrays."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), per_class, (0, 1, 2)):
        arrays[f"{split}_images"] = np.concatenate([blob_images(n, c, seed) for c in (0, 1)])[..., 0]
        arrays[f"{split}_labels"] = np.repeat([0, 1], n)[:, None].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "breastmnist.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path, arrays


# ---------------------------------------------------------------------------------------------
# Recipes


TINY_MODEL = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_levels": [False, False],
    "norm_num_groups": 8,
}

# The evaluate harness at its smallest: a 4-channel SmallCNN trained for a few steps.
TINY_EVAL = {
    "classifier": "small_cnn", "width": 4, "steps": 6, "batch_size": 8, "eval_every": 3,
    "seeds": [0, 1, 2], "ratios": [1, 2],
}

# The feature classifier of the blob runs: enough steps (0.4 s) to tell left blobs from right ones with confidence.
BLOB_CLASSIFIER = {"classifier": "small_cnn", "width": 8, "steps": 60, "lr": 1e-2, "batch_size": 16, "seeds": [0]}


def tiny_recipe_dict(data: dict, output_dir: Path, name: str = "tiny", **sections) -> dict:
    recipe = {
        "name": name,
        "output_dir": str(output_dir),
        "data": data,
        "model": dict(TINY_MODEL),
        "diffusion": {"num_train_timesteps": 50},
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 2, "ema_decay": 0.9},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    return recipe


# ---------------------------------------------------------------------------------------------
# Run directories and synthetic folders


def make_run(recipe: Recipe, info: ClassesInfo | None = None, models: bool = False) -> RunDir:
    """A run directory as `synthaug fit` lays it out, without training: the one run builder of the tests.

    recipe.yaml and classes.json are written by `prepare_run` from the recipe's data, or, given `info`, as given (no
    data needed: e.g. class names no folder could be called). `models`: an untrained UNet in each model folder, seeded
    by its place among them (generation needs finished model folders; random weights show rounding differences at
    least as readily as trained ones).
    """
    if info is None:
        run, _, _, _ = prepare_run(recipe, is_main=True)
        info = run.read_classes()
    else:
        run = RunDir(recipe.run_dir)
        run.root.mkdir(parents=True)
        run.recipe.write_text(recipe_to_yaml(recipe))
        run.write_classes(info)
    if models:
        for seed, model_dir in enumerate(sorted(set(info.models.values()))):
            torch.manual_seed(seed)
            unet = build_unet(recipe.model, info.channels, len(info.class_names))
            DDPMPipeline(unet=unet, scheduler=build_noise_scheduler(recipe.diffusion)).save_pretrained(str(run.model(model_dir)))
    return run


def untrained_run(root: Path, names=("normal", "../odd/.name"), conditioning="per_class", channels=1, counts=(10, 4),
                  finished=True, size=8) -> RunDir:
    """A run named `gen` with untrained models of `size` px (sampled in 3 steps) and made-up classes.json counts;
    `finished=False` leaves the model folders out. Its data folder does not exist: generation never reads it."""
    recipe = recipe_from_dict(
        tiny_recipe_dict({"folder": str(root / "data"), "size": size}, root / "runs", "gen", model={"conditioning": conditioning}, generate={"steps": 3})
    )
    per_class = {c: n for c, n in enumerate(counts)}
    info = ClassesInfo(
        class_names=list(names), classes=list(range(len(names))), conditioning=conditioning,
        models={c: model_dir_name(conditioning, c, name) for c, name in enumerate(names)}, channels=channels, size=size,
        counts=per_class, split_counts=per_class, subset=None, train_indices=list(range(sum(counts))),
    )
    return make_run(recipe, info, models=finished)


def write_synthetic(folder: Path, images: np.ndarray, labels, class_names: list[str], run: Path | None = None) -> list[str]:
    """A synthetic folder laid out as `synthaug generate` writes one: `<class folder>/<label>_<i:06d>.png` (i counts
    within the class, the folder is the class name made safe) and metadata.csv (file_name, label, class_name); with
    `run`, also a finished manifest.json that names the run the set was generated from.

    `images` is uint8 (N, H, W, C). Returns the file names, in the order of `images`.
    """
    labels = [int(label) for label in labels]
    files, seen = [], {}  # seen: the last index used per class
    for img, label in zip(images, labels):
        i = seen[label] = seen.get(label, -1) + 1
        name = f"{safe_name(class_names[label])}/{label}_{i:06d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / name)
        files.append(name)
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"file_name": files, "label": labels, "class_name": [class_names[c] for c in labels]})
    table.to_csv(folder / "metadata.csv", index=False)
    if run is not None:
        classes = {str(c): {"name": class_names[c], "folder": safe_name(class_names[c]), "count": last + 1} for c, last in sorted(seen.items())}
        manifest = {"complete": True, "run": str(run), "class_names": list(class_names), "classes": classes, "total": len(files)}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return files


# ---------------------------------------------------------------------------------------------
# Generate: its folders, interruptions and refusals


def files(folder: Path, manifest: bool = True) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); `manifest=False` leaves out manifest.json (it records the flags given)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (manifest or path.name != "manifest.json"):
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def interrupted_generate(monkeypatch, *args, **keywords) -> None:
    """`generate(*args, **keywords)` stopped by Ctrl-C between its first two blocks (at the second call of sample_candidates)."""
    real, calls = generate_module.sample_candidates, []

    def interrupted(*args, **keywords):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **keywords)

    monkeypatch.setattr(generate_module, "sample_candidates", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_module.generate(*args, **keywords)
    monkeypatch.setattr(generate_module, "sample_candidates", real)


def generate_error(capsys, argv) -> str:
    """The one-line error of `synthaug generate ARGV` (exit code 2)."""
    assert main(["generate", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


EVAL_NAMES = ["benign", "malignant"]


def eval_synthetic(per_class: int, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic images of the `eval_run` fixture's runs: `per_class` of each class."""
    return make_images(per_class, len(EVAL_NAMES), size, 1, seed=7)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def blood_root(tmp_path) -> Path:
    """An RGB, 8-class npz named like BloodMNIST (its MD5 differs from the official one: a warning, not an error)."""
    write_medmnist_npz(tmp_path / "data", "bloodmnist", classes=8, channels=3, per_class=(3, 2, 2))
    return tmp_path / "data"


@pytest.fixture
def breast_root(tmp_path) -> Path:
    """A grayscale, 2-class npz named like BreastMNIST."""
    write_medmnist_npz(tmp_path / "data", "breastmnist", classes=2, channels=1)
    return tmp_path / "data"


@pytest.fixture
def tiny_recipe(tmp_path, breast_root):
    """A factory of tiny validated recipes on the grayscale fixture; keyword sections are merged in."""

    def make(name: str = "tiny", **sections):
        data = {"medmnist": "breastmnist", "root": str(breast_root), **sections.pop("data", {})}
        return recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs", name, **sections))

    return make


@pytest.fixture
def eval_run(tmp_path):
    """A factory of run directories as `fit` leaves them (recipe.yaml, classes.json), untrained, over 12 px class
    folders (12 per class and split), each with a synthetic set of `synthetic` images per class; returns the run folder."""
    data = write_class_folders(tmp_path / "images", EVAL_NAMES, n=12, size=12, channels=1, splits=True)

    def make(name: str, per_class: int, synthetic: int = 16, **evaluate) -> Path:
        raw = tiny_recipe_dict({"folder": str(data), "size": 12, "subset": {"per_class": per_class}}, tmp_path / "runs", name,
                               evaluate={**TINY_EVAL, **evaluate})
        run = make_run(recipe_from_dict(raw))
        if synthetic:
            write_synthetic(run.synthetic, *eval_synthetic(synthetic), EVAL_NAMES)
        return run.root

    return make


@pytest.fixture(scope="session")
def blob_run(tmp_path_factory) -> Path:
    """A run directory (recipe.yaml + classes.json, as `fit` writes them first) over a blob npz (train 40, val 20,
    test 60 per class); generator subset 30/class; feature classifier BLOB_CLASSIFIER. Shared by the audit and filter
    tests: the feature classifier is trained once and cached in `<run>/audit/features.pt`."""
    root = tmp_path_factory.mktemp("blobs")
    write_blob_npz(root / "data", (40, 20, 60))
    data = {"medmnist": "breastmnist", "root": str(root / "data"), "subset": {"per_class": 30, "seed": 0}}
    recipe = recipe_from_dict(tiny_recipe_dict(data, root / "runs", "blobs", evaluate=BLOB_CLASSIFIER))
    with pytest.warns(UserWarning, match="MD5"):
        run = make_run(recipe)
    return run.root


def run_train_images(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images the blob run's generator saw, and their labels."""
    indices = json.loads((run / "classes.json").read_text())["train_indices"]
    with np.load(run.parent.parent / "data" / "breastmnist.npz") as npz:
        return npz["train_images"][indices][..., None], npz["train_labels"][indices, 0].astype(int)


def planted_set(run: Path) -> tuple[np.ndarray, list[int], list[str]]:
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
            images.append(rng.integers(0, 256, (BLOB_SIZE, BLOB_SIZE, 1), dtype=np.uint8)), labels.append(c), kinds.append("noise")
    return np.stack(images), labels, kinds
