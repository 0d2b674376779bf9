"""A synthetic set as one MedMNIST-layout npz (`generate --format npz|both`): its name, writer and up-to-date check."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from synthaug.recipe.recipe import Recipe
from synthaug.storage.rundir import SynthDir
from synthaug.storage.synthset import ClassTarget


def npz_name(recipe: Recipe) -> str:
    """Never a name medmnist would take for its own file: `synthetic_<flag>[_<size>].npz`."""
    if recipe.data.medmnist:
        return f"synthetic_{recipe.data.medmnist}{'' if recipe.data.size == 28 else f'_{recipe.data.size}'}.npz"
    return f"synthetic_{recipe.name}.npz"


def write_npz(path: Path, images_root: Path, files: list[str], labels: np.ndarray, size: int, channels: int) -> None:
    """A MedMNIST-layout npz (train_images, train_labels), filled through a memory map so memory stays flat."""
    shape = (len(files), size, size) if channels == 1 else (len(files), size, size, channels)
    scratch = path.with_name(f".{path.name}.images.tmp")
    tmp = path.with_name(f".{path.name}.tmp")
    images = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
    try:
        for k, name in enumerate(files):
            with Image.open(images_root / name) as img:
                pixels = np.asarray(img)
            images[k] = pixels
        label_dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.int64
        arrays = {"train_images": images, "train_labels": labels.astype(label_dtype).reshape(-1, 1)}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, array in arrays.items():
                entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same bytes every run
                entry.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(entry, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
        del images
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)


def npz_up_to_date(folder: SynthDir, npz_path: Path, generation_id: str, targets: list[ClassTarget]) -> bool:
    previous = folder.read_manifest() or {}
    counts = {str(t.class_idx): t.count for t in targets}
    return bool(
        previous.get("complete") and previous.get("generation_id") == generation_id and npz_path.is_file()
        and {c: e.get("count") for c, e in previous.get("classes", {}).items()} == counts
    )
