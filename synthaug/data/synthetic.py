"""`SynthDataset`: a folder written by `synthaug generate`, as a PyTorch dataset shaped like medmnist's.

`dataset[i]` is `(image, label)`: a PIL image (or the transform's output) and an int64 array of
shape (1,) (or the target_transform's output), as medmnist's datasets return them, so the two concatenate
in a `ConcatDataset`. The folder is read through its metadata.csv; the images are decoded when asked for.
`dataset.provenance(i)` says where item i came from. `mix_real_synthetic` adds synthetic items to a real dataset
per class, as evaluate's real+synthetic arm does (`synthaug.data.arms` holds every arm as a dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset
from tqdm.auto import tqdm

from synthaug.data.classes import class_indices
from synthaug.data.images import ImageSet
from synthaug.data.subsets import count_at_ratio
from synthaug.core.errors import UserError
from synthaug.storage.rundir import Run, SynthDir
from synthaug.storage.release import SOFT_PREFIX
from synthaug.storage.synthset import DAMAGED, decode_png

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
        table = table[table["label"].isin(class_indices(classes, names, "classes", known=set(table["label"]), holder=str(root)))]
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 0:
            raise UserError(f"per_class: expected a whole number >= 0, got {per_class!r}")
        short = {int(c): int(n) for c, n in table["label"].value_counts().items() if n < per_class}
        if short:
            raise UserError(f"per_class: {root} has only {short} image(s) of class(es) {sorted(short)}; generate more with --per-class {per_class}")
        table = table.groupby("label", sort=False, group_keys=False).head(per_class)  # the first ones: a prefix of every larger set
    return table.reset_index(drop=True)


def _soft_labels(table: pd.DataFrame, class_count: int) -> np.ndarray | None:
    """The soft_<k> columns of metadata.csv as float32 (N, class_count) (a column left out: 0); None when there are none."""
    columns = {k: f"{SOFT_PREFIX}{k}" for k in range(class_count) if f"{SOFT_PREFIX}{k}" in table.columns}
    if not columns:
        return None
    soft = np.zeros((len(table), class_count), dtype=np.float32)
    for k, column in columns.items():
        soft[:, k] = table[column].to_numpy(dtype=np.float32)
    return soft


def _open_image(path: Path) -> tuple[Image.Image, dict | None]:
    """A listed image, decoded, and the provenance record `generate` stored in it (None when it has none)."""
    try:
        return decode_png(path)
    except FileNotFoundError:
        raise UserError(f"{path}: listed in metadata.csv but missing") from None
    except DAMAGED as exc:
        raise UserError(f"{path}: unreadable image ({exc}); rerun the `synthaug generate` command that made the folder") from None


def _check_rows(root: Path, table: pd.DataFrame, class_names: list[str]) -> None:
    """metadata.csv must describe this folder: no file twice, none outside it, labels that agree with class names and file names."""
    duplicated = table["file_name"][table["file_name"].duplicated()]
    if len(duplicated):
        raise UserError(f"{root / 'metadata.csv'}: lists {duplicated.iloc[0]} more than once")
    resolved = root.resolve()
    for name, label, class_name in zip(table["file_name"], table["label"], table["class_name"]):
        path = Path(name)
        if path.is_absolute() or ".." in path.parts or not (root / path).resolve().is_relative_to(resolved):
            raise UserError(f"{root / 'metadata.csv'}: file_name {name!r} leaves the folder")
        if not 0 <= label < len(class_names):
            raise UserError(f"{root / 'metadata.csv'}: {name} has label {label}, outside the {len(class_names)} classes")
        if class_name != class_names[label]:
            raise UserError(f"{root / 'metadata.csv'}: {name} has label {label} ({class_names[label]}) but class_name {class_name!r}")
        if not path.name.startswith(f"{label}_"):
            raise UserError(f"{root / name}: metadata.csv gives it label {label}, its name says class {path.name.split('_')[0]}")


class Provenance(NamedTuple):
    """Where a training item came from: `synthetic` or real, and `source_index`: for a variation of a real image
    (generate --from-real), that real image's index in the train split; for a real image, its own index there (as
    given to the arm); -1 for a synthetic image drawn from noise (or a real one of unknown index)."""

    synthetic: bool
    source_index: int


class SynthDataset(Dataset):
    """A synthetic set written by `synthaug generate`, read through its metadata.csv.

    `classes`: class names or indices to keep (default all); `per_class`: the first N images of each
    class; `as_rgb`: convert grayscale images to RGB (like medmnist's `as_rgb`); `transform` receives the PIL
    image, `target_transform` the label array (int64, shape (1,)), as in medmnist. Attributes:
    `labels` (int64 (N,)), `class_names` (all classes of the run, by index), `counts` ({label: n}),
    `files` (paths), `source_index` (int64 (N,): for variations and translations of real images, the index of the real
    image in the train split, else -1), `soft_labels` (float32 (N, K) over every class, from metadata.csv's soft_<k>
    columns: a translation's s^gamma / 1 - s^gamma; None for a set without them); `provenance(i)`: item i's `Provenance` (always synthetic);
    `to_numpy()` decodes every image into one uint8 (N, H, W, C) array.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        classes: Sequence[int | str] | None = None,
        per_class: int | None = None,
        as_rgb: bool = False,
        target_transform: Callable | None = None,
    ):
        self.root = Path(root)
        self.transform = transform
        self.target_transform = target_transform
        self.as_rgb = as_rgb
        table = _read_metadata(self.root)
        manifest = SynthDir(self.root).read_manifest() or {}
        _check_against_manifest(self.root, table, manifest)
        self.class_names = list(manifest.get("class_names") or self._names_from(table))
        _check_rows(self.root, table, self.class_names)
        self.generation_id = manifest.get("generation_id")  # every image must carry it (the folder's own images)
        table = _pick(table, self.class_names, classes, per_class, self.root)
        self.index = table["index"].to_numpy(dtype=np.int64) if "index" in table.columns else None
        self.files = [self.root / name for name in table["file_name"]]
        self.labels = table["label"].to_numpy(dtype=np.int64)
        # Variations (generate --from-real): the real training image each one varies, as an index into the real
        # train split; -1 for images drawn from noise.
        self.source_index = (pd.to_numeric(table["source_index"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
                             if "source_index" in table.columns else np.full(len(table), -1, dtype=np.int64))
        self.soft_labels = _soft_labels(table, len(self.class_names))
        for path in self.files:
            if not path.is_file():
                raise UserError(f"{path}: listed in metadata.csv but missing")

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
        """Image `index` as a PIL image (mode L or RGB), without the transform; its provenance is checked against its row."""
        index = range(len(self))[index]  # negative indices count from the end; out of range raises IndexError
        img, record = _open_image(self.files[index])
        self._check_provenance(index, record)
        return img.convert("RGB") if self.as_rgb else img

    def _check_provenance(self, index: int, record: dict | None) -> None:
        """The PNG's own record (generation, class, index) must agree with its metadata row: a folder never lies."""
        path = self.files[index]
        if record is None:
            if self.generation_id is not None:
                raise UserError(f"{path}: carries no synthaug provenance, yet its folder's manifest says synthaug generate made it")
            return
        expected = {"class": int(self.labels[index])}
        if self.generation_id is not None:
            expected["generation_id"] = self.generation_id
        if self.index is not None:
            expected["index"] = int(self.index[index])
        wrong = {k: (v, record.get(k)) for k, v in expected.items() if record.get(k) != v}
        if wrong:
            said = "; ".join(f"{k}: metadata {v!r}, image {got!r}" for k, (v, got) in wrong.items())
            raise UserError(f"{path}: its provenance disagrees with its metadata.csv row ({said}); rerun the generate command that made the folder")

    def verify(self, show_progress: bool = False) -> int:
        """Decode every image and check its provenance against its row (a UserError names the first bad file); returns the count."""
        for i in tqdm(range(len(self)), desc="verify", disable=not show_progress, unit="img"):
            self.image(i)
        return len(self)

    def __getitem__(self, index: int):
        index = range(len(self))[index]
        img = self.image(index)
        if self.transform is not None:
            img = self.transform(img)
        label = self.labels[index : index + 1].copy()
        return img, (label if self.target_transform is None else self.target_transform(label))

    def provenance(self, index: int) -> Provenance:
        """Where item `index` came from: synthetic, and the real train-split image it varies (-1: drawn from noise)."""
        index = range(len(self))[index]
        return Provenance(True, int(self.source_index[index]))

    def set_order(self) -> np.ndarray:
        """The items in the set's index order: by class, then by file name (`<label>_<index>.png`), whatever order
        metadata.csv lists them in. What `read_synthetic`, and so evaluate, reads; a prefix of a class is its first images."""
        return np.lexsort(([p.name for p in self.files], self.labels))

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


def dataset_labels(data) -> np.ndarray:
    """The labels (int64 (N,)) of a labelled dataset: its `labels` (SynthDataset, medmnist's (N, 1)) or `targets`
    (torchvision) when it has them, else read item by item (`data[i][1]`, an int or an array of one label)."""
    for name in ("labels", "targets"):
        found = getattr(data, name, None)
        if found is not None and not callable(found):
            found = np.asarray(found)
            if len(found) == len(data):
                return found.reshape(len(found), -1)[:, 0].astype(np.int64)
    return np.asarray([int(np.asarray(data[i][1]).reshape(-1)[0]) for i in range(len(data))], dtype=np.int64)


def first_per_class(labels: np.ndarray, wanted: dict[int, int], what: str = "the synthetic set") -> np.ndarray:
    """Positions of the first `wanted[c]` items of each class c in `labels` (classes in `wanted`'s order): how every
    arm of evaluate takes synthetic images, so a smaller amount is a prefix of a larger one (variations cycle through
    the real images before varying one twice, so a prefix spreads over them). A UserError names a class with too few."""
    picked = []
    for c, want in wanted.items():
        mine = np.flatnonzero(np.asarray(labels) == c)
        if len(mine) < want:
            raise UserError(f"{what} has {len(mine)} image(s) of class {c}, {want} are needed; generate more "
                            f"(`synthaug generate --per-class {want}`)")
        picked.append(mine[:want])
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def mix_real_synthetic(real: Dataset, synthetic: Dataset, ratio: float, seed: int | None = None) -> ConcatDataset:
    """`real` plus, for each class c of `real` (n_c items), round(ratio x n_c) items of `synthetic` of class c, as one
    `ConcatDataset` of your two datasets (their own transforms apply).

    Without `seed`, the first ones of each class in the set's index order: the very images evaluate's real+synthetic
    arm adds at this ratio (`synthaug.data.arms.AddSynthetic`, which also reproduces its batches). With `seed`, a
    seeded draw without replacement within each class. Either way a smaller ratio's items are a prefix, per class, of
    a larger one's. (It used to draw round(ratio x len(real)) items across classes, which no arm of evaluate does.)
    """
    if not ratio >= 0:
        raise UserError(f"ratio: expected a number >= 0, got {ratio!r}")
    classes, counts = np.unique(dataset_labels(real), return_counts=True)
    labels = dataset_labels(synthetic)
    order = synthetic.set_order() if isinstance(synthetic, SynthDataset) else np.arange(len(synthetic))
    if seed is not None:  # shuffled within each class (first_per_class keeps each class's order)
        order = order[np.random.default_rng(seed).permutation(len(order))]
    wanted = {int(c): count_at_ratio(ratio, int(n)) for c, n in zip(classes, counts)}
    picks = order[first_per_class(labels[order], wanted, f"ratio {ratio:g}: the synthetic set")]
    return ConcatDataset([real, Subset(synthetic, picks.tolist())])


@dataclass
class SyntheticImages:
    """A synthetic set decoded into memory, each class in index order (`read_synthetic`)."""

    images: ImageSet
    files: list[str]  # relative to the folder
    source_index: np.ndarray  # int64 (N,): the real train-split image a variation or translation starts from, -1 for images drawn from noise
    soft_labels: np.ndarray | None = None  # float32 (N, K): a release's teacher probabilities (`read_release`), a translation set's labels

    @property
    def variations(self) -> bool:
        return bool((self.source_index >= 0).any())


def read_synthetic(folder: str | Path, run: Run, show_progress: bool = True) -> SyntheticImages:
    """A synthetic set generated from `run`'s models, decoded into memory and checked against the run.
    The one reader of `evaluate` and `audit`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--synthetic {folder}: no such directory; run `synthaug generate` first")
    made_by = SynthDir(folder).made_by()  # a set sampled from another run's generator may have seen other real images
    if made_by and Path(made_by).resolve() != run.root.resolve():
        raise UserError(f"{folder}: was generated from the run {made_by}, not {run.root}; use each run's own synthetic set")
    synthetic = SynthDataset(folder)
    if len(synthetic) == 0:
        raise UserError(f"{folder}: no synthetic images (metadata.csv lists none)")
    info = run.info
    foreign = sorted(set(synthetic.labels.tolist()) - set(info.classes))
    if foreign:
        raise UserError(f"{folder / 'metadata.csv'}: label(s) {foreign} are not classes of the run (it trained {info.classes})")
    unseen = sorted(set(synthetic.source_index[synthetic.source_index >= 0].tolist()) - set(info.train_indices))
    if unseen:
        raise UserError(f"{folder / 'metadata.csv'}: source_index {unseen[:5]} are not real images the run trained on")
    reading = tqdm(range(len(synthetic)), desc="read synthetic", leave=False, disable=not show_progress or len(synthetic) < 2000)
    images = np.stack([checked_pixels(synthetic.image(i), synthetic.files[i], info.size, info.channels) for i in reading])
    order = synthetic.set_order()
    files = [synthetic.files[i].relative_to(folder).as_posix() for i in order]
    soft = None if synthetic.soft_labels is None else synthetic.soft_labels[order]
    return SyntheticImages(ImageSet(images[order], synthetic.labels[order], list(info.class_names)), files, synthetic.source_index[order], soft)


def checked_pixels(image: Image.Image, path: Path, size: int, channels: int, like: str = "like the run's training images") -> np.ndarray:
    """A synthetic PIL image as uint8 (H, W, C), refused in one line unless its size and channels are `size` and
    `channels` (`like`: what they must match, said in the message)."""
    if image.size != (size, size):
        raise UserError(f"{path}: {image.size[0]}x{image.size[1]} pixels, expected {size}x{size} {like}")
    if image.mode != ("L" if channels == 1 else "RGB"):
        expected = "grayscale (L), 1 channel" if channels == 1 else "RGB, 3 channels"
        raise UserError(f"{path}: image mode {image.mode}, expected {expected} {like}")
    pixels = np.asarray(image)
    return pixels[..., None] if channels == 1 else pixels
