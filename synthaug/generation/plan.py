"""What `generate` draws: the resolved settings, how many images each class gets, and for variations and translations,
the real image each one starts from. Image i of class c is the same image whatever the amount asked for, so a
smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import ValidationError

from synthaug.data.subsets import count_at_ratio
from synthaug.data.classes import class_indices
from synthaug.data.images import load_split
from synthaug.storage.pixels import to_model_tensor
from synthaug.core.errors import UserError
from synthaug.recipe.sections import GenerateConfig
from synthaug.storage.rundir import ClassesInfo, Run, safe_name
from synthaug.core.runtime import seeded_generator
from synthaug.diffusion.sampling import DEFAULT_STEPS
from synthaug.storage.synthset import ClassTarget

VARIATION_STREAM = -2  # the first key of every variation's generator: never a class index, so no stream is shared
TRANSLATION_STREAM = -3  # likewise: the strength and noise of translations
TRANSLATION_SOURCE_STREAM = -4  # likewise: the order in which translations visit their source images


def resolve_settings(defaults: GenerateConfig, train_steps: int, **flags) -> GenerateConfig:
    """The recipe's generate section with the given flags (None: not given) applied; `steps` resolved to a number
    (the sampler's default, or every one of the `train_steps` training timesteps for DDPM).

    Steps in the recipe belong to the recipe's sampler: another sampler without --steps gets its own default.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    merged = defaults.model_dump()
    if "sampler" in given and given["sampler"] != defaults.sampler and "steps" not in given:
        merged["steps"] = None
    merged.update(given)
    try:
        settings = GenerateConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field, msg = "-".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, ")
        if not field and ": " in msg:  # a check of several fields names its field first: "strength: ..."
            field, msg = msg.split(": ", 1)
            raise UserError(f"--{field.replace('_', '-')}: {msg}") from None
        raise UserError(f"--{field.replace('_', '-')}: {msg} (got {err.get('input')!r})") from None
    return settings.model_copy(update={"steps": settings.steps or DEFAULT_STEPS[settings.sampler] or train_steps})


def pick_classes(requested, info: ClassesInfo) -> list[int]:
    """The run's trained classes that --classes asks for (by name, index or digit string); all of them by default."""
    if requested is None:
        return list(info.classes)
    return class_indices(requested, info.class_names, "--classes", known=info.classes, holder="the run")


def class_targets(run: Run, per_class: int | None, ratio: float | None, balance: bool | int | None, classes=None,
                  per_real: int | None = None) -> list[ClassTarget]:
    """How many images each class gets: N each (--per-class), R times its real count (--ratio), up to the largest
    class (--balance) or up to N images in all (--balance N: none for a class already at N), or K per real image
    (--per-real, variations only). An amount of None (`balance` also False) is not given."""
    balance = False if balance is None else balance
    amounts = (per_class, ratio, balance, per_real)
    if sum(x is not None and x is not False for x in amounts) != 1:
        raise UserError("--per-class/--ratio/--balance/--per-real: give exactly one (N images per class, R times each class's real count, "
                        "top up to the largest class, or K variations of each real image)")
    if balance is not True and balance is not False and (int(balance) != balance or balance < 1):
        raise UserError(f"--balance: expected no value (up to the largest class) or a whole number N >= 1, got {balance!r}")
    for flag, value in (("--per-class", per_class), ("--per-real", per_real)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
            raise UserError(f"{flag}: expected a whole number >= 0, got {value!r}")
    if ratio is not None and not (ratio >= 0 and math.isfinite(ratio)):
        raise UserError(f"--ratio: expected a finite number >= 0, got {ratio!r}")
    info = run.info
    chosen = pick_classes(classes, info)
    unfinished = [c for c in chosen if not run.dir.is_finished(info.models[c])]
    if len(unfinished) == len(chosen):
        raise UserError(f"--run {run.root}: no finished model for the chosen classes; finish `synthaug fit` on it first")
    if unfinished and classes is not None:
        raise UserError(f"--classes: class(es) {unfinished} of {run.root} have no finished model yet; finish `synthaug fit` first")
    if unfinished:
        warnings.warn(f"{run.root}: no finished model for class(es) {unfinished} yet; generating the others")
    top = max(info.counts.values()) if balance is True else int(balance)  # a top-up's target: a class takes what it lacks
    targets = []
    for c in chosen:
        if c in unfinished:
            continue
        if per_class is not None:
            n = int(per_class)
        elif per_real is not None:
            n = int(per_real) * info.counts[c]
        elif ratio is not None:
            n = count_at_ratio(ratio, info.counts[c])
        else:
            n = max(0, top - info.counts[c])
        name = info.class_names[c]
        targets.append(ClassTarget(c, name, safe_name(name), n, info.models[c]))
    return targets


@dataclass(frozen=True)
class RealStarts:
    """Images that start from real training images (variations, translations): the run's real training images per
    class, in train-index order, and the strength each image is noised to. Subclasses say which real image image i of
    class c starts from (`source`), which generator draws its strength and noise, and what its provenance records."""

    images: dict[int, np.ndarray]  # class -> uint8 (n_c, H, W, C)
    train_indices: dict[int, np.ndarray]  # class -> index of each image in the real train split
    strength: tuple[float, float]
    seed: int

    def source(self, class_idx: int, index: int) -> tuple[int, int]:
        """(class, position among that class's real images) of the real image that image `index` of `class_idx` starts from."""
        raise NotImplementedError

    def generator(self, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
        raise NotImplementedError

    def record(self, class_idx: int, index: int) -> dict:
        """What image `index`'s provenance records of its start: the real image's index in the train split."""
        source_class, j = self.source(class_idx, index)
        return {"source_index": int(self.train_indices[source_class][j])}

    def strength_of(self, generator: torch.Generator) -> float:
        lo, hi = self.strength
        return lo + (hi - lo) * float(torch.rand(1, generator=generator)) if hi > lo else lo

    def init(self, class_idx: int, indices: list[int], device) -> torch.Tensor:
        """The source images of `indices`, float (N, C, H, W) in [-1, 1]."""
        starts = [self.source(class_idx, i) for i in indices]
        return to_model_tensor(np.stack([self.images[c][j] for c, j in starts]), device)

    def digest(self) -> str:
        """Identifies the source pixels (a generation made from other real images is another generation)."""
        h = hashlib.sha256()
        for c in sorted(self.images):
            h.update(self.train_indices[c].tobytes())
            h.update(np.ascontiguousarray(self.images[c]).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Sources(RealStarts):
    """Variations: image i of class c varies that class's own real image j = i mod n_c, as its k = i div n_c-th
    variation, so a set cycles through every real image before varying any one twice."""

    def source(self, class_idx: int, index: int) -> tuple[int, int]:
        return class_idx, index % len(self.train_indices[class_idx])

    def generator(self, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
        """Variation k of real image j comes from the generator of (seed, j, k[, attempt]) alone; its first draw is the strength."""
        n = len(self.train_indices[class_idx])
        train_index = int(self.train_indices[class_idx][index % n])
        key = (self.seed, VARIATION_STREAM, train_index, index // n) + ((attempt,) if attempt else ())
        return seeded_generator(*key)


@dataclass(frozen=True)
class Translations(RealStarts):
    """Head-to-tail translations (`generate --translate`, Diff-Mix): image i of target class t starts from a real image
    of a source class, `pools[t]` (the classes the rule `translate_from` allows), and is denoised as class t.

    The sources of t are every real image of its source classes, visited in a seeded order, every one once before any
    twice (cycle k = i div N of the N images is the permutation of (seed, t, k)): for each image, a source class comes
    up with probability proportional to its real count, and a rare class borrows from every image of the common ones
    before it reuses any. Image i's strength and noise come from the generator of (seed, t, i[, attempt]), so a
    filter's redraw keeps its source.
    """

    pools: dict[int, tuple[int, ...]]  # target class -> its source classes
    rule: str  # generate.translate_from: how the pools were chosen
    _orders: dict = field(default_factory=dict, compare=False, repr=False)  # (t, k) -> permutation of t's pool, drawn once

    def source(self, class_idx: int, index: int) -> tuple[int, int]:
        pool = self.pools[class_idx]
        sizes = np.array([len(self.train_indices[c]) for c in pool])
        k, position = divmod(index, int(sizes.sum()))
        if (class_idx, k) not in self._orders:
            order = torch.randperm(int(sizes.sum()), generator=seeded_generator(self.seed, TRANSLATION_SOURCE_STREAM, class_idx, k))
            self._orders[class_idx, k] = order.numpy()
        drawn = int(self._orders[class_idx, k][position])
        which = int(np.searchsorted(np.cumsum(sizes), drawn, side="right"))
        return pool[which], drawn - int(sizes[:which].sum())

    def generator(self, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
        """Translation i of class t comes from the generator of (seed, t, i[, attempt]); its first draw is the strength."""
        return seeded_generator(self.seed, TRANSLATION_STREAM, class_idx, index, *((attempt,) if attempt else ()))

    def record(self, class_idx: int, index: int) -> dict:
        return {**super().record(class_idx, index), "source_class": self.source(class_idx, index)[0]}


def _real_training_images(run: Run) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The real train split's images, and per trained class the indices of the run's real training images
    (classes.json train_indices, exactly what the generator saw: the leak guard holds)."""
    train = load_split(run.recipe.data, "train")
    indices = np.asarray(run.info.train_indices, dtype=np.int64)
    if indices.size and indices.max() >= len(train.labels):
        raise UserError(f"{run.dir.classes}: train_indices do not fit the {len(train.labels)} images of the train split")
    labels = train.labels[indices]
    return train.images, {c: indices[labels == c] for c in run.info.classes}


def load_sources(run: Run, settings: GenerateConfig) -> Sources:
    """The run's real training images, read with the run's data settings, for variations."""
    images, by_class = _real_training_images(run)
    empty = [c for c, members in by_class.items() if not len(members)]
    if empty:
        raise UserError(f"{run.dir.classes}: class(es) {empty} have no real training images to vary")
    lo, hi = settings.strength[0], settings.strength[-1]
    return Sources({c: images[m] for c, m in by_class.items()}, by_class, (lo, hi), settings.seed)


def translation_pools(counts: dict[int, int], targets: list[int], rule: str) -> dict[int, tuple[int, ...]]:
    """The source classes of each target class: with rule `larger`, the classes with more real training images than it
    (head to tail); with `other`, every other class with real images (Diff-Mix's inter-class translation)."""
    if rule == "larger":
        return {t: tuple(c for c in counts if counts[c] > counts[t]) for t in targets}
    return {t: tuple(c for c in counts if c != t and counts[c] > 0) for t in targets}


def load_translations(run: Run, settings: GenerateConfig, targets: list[ClassTarget]) -> Translations:
    """The run's real training images as the sources of translations into the classes that get images (`targets` with
    a count); refused when one of them has no source class under the rule."""
    images, by_class = _real_training_images(run)
    counts = {c: len(members) for c, members in by_class.items()}
    wanted = [t.class_idx for t in targets if t.count > 0]
    pools = translation_pools(counts, wanted, settings.translate_from)
    stranded = [t for t in wanted if not pools[t]]
    if stranded:
        t = stranded[0]
        names = run.info.class_names
        if settings.translate_from == "larger":
            raise UserError(f"--translate: no class has more real training images than class {t} ({names[t]}, {counts[t]}) to translate "
                            "from; leave it out (--classes, or --balance, which draws none for the largest class) or use --translate-from other")
        raise UserError(f"--translate: class {t} ({names[t]}) has no other class with real training images to translate from")
    lo, hi = settings.strength[0], settings.strength[-1]
    return Translations({c: images[m] for c, m in by_class.items()}, by_class, (lo, hi), settings.seed, pools, settings.translate_from)
