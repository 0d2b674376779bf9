"""Real data: MedMNIST npz files or a folder of images per class, decoded once into memory.

`load_split` returns uint8 images (N, H, W, C) with int64 labels; `to_model_tensor` turns them into
the float tensor in [-1, 1] (N, C, H, W) that training keeps on its device, so no training step
decodes or collates per sample.
"""

from __future__ import annotations

import hashlib
import urllib.request
import zipfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthaug.core.errors import UserError
from synthaug.data.classes import class_indices
from synthaug.storage.files import atomic_write_bytes
from synthaug.recipe.sections import DataConfig, medmnist_info

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# The largest image read (8000 x 8000): every image is resized to data.size, and decoding one this big already takes
# 192 MB (RGB). Checked from the header, before decoding; PIL's own decompression-bomb limit lies above it.
MAX_IMAGE_PIXELS = 8000 * 8000
SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def take(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.class_names)


def default_data_root() -> Path:
    return Path.home() / ".medmnist"


def medmnist_file(flag: str, size: int, root: Path) -> Path:
    return Path(root).expanduser() / f"{flag}{'' if size == 28 else f'_{size}'}.npz"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_medmnist_file(flag: str, size: int, root: Path | None) -> Path:
    """Path of the npz file; downloaded from medmnist's URL (MD5-checked) when missing."""
    info = medmnist_info()[flag]
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = info[f"url{suffix}"], info[f"MD5{suffix}"]
    path = medmnist_file(flag, size, root or default_data_root())
    if path.is_file():
        if _md5(path) != md5:
            warnings.warn(f"{path}: MD5 differs from the official {md5}; using the local file as it is")
        return path
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            payload = response.read()
    except Exception as exc:  # any network failure ends in the same advice
        raise UserError(
            f"data.medmnist: {path} not found and downloading {url} failed ({type(exc).__name__}); "
            f"download it by hand to {path}, or point data.root / --data-root / SYNTHAUG_DATA_ROOT at its folder"
        ) from None
    if hashlib.md5(payload).hexdigest() != md5:
        raise UserError(f"data.medmnist: download of {url} has the wrong MD5 (expected {md5}); nothing was saved")
    atomic_write_bytes(path, payload)
    return path


def _load_medmnist(cfg: DataConfig, split: str) -> ImageSet:
    info = medmnist_info()[cfg.medmnist]
    path = ensure_medmnist_file(cfg.medmnist, cfg.size, cfg.root)
    try:
        with np.load(path) as npz:
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    except KeyError as exc:
        raise UserError(f"{path}: missing array {exc.args[0]} (expected medmnist's npz layout)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # e.g. a truncated download
        raise UserError(f"{path}: not a readable npz file ({type(exc).__name__}); download it again") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:3] != (cfg.size, cfg.size) or images.dtype != np.uint8:
        raise UserError(f"{path}: {split}_images has shape {images.shape} {images.dtype}, expected uint8 (N, {cfg.size}, {cfg.size}[, C])")
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    labels = labels.reshape(len(labels), -1)[:, 0].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise UserError(f"{path}: {split}_labels outside 0..{len(names) - 1}")
    return _with_channels(ImageSet(images, labels, names), cfg.channels)


def _folder_root(cfg: DataConfig, split: str) -> Path | None:
    """`folder/train/<class>/...` when the folder has split sub-folders, else `folder/<class>/...` as train."""
    folder = Path(cfg.folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"data.folder: {folder} is not a directory")
    if (folder / "train").is_dir():
        return folder / split if (folder / split).is_dir() else None
    return folder if split == "train" else None


def folder_class_names(cfg: DataConfig) -> list[str]:
    folder = _folder_root(cfg, "train")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UserError(f"data.folder: {folder} has no class sub-folders (expected one folder of images per class)")
    return names


def _too_large(path: Path, shape: str) -> UserError:
    return UserError(f"{path}: {shape}more than synthaug reads ({MAX_IMAGE_PIXELS:,} pixels, e.g. 8000 x 8000); downscale it first")


def read_image(path: Path, size: int) -> Image.Image:
    """An image file as an "L" or "RGB" image of size x size; a damaged one, or one of more than MAX_IMAGE_PIXELS, is a
    one-line UserError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise _too_large(path, f"{img.width} x {img.height} pixels, ")
                img.load()
                gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
                img = img.convert("L" if gray else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's limit, checked as it opens the file
        raise _too_large(path, "") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({exc})") from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return img


def _load_folder(cfg: DataConfig, split: str) -> ImageSet:
    names = folder_class_names(cfg)
    root = _folder_root(cfg, split)
    if root is None:
        raise UserError(f"data.folder: {cfg.folder} has no '{split}' split (make train/, val/ and test/ sub-folders, each with one folder per class)")
    pictures, labels = [], []
    for label, name in enumerate(names):
        class_dir = root / name
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if class_dir.is_dir() else []
        for path in files:
            pictures.append(read_image(path, cfg.size))
            labels.append(label)
    if not pictures:
        raise UserError(f"data.folder: no images (png/jpg/bmp/tif) under {root}")
    channels = cfg.channels or (1 if all(p.mode == "L" for p in pictures) else 3)
    mode = "L" if channels == 1 else "RGB"
    images = np.stack([np.asarray(p.convert(mode)) for p in pictures])
    if images.ndim == 3:
        images = images[..., None]
    return ImageSet(images, np.asarray(labels, dtype=np.int64), names)


def _with_channels(data: ImageSet, channels: int | None) -> ImageSet:
    if channels is None or channels == data.channels:
        return data
    if channels == 3:
        return ImageSet(np.repeat(data.images, 3, axis=-1), data.labels, data.class_names)
    gray = np.asarray(data.images, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return ImageSet(np.clip(gray.round(), 0, 255).astype(np.uint8)[..., None], data.labels, data.class_names)


def load_split(cfg: DataConfig, split: str = "train") -> ImageSet:
    """One split ('train', 'val' or 'test') of the recipe's data, decoded into memory."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return _load_medmnist(cfg, split) if cfg.medmnist else _load_folder(cfg, split)


def class_names(cfg: DataConfig) -> list[str]:
    """Class names without loading images."""
    if cfg.medmnist:
        labels = medmnist_info()[cfg.medmnist]["label"]
        return [labels[str(i)] for i in range(len(labels))]
    return folder_class_names(cfg)


def resolve_classes(cfg: DataConfig) -> list[int]:
    """Indices of the classes the recipe asks for (`data.classes`, by name, index or digit string); all by default."""
    names = class_names(cfg)
    return list(range(len(names))) if cfg.classes is None else class_indices(cfg.classes, names, "data.classes")
