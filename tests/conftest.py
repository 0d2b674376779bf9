"""Tiny fixtures: npz files in medmnist's layout and class folders, made by the tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthaug.recipe import recipe_from_dict

# Tiny models are dominated by per-op overhead; a second thread only adds contention (measured: a
# [8, 16] UNet forward took 2.4 s with 2 threads on a busy 2-core machine, 43 ms with 1).
torch.set_num_threads(1)


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


TINY_MODEL = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_levels": [False, False],
    "norm_num_groups": 8,
}


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
