"""`synthaug audit`: fidelity, diversity and memorization of a synthetic set, each beside a real-vs-real baseline.

Two spaces, two jobs:

- **Feature space** (fidelity and diversity): the penultimate layer of the evaluate harness's
  classifier trained on the run's own real training images (no downloaded Inception weights; they
  fit grey X-rays and pathology tiles poorly). Fréchet distance overall and per class, improved
  precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020). Every
  figure is computed on sets of the same size and class mix: synthetic vs real training images,
  and real test and real val vs real training images (the baselines: what "as good as real" looks like).
  The classifier and the real features are cached in `<run>/audit/`.
- **Pixel space** (memorization): each synthetic image's nearest training image by normalized
  correlation (Pearson correlation of the pixels; the mirror image too when the run trained with
  horizontal flips). The copy threshold of a class is the `copy_quantile` quantile of the same
  nearest-neighbour correlation of the real test images of that class: a real image of a new
  patient exceeds it with probability about 1 - copy_quantile, so a synthetic set whose flagged
  fraction is far above that is copying. The real validation images, never used for calibration,
  give the out-of-sample rate.

Two filters for `synthaug generate` come from the same parts: `copy_filter` (near-copies, pixel space)
and `confidence_filter` (images the feature classifier does not confidently assign to their own class).

Nearest-neighbour searches run as chunked matrix products on the GPU when there is one; no block
ever exceeds CHUNK_ELEMENTS numbers, whatever the set sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from synthaug.data import ImageSet, load_split, to_model_tensor
from synthaug.errors import UserError
from synthaug.recipe import Recipe, load_recipe
from synthaug.rundir import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text

CHUNK_ELEMENTS = 2**24  # numbers per similarity block and per chunk of rows (64 MiB in float32)
MAX_CHUNK_ROWS = 4096
FEATURE_BATCH = 512
# The evaluate settings that decide the feature classifier's weights (arms, ratios, seeds... do not).
CLASSIFIER_FIELDS = {"classifier", "width", "steps", "batch_size", "lr", "weight_decay", "milestones", "gamma", "eval_every", "select_on"}
EDGE_TOLERANCE = 1e-9  # relative; float64 rounding of one distance computed in two different blocks


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given torch device (checked), else the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device}: not a torch device (expected e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use cpu")
    return device


# ---------------------------------------------------------------------------------------------
# Chunked nearest-neighbour primitives


def _chunk_rows(dim: int) -> int:
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_ELEMENTS // max(dim, 1)))


def _blocks(queries, keys, prepare: Callable, device: torch.device, desc: str | None = None, show_progress: bool = False):
    """Yield (row offset, column offset, query rows, key rows) covering queries x keys in bounded blocks.

    `prepare` turns a host slice (numpy or tensor) into device rows; key chunks are prepared again for
    every query chunk, so device memory holds two chunks and one block, never a whole set.
    """
    rows = _chunk_rows(int(np.prod(queries.shape[1:])))
    total = math.ceil(len(queries) / rows) * math.ceil(len(keys) / rows)
    with tqdm(total=total, desc=desc, disable=not show_progress or desc is None, unit="block", leave=False) as bar:
        for i in range(0, len(queries), rows):
            q = prepare(queries[i : i + rows], device)
            for j in range(0, len(keys), rows):
                yield i, j, q, prepare(keys[j : j + rows], device)
                bar.update(1)


def unit_pixel_rows(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, H*W*C) rows with mean 0 and norm 1, so a dot product is a Pearson correlation."""
    rows = torch.from_numpy(np.ascontiguousarray(images)).to(device).reshape(len(images), -1).float()
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-6)  # a flat image correlates 0 with everything


@dataclass
class NearestImages:
    """For each query image: the correlation with its nearest key image, that image's index, and whether its mirror matched."""

    correlation: np.ndarray  # float32 (N,)
    index: np.ndarray  # int64 (N,), into the keys
    mirrored: np.ndarray  # bool (N,)


def nearest_by_correlation(
    queries: np.ndarray,
    keys: np.ndarray,
    mirror: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> NearestImages:
    """Each query image's most correlated key image (uint8 NHWC both); with `mirror`, keys flipped left-right count too.

    corr(flip(q), k) = corr(q, flip(k)), so the mirror pass flips the queries and needs no second copy of the keys.
    """
    device = pick_device(device)
    n = len(queries)
    best = torch.full((n,), -2.0, device=device)
    index = torch.zeros(n, dtype=torch.long, device=device)
    mirrored = torch.zeros(n, dtype=torch.bool, device=device)
    for flipped in (False, True) if mirror else (False,):
        view = queries[:, :, ::-1] if flipped else queries
        desc = "nearest training image" + (" (mirrored)" if flipped else "")
        for i, j, q, k in _blocks(view, keys, unit_pixel_rows, device, desc, show_progress):
            value, where = (q @ k.T).max(dim=1)
            rows = slice(i, i + len(q))
            better = value > best[rows]
            best[rows] = torch.where(better, value, best[rows])
            index[rows] = torch.where(better, where + j, index[rows])
            mirrored[rows] = torch.where(better, torch.tensor(flipped, device=device), mirrored[rows])
    return NearestImages(best.cpu().numpy(), index.cpu().numpy(), mirrored.cpu().numpy())


def _to_device(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    return rows.to(device)


def _squared_distances(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return ((q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2 * q @ k.T).clamp_min(0)


def knn_distances(
    queries: torch.Tensor, keys: torch.Tensor, k: int, exclude_self: bool = False, device: torch.device | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (N, k), ascending, and indices of each query's k nearest keys.

    `exclude_self`: queries and keys are the same set and a point is not its own neighbour.
    """
    device = pick_device(device)
    if k > len(keys) - int(exclude_self):
        raise ValueError(f"k={k} needs more than {len(keys)} points")
    dist = torch.full((len(queries), k), math.inf, dtype=queries.dtype, device=device)
    index = torch.zeros((len(queries), k), dtype=torch.long, device=device)
    for i, j, q, key_rows in _blocks(queries, keys, _to_device, device):
        block = _squared_distances(q, key_rows)
        if exclude_self:
            rows = torch.arange(i, i + len(q), device=device)[:, None]
            cols = torch.arange(j, j + len(key_rows), device=device)[None, :]
            block = block.masked_fill(rows == cols, math.inf)
        merged = torch.cat([dist[i : i + len(q)], block], dim=1)
        merged_index = torch.cat([index[i : i + len(q)], torch.arange(j, j + len(key_rows), device=device).expand(len(q), -1)], dim=1)
        dist[i : i + len(q)], pick = merged.topk(k, dim=1, largest=False)
        index[i : i + len(q)] = merged_index.gather(1, pick)
    return dist.sqrt().cpu().numpy(), index.cpu().numpy()


def ball_counts(points: torch.Tensor, centers: torch.Tensor, radii: np.ndarray, device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For balls B(center_i, radius_i): how many balls hold each point, and how many points each ball holds."""
    device = pick_device(device)
    # A point on a ball's edge (a centre's own k-th neighbour) is inside, although its distance computed
    # again in another block may differ from the radius in the last bits.
    reach = torch.as_tensor(radii, dtype=points.dtype, device=device) * (1 + EDGE_TOLERANCE)
    per_point = torch.zeros(len(points), dtype=torch.long, device=device)
    per_center = torch.zeros(len(centers), dtype=torch.long, device=device)
    for i, j, p, c in _blocks(points, centers, _to_device, device):
        inside = _squared_distances(p, c).sqrt() <= reach[None, j : j + len(c)]
        per_point[i : i + len(p)] += inside.sum(1)
        per_center[j : j + len(c)] += inside.sum(0)
    return per_point.cpu().numpy(), per_center.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Fidelity and diversity metrics on feature vectors


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (rows), in float64.

    tr sqrt(S_a S_b) is computed as the trace of the square root of the symmetric matrix
    sqrt(S_a) S_b sqrt(S_a), whose eigenvalues are real and non-negative: stable even when the
    covariances are singular (fewer samples than dimensions).
    """
    a, b = torch.as_tensor(a, dtype=torch.float64).cpu(), torch.as_tensor(b, dtype=torch.float64).cpu()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 vectors per set")
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float((mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root).clamp_min(0))


def prdc(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int, device: torch.device | str | None = None) -> dict:
    """Improved precision and recall (Kynkäänniemi 2019) and density and coverage (Naeem 2020) with k neighbours.

    A point's ball reaches its k-th nearest neighbour in its own set. precision: fraction of fake
    points inside some real ball; recall: fraction of real points inside some fake ball; density:
    fake points inside real balls, counted with multiplicity, / (k * fakes), about 1 when the sets
    match; coverage: fraction of real balls holding a fake point. Distances in float64, so a point
    on a ball's edge counts the same in every pass.
    """
    real = torch.as_tensor(real, dtype=torch.float64)
    fake = torch.as_tensor(fake, dtype=torch.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k={k} needs more than {k} real and fake vectors (got {len(real)} and {len(fake)})")
    centre = real.mean(0)  # distances do not change; centring keeps the float error of |a|^2 + |b|^2 - 2ab small
    real, fake = real - centre, fake - centre
    real_radii = knn_distances(real, real, k, exclude_self=True, device=device)[0][:, -1]
    fake_radii = knn_distances(fake, fake, k, exclude_self=True, device=device)[0][:, -1]
    fake_in_real_balls, fakes_per_real_ball = ball_counts(fake, real, real_radii, device)
    real_in_fake_balls, _ = ball_counts(real, fake, fake_radii, device)
    return {
        "precision": float((fake_in_real_balls > 0).mean()),
        "recall": float((real_in_fake_balls > 0).mean()),
        "density": float(fake_in_real_balls.sum() / (k * len(fake))),
        "coverage": float((fakes_per_real_ball > 0).mean()),
    }


# ---------------------------------------------------------------------------------------------
# Inputs: the run's real images and a synthetic folder


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

    @property
    def mirror(self) -> bool:
        """Training flipped images left-right, so a mirrored copy is a copy too."""
        return "hflip" in self.recipe.train.augment


def _of_classes(data: ImageSet, classes: list[int]) -> ImageSet:
    return data.take(np.flatnonzero(np.isin(data.labels, classes)))


AUDIT_OVERRIDABLE = ("audit.", "evaluate.", "data.root=")


def run_recipe(run_dir: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe a run was made with, with `--set` overrides of its `audit`, `evaluate` and `data.root` fields."""
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise UserError(f"--run {run_dir}: no such directory")
    run.read_classes()  # says "not a synthaug run" before anything else
    for pair in overrides or []:
        if not pair.startswith(AUDIT_OVERRIDABLE):
            raise UserError(f"--set {pair}: an audit may only change audit.*, evaluate.* and data.root (the rest made the run)")
    return load_recipe(run.recipe, overrides)


def load_run_data(run_dir: str | Path, recipe: Recipe | None = None) -> RunData:
    """The run's recipe (`recipe` if given, else its own), its generator's training images (classes.json
    train_indices) and the real test and val splits."""
    recipe = recipe or run_recipe(run_dir)
    run = RunDir(Path(run_dir))
    info = run.read_classes()
    train_split = load_split(recipe.data, "train")
    indices = np.asarray(info["train_indices"], dtype=np.int64)
    if len(indices) == 0 or indices.max() >= len(train_split.labels):
        raise UserError(f"{run.classes}: train_indices do not fit the {len(train_split.labels)} images of the train split of {recipe.data.medmnist or recipe.data.folder}")
    classes = [int(c) for c in info["classes"]]
    return RunData(
        run=run,
        recipe=recipe,
        classes=classes,
        class_names=list(info["class_names"]),
        train_indices=indices,
        train=train_split.take(indices),
        test=_of_classes(load_split(recipe.data, "test"), classes),
        val=_of_classes(load_split(recipe.data, "val"), classes),
    )


def _pixels(image, path: Path, size: int, channels: int) -> np.ndarray:
    """A synthetic PIL image as uint8 (H, W, C), refused unless its size and channels are the run's."""
    if image.size != (size, size):
        raise UserError(f"{path}: {image.size[0]}x{image.size[1]} pixels, expected {size}x{size} like the run's training images")
    if image.mode != ("L" if channels == 1 else "RGB"):
        expected = "grayscale (L), 1 channel" if channels == 1 else "RGB, 3 channels"
        raise UserError(f"{path}: image mode {image.mode}, expected {expected} like the run's training images")
    pixels = np.asarray(image)
    return pixels[..., None] if channels == 1 else pixels


def load_synthetic(folder: str | Path, data: RunData) -> tuple[ImageSet, list[str]]:
    """A synthetic set written by `synthaug generate` (read with SynthDataset), checked against the run; and its file names."""
    from synthaug.dataset import SynthDataset

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--synthetic {folder}: no such directory; run `synthaug generate` first")
    synthetic = SynthDataset(folder)
    made_by = json.loads((folder / "manifest.json").read_text()).get("run") if (folder / "manifest.json").is_file() else None
    if made_by and Path(made_by).resolve() != data.run.root.resolve():
        raise UserError(f"{folder}: was generated from the run {made_by}, not {data.run.root}; audit each run with its own synthetic set")
    if len(synthetic) == 0:
        raise UserError(f"{folder}: no synthetic images (metadata.csv lists none)")
    foreign = sorted(set(synthetic.labels.tolist()) - set(data.classes))
    if foreign:
        raise UserError(f"{folder / 'metadata.csv'}: label(s) {foreign} are not classes of the run (it trained {data.classes})")
    info = data.run.read_classes()
    size, channels = int(info["size"]), int(info["channels"])
    reading = tqdm(range(len(synthetic)), desc="read synthetic", leave=False, disable=len(synthetic) < 2000)
    images = np.stack([_pixels(synthetic.image(i), synthetic.files[i], size, channels) for i in reading])
    files = [path.relative_to(folder).as_posix() for path in synthetic.files]
    return ImageSet(images, synthetic.labels, data.class_names), files


# ---------------------------------------------------------------------------------------------
# Memorization: the copy threshold and the filter for generation


def copy_thresholds(test_nearest: NearestImages, test_labels: np.ndarray, classes: list[int], quantile: float) -> dict[int, float]:
    """Per class: the `quantile` quantile of the real test images' nearest-training-image correlation.

    A class without test images gets the quantile over all test images.
    """
    pooled = float(np.quantile(test_nearest.correlation, quantile))
    return {
        c: float(np.quantile(test_nearest.correlation[test_labels == c], quantile)) if (test_labels == c).any() else pooled
        for c in classes
    }


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

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        nearest = nearest_by_correlation(images, self.train_images, self.mirror, self.device)
        return nearest.correlation < self.thresholds[int(class_idx)]

    def describe(self) -> dict:
        """What a manifest records about the filter."""
        return {
            "rule": "reject an image whose pixel correlation with its nearest training image (mirror included when training flipped)"
            " exceeds the copy_quantile quantile of the real test images' nearest-training-image correlation of its class",
            "copy_quantile": self.quantile,
            "mirror": self.mirror,
            "thresholds": {str(c): round(t, 6) for c, t in self.thresholds.items()},
        }


def copy_filter(run_dir: str | Path, recipe: Recipe | None = None, device: torch.device | str | None = None) -> CopyFilter:
    """The near-copy filter of a run, calibrated on its real test images at `recipe.audit.copy_quantile`.

    `recipe`: the run's recipe as the caller validated it (default: the run's own recipe.yaml).
    """
    data = load_run_data(run_dir, recipe)
    quantile = data.recipe.audit.copy_quantile
    device = pick_device(device)
    test_nearest = nearest_by_correlation(data.test.images, data.train.images, data.mirror, device)
    thresholds = copy_thresholds(test_nearest, data.test.labels, data.classes, quantile)
    return CopyFilter(data.train.images, thresholds, quantile, data.mirror, device)


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order): the same weights, the same hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ConfidenceFilter:
    """`keep = confidence_filter(images, class_idx)`: False for each uint8 (N, H, W, C) image that the run's feature
    classifier does not assign to `class_idx` with probability >= `threshold`.

    Made by `confidence_filter(run, threshold)`; `generate --filter-confidence` calls it on every batch of candidates.
    """

    name = "low_confidence"  # how generate's metadata.csv (rejected_by) and manifest name it
    model: torch.nn.Module
    threshold: float
    settings: dict  # the evaluate.* fields (CLASSIFIER_FIELDS) and the seed that made the classifier
    training: dict  # what its training did: steps, val-selected step, val metrics
    weights_sha256: str
    device: torch.device

    @torch.inference_mode()
    def confidence(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        """The classifier's probability of class `class_idx` for each image, float32 (N,)."""
        from synthaug.evaluate import predict

        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        # Full precision even inside generate's bf16 autocast: a decision must not move with the sampler's precision.
        with torch.autocast("cuda", enabled=False) if self.device.type == "cuda" else contextlib.nullcontext():
            probs = predict(self.model, to_model_tensor(images, self.device))
        return probs[:, int(class_idx)].astype(np.float32)

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray:
        return self.confidence(images, class_idx) >= self.threshold

    def describe(self) -> dict:
        """What a manifest records about the filter (deterministic: no wall times)."""
        val = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in self.training.get("val", {}).items()}
        return {
            "rule": "reject an image unless the audit's feature classifier (trained on the run's real training images,"
            " selected on real val) gives its own class a probability >= threshold",
            "threshold": self.threshold,
            "classifier": self.settings,
            "steps": self.training.get("steps"),
            "selected_step": self.training.get("best_step"),
            "val": val,
            "weights_sha256": self.weights_sha256,
        }


def confidence_filter(
    run_dir: str | Path,
    threshold: float,
    recipe: Recipe | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> ConfidenceFilter:
    """The classifier-confidence filter of a run: keeps an image when the feature classifier of `real_features`
    (cached in `<run>/audit/features.pt`, shared with `synthaug audit`) gives its class probability >= `threshold`.

    `recipe`: the run's recipe as the caller validated it (default: the run's own recipe.yaml); its
    `evaluate.*` settings and `audit.seed` make the classifier.
    """
    if isinstance(threshold, bool) or not 0 < float(threshold) < 1:
        raise ValueError(f"threshold: a probability strictly between 0 and 1, got {threshold!r}")
    data = load_run_data(run_dir, recipe)
    device = pick_device(device)
    model, training, _ = real_features(data, device, show_progress)
    model = model.to(device).eval()
    settings = {**data.recipe.evaluate.model_dump(mode="json", include=CLASSIFIER_FIELDS), "seed": data.recipe.audit.seed}
    return ConfidenceFilter(model, float(threshold), settings, training, weights_sha256(model), device)


# ---------------------------------------------------------------------------------------------
# Feature space: the evaluate harness's classifier, trained once per run on its real training images


@torch.inference_mode()
def extract_features(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Penultimate-layer features (`model.features`) of uint8 (N, H, W, C) images, float32 (N, F) on the CPU."""
    model.eval().to(device)
    out = [model.features(to_model_tensor(images[i : i + FEATURE_BATCH], device)).float().cpu() for i in range(0, len(images), FEATURE_BATCH)]
    return torch.cat(out)


def real_features(data: RunData, device: torch.device, show_progress: bool = True) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """The feature classifier, what its training did (val-selected step, val metrics), and the features of the
    run's real train/test images; from `<run>/audit/features.pt` when that was made with the same settings and data.

    The classifier is the evaluate harness's (`train_classifier`, recipe `evaluate` settings), trained on the
    generator's training images and selected on the real val split.
    """
    import dataclasses

    from synthaug.evaluate import make_classifier, train_classifier

    cache = data.run.root / "audit" / "features.pt"
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
            model = make_classifier(data.recipe.evaluate, data.train.channels, num_classes)
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


# ---------------------------------------------------------------------------------------------
# Fidelity and diversity, each beside the real-vs-real baseline


CANDIDATES = ("synthetic", "test", "val")  # each compared with the training images; test and val are the baselines
METRICS = ("fd", "precision", "recall", "density", "coverage")


def _equal_draws(labels: dict[str, np.ndarray], classes: list[int], seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Per class, the same number of images from each candidate set (the smallest count), drawn at random."""
    rng = np.random.default_rng(seed)
    draws = {}
    for c in classes:
        members = {name: np.flatnonzero(labels[name] == c) for name in CANDIDATES}
        n = min(len(m) for m in members.values())
        draws[c] = {name: np.sort(rng.choice(m, n, replace=False)) for name, m in members.items()}
    return draws


def _compare(reference: torch.Tensor, candidates: dict[str, torch.Tensor], k: int, device: torch.device) -> dict:
    """Fréchet distance and PRDC of each candidate set against the reference; None where the sets are too small."""
    row = {"n": len(candidates["synthetic"]), "reference_n": len(reference)}
    for name, candidate in candidates.items():
        row[f"fd_{name}"] = frechet_distance(reference, candidate) if min(len(reference), len(candidate)) >= 2 else None
        scores = prdc(reference, candidate, k, device) if min(len(reference), len(candidate)) > k else {}
        for metric in METRICS[1:]:
            row[f"{metric}_{name}"] = scores.get(metric)
    return row


def fidelity(data: RunData, features: dict[str, torch.Tensor], synthetic_labels: np.ndarray, k: int, seed: int, device: torch.device) -> dict:
    """Overall and per-class metrics. Reference: the generator's training images; candidates: equal-size, same-class-mix
    draws of the synthetic, real test and real val images."""
    labels = {"synthetic": synthetic_labels, "test": data.test.labels, "val": data.val.labels}
    draws = _equal_draws(labels, data.classes, seed)
    rows = {
        data.class_names[c]: _compare(
            features["train"][data.train.labels == c], {name: features[name][draws[c][name]] for name in CANDIDATES}, k, device
        )
        for c in data.classes
    }
    every = {name: np.concatenate([draws[c][name] for c in data.classes]) for name in CANDIDATES}
    overall = _compare(features["train"], {name: features[name][every[name]] for name in CANDIDATES}, k, device)
    return {"overall": overall, "per_class": rows}


# ---------------------------------------------------------------------------------------------
# Memorization summary


def _fraction(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def memorization(
    data: RunData,
    synthetic: ImageSet,
    files: list[str],
    nearest: dict[str, NearestImages],
    feature_nn: dict[str, np.ndarray],
    thresholds: dict[int, float],
    quantile: float,
) -> dict:
    """Per class and overall: flagged fraction of the synthetic set beside the real test (in-sample) and val rates."""
    labels = {"synthetic": synthetic.labels, "test": data.test.labels, "val": data.val.labels}
    over = {name: nearest[name].correlation >= np.array([thresholds[int(c)] for c in labels[name]]) for name in labels}

    def row(masks: dict[str, np.ndarray], threshold: float | None) -> dict:
        synth_feat, test_feat = feature_nn["synthetic"][masks["synthetic"]], feature_nn["test"][masks["test"]]
        feature_close = float(np.quantile(test_feat, 1 - quantile)) if test_feat.size else None
        return {
            "n_synthetic": int(masks["synthetic"].sum()),
            "threshold": threshold,
            "flagged": int(over["synthetic"][masks["synthetic"]].sum()),
            "flagged_fraction": _fraction(over["synthetic"][masks["synthetic"]]),
            "real_test_over_threshold": _fraction(over["test"][masks["test"]]),
            "real_val_over_threshold": _fraction(over["val"][masks["val"]]),
            "median_correlation_synthetic": _median(nearest["synthetic"].correlation[masks["synthetic"]]),
            "median_correlation_real_test": _median(nearest["test"].correlation[masks["test"]]),
            "max_correlation_synthetic": float(nearest["synthetic"].correlation[masks["synthetic"]].max()) if masks["synthetic"].any() else None,
            "median_feature_distance_synthetic": _median(synth_feat),
            "median_feature_distance_real_test": _median(test_feat),
            "feature_close_fraction": _fraction(synth_feat <= feature_close) if feature_close is not None else None,
        }

    per_class = {
        data.class_names[c]: row({name: labels[name] == c for name in labels}, thresholds[c]) for c in data.classes
    }
    overall = row({name: np.ones(len(labels[name]), dtype=bool) for name in labels}, None)
    near = nearest["synthetic"]
    flagged = [
        {
            "file": files[i],
            "class": int(synthetic.labels[i]),
            "class_name": data.class_names[synthetic.labels[i]],
            "correlation": round(float(near.correlation[i]), 6),
            "threshold": round(thresholds[int(synthetic.labels[i])], 6),
            "nearest_train_index": int(data.train_indices[near.index[i]]),
            "mirrored": bool(near.mirrored[i]),
        }
        for i in np.argsort(-near.correlation, kind="stable")
        if over["synthetic"][i]
    ]
    return {"overall": overall, "per_class": per_class, "flagged": flagged}


# ---------------------------------------------------------------------------------------------
# Figures


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def closest_pairs_png(data: RunData, synthetic: ImageSet, files: list[str], near: NearestImages, thresholds: dict[int, float], count: int) -> bytes:
    """The `count` synthetic images most correlated with a training image, each beside that (mirrored if so) training image."""
    from matplotlib.figure import Figure

    order = np.argsort(-near.correlation, kind="stable")[:count]
    columns = min(4, len(order))
    rows = math.ceil(len(order) / columns)
    figure = Figure(figsize=(2.6 * columns, 1.55 * rows + 0.4))
    figure.suptitle("closest synthetic / training pairs (red: over the copy threshold)", fontsize=9)
    gray = synthetic.channels == 1
    for slot, i in enumerate(order):
        train_image = data.train.images[near.index[i]]
        if near.mirrored[i]:
            train_image = train_image[:, ::-1]
        pair = np.concatenate([synthetic.images[i], np.full_like(synthetic.images[i][:, :2], 255), train_image], axis=1)
        axis = figure.add_subplot(rows, columns, slot + 1)
        axis.imshow(pair[..., 0] if gray else pair, cmap="gray" if gray else None, vmin=0, vmax=255)
        flagged = near.correlation[i] >= thresholds[int(synthetic.labels[i])]
        axis.set_title(
            f"{Path(files[i]).name}\nr={near.correlation[i]:.3f} vs train #{data.train_indices[near.index[i]]}{' (mirror)' if near.mirrored[i] else ''}",
            fontsize=6,
            color="red" if flagged else "black",
        )
        axis.axis("off")
    return _png(figure)


def similarity_png(data: RunData, synthetic: ImageSet, nearest: dict[str, NearestImages], feature_nn: dict[str, np.ndarray], thresholds: dict[int, float]) -> bytes:
    """Per class: histograms of the nearest-training-image correlation (pixels) and distance (features), synthetic vs real test."""
    from matplotlib.figure import Figure

    columns = len(data.classes)
    figure = Figure(figsize=(3.2 * columns, 5.2), layout="constrained")
    for col, c in enumerate(data.classes):
        synth, test = synthetic.labels == c, data.test.labels == c
        top = figure.add_subplot(2, columns, col + 1)
        bins = np.linspace(min(nearest["synthetic"].correlation.min(), nearest["test"].correlation.min()), 1.0, 40)
        top.hist(nearest["test"].correlation[test], bins=bins, alpha=0.6, density=True, label="real test -> train")
        top.hist(nearest["synthetic"].correlation[synth], bins=bins, alpha=0.6, density=True, label="synthetic -> train")
        top.axvline(thresholds[c], color="red", linewidth=1, label="copy threshold")
        top.set_title(f"{data.class_names[c]}: pixel correlation", fontsize=8)
        top.tick_params(labelsize=6)
        bottom = figure.add_subplot(2, columns, columns + col + 1)
        # A few far-off synthetic images would squeeze the rest into one bar: the last bin holds everything beyond.
        reach = float(np.quantile(np.concatenate([feature_nn["synthetic"], feature_nn["test"]]), 0.98)) or 1.0
        edges = np.linspace(0, reach, 40)
        bottom.hist(np.minimum(feature_nn["test"][test], reach), bins=edges, alpha=0.6, density=True, label="real test -> train")
        bottom.hist(np.minimum(feature_nn["synthetic"][synth], reach), bins=edges, alpha=0.6, density=True, label="synthetic -> train")
        bottom.set_title(f"{data.class_names[c]}: feature distance (last bin: beyond)", fontsize=8)
        bottom.tick_params(labelsize=6)
        if col == 0:
            top.legend(fontsize=6)
    return _png(figure)


# ---------------------------------------------------------------------------------------------
# The command


FIGURES = {"closest_pairs": "audit_closest_pairs.png", "similarity": "audit_similarity.png"}


def audit(
    run_dir: str | Path,
    synthetic_dir: str | Path | None = None,
    recipe: Recipe | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    command: str | None = None,
) -> dict:
    """Audit a synthetic set (default `<run>/synthetic`) against its run; writes audit.json, audit.md and figures into it.

    `recipe`: the run's recipe, maybe with other `audit`/`evaluate` settings (`run_recipe(run, ["audit.k=3"])`);
    default the run's own. `command`: the command line that reproduces the audit, for audit.md. Returns the report.
    """
    began = tick = time.perf_counter()
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timing[name] = round(now - tick, 3)
        tick = now

    device = pick_device(device)
    data = load_run_data(run_dir, recipe)
    settings = data.recipe.audit
    folder = Path(synthetic_dir) if synthetic_dir is not None else data.run.synthetic
    synthetic, files = load_synthetic(folder, data)
    lap("load")

    nearest = {
        name: nearest_by_correlation(images, data.train.images, data.mirror, device, show_progress)
        for name, images in (("synthetic", synthetic.images), ("test", data.test.images), ("val", data.val.images))
    }
    thresholds = copy_thresholds(nearest["test"], data.test.labels, data.classes, settings.copy_quantile)
    lap("pixel_nearest_neighbours")
    model, feature_training, features = real_features(data, device, show_progress)
    features = {**features, "synthetic": extract_features(model, synthetic.images, device)}
    lap("features")
    feature_nn = {name: knn_distances(features[name], features["train"], 1, device=device)[0][:, 0] for name in ("synthetic", "test")}
    lap("feature_nearest_neighbours")
    fidelity_report = fidelity(data, features, synthetic.labels, settings.k, settings.seed, device)
    lap("fidelity_metrics")
    memorization_report = memorization(data, synthetic, files, nearest, feature_nn, thresholds, settings.copy_quantile)
    atomic_write_bytes(folder / FIGURES["closest_pairs"], closest_pairs_png(data, synthetic, files, nearest["synthetic"], thresholds, settings.closest_pairs))
    atomic_write_bytes(folder / FIGURES["similarity"], similarity_png(data, synthetic, nearest, feature_nn, thresholds))
    lap("report_and_figures")
    timing["total"] = round(time.perf_counter() - began, 3)

    pixel_pairs = (len(synthetic.labels) + len(data.test.labels) + len(data.val.labels)) * len(data.train.labels) * (2 if data.mirror else 1)
    counts = lambda labels: {data.class_names[c]: int((labels == c).sum()) for c in data.classes}  # noqa: E731
    classifier = data.recipe.evaluate
    report = {
        "run": str(data.run.root),
        "synthetic": str(folder),
        "synthetic_metadata_sha256": _metadata_digest(folder),
        "command": command or f"synthaug audit --run {data.run.root} --synthetic {folder}",
        "settings": {
            **settings.model_dump(),
            "mirror": data.mirror,
            "feature_classifier": classifier.classifier,
            "feature_classifier_steps": classifier.steps,
            "feature_classifier_config": classifier.model_dump(include=CLASSIFIER_FIELDS),
            "feature_classifier_training": feature_training,
            "feature_dim": int(features["train"].shape[1]),
        },
        "sizes": {
            "synthetic": counts(synthetic.labels),
            "train": counts(data.train.labels),
            "test": counts(data.test.labels),
            "val": counts(data.val.labels),
        },
        "fidelity": fidelity_report,
        "memorization": memorization_report,
        "figures": FIGURES,
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "timing_s": timing,
        "pixel_pairs_compared": pixel_pairs,
    }
    atomic_write_json(folder / "audit.json", report)
    atomic_write_text(folder / "audit.md", render_markdown(report))
    over = memorization_report["overall"]
    print(
        f"audit: {over['n_synthetic']} synthetic images, {over['flagged']} flagged as near-copies "
        f"({100 * over['flagged_fraction']:.2f} %; real val images over the threshold: {_percent(over['real_val_over_threshold'])}), "
        f"FD {_significant(fidelity_report['overall']['fd_synthetic'])} (real test: {_significant(fidelity_report['overall']['fd_test'])}, "
        f"real val: {_significant(fidelity_report['overall']['fd_val'])}), "
        f"{timing['total']:.1f} s -> {folder / 'audit.md'}",
        flush=True,
    )
    return report


def _metadata_digest(folder: Path) -> str:
    """Identifies the synthetic set an audit describes: `generate` adding images rewrites metadata.csv."""
    import hashlib

    return hashlib.sha256((folder / "metadata.csv").read_bytes()).hexdigest()


def read_audit_summary(synthetic_dir: str | Path) -> dict | None:
    """The headline numbers of a synthetic set's audit.json (for other reports), or None when it has not been audited.

    `stale` is True when the set has changed since (its metadata.csv is not the one audited).
    """
    folder = Path(synthetic_dir)
    if not (folder / "audit.json").is_file():
        return None
    report = json.loads((folder / "audit.json").read_text())
    fid, mem = report["fidelity"]["overall"], report["memorization"]["overall"]
    current = _metadata_digest(folder) if (folder / "metadata.csv").is_file() else None
    return {
        "stale": current != report.get("synthetic_metadata_sha256"),
        **{f"{m}_{s}": fid[f"{m}_{s}"] for m in METRICS for s in CANDIDATES},
        "flagged": mem["flagged"],
        "flagged_fraction": mem["flagged_fraction"],
        "real_val_over_threshold": mem["real_val_over_threshold"],
        "copy_quantile": report["settings"]["copy_quantile"],
    }


# ---------------------------------------------------------------------------------------------
# audit.md


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _significant(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def render_markdown(report: dict) -> str:
    s, fid, mem = report["settings"], report["fidelity"], report["memorization"]
    sizes = report["sizes"]
    total = lambda part: sum(sizes[part].values())  # noqa: E731
    lines = [
        f"# Audit of `{report['synthetic']}`",
        "",
        f"Run `{report['run']}`: {total('synthetic')} synthetic images against the {total('train')} real training images the "
        f"generator saw; baseline: {total('test')} real test images; {total('val')} real val images check the copy threshold. "
        f"Device {report['device']}, {report['timing_s']['total']:.1f} s in all. Reproduce: `{report['command']}`.",
        "",
        "## Fidelity and diversity (feature space)",
        "",
        f"Features: the penultimate layer ({s['feature_dim']} values) of the evaluate harness's `{s['feature_classifier']}` trained "
        f"for {s['feature_classifier_steps']} steps on the run's real training images (val-selected step "
        f"{s['feature_classifier_training']['best_step']}, val accuracy {_number(s['feature_classifier_training']['val'].get('acc'))}). "
        "Reference: those training images. Each cell "
        "reads **synthetic / real test / real val**: synthetic images against the reference, then the real-vs-real "
        "baselines, real test and real val images against the reference: what real images of new patients score (where the "
        "test split is shifted from the training split, as in some MedMNIST sets, val is the closer baseline). The three "
        "sets are drawn at random to the same size and class mix (n per row). Fréchet distance: lower is closer. Precision "
        f"and density (fidelity), recall and coverage (diversity), k = {s['k']}.",
        "",
        "| classes | n | Fréchet distance | precision | recall | density | coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in [("all", fid["overall"])] + list(fid["per_class"].items()):
        cells = [" / ".join(_significant(row[f"fd_{name}"]) for name in CANDIDATES)]
        cells += [" / ".join(_number(row[f"{m}_{name}"]) for name in CANDIDATES) for m in METRICS[1:]]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Memorization (pixel space)",
        "",
        "Each image's nearest training image by normalized (Pearson) correlation of the pixels"
        + (", mirror images included (the generator trained with horizontal flips)" if s["mirror"] else "")
        + f". Copy threshold of a class: the {s['copy_quantile']} quantile of the nearest-training-image correlation of that "
        f"class's real test images, so a real image of a new patient exceeds it about {_percent(1 - s['copy_quantile'])} of the "
        "time (real val images, not used to set it, show the out-of-sample rate). A synthetic set flagged far more often than "
        "that is copying training images. Feature distance: Euclidean distance to the nearest training image in feature space; "
        "'feature-close' is the share of synthetic images nearer to a training image than all but "
        f"{_percent(1 - s['copy_quantile'])} of real test images are.",
        "",
        "| class | synthetic | threshold r | flagged | real test / val over | median r synthetic / real test | median feature distance synthetic / real test | feature-close |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in list(mem["per_class"].items()) + [("all", mem["overall"])]:
        lines.append(
            f"| {name} | {row['n_synthetic']} | {_number(row['threshold'])} | {row['flagged']} ({_percent(row['flagged_fraction'])}) | "
            f"{_percent(row['real_test_over_threshold'])} / {_percent(row['real_val_over_threshold'])} | "
            f"{_number(row['median_correlation_synthetic'])} / {_number(row['median_correlation_real_test'])} | "
            f"{_number(row['median_feature_distance_synthetic'])} / {_number(row['median_feature_distance_real_test'])} | "
            f"{_percent(row['feature_close_fraction'])} |"
        )
    lines += [
        "",
        f"![closest pairs]({report['figures']['closest_pairs']})",
        "",
        f"![nearest-neighbour similarity]({report['figures']['similarity']})",
        "",
        f"## Flagged files ({len(mem['flagged'])})",
        "",
    ]
    if mem["flagged"]:
        lines += ["| file | class | r | threshold | nearest training image (index in the train split) |", "|---|---|---|---|---|"]
        lines += [
            f"| `{f['file']}` | {f['class_name']} | {f['correlation']:.4f} | {f['threshold']:.4f} | {f['nearest_train_index']}{' (mirrored)' if f['mirrored'] else ''} |"
            for f in mem["flagged"]
        ]
    else:
        lines.append("None.")
    timing = report["timing_s"]
    lines += [
        "",
        "## Timing",
        "",
        f"{report['pixel_pairs_compared']:,} image pairs compared in pixel space in {timing['pixel_nearest_neighbours']:.2f} s on "
        f"{report['device']}.",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {name.replace('_', ' ')} | {seconds:.2f} |" for name, seconds in timing.items()],
        "",
    ]
    return "\n".join(lines)
