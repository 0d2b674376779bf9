"""What `generate` draws: the resolved settings, how many images each class gets, and for variations, the real
image each one starts from. Image i of class c is the same image whatever the amount asked for, so a
smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

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
class Sources:
    """The real images variations start from: per class, the run's real training images of that class, in train-index order.

    Variation i of class c starts from source j = i mod n_c and is the k = i div n_c-th variation of it, so a
    set cycles through every real image before varying any one twice.
    """

    images: dict[int, np.ndarray]  # class -> uint8 (n_c, H, W, C)
    train_indices: dict[int, np.ndarray]  # class -> index of each source in the real train split
    strength: tuple[float, float]

    def source(self, class_idx: int, index: int) -> tuple[int, int, int]:
        """(position among the class's sources, index in the train split, variation number k) of image `index`."""
        n = len(self.train_indices[class_idx])
        j = index % n
        return j, int(self.train_indices[class_idx][j]), index // n

    def generator(self, seed: int, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
        """Variation k of real image j comes from the generator of (seed, j, k[, attempt]) alone; its first draw is the strength."""
        _, train_index, k = self.source(class_idx, index)
        key = (seed, VARIATION_STREAM, train_index, k) + ((attempt,) if attempt else ())
        return seeded_generator(*key)

    def strength_of(self, generator: torch.Generator) -> float:
        lo, hi = self.strength
        return lo + (hi - lo) * float(torch.rand(1, generator=generator)) if hi > lo else lo

    def init(self, class_idx: int, indices: list[int], device) -> torch.Tensor:
        """The source images of `indices`, float (N, C, H, W) in [-1, 1]."""
        rows = [self.source(class_idx, i)[0] for i in indices]
        return to_model_tensor(self.images[class_idx][rows], device)

    def digest(self) -> str:
        """Identifies the source pixels (a generation made from other real images is another generation)."""
        h = hashlib.sha256()
        for c in sorted(self.images):
            h.update(self.train_indices[c].tobytes())
            h.update(np.ascontiguousarray(self.images[c]).tobytes())
        return h.hexdigest()[:16]


def load_sources(run: Run, settings: GenerateConfig) -> Sources:
    """The run's real training images (classes.json train_indices), read with the run's data settings."""
    train = load_split(run.recipe.data, "train")
    indices = np.asarray(run.info.train_indices, dtype=np.int64)
    if indices.size and indices.max() >= len(train.labels):
        raise UserError(f"{run.dir.classes}: train_indices do not fit the {len(train.labels)} images of the train split")
    labels = train.labels[indices]
    by_class = {c: indices[labels == c] for c in run.info.classes}
    empty = [c for c, members in by_class.items() if not len(members)]
    if empty:
        raise UserError(f"{run.dir.classes}: class(es) {empty} have no real training images to vary")
    lo, hi = settings.strength[0], settings.strength[-1]
    return Sources({c: train.images[m] for c, m in by_class.items()}, by_class, (lo, hi))
