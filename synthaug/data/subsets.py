"""Which real training images a run uses: reproducible, nested subsets of the training split, and counts at a ratio."""

from __future__ import annotations

import math

import numpy as np

from synthaug.core.errors import UserError
from synthaug.data.classes import class_indices
from synthaug.recipe.sections import SiteConfig, SubsetConfig

# The reserve's permutation uses its own random stream, so that site seed s and subset seed s draw unrelated orders.
_SITE_STREAM = 1_000_003


def site_order(labels: np.ndarray, site: SiteConfig, classes: list[int]) -> dict[int, np.ndarray]:
    """Per class, the training indices of `site.side`'s part of the split: B's reserve in the order its disjoint
    blocks are cut from, A's part sorted. The two parts of a class never share an index."""
    parts = {}
    for c in classes:
        order = np.random.default_rng([site.seed, c, _SITE_STREAM]).permutation(np.flatnonzero(labels == c))
        reserved = int(round(site.reserve * len(order)))
        parts[c] = order[:reserved] if site.side == "B" else np.sort(order[reserved:])
    return parts


def subset_counts(labels: np.ndarray, subset: SubsetConfig, classes: list[int], class_names: list[str] | None = None,
                  available: dict[int, int] | None = None) -> dict[int, int]:
    """How many training images of each class `subset` takes; one-line errors for counts a class cannot give.
    `available`: the images of each class it may draw from (default: the whole split)."""
    available = available or {c: int((labels == c).sum()) for c in classes}
    class_names = class_names or [str(c) for c in range(max(classes, default=0) + 1)]
    if subset.per_class is not None:
        wanted, field = {c: subset.per_class for c in classes}, "data.subset.per_class"
    elif subset.fraction is not None:
        return {c: max(1, int(round(subset.fraction * n))) if n else 0 for c, n in available.items()}
    elif subset.long_tail is not None:
        lt, field = subset.long_tail, "data.subset.long_tail.head"
        by_frequency = sorted(classes, key=lambda c: (-available[c], c))  # the natural order; ties by class index
        steps = max(1, len(classes) - 1)
        wanted = {c: max(1, int(round(lt.head * lt.ratio ** (-k / steps)))) for k, c in enumerate(by_frequency)}
    else:
        field = "data.subset.counts"
        named = {class_indices([key], class_names, field, known=classes)[0]: count for key, count in subset.counts.items()}
        wanted = {c: named.get(c, 0) for c in classes}
    for c, count in wanted.items():
        if count > available[c]:
            raise UserError(f"{field}: {count} exceeds the {available[c]} training images of class {c} ({class_names[c]})")
    return wanted


def subset_indices(labels: np.ndarray, subset: SubsetConfig | None, classes: list[int], class_names: list[str] | None = None,
                   site: SiteConfig | None = None) -> np.ndarray:
    """Reproducible choice of training indices.

    Each class is drawn from its own generator seeded by (subset.seed, class), as a prefix of one permutation, so a
    smaller subset with the same seed is contained in a larger one, whatever its kind: 10 per class inside 25 per
    class, and a long tail whose counts are all below 25 inside 25 per class.

    With `site` (data.site) the draw stays inside the site's part of the split. On side B, subset seed k takes the
    k-th block of the reserve's order instead, so B's subsets of one size are disjoint, independent units.
    """
    parts = site_order(labels, site, classes) if site is not None else {c: np.flatnonzero(labels == c) for c in classes}
    if subset is None:
        chosen = [np.sort(parts[c]) for c in classes]
    else:
        counts = subset_counts(labels, subset, classes, class_names, available={c: len(parts[c]) for c in classes})
        if site is not None and site.side == "B":
            chosen = []
            for c in classes:
                end = (subset.seed + 1) * counts[c]
                if end > len(parts[c]):
                    name = class_names[c] if class_names else c
                    raise UserError(f"data.subset.seed: block {subset.seed} of {counts[c]} images of class {c} ({name}) needs "
                                    f"{end} reserved images, site B's reserve holds {len(parts[c])}; raise data.site.reserve "
                                    f"or use a smaller seed")
                chosen.append(np.sort(parts[c][end - counts[c]:end]))
        else:
            chosen = [np.sort(np.random.default_rng([subset.seed, c]).permutation(parts[c])[:counts[c]]) for c in classes]
    if not chosen or sum(len(c) for c in chosen) == 0:
        raise UserError("data: the chosen classes have no training images")
    return np.sort(np.concatenate(chosen))


def count_at_ratio(ratio: float, real: int) -> int:
    """How many synthetic images `ratio` x `real` real ones means: rounded half up (generate, evaluate, mix)."""
    return int(math.floor(ratio * real + 0.5))
