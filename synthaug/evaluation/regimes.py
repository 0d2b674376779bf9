"""Regimes and arms of `evaluate`: the real and synthetic data of one run, the leak guard, and what each arm trains on.

A *regime* is one run directory: the real training subset its diffusion models saw and the synthetic
set sampled from them. The leak guard: the real arms of a regime must see every real image the run's
generators were trained on (`classes.json` `train_indices`), so a generator never carries real
information the compared classifier did not have. Synthetic images never enter val or test.

    real                      the regime's real training images
    real+classic              the same, with classical augmentation (flips, rotation, shift, brightness, contrast)
    real+synthetic Rx         real + R x as many synthetic images per class as there are real ones
    real+synthetic+classic Rx the same, augmented
    synthetic                 synthetic only, as many per class as real (classification accuracy score, CAS)
    real+replace pP           each drawn real image swapped for one of its own variations with probability P
    real+replace+classic pP   the same, augmented
    real+pseudo[+classic] tT  the real images and the pool images (data.unlabeled) the real[+classic] arm of the same seed
                              labels with confidence >= T, with those labels (self-training: non-synthetic)

With an unlabeled pool the guard widens: the arms may use every image the generators saw, labelled or not, and
the best arm without synthetic data is chosen among real, real+classic and the real+pseudo arms.

Synthetic samples weigh `evaluate.synthetic_weight` in the loss (real ones 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthaug.data.images import ImageSet, load_split, resolve_classes
from synthaug.data.subsets import count_at_ratio, subset_indices
from synthaug.data.synthetic import SyntheticImages, read_synthetic
from synthaug.core.errors import UserError
from synthaug.data.pool import Pool, load_pool
from synthaug.recipe.sections import EvaluateConfig, SubsetConfig
from synthaug.storage.rundir import Run

BASELINES = ("real", "real+classic")


def is_non_synthetic(arm_name: str) -> bool:
    """Arms that may be the best baseline: real, real+classic, and self-training on the pool."""
    return arm_name in BASELINES or arm_name.startswith("real+pseudo")


@dataclass
class Regime:
    run: Path
    label: str  # "50/class", "10%", "100%"
    subset_seed: int
    class_names: list[str]
    classes: list[int]
    train: ImageSet  # the real training images the real arms see
    train_indices: np.ndarray  # their indices in the real train split
    synthetic: SyntheticImages | None
    synthetic_dir: Path
    pool: Pool | None = None  # data.unlabeled: images the real+pseudo arms may label


def regime_label(subset: SubsetConfig | None) -> str:
    return "100%" if subset is None else subset.label()


def load_regime(run: Run, synthetic_dir: Path | None = None, need_synthetic: bool = True, show_progress: bool = True) -> Regime:
    """The real training images of `run.recipe.data` (the run's recipe, maybe overridden) and the run's synthetic
    set, after the leak guard: the real arms must see every real image the run's generators saw."""
    recipe, info = run.recipe, run.info
    classes = resolve_classes(recipe.data)
    if classes != info.classes:
        raise UserError(f"{run.root}: trained classes {info.classes} but the evaluation data selects {classes}")
    train = load_split(recipe.data, "train")
    real_idx = subset_indices(train.labels, recipe.data.subset, classes, train.class_names)
    run_idx = np.asarray(info.train_indices, dtype=np.int64)
    unseen = np.setdiff1d(run_idx, real_idx)
    if unseen.size or (run_idx.size and run_idx.max() >= len(train.labels)):
        raise UserError(
            f"{run.root}: its diffusion models were trained on {max(unseen.size, 1)} real training image(s) that the real "
            f"arms here would not see (run subset {info.subset}, real arms data.subset "
            f"{recipe.data.subset.model_dump() if recipe.data.subset else None}); a generator may only learn from real "
            f"images the compared classifier sees: evaluate with the run's own data.subset or a larger one"
        )
    pool = load_pool(recipe.data, classes, real_idx, train)
    _check_pool(run, pool)
    synthetic_dir = Path(synthetic_dir) if synthetic_dir else run.dir.synthetic
    synthetic = read_synthetic(synthetic_dir, run, show_progress) if need_synthetic else None
    subset = recipe.data.subset
    return Regime(run.root, regime_label(subset), subset.seed if subset else 0, train.class_names, classes,
                  train.take(real_idx), real_idx, synthetic, synthetic_dir, pool)


def _check_pool(run: Run, pool: Pool | None) -> None:
    """The arms may use every unlabeled image the generators saw: the evaluation's pool must hold the run's."""
    seen = run.info.unlabeled
    if seen is None:
        return
    key = "indices" if "indices" in seen else "files"
    mine = set(pool.record.get(key, [])) if pool is not None and pool.record["source"] == seen["source"] else set()
    missing = len(set(seen[key]) - mine)
    if missing:
        raise UserError(f"{run.root}: its diffusion models learned from {missing} unlabeled image(s) ({seen['source']}) that the "
                        "arms here may not use; a classifier may see every image the generator saw: evaluate with the run's own "
                        "data.unlabeled")


@dataclass(frozen=True)
class Arm:
    kind: str  # one of config.ARMS
    ratio: float | None  # synthetic images per real image of each class; None: no synthetic
    replace_p: float | None = None  # real+replace arms: the probability of swapping a drawn real image for a variation
    pseudo_confidence: float | None = None  # real+pseudo arms: the teacher's confidence a pool image needs

    @property
    def name(self) -> str:
        if self.replace_p is not None:
            return f"{self.kind} p{self.replace_p:g}"
        if self.pseudo_confidence is not None:
            return f"{self.kind} t{self.pseudo_confidence:g}"
        return self.kind if self.ratio is None or self.kind == "synthetic" else f"{self.kind} {self.ratio:g}x"

    @property
    def classic(self) -> bool:
        return self.kind.endswith("classic")

    @property
    def synthetic(self) -> bool:
        return self.ratio is not None or self.replace_p is not None


def expand_arms(cfg: EvaluateConfig) -> list[Arm]:
    arms = []
    for kind in cfg.arms:
        if kind in ("real+synthetic", "real+synthetic+classic"):
            arms += [Arm(kind, r) for r in cfg.ratios]
        elif kind in ("real+replace", "real+replace+classic"):
            arms += [Arm(kind, None, p) for p in cfg.replace_p]
        elif kind in ("real+pseudo", "real+pseudo+classic"):
            arms += [Arm(kind, None, pseudo_confidence=t) for t in cfg.pseudo_confidence]
        else:
            arms.append(Arm(kind, 1.0 if kind == "synthetic" else None))
    return arms


def top_ratio(arms: list[Arm]) -> float:
    """The largest synthetic-to-real ratio of the arms (0 when none uses synthetic images)."""
    return max((a.ratio for a in arms if a.ratio is not None), default=0.0)


def synthetic_needed(arms: list[Arm], real_counts: dict[int, int]) -> dict[int, int]:
    """Synthetic images each class must have for these arms."""
    return {c: count_at_ratio(top_ratio(arms), n) for c, n in real_counts.items()}


def check_synthetic(regime: Regime, arms: list[Arm]) -> None:
    """Refuse, naming the --per-class to generate, when a synthetic set is too small for the arms, and refuse replace
    arms on a set without variations."""
    real = {c: int((regime.train.labels == c).sum()) for c in regime.classes}
    needed = synthetic_needed(arms, real)
    for c, want in needed.items():
        have = int((regime.synthetic.images.labels == c).sum())
        if have < want:
            raise UserError(
                f"{regime.synthetic_dir}: the arms need {want} synthetic images of class {c} ({regime.class_names[c]}), "
                f"found {have}; run `synthaug generate` with --ratio {top_ratio(arms):g} (or --per-class {max(needed.values())})"
            )
    if any(a.replace_p is not None for a in arms) and not regime.synthetic.variations:
        raise UserError(f"{regime.synthetic_dir}: the real+replace arms swap real images for their own variations, and this set has none; "
                        "make one with `synthaug generate --from-real --per-real K`")


def _take_synthetic(regime: Regime, ratio: float) -> ImageSet:
    """The first round(ratio x real count) synthetic images of every class (smaller ratios use a prefix)."""
    picked = []
    for c in regime.classes:
        want = count_at_ratio(ratio, int((regime.train.labels == c).sum()))
        picked.append(np.flatnonzero(regime.synthetic.images.labels == c)[:want])  # enough: see check_synthetic
    return regime.synthetic.images.take(np.concatenate(picked))


@dataclass
class ArmData:
    """What an arm trains on: uint8 images and labels, how many are synthetic, and how they are used."""

    images: np.ndarray
    labels: np.ndarray
    n_synthetic: int
    synthetic_mask: np.ndarray | None = None  # bool (N,): the synthetic rows (add arms), weighed synthetic_weight
    variations: ImageSet | None = None  # replace arms: the variations, grouped by the real image they vary
    variation_start: np.ndarray | None = None  # int64 (N,): where image i's variations begin in `variations`
    variation_count: np.ndarray | None = None  # int64 (N,): how many it has


def teacher_arm(arm: Arm) -> Arm:
    """The arm whose classifier labels the pool for a real+pseudo arm: same seed and augmentation, real images only."""
    return Arm("real+classic" if arm.classic else "real", None)


def arm_data(regime: Regime, arm: Arm, pool_probs: np.ndarray | None = None) -> ArmData:
    """The data of an arm: real images, added synthetic ones, real images with their variations beside them, or real
    images with the pool images whose teacher probabilities `pool_probs` (N_pool, classes) pass the arm's confidence."""
    if arm.pseudo_confidence is not None:
        probs = pool_probs[:, regime.classes]  # only the evaluated classes can be a pseudo-label
        keep = np.flatnonzero(probs.max(axis=1) >= arm.pseudo_confidence)
        labels = np.asarray(regime.classes, dtype=np.int64)[probs[keep].argmax(axis=1)]
        return ArmData(np.concatenate([regime.train.images, regime.pool.images[keep]]), np.concatenate([regime.train.labels, labels]), 0)
    if arm.replace_p is not None:
        return _with_variations(regime)
    if arm.ratio is None:
        return ArmData(regime.train.images, regime.train.labels, 0)
    synth = _take_synthetic(regime, arm.ratio)
    if arm.kind == "synthetic":
        return ArmData(synth.images, synth.labels, len(synth.labels))
    mask = np.concatenate([np.zeros(len(regime.train.labels), bool), np.ones(len(synth.labels), bool)])
    return ArmData(np.concatenate([regime.train.images, synth.images]), np.concatenate([regime.train.labels, synth.labels]),
                   len(synth.labels), mask)


def _with_variations(regime: Regime) -> ArmData:
    """The real images, and every variation of each in the set, grouped by the real image (in set order)."""
    sources = regime.synthetic.source_index
    order = np.argsort(sources, kind="stable")
    grouped = sources[order]
    start = np.searchsorted(grouped, regime.train_indices, side="left")
    count = np.searchsorted(grouped, regime.train_indices, side="right") - start
    variations = regime.synthetic.images.take(order)
    return ArmData(regime.train.images, regime.train.labels, int(count.sum()), None, variations, start.astype(np.int64), count.astype(np.int64))
