"""The arms of `evaluate` as PyTorch datasets, and the one batch iterator that trains them.

evaluate builds every arm's data from these classes and draws its batches through `draw_batches`, so a loop of your
own over them reproduces an arm of a report (same seed, same batches, same numbers):

    ArmDataset(real)                           real, real+classic, the re-balancing arms: the real images alone
    AddSynthetic(real, synthetic, ratio)       real+synthetic Rx: real, plus for each class c the first round(R x n_c)
                                               synthetic images of class c (n_c: its real images)
    SyntheticOnly(real, synthetic)             synthetic: as many synthetic images per class as real ones, no real one
    TopUp(real, synthetic, target=None)        real+topup: real, plus for each class the first max(0, target - n_c)
                                               synthetic images (target None: the largest real class; a generate --balance set)
    WholeSynthetic(synthetic)                  pretrain arms, first stage: every synthetic image of the classes, no real one
    ReplaceWithVariations(real, synthetic, p)  real+replace pP: the real images; each drawn one is swapped, with probability
                                               p, for one of its own variations (the synthetic images whose source_index is
                                               its index), drawn uniformly

`real` and `synthetic` may be an ImageSet, a `SynthDataset` (read in its index order, as evaluate reads it), a medmnist
dataset (its `imgs` and `labels`), any dataset of (PIL image or uint8 array, label) items without a transform, or a
tuple (uint8 images (N, H, W, C), labels[, source_index]). `real_index`: each real image's index in the split that a variation's
`source_index` refers to (default 0..N-1: `real` is the whole train split). `classes`: the classes counted (default
those of `real`). `weight`: the loss weight of a synthetic sample (evaluate.synthetic_weight; real ones weigh 1). `soft_labels=True`
(AddSynthetic, TopUp, WholeSynthetic): each synthetic image's target is the soft label its set carries (a release's teacher
probabilities, a `generate --translate` set's s^gamma / 1 - s^gamma; `soft_targets` (N, K), one-hot for real images), and
`dataset[i]` returns that vector as the target.

Each dataset holds its arrays: `images` uint8 (N, H, W, C), `labels` int64 (N,), `is_synthetic` bool (N,),
`source_index` int64 (N,) (`Provenance`), `sample_weight` float32 (N,) or None; `dataset[i]` is (image, label): the
image as the classifier sees it, float (C, H, W) in [-1, 1], or `transform(PIL image)`; the label an int, or
`target_transform(label)`. `provenance(i)`: synthetic or real, and its source_index.

`ArmBatches(dataset, batch_size, seed, stream, steps=...)` yields the batches `train_classifier` trains the arm on,
in order, all drawn from one torch.Generator seeded by (seed, stream): the indices (shuffled epochs, or `balanced`
class-balanced batches), the replacement draws, then `augment(x, generator)` (classic augmentation:
`lambda x, g: classic_augment(x, cfg.classic, g)` from `synthaug.classifier.harness`). evaluate's stream is the
arm's name (`stream="real+synthetic 1x"`). A `Batch` unpacks to (x, y); `batch.loss(logits)` is the harness's loss
(weighted by `batch.weight` when the arm weighs samples); `batch.index` and `batch.variation` say what was drawn.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from synthaug.core.errors import UserError
from synthaug.core.runtime import seeded_generator
from synthaug.data.images import ImageSet
from synthaug.data.subsets import count_at_ratio
from synthaug.data.synthetic import Provenance, SynthDataset, SyntheticImages, dataset_labels, first_per_class
from synthaug.storage.pixels import to_model_tensor

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Images in, as arrays


class _Images(NamedTuple):
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    source_index: np.ndarray | None  # int64 (N,) for a synthetic set (-1: drawn from noise); None for real images
    soft_labels: np.ndarray | None = None  # float32 (N, K) over every class: a release's teacher probabilities, a translation set's labels


def _as_images(data, what: str) -> _Images:
    """`data` as arrays; a synthetic folder in its index order (`SynthDataset.set_order`, as `read_synthetic`)."""
    if isinstance(data, ImageSet):
        return _Images(data.images, data.labels, None)
    if isinstance(data, SyntheticImages):
        return _Images(data.images.images, data.images.labels, data.source_index, data.soft_labels)
    if isinstance(data, SynthDataset):
        images, labels = data.to_numpy()
        order = data.set_order()
        return _Images(images[order], labels[order], data.source_index[order], None if data.soft_labels is None else data.soft_labels[order])
    source = None
    if isinstance(data, tuple) and len(data) in (2, 3):
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        source = None if len(data) == 2 else np.asarray(data[2], dtype=np.int64)
    elif isinstance(getattr(data, "imgs", None), np.ndarray):  # medmnist: the stored pixels, as its items hold them
        images, labels = data.imgs, dataset_labels(data)
    elif isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]
        images = [np.asarray(item[0]) if isinstance(item[0], (Image.Image, np.ndarray)) else None for item in items]
        if any(image is None or image.dtype != np.uint8 for image in images):
            raise UserError(f"{what}: its items must be (PIL image or uint8 array, label); give the dataset without its transform")
        images, labels = (np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)), dataset_labels(data)
    else:
        raise UserError(f"{what}: expected an ImageSet, a SynthDataset, a dataset of (image, label) or (images, labels), "
                        f"got {type(data).__name__}")
    images = images[..., None] if images.ndim == 3 else images
    labels = (labels if labels.ndim == 1 else labels.reshape(len(labels), -1)[:, 0]).astype(np.int64)  # medmnist's are (N, 1)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise UserError(f"{what}: expected uint8 images (N, H, W[, C]) and N labels, got {images.dtype} {images.shape} and {len(labels)}")
    return _Images(images, labels, source)


def stream_id(stream: int | str) -> int:
    """The integer stream of an arm's batches: evaluate's is the arm's name (CRC-32 of it)."""
    return zlib.crc32(stream.encode()) if isinstance(stream, str) else int(stream)


def top_up_counts(real_counts: dict[int, int], target: int | None = None) -> dict[int, int]:
    """Synthetic images of each class a top-up adds: up to `target` images in all (None: the largest class), none past it."""
    target = max(real_counts.values(), default=0) if target is None else int(target)
    return {c: max(0, target - n) for c, n in real_counts.items()}


# ---------------------------------------------------------------------------------------------
# The datasets


class ArmDataset(Dataset):
    """The real images alone (evaluate's real, real+classic and re-balancing arms), and the base of every arm's data.
    See the module's docstring for the arguments and attributes."""

    def __init__(self, real, *, real_index=None, classes=None, transform: Callable | None = None,
                 target_transform: Callable | None = None):
        got = _as_images(real, "real")
        n = len(got.labels)
        index = np.arange(n, dtype=np.int64) if real_index is None else np.asarray(real_index, dtype=np.int64)
        if index.shape != (n,):
            raise UserError(f"real_index: expected one index per real image ({n}), got shape {index.shape}")
        self.classes = sorted({int(c) for c in got.labels}) if classes is None else [int(c) for c in classes]
        self.real_index = index
        self.real_counts = {c: int((got.labels == c).sum()) for c in self.classes}
        self.transform, self.target_transform = transform, target_transform
        self.images, self.labels = got.images, got.labels
        self.is_synthetic = np.zeros(n, dtype=bool)
        self.source_index = index
        self.sample_weight: np.ndarray | None = None
        self.soft_targets: np.ndarray | None = None

    def _add_synthetic(self, synthetic, wanted: dict[int, int], what: str, weight: float = 1.0, keep_real: bool = True,
                       soft_labels: bool = False) -> None:
        """Append the first `wanted[c]` synthetic images of each class c (in `self.classes` order). `soft_labels`: every
        item's target becomes a probability vector, the set's soft labels for the synthetic images, one-hot for real ones."""
        got = _as_images(synthetic, "synthetic")
        picks = first_per_class(got.labels, wanted, what)
        source = np.full(len(got.labels), -1, dtype=np.int64) if got.source_index is None else np.asarray(got.source_index, dtype=np.int64)
        parts = [(self.images, self.labels, self.is_synthetic, self.source_index)] if keep_real else []
        parts.append((got.images[picks], got.labels[picks], np.ones(len(picks), dtype=bool), source[picks]))
        real_labels = self.labels if keep_real else self.labels[:0]
        if len(parts) == 1:
            self.images, self.labels, self.is_synthetic, self.source_index = parts[0]
        else:
            self.images, self.labels, self.is_synthetic, self.source_index = (np.concatenate(column) for column in zip(*parts))
        if weight != 1.0:
            self.sample_weight = np.where(self.is_synthetic, weight, 1.0).astype(np.float32)
        if soft_labels:
            if got.soft_labels is None:
                raise UserError(f"{what} has no soft labels; a release made with `synthaug release --teacher` carries them, "
                                "and so does a set made with `synthaug generate --translate`")
            one_hot = np.eye(got.soft_labels.shape[1], dtype=np.float32)[real_labels]
            self.soft_targets = np.concatenate([one_hot, got.soft_labels[picks].astype(np.float32)])

    @property
    def n_synthetic(self) -> int:
        """The synthetic images the arm trains on (for a replace arm, the variations it may swap in)."""
        return int(self.is_synthetic.sum())

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        index = range(len(self))[index]
        image = self.images[index]
        if self.transform is None:
            image = to_model_tensor(image[None])[0]
        else:
            image = self.transform(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))
        if self.soft_targets is not None:  # the target a soft-label arm trains on: a probability per class
            return image, torch.from_numpy(self.soft_targets[index])
        label = int(self.labels[index])
        return image, (label if self.target_transform is None else self.target_transform(label))

    def provenance(self, index: int) -> Provenance:
        index = range(len(self))[index]
        return Provenance(bool(self.is_synthetic[index]), int(self.source_index[index]))

    def replacement(self, device="cpu") -> Replacement | None:
        """The swapping of drawn real images for variations, as tensors on `device` (None: this arm swaps nothing)."""
        return None

    def counts(self) -> dict[int, int]:
        return {c: int((self.labels == c).sum()) for c in self.classes}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.n_synthetic} synthetic, counts={self.counts()})"


class AddSynthetic(ArmDataset):
    """The real images plus, for each class c, the first round(`ratio` x n_c) synthetic images of class c: evaluate's
    real+synthetic arm at that ratio (a smaller ratio takes a prefix of each class)."""

    def __init__(self, real, synthetic, ratio: float, *, weight: float = 1.0, soft_labels: bool = False, **options):
        if not ratio >= 0:
            raise UserError(f"ratio: expected a number >= 0, got {ratio!r}")
        super().__init__(real, **options)
        self.ratio = float(ratio)
        wanted = {c: count_at_ratio(ratio, n) for c, n in self.real_counts.items()}
        self._add_synthetic(synthetic, wanted, f"ratio {ratio:g}: the synthetic set", weight, soft_labels=soft_labels)


class WholeSynthetic(ArmDataset):
    """Every image of a synthetic set of `classes` (default: all its classes), and no real one: what the pretrain arms
    train on first, before fine-tuning on the real images. `soft_labels`: targets are the set's soft labels."""

    def __init__(self, synthetic, *, classes=None, soft_labels: bool = False, **options):
        got = _as_images(synthetic, "synthetic")
        classes = sorted({int(c) for c in got.labels}) if classes is None else [int(c) for c in classes]
        super().__init__((got.images[:0], got.labels[:0]), classes=classes, **options)
        self._add_synthetic(synthetic, {c: int((got.labels == c).sum()) for c in classes}, "the synthetic set", keep_real=False,
                            soft_labels=soft_labels)
        if not len(self):
            raise UserError(f"the synthetic set has no image of the classes {classes}")


class SyntheticOnly(ArmDataset):
    """As many synthetic images of each class as `real` has (the first ones), and no real image: evaluate's synthetic
    arm (the classification accuracy score)."""

    def __init__(self, real, synthetic, **options):
        super().__init__(real, **options)
        self._add_synthetic(synthetic, dict(self.real_counts), "the synthetic set", keep_real=False)


class TopUp(ArmDataset):
    """The real images plus, for each class c, the first max(0, `target` - n_c) synthetic images of class c: evaluate's
    real+topup arm (`target` None: the largest real class, evaluate.top_up: balance). A class already at the target
    takes none, so a `generate --balance` set, which has none of the largest class, is enough."""

    def __init__(self, real, synthetic, target: int | None = None, *, weight: float = 1.0, soft_labels: bool = False, **options):
        super().__init__(real, **options)
        self.target = target
        self._add_synthetic(synthetic, top_up_counts(self.real_counts, target), f"top-up to {target or 'the largest class'}: the synthetic set",
                            weight, soft_labels=soft_labels)


class ReplaceWithVariations(ArmDataset):
    """The real images, with the variations of each beside them: evaluate's real+replace arm. When a batch is drawn
    (`ArmBatches`), each real image in it is swapped, with probability `p`, for one of its own variations, drawn
    uniformly; a swapped sample weighs `weight`. An image without variations is never swapped.

    `p`: a probability, {class: probability} for every class, or one per real image. `variations` (uint8 (V, H, W, C))
    holds the whole synthetic set grouped by the real image it varies (by source_index, each group in set order): real
    image i's are `variations[variation_start[i] : variation_start[i] + variation_count[i]]`; `variation_source` (V,)
    is each one's source_index (-1: drawn from noise, never swapped in)."""

    def __init__(self, real, synthetic, p, *, weight: float = 1.0, **options):
        super().__init__(real, **options)
        got = _as_images(synthetic, "synthetic")
        sources = np.full(len(got.labels), -1, dtype=np.int64) if got.source_index is None else np.asarray(got.source_index)
        order = np.argsort(sources, kind="stable")
        grouped = sources[order]
        self._refuse_translations(grouped, got.labels[order])
        start = np.searchsorted(grouped, self.real_index, side="left")
        count = np.searchsorted(grouped, self.real_index, side="right") - start
        if not count.sum():
            raise UserError("synthetic: no variation of these real images (source_index); make variations with "
                            "`synthaug generate --from-real --per-real K`, and give real_index when `real` is not the whole train split")
        self.variations, self.variation_labels, self.variation_source = got.images[order], got.labels[order], grouped
        self.variation_start, self.variation_count = start.astype(np.int64), count.astype(np.int64)
        self.p = self._probabilities(p)
        self.weight = float(weight)

    def _refuse_translations(self, sources: np.ndarray, labels: np.ndarray) -> None:
        """A swapped-in image keeps its real image's label, so it must be of that class: a translation (generate
        --translate) starts from a real image of another class and is refused."""
        real_label = dict(zip(self.real_index.tolist(), self.labels.tolist()))
        crossed = next((k for k, (s, label) in enumerate(zip(sources.tolist(), labels.tolist())) if real_label.get(s, label) != label), None)
        if crossed is not None:
            raise UserError(f"synthetic: an image of class {labels[crossed]} starts from the real image {sources[crossed]} of class "
                            f"{real_label[sources[crossed]]} (a translation, generate --translate); the replace arms swap a real image "
                            "for a variation of its own class: use a set made with --from-real")

    def _probabilities(self, p) -> float | np.ndarray:
        if isinstance(p, dict):
            missing = sorted(set(self.classes) - {int(c) for c in p})
            if missing:
                raise UserError(f"p: give a probability for every class; missing {missing}")
            per_class = {int(c): float(v) for c, v in p.items()}
            p = np.asarray([per_class[int(c)] for c in self.labels], dtype=np.float64)
        elif np.ndim(p) == 0:
            p = float(p)
        else:
            p = np.asarray(p, dtype=np.float64)
            if p.shape != self.labels.shape:
                raise UserError(f"p: expected one probability per real image ({len(self.labels)}), got shape {p.shape}")
        if not np.all((np.asarray(p) >= 0) & (np.asarray(p) <= 1)):
            raise UserError(f"p: probabilities in [0, 1], got {p!r}")
        return p

    @property
    def n_synthetic(self) -> int:
        return int(self.variation_count.sum())

    def replacement(self, device="cpu") -> Replacement:
        p = self.p if isinstance(self.p, float) else torch.from_numpy(self.p).float().to(device)
        return Replacement(p, to_model_tensor(self.variations, device), torch.from_numpy(self.variation_start).to(device),
                           torch.from_numpy(self.variation_count).to(device), self.weight)


# ---------------------------------------------------------------------------------------------
# The batches


@dataclass
class Replacement:
    """DA-Fusion's use of variations, as tensors: each drawn training image is swapped, with probability `p`, for one
    of its own variations (uniformly), which then weighs `weight` in the loss.

    `images` holds the variations grouped by the training image they vary: those of image i are
    `images[start[i] : start[i] + count[i]]` (count 0: never swapped).
    """

    p: float | torch.Tensor  # or per training image (N,), on the training device (replace_p_by_class)
    images: torch.Tensor  # float (V, C, H, W) in [-1, 1], on the training device
    start: torch.Tensor  # int64 (N,)
    count: torch.Tensor  # int64 (N,)
    weight: float = 1.0

    def draw(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Which drawn images are swapped (bool (B,)) and for which variation (int64 (B,), meaningful where swapped):
        two uniform draws of `gen`."""
        n = len(idx)
        p = self.p if isinstance(self.p, float) else self.p[idx].cpu()
        swap = (torch.rand(n, generator=gen) < p).to(idx.device) & (self.count[idx] > 0)
        pick = (torch.rand(n, generator=gen).to(idx.device) * self.count[idx]).long()
        return swap, (self.start[idx] + pick).clamp(max=max(len(self.images) - 1, 0))

    def swap(self, x: torch.Tensor, weight: torch.Tensor | None, swap: torch.Tensor, source: torch.Tensor):
        if len(self.images):
            x = torch.where(swap[:, None, None, None], self.images[source], x)
        if self.weight != 1.0:
            base = torch.ones(len(x), device=x.device) if weight is None else weight
            weight = torch.where(swap, torch.full_like(base, self.weight), base)
        return x, weight

    def apply(self, idx: torch.Tensor, x: torch.Tensor, gen: torch.Generator, weight: torch.Tensor | None):
        """The batch `x` of the images `idx` with the swaps drawn from `gen`, and its weights."""
        return self.swap(x, weight, *self.draw(idx, gen))


def shuffled_indices(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of indices (the last partial batch of an epoch is dropped)."""
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def balanced_indices(labels: torch.Tensor, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches (as large as `shuffled_indices`') that draw every class present equally often: each class gets
    batch // K places and the batch % K left over go to classes drawn without repeat; a class's images come in
    shuffled rounds, every one before any twice (a 10-image class repeats within a batch, a 600-image one rarely)."""
    labels = labels.cpu()
    members = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    k, size = len(members), min(batch_size, len(labels))
    queues = [torch.empty(0, dtype=torch.long) for _ in members]
    while True:
        take = torch.full((k,), size // k)
        take[torch.randperm(k, generator=gen)[: size % k]] += 1
        batch = []
        for i, want in enumerate(take.tolist()):
            while len(queues[i]) < want:
                queues[i] = torch.cat([queues[i], members[i][torch.randperm(len(members[i]), generator=gen)]])
            batch.append(queues[i][:want])
            queues[i] = queues[i][want:]
        yield torch.cat(batch)


@dataclass
class Batch:
    """One training batch: images `x` (B, C, H, W) in [-1, 1], labels `y`, loss weights (None: all 1), the dataset
    positions drawn (`index`) and, for a replace arm, the variation each was swapped for (-1: kept). Unpacks to (x, y)."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None
    index: torch.Tensor
    variation: torch.Tensor | None = None
    soft: torch.Tensor | None = None  # (B, K) probability targets of a soft-label arm, in place of `y` in the loss

    def __iter__(self):
        return iter((self.x, self.y))

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the batch against `y` (or the probabilities `soft`): the mean, or the weighted mean under `weight`."""
        target = self.y if self.soft is None else self.soft
        if self.weight is None:
            return F.cross_entropy(logits, target)
        return (F.cross_entropy(logits, target, reduction="none") * self.weight).sum() / self.weight.sum()


def draw_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, gen: torch.Generator, *,
                 sample_weight: torch.Tensor | None = None, replace: Replacement | None = None, balanced: bool = False,
                 augment: Augment | None = None, soft_targets: torch.Tensor | None = None) -> Iterator[Batch]:
    """Endless training batches of float `images` (N, C, H, W) and `labels` on one device, every draw from `gen` in
    one order per batch: the indices, the replacement, the augmentation. The one batch drawing of synthaug's classifier
    (`train_classifier` and `ArmBatches`)."""
    indices = balanced_indices(labels, batch_size, gen) if balanced else shuffled_indices(len(images), batch_size, gen)
    for drawn in indices:
        idx = drawn.to(images.device)
        x, y = images[idx], labels[idx]
        weight = None if sample_weight is None else sample_weight[idx]
        variation = None
        if replace is not None:
            swap, source = replace.draw(idx, gen)
            x, weight = replace.swap(x, weight, swap, source)
            variation = torch.where(swap, source, torch.full_like(source, -1))
        if augment is not None:
            x = augment(x, gen)
        yield Batch(x, y, weight, idx, variation, None if soft_targets is None else soft_targets[idx])


class ArmBatches:
    """The batches an arm trains on, as `train_classifier` draws them for (`seed`, `stream`): iterate it (each
    iteration starts again from the seed). `steps`: stop after that many batches (None: endless). `balanced`:
    class-balanced batches (the +balanced arms). `augment(x, generator)`: the +classic arms' augmentation.
    `class_weight` (K,): multiplies each sample's weight by its class's (the +reweight arms; harness.class_weights).
    `device`: where the batches are (the whole arm is moved there once per iteration)."""

    def __init__(self, data: ArmDataset, batch_size: int, seed: int, stream: int | str = 0, *, steps: int | None = None,
                 balanced: bool = False, augment: Augment | None = None, class_weight=None, device="cpu"):
        if len(data) == 0:
            raise UserError("the arm has no training images")
        self.data, self.batch_size, self.seed, self.stream, self.steps = data, batch_size, seed, stream, steps
        self.balanced, self.augment, self.class_weight, self.device = balanced, augment, class_weight, device

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("endless ArmBatches (steps=None) have no length")
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        data, device = self.data, torch.device(self.device)
        weight = data.sample_weight
        if self.class_weight is not None:
            weight = np.asarray(self.class_weight)[data.labels].astype(np.float32) * (1.0 if weight is None else weight)
        batches = draw_batches(
            to_model_tensor(data.images, device), torch.from_numpy(data.labels).to(device), self.batch_size,
            seeded_generator(self.seed, stream_id(self.stream)), sample_weight=None if weight is None else torch.from_numpy(weight).to(device),
            replace=data.replacement(device), balanced=self.balanced, augment=self.augment,
            soft_targets=None if data.soft_targets is None else torch.from_numpy(data.soft_targets).to(device),
        )
        return batches if self.steps is None else itertools.islice(batches, self.steps)
