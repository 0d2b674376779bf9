"""Candidate filters for `generate`: the protocol, and the two filters made from a run's real reference:
near-copies of training images (pixel space) and images the feature classifier does not assign to their class.

Both are calibrated on real val (CALIBRATION_SPLIT): the copy thresholds are val quantiles, the classifier is
selected on val. The images they keep train classifier arms scored on real test, so test never sets a threshold.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from synthaug.classifier.harness import CLASSIFIER_FIELDS, predict, weights_sha256
from synthaug.storage.pixels import to_model_tensor
from synthaug.reference.metrics import NearestImages, nearest_by_correlation
from synthaug.reference.realdata import CALIBRATION_SPLIT, RunData, load_run_data, real_features
from synthaug.storage.rundir import Run
from synthaug.core.runtime import pick_device


class CandidateFilter(Protocol):
    """Decides which candidate images to keep: `keep = f(images, class_idx)`.

    `images` is uint8 (N, H, W, C), all of class `class_idx`; the result is a bool array (N,). The
    decision about one image must depend on that image alone (not on the rest of the batch), so
    that generation stays deterministic. `describe()` returns what the manifest records about the
    filter (its rule and parameters).
    """

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray: ...

    def describe(self) -> dict: ...


def filter_name(candidate_filter) -> str:
    """The name a filter is recorded under: its `name` attribute, else its class or function name."""
    return str(getattr(candidate_filter, "name", None) or getattr(candidate_filter, "__name__", None) or type(candidate_filter).__name__)


def filter_record(candidate_filter) -> dict:
    """What a manifest records about a filter: its name and `describe()`."""
    describe = getattr(candidate_filter, "describe", None)
    return {"name": filter_name(candidate_filter), **(describe() if callable(describe) else {})}


def copy_thresholds(nearest: NearestImages, labels: np.ndarray, classes: list[int], quantile: float) -> dict[int, float]:
    """Per class: the `quantile` quantile of real images' nearest-training-image correlation (`nearest`, one row per
    image of `labels`). Callers pass the real val images (CALIBRATION_SPLIT), never test.

    A class without images gets the quantile over all of them.
    """
    pooled = float(np.quantile(nearest.correlation, quantile))
    return {
        c: float(np.quantile(nearest.correlation[labels == c], quantile)) if (labels == c).any() else pooled
        for c in classes
    }


def calibration_thresholds(data: RunData, quantile: float, device: torch.device | str | None = None) -> tuple[dict[int, float], NearestImages]:
    """The copy threshold of each class of a run, calibrated on its real CALIBRATION_SPLIT (val) images, and those
    images' nearest training images."""
    calibration = getattr(data, CALIBRATION_SPLIT)
    nearest = nearest_by_correlation(calibration.images, data.train.images, data.mirror, device, rotations=data.rotations)
    return copy_thresholds(nearest, calibration.labels, data.classes, quantile), nearest


@dataclass
class CopyFilter:
    """`keep = copy_filter(images, class_idx)`: False for each uint8 (N, H, W, C) image too close to a training image.

    Made by `copy_filter(run)`; `generate --reject-copies` calls it on every batch of candidates.
    """

    name = "near_copy"  # how generate's metadata.csv (rejected_by) and manifest name it
    train_images: np.ndarray
    thresholds: dict[int, float]
    quantile: float
    mirror: bool
    device: torch.device
    rotations: bool = False

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        nearest = nearest_by_correlation(images, self.train_images, self.mirror, self.device, rotations=self.rotations)
        return nearest.correlation < self.thresholds[int(class_idx)]

    def describe(self) -> dict:
        """What a manifest records about the filter."""
        return {
            "rule": "reject an image whose pixel correlation with its nearest training image (mirrors and quarter turns included when training used them)"
            f" exceeds the copy_quantile quantile of the real {CALIBRATION_SPLIT} images' nearest-training-image correlation of its class",
            "calibration_split": CALIBRATION_SPLIT,
            "copy_quantile": self.quantile,
            "mirror": self.mirror,
            **({"rotations": True} if self.rotations else {}),
            "thresholds": {str(c): round(t, 6) for c, t in self.thresholds.items()},
        }


def copy_filter(run: Run, device: torch.device | str | None = None) -> CopyFilter:
    """The near-copy filter of a run, calibrated on its real val images (CALIBRATION_SPLIT) at
    `run.recipe.audit.copy_quantile`. The images it keeps train classifier arms scored on test, so test sets nothing."""
    data = load_run_data(run)
    quantile = data.recipe.audit.copy_quantile
    device = pick_device(device)
    thresholds, _ = calibration_thresholds(data, quantile, device)
    return CopyFilter(data.train.images, thresholds, quantile, data.mirror, device, data.rotations)


@dataclass
class ConfidenceFilter:
    """`keep = confidence_filter(images, class_idx)`: False for each uint8 (N, H, W, C) image that the run's feature
    classifier does not assign to `class_idx` with probability >= `threshold`.

    Made by `confidence_filter(run, threshold)`; `generate --filter-confidence` calls it on every batch of candidates.
    """

    name = "low_confidence"  # how generate's metadata.csv (rejected_by) and manifest name it
    model: torch.nn.Module
    classes: list[int]  # the run's classes: output column j of the model is class classes[j]
    threshold: float
    settings: dict  # the evaluate.* fields (CLASSIFIER_FIELDS) and the seed that made the classifier
    training: dict  # what its training did: steps, val-selected step, val metrics
    weights_sha256: str
    device: torch.device

    @torch.inference_mode()
    def confidence(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        """The classifier's probability of class `class_idx` for each image, float32 (N,)."""
        if int(class_idx) not in self.classes:
            raise ValueError(f"class {class_idx} is not a class of the run ({self.classes})")
        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        # Full precision even inside generate's bf16 autocast: a decision must not move with the sampler's precision.
        with torch.autocast("cuda", enabled=False) if self.device.type == "cuda" else contextlib.nullcontext():
            probs = predict(self.model, to_model_tensor(images, self.device))
        return probs[:, self.classes.index(int(class_idx))].astype(np.float32)

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        return self.confidence(images, class_idx) >= self.threshold

    def describe(self) -> dict:
        """What a manifest records about the filter (deterministic: no wall times)."""
        val = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in self.training.get("val", {}).items()}
        return {
            "rule": "reject an image unless the audit's feature classifier (trained on the run's real training images,"
            f" selected on real {CALIBRATION_SPLIT}; one output per class of the run) gives its own class a probability >= threshold",
            "calibration_split": CALIBRATION_SPLIT,
            "classes": list(self.classes),
            "threshold": self.threshold,
            "classifier": self.settings,
            "steps": self.training.get("steps"),
            "selected_step": self.training.get("best_step"),
            "val": val,
            "weights_sha256": self.weights_sha256,
        }


def confidence_filter(run: Run, threshold: float, device: torch.device | str | None = None, show_progress: bool = True) -> ConfidenceFilter:
    """The classifier-confidence filter of a run: keeps an image when the feature classifier of `real_features`
    (cached in `<run>/audit/features.pt`, shared with `synthaug audit`) gives its class probability >= `threshold`.

    The run recipe's `evaluate.*` settings and `audit.seed` make the classifier; it is trained on the run's real
    training images and its checkpoint selected on real val (CALIBRATION_SPLIT); the test split plays no part.
    """
    if isinstance(threshold, bool) or not 0 < float(threshold) < 1:
        raise ValueError(f"threshold: a probability strictly between 0 and 1, got {threshold!r}")
    data = load_run_data(run)
    device = pick_device(device)
    model, training, _ = real_features(data, device, show_progress)
    model = model.to(device).eval()
    settings = {**data.recipe.evaluate.model_dump(mode="json", include=CLASSIFIER_FIELDS), "seed": data.recipe.audit.seed}
    return ConfidenceFilter(model, list(data.classes), float(threshold), settings, training, weights_sha256(model), device)
