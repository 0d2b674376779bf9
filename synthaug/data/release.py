"""Another site's release (a folder made by `synthaug release`) read as this site's synthetic set: its classes matched
to this data's by name, its soft labels (when it carries them) laid over this data's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from synthaug.core.errors import UserError
from synthaug.data.images import ImageSet
from synthaug.data.synthetic import SyntheticImages, checked_pixels
from synthaug.storage.release import SOFT_PREFIX, ReleaseDir


def class_map(release_names: list[str], class_names: list[str], where: Path) -> dict[int, int]:
    """Release class index -> this data's class index, by name; a name this data lacks is a one-line error."""
    unknown = [name for name in release_names if name not in class_names]
    if unknown:
        raise UserError(f"evaluate.release: {where} has class {unknown[0]!r}, which this data does not name; its classes are "
                        f"{', '.join(map(repr, class_names))} (a release's classes are matched by name)")
    return {i: class_names.index(name) for i, name in enumerate(release_names)}


def read_release(folder: str | Path, class_names: list[str], classes: list[int], size: int, channels: int) -> SyntheticImages:
    """The release's images of `classes`, decoded, checked (files and SHA-256 against release.json, size and channels
    against this data), with labels in this data's indices, each class in the release's order; `soft_labels` (N,
    len(class_names)) when the release carries a teacher's probabilities."""
    release = ReleaseDir(folder)
    manifest = release.read_manifest()
    release.verify(manifest)
    mapping = class_map(list(manifest["class_names"]), class_names, release.root)
    try:
        table = pd.read_csv(release.metadata, dtype={"file_name": str, "class_name": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{release.metadata}: not a readable CSV ({type(exc).__name__})") from None
    labels = table["label"].map(mapping).to_numpy()
    keep = np.flatnonzero(np.isin(labels, classes))
    keep = keep[np.argsort(labels[keep], kind="stable")]
    if not len(keep):
        raise UserError(f"evaluate.release: {release.root} has no image of the evaluated classes "
                        f"{', '.join(class_names[c] for c in classes)}")
    images = np.stack([_pixels(release.root / table["file_name"].iloc[i], size, channels) for i in keep])
    soft_columns = [c for c in table.columns if c.startswith(SOFT_PREFIX)]
    soft = None
    if soft_columns:
        soft = np.zeros((len(keep), len(class_names)), dtype=np.float32)
        for column in soft_columns:
            soft[:, mapping[int(column.removeprefix(SOFT_PREFIX))]] = table[column].to_numpy(dtype=np.float32)[keep]
    files = table["file_name"].iloc[keep].tolist()
    return SyntheticImages(ImageSet(images, labels[keep].astype(np.int64), list(class_names)), files,
                           np.full(len(keep), -1, dtype=np.int64), soft)


def _pixels(path: Path, size: int, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return checked_pixels(image, path, size, channels, like="like this data's images (use a release made at its size and channels)")
