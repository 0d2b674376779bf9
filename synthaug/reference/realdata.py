"""What a run's synthetic images are compared with: the real images its generator saw, the real test and val
splits, and the feature classifier trained on them (cached in `<run>/audit/features.pt`).

Shared by `audit` (fidelity, diversity, memorization) and generate's filters (copies, confidence).
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
    val: ImageSet  # real val images of the run's classes (out-of-sample check of the copy threshold)
    pool: np.ndarray | None = None  # uint8 (N, H, W, C): the unlabeled images the generator saw (data.unlabeled)

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


def real_features(data: RunData, device: torch.device, show_progress: bool = True) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """The feature classifier, what its training did (val-selected step, val metrics), and the features of the
    run's real train/test images; from `<run>/audit/features.pt` when that was made with the same settings and data.

    The classifier is the evaluate harness's (`train_classifier`, recipe `evaluate` settings), trained on the
    generator's training images and selected on the real val split.
    """
    cache = data.run.features
    key = json.dumps(
        {
            "features_of": ["train", "test", "val"],
            "classifier": data.recipe.evaluate.model_dump(mode="json", include=CLASSIFIER_FIELDS),
            "seed": data.recipe.audit.seed,
            "train": hashlib.sha1(data.train.images.tobytes() + data.train_indices.tobytes()).hexdigest(),
            "test": hashlib.sha1(data.test.images.tobytes()).hexdigest(),
            "val": hashlib.sha1(data.val.images.tobytes()).hexdigest(),
        },
        sort_keys=True,
    )
    num_classes = len(data.class_names)
    if cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # damaged or from another version: make it again
            stored = None
        if stored is not None and stored.get("key") == key:
            model = build_classifier(data.recipe.evaluate, data.train.channels, num_classes)
            model.load_state_dict(stored["classifier"])
            return model.to(device).eval(), json.loads(stored["training"]), stored["features"]
    cfg = data.recipe.evaluate
    print(
        f"audit: training the feature classifier ({cfg.classifier}, {cfg.steps} steps, evaluate.* settings) on "
        f"{len(data.train.labels)} real images; cached in {cache} for later audits",
        flush=True,
    )
    model, info = train_classifier(
        to_model_tensor(data.train.images, device),
        torch.from_numpy(data.train.labels).to(device),
        to_model_tensor(data.val.images, device),
        torch.from_numpy(data.val.labels).to(device),
        data.recipe.evaluate,
        seed=data.recipe.audit.seed,
        num_classes=num_classes,
        show_progress=show_progress,
        desc="audit feature classifier",
    )
    training = {k: v for k, v in dataclasses.asdict(info).items() if k != "curve"}
    features = {name: extract_features(model, getattr(data, name).images, device) for name in ("train", "test", "val")}
    buffer = io.BytesIO()
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    torch.save({"key": key, "classifier": state, "training": json.dumps(training), "features": features}, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    return model, training, features
