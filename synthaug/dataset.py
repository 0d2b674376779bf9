"""`SynthDataset`: a folder written by `synthaug generate`, as a PyTorch dataset shaped like medmnist's.

`dataset[i]` is `(image, label)`: a PIL image (or the transform's output) and an int64 array of
shape (1,), as medmnist's datasets return them, so the two concatenate in a `ConcatDataset`.
The folder is read through its metadata.csv; the images are decoded when asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, Dataset, Subset

from synthaug.errors import UserError

REQUIRED_COLUMNS = ("file_name", "label", "class_name")


def _read_metadata(root: Path) -> pd.DataFrame:
    path = root / "metadata.csv"
    if not root.is_dir():
        raise UserError(f"{root}: no such directory (expected a folder written by `synthaug generate`)")
    if not path.is_file():
        raise UserError(f"{path}: not found; generation unfinished or not a synthaug folder (rerun the same `synthaug generate` command)")
    try:
        table = pd.read_csv(path, dtype={"file_name": str, "class_name": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (expected file_name,label,class_name first)")
    if len(table) and not pd.api.types.is_integer_dtype(table["label"]):
        raise UserError(f"{path}: column label must hold class indices (integers)")
    return table


def _manifest(root: Path) -> dict:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _check_against_manifest(root: Path, table: pd.DataFrame, manifest: dict) -> None:
    """A metadata.csv whose per-class counts differ from a finished manifest's does not describe this folder."""
    if not manifest.get("complete") or "classes" not in manifest:
        return
    have = table["label"].value_counts().to_dict()
    for label, entry in manifest["classes"].items():
        if have.get(int(label), 0) != entry.get("count"):
            raise UserError(
                f"{root / 'metadata.csv'}: lists {have.get(int(label), 0)} images of class {label}, manifest.json says {entry.get('count')}; "
                "rerun the `synthaug generate` command that made the folder"
            )


def _pick(table: pd.DataFrame, names: list[str], classes: Sequence[int | str] | None, per_class: int | None, root: Path) -> pd.DataFrame:
    if classes is not None:
        wanted = []
        for item in classes:
            label = names.index(item) if isinstance(item, str) and item in names else item
            if not isinstance(label, (int, np.integer)) or label not in set(table["label"]):
                present = sorted(set(table["label"]))
                raise UserError(f"classes: {root} has no class {item!r}; it holds {', '.join(f'{c} ({names[c]})' for c in present)}")
            wanted.append(int(label))
        table = table[table["label"].isin(wanted)]
    if per_class is not None:
        if per_class < 0:
            raise UserError(f"per_class: expected a number >= 0, got {per_class}")
        short = {int(c): int(n) for c, n in table["label"].value_counts().items() if n < per_class}
        if short:
            raise UserError(f"per_class: {root} has only {short} image(s) of class(es) {sorted(short)}; generate more with --per-class {per_class}")
        table = table.groupby("label", sort=False, group_keys=False).head(per_class)  # the first ones: a prefix of every larger set
    return table.reset_index(drop=True)


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise UserError(f"{path}: listed in metadata.csv but missing") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({exc})") from None


class SynthDataset(Dataset):
    """A synthetic set written by `synthaug generate`, read through its metadata.csv.

    `classes`: class names or indices to keep (default all); `per_class`: the first N images of each
    class; `as_rgb`: convert grayscale images to RGB (like medmnist's `as_rgb`). Attributes:
    `labels` (int64 (N,)), `class_names` (all classes of the run, by index), `counts` ({label: n}),
    `files` (paths); `to_numpy()` decodes every image into one uint8 (N, H, W, C) array.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        classes: Sequence[int | str] | None = None,
        per_class: int | None = None,
        as_rgb: bool = False,
    ):
        self.root = Path(root)
        self.transform = transform
        self.as_rgb = as_rgb
        table = _read_metadata(self.root)
        manifest = _manifest(self.root)
        _check_against_manifest(self.root, table, manifest)
        self.class_names = list(manifest.get("class_names") or self._names_from(table))
        table = _pick(table, self.class_names, classes, per_class, self.root)
        self.files = [self.root / name for name in table["file_name"]]
        self.labels = table["label"].to_numpy(dtype=np.int64)
        for path, label in zip(self.files, self.labels):
            if not path.is_file():
                raise UserError(f"{path}: listed in metadata.csv but missing")
            if not path.name.startswith(f"{label}_"):
                raise UserError(f"{path}: metadata.csv gives it label {label}, its name says class {path.name.split('_')[0]}")

    @staticmethod
    def _names_from(table: pd.DataFrame) -> list[str]:
        pairs = dict(zip(table["label"], table["class_name"]))
        return [str(pairs.get(c, f"class_{c}")) for c in range(max(pairs, default=-1) + 1)]

    @property
    def counts(self) -> dict[int, int]:
        labels, counts = np.unique(self.labels, return_counts=True)
        return {int(c): int(n) for c, n in zip(labels, counts)}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Image.Image:
        """Image `index` as a PIL image (mode L or RGB), without the transform."""
        img = _open_image(self.files[index])
        return img.convert("RGB") if self.as_rgb else img

    def __getitem__(self, index: int):
        img = self.image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[index : index + 1].copy()

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """All images as uint8 (N, H, W, C) and their labels int64 (N,)."""
        arrays = [np.asarray(self.image(i)) for i in range(len(self))]
        images = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 0), dtype=np.uint8)
        return (images[..., None] if images.ndim == 3 else images), self.labels.copy()

    def __repr__(self) -> str:
        return f"SynthDataset({str(self.root)!r}, {len(self)} images, counts={self.counts})"


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as float (C, H, W) in [0, 1], like torchvision's ToTensor (torchvision is not a dependency)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def mix_real_synthetic(real: Dataset, synthetic: Dataset, ratio: float, seed: int = 0) -> ConcatDataset:
    """`real` plus round(ratio x len(real)) items of `synthetic` drawn without replacement by `seed`.

    ratio 0.5 adds one synthetic image per two real ones; the same seed draws the same items, and
    a smaller ratio's draw is a prefix of a larger one's.
    """
    if not ratio >= 0:
        raise UserError(f"ratio: expected a number >= 0, got {ratio!r}")
    wanted = int(np.floor(ratio * len(real) + 0.5))
    if wanted > len(synthetic):
        raise UserError(f"ratio: {ratio} x {len(real)} real images needs {wanted} synthetic ones, the synthetic set has {len(synthetic)}")
    order = np.random.default_rng(seed).permutation(len(synthetic))[:wanted]
    return ConcatDataset([real, Subset(synthetic, order.tolist())])
