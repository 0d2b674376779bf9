"""Which real training images a run uses: reproducible, nested subsets of the training split, and counts at a ratio."""

from __future__ import annotations

import math

import numpy as np

from synthaug.core.errors import UserError
from synthaug.recipe.sections import SubsetConfig


def subset_indices(labels: np.ndarray, subset: SubsetConfig | None, classes: list[int], class_names: list[str] | None = None) -> np.ndarray:
    """Stratified, reproducible choice of training indices.

    Each class is drawn from its own generator seeded by (subset.seed, class), as a prefix of one
    permutation, so a smaller subset with the same seed is contained in a larger one.
    """
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if subset is None:
            chosen.append(members)
            continue
        order = np.random.default_rng([subset.seed, c]).permutation(members)
        if subset.per_class is not None:
            if subset.per_class > len(members):
                name = f" ({class_names[c]})" if class_names else ""
                raise UserError(f"data.subset.per_class: {subset.per_class} exceeds the {len(members)} training images of class {c}{name}")
            take = subset.per_class
        else:
            take = max(1, int(round(subset.fraction * len(members))))
        chosen.append(np.sort(order[:take]))
    if not chosen or sum(len(c) for c in chosen) == 0:
        raise UserError("data: the chosen classes have no training images")
    return np.sort(np.concatenate(chosen))


def count_at_ratio(ratio: float, real: int) -> int:
    """How many synthetic images `ratio` x `real` real ones means: rounded half up (generate, evaluate, mix)."""
    return int(math.floor(ratio * real + 0.5))
