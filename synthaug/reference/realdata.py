"""What a run's synthetic images are compared with: the real images its generator saw, the real test and val
splits, and the feature classifier trained on them (cached in `<run>/audit/features.pt`).

Shared by `audit` (fidelity, diversity, memorization, label fidelity) and generate's filters (copies, confidence).
Val is the selection split: it selects the feature classifier and calibrates every threshold that decides which
synthetic images are kept (CALIBRATION_SPLIT); test is only ever a reported baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from synthaug.classifier.harness import CLASSIFIER_FIELDS, extract_features, train_classifier
from synthaug.data.images import ImageSet, load_split
from synthaug.storage.pixels import to_model_tensor
from synthaug.core.errors import UserError
from synthaug.storage.files import atomic_write_bytes
from synthaug.classifier.networks import build_classifier
from synthaug.data.pool import load_pool
from synthaug.recipe.recipe import Recipe
from synthaug.storage.rundir import Run, RunDir

# The real split that selects the feature classifier and calibrates the copy thresholds (val, the selection split
# everywhere): the images generate keeps train classifier arms that are scored on test, so test must set nothing.
CALIBRATION_SPLIT = "val"


@dataclass
class RunData:
    """What the audit compares against: the generator's own training images and the real test and val splits."""

    run: RunDir
    recipe: Recipe
    classes: list[int]
    class_names: list[str]
    train_indices: np.ndarray  # into the real train split
    train: ImageSet  # the real images the generator was trained on
    test: ImageSet  # real test images of the run's classes
    val: ImageSet  # real val images of the run's classes: select the feature classifier, calibrate the copy thresholds
    pool: np.ndarray | None = None  # uint8 (N, H, W, C): the unlabeled images the generator saw (data.unlabeled)

    def columns(self, labels: np.ndarray) -> np.ndarray:
        """The feature classifier's output column of each class label (int64): column j is class `classes[j]`.

        The classifier has one output per class of the run, not per class of the dataset, so a run of `data.classes:
        [0, 3]` of an 8-class set is a binary problem (binary AUC in the harness's metrics)."""
        where = {c: j for j, c in enumerate(self.classes)}
        labels = np.asarray(labels)
        unknown = sorted({int(c) for c in np.unique(labels)} - set(where))
        if unknown:
            raise ValueError(f"label(s) {unknown} are not classes of the run ({self.classes})")
        return np.array([where[int(c)] for c in labels], dtype=np.int64)

    @property
    def mirror(self) -> bool:
        """Training flipped images left-right, so a mirrored copy is a copy too."""
        return bool({"hflip", "vflip"} & set(self.recipe.train.augment))

    @property
    def rotations(self) -> bool:
        """Training turned images by quarter turns, so a turned copy is a copy too."""
        return "rot90" in self.recipe.train.augment

    @property
    def symmetries(self) -> int:
        """How many views of each image the copy check compares (1, 2 with mirrors, 4 or 8 with quarter turns)."""
        return (2 if self.mirror else 1) * (4 if self.rotations else 1)


def _of_classes(data: ImageSet, classes: list[int]) -> ImageSet:
    return data.take(np.flatnonzero(np.isin(data.labels, classes)))


def load_run_data(run: Run) -> RunData:
    """The run's generator training images (classes.json train_indices) and the real test and val splits, read with
    the run's recipe (which may carry other `audit`/`evaluate` settings than the run's recipe.yaml)."""
    recipe = run.recipe
    train_split = load_split(recipe.data, "train")
    indices = np.asarray(run.info.train_indices, dtype=np.int64)
    if len(indices) == 0 or indices.max() >= len(train_split.labels):
        raise UserError(f"{run.dir.classes}: train_indices do not fit the {len(train_split.labels)} images of the train split of {recipe.data.medmnist or recipe.data.folder}")
    classes = list(run.info.classes)
    pool = load_pool(recipe.data, classes, indices, train_split) if run.info.unlabeled is not None else None
    if pool is not None and pool.record != run.info.unlabeled:
        raise UserError(f"{run.dir.classes}: its unlabeled pool differs from the one data.unlabeled gives now; audit with the run's own recipe")
    return RunData(
        run=run.dir,
        recipe=recipe,
        classes=classes,
        class_names=list(run.info.class_names),
        train_indices=indices,
        train=train_split.take(indices),
        test=_of_classes(load_split(recipe.data, "test"), classes),
        val=_of_classes(load_split(recipe.data, "val"), classes),
        pool=pool.images if pool is not None else None,
    )


def _digest(images: np.ndarray, *more: np.ndarray) -> str:
    return hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in (images, *more))).hexdigest()


def real_features(data: RunData, device: torch.device, show_progress: bool = True) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """The feature classifier, what its training did (val-selected step, val metrics), and the features of the
    run's real train/test/val images; from `<run>/audit/features.pt` when that was made with the same settings and data.

    The classifier is the evaluate harness's (`train_classifier`, recipe `evaluate` settings), trained on the
    generator's training images (class-balanced batches with `audit.judge_sampling: balanced`) and selected on the
    real val split; it has one output per class of the run
    (`RunData.columns`). The test split never reaches it: the cache is keyed on train and val (and the settings), and
    other test images only make their features again.
    """
    cache = data.run.features
    key = json.dumps(
        {
            "classifier": data.recipe.evaluate.model_dump(mode="json", include=CLASSIFIER_FIELDS),
            "seed": data.recipe.audit.seed,
            "outputs": data.classes,  # column j is class classes[j]
            "train": _digest(data.train.images, data.train_indices, data.train.labels),
            "val": _digest(data.val.images, data.val.labels),
            "selected_on": "val",
            **({"sampling": "balanced"} if data.recipe.audit.judge_sampling == "balanced" else {}),  # older caches keep their key
        },
        sort_keys=True,
    )
    features_of = {name: _digest(getattr(data, name).images) for name in ("train", "test", "val")}
    num_classes = len(data.classes)
    if cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # damaged or from another version: make it again
            stored = None
        if stored is not None and stored.get("key") == key:
            model = build_classifier(data.recipe.evaluate, data.train.channels, num_classes)
            model.load_state_dict(stored["classifier"])
            model, training = model.to(device).eval(), json.loads(stored["training"])
            if stored.get("features_of") == json.dumps(features_of, sort_keys=True):
                return model, training, stored["features"]
            features = {name: extract_features(model, getattr(data, name).images, device) for name in ("train", "test", "val")}
            _store(cache, key, features_of, model, training, features)
            return model, training, features
    cfg = data.recipe.evaluate
    print(
        f"audit: training the feature classifier ({cfg.classifier}, {cfg.steps} steps, evaluate.* settings, "
        f"{data.recipe.audit.judge_sampling} batches) on "
        f"{len(data.train.labels)} real images; cached in {cache} for later audits",
        flush=True,
    )
    model, info = train_classifier(
        to_model_tensor(data.train.images, device),
        torch.from_numpy(data.columns(data.train.labels)).to(device),
        to_model_tensor(data.val.images, device),
        torch.from_numpy(data.columns(data.val.labels)).to(device),
        data.recipe.evaluate,
        seed=data.recipe.audit.seed,
        num_classes=num_classes,
        show_progress=show_progress,
        desc="audit feature classifier",
        balanced=data.recipe.audit.judge_sampling == "balanced",
    )
    training = {k: v for k, v in dataclasses.asdict(info).items() if k != "curve"}
    features = {name: extract_features(model, getattr(data, name).images, device) for name in ("train", "test", "val")}
    _store(cache, key, features_of, model, training, features)
    return model, training, features


def _store(cache, key: str, features_of: dict, model: torch.nn.Module, training: dict, features: dict) -> None:
    buffer = io.BytesIO()
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    torch.save({"key": key, "features_of": json.dumps(features_of, sort_keys=True), "classifier": state,
                "training": json.dumps(training), "features": features}, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
