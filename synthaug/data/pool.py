"""The unlabeled pool (`data.unlabeled`): images without labels that a generator may learn the data's
appearance from, beside the few labelled ones.

Either the rest of the training split (labels discarded), or every image under a folder. Its record in
classes.json (which split indices or which files) is what the leak guard compares: a classifier arm may
see every image the generator saw, labelled or not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthaug.recipe.sections import DataConfig
from synthaug.data.images import IMAGE_SUFFIXES, SPLITS, ImageSet, load_split, read_image
from synthaug.core.errors import UserError
from synthaug.data.subsets import site_order


@dataclass
class Pool:
    images: np.ndarray  # uint8 (N, H, W, C)
    record: dict  # classes.json "unlabeled": source, count, indices (split) or files (folder)


def load_pool(cfg: DataConfig, classes: list[int], labelled: np.ndarray, train: ImageSet) -> Pool | None:
    """The recipe's pool, disjoint from the labelled indices `labelled` of `train`; None without data.unlabeled."""
    if cfg.unlabeled is None:
        return None
    if cfg.unlabeled.folder is None:
        rest = np.setdiff1d(np.flatnonzero(np.isin(train.labels, classes)), labelled)
        if cfg.site is not None:  # the other site's images never enter this site's pool
            rest = np.intersect1d(rest, np.concatenate(list(site_order(train.labels, cfg.site, classes).values())))
        chosen = np.sort(_draw(rest, cfg, "images of the training split outside the labelled subset"))
        return Pool(train.images[chosen], {"source": "train split", "count": int(len(chosen)), "indices": chosen.tolist()})
    root = Path(cfg.unlabeled.folder).expanduser()
    files = _folder_files(root)
    picked = [files[i] for i in np.sort(_draw(np.arange(len(files)), cfg, f"images under {cfg.unlabeled.folder}"))]
    mode = "L" if train.channels == 1 else "RGB"
    images = np.stack([np.asarray(read_image(f, cfg.size).convert(mode)) for f in picked])
    images = images[..., None] if images.ndim == 3 else images
    _refuse_overlap(images, picked, cfg, classes, train.take(labelled))
    return Pool(images, {"source": str(root), "count": len(picked), "files": [str(f.relative_to(root)) for f in picked]})


def _draw(candidates: np.ndarray, cfg: DataConfig, what: str) -> np.ndarray:
    """All candidates, or `count` / `fraction` of them drawn with the pool's own seed."""
    spec = cfg.unlabeled
    if spec.count is not None and spec.count > len(candidates):
        raise UserError(f"data.unlabeled.count: {spec.count} exceeds the {len(candidates)} {what}")
    take = spec.count if spec.count is not None else len(candidates) if spec.fraction is None else max(1, round(spec.fraction * len(candidates)))
    if take == 0:
        raise UserError(f"data.unlabeled: there are no {what}")
    return np.random.default_rng([spec.seed, 1]).permutation(candidates)[:take]


def _folder_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"data.unlabeled.folder: {folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise UserError(f"data.unlabeled.folder: no images (png/jpg/bmp/tif) under {folder}")
    return files


def _fingerprints(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images]


def _refuse_overlap(images: np.ndarray, files: list[Path], cfg: DataConfig, classes: list[int], labelled: ImageSet) -> None:
    """A pool image identical (after resizing) to a labelled, val or test image is an error naming the file."""
    known = {h: ("labelled training", i) for i, h in enumerate(_fingerprints(labelled.images))}
    for split in SPLITS[1:]:
        data = load_split(cfg, split)
        keep = np.flatnonzero(np.isin(data.labels, classes))
        known.update({h: (split, int(i)) for i, h in zip(keep, _fingerprints(data.images[keep]))})
    for path, digest in zip(files, _fingerprints(images)):
        if digest in known:
            split, index = known[digest]
            raise UserError(f"data.unlabeled.folder: {path} is the {split} image {index}; "
                            "the pool must hold neither labelled, val nor test images")
