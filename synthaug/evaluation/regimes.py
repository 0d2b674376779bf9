"""Regimes and arms of `evaluate`: the real and synthetic data of one run, the leak guard, and what each arm trains on.

A *regime* is one run directory: the real training subset its diffusion models saw and the synthetic
set sampled from them. The leak guard: the real arms of a regime must see every real image the run's
generators were trained on (`classes.json` `train_indices`), so a generator never carries real
information the compared classifier did not have. Synthetic images never enter val or test.

What each arm trains on, how it uses synthetic images, its stages and its role are in one registry,
synthaug.recipe.arms (the arm table is there); `arm_data` builds its data from the entry's `data`.

With evaluate.release the synthetic set is another site's release (synthaug.data.release), and no generator of the run
saw anything. With data.shift the regime's real images (and evaluate's val and test) pass through the site's
acquisition shift; site A's images never do.

With an unlabeled pool the guard widens: the arms may use every image the generators saw, labelled or not. The best arm
without synthetic data is chosen among real, real+classic, the re-balancing arms, real+crt and the real+pseudo arms.

Synthetic samples weigh `evaluate.synthetic_weight` in the loss (real ones 1). Re-balancing counts the classes of what
the arm trains on (synthetic images included); rare classes (`rare_classes`) are counted in the real images alone.

What each arm trains on is one of the datasets of `synthaug.data.arms` (`arm_data`), the very classes a user's own loop
takes: ArmDataset (real, re-balancing, pseudo-label arms), AddSynthetic, SyntheticOnly, TopUp, ReplaceWithVariations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthaug.data.arms import AddSynthetic, ArmDataset, ReplaceWithVariations, SyntheticOnly, TopUp, WholeSynthetic, top_up_counts
from synthaug.data.classes import class_indices
from synthaug.data.images import ImageSet, load_split, resolve_classes
from synthaug.data.subsets import count_at_ratio, subset_indices
from synthaug.data.synthetic import SyntheticImages, read_synthetic
from synthaug.core.errors import UserError
from synthaug.data.pool import Pool, load_pool
from synthaug.data.release import read_release
from synthaug.data.shift import shift_images
from synthaug.recipe.arms import ArmSpec, arm_spec
from synthaug.recipe.sections import EvaluateConfig, SiteConfig, SubsetConfig
from synthaug.storage.rundir import Run

PLAIN_BASELINES = ("real", "real+classic")  # every arm's gain is also reported against these two; the best baseline
# is chosen on val among all arms without synthetic data (is_non_synthetic), re-balancing and self-training included


def is_non_synthetic(arm_name: str) -> bool:
    """Arms that may be the best baseline: real, real+classic, re-balancing (cRT included) and self-training on the pool."""
    return arm_spec(arm_name).role == "baseline"


def is_reference(arm_name: str) -> bool:
    """Cross-site reference arms (model sharing, the raw-sharing ceiling): reported beside the others, never chosen
    as the best baseline or as the synthetic arm of a verdict."""
    return arm_spec(arm_name).role == "reference"


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
    other_site: ImageSet | None = None  # data.site side B: site A's real images (the cross-site reference arms only)
    other_site_indices: np.ndarray | None = None


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
    real_idx = subset_indices(train.labels, recipe.data.subset, classes, train.class_names, recipe.data.site)
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
    release = recipe.evaluate.release
    if release is not None:  # another site's synthetic set: no generator of this run saw anything
        synthetic_dir = Path(release)
        synthetic = read_release(release, train.class_names, classes, recipe.data.size, train.channels) if need_synthetic else None
    else:
        synthetic_dir = Path(synthetic_dir) if synthetic_dir else run.dir.synthetic
        synthetic = read_synthetic(synthetic_dir, run, show_progress) if need_synthetic else None
    subset, site = recipe.data.subset, recipe.data.site
    other = None
    if site is not None and site.side == "B":
        other = subset_indices(train.labels, None, classes, train.class_names, SiteConfig(side="A", reserve=site.reserve, seed=site.seed))
    return Regime(run.root, regime_label(subset), subset.seed if subset else 0, train.class_names, classes,
                  shifted(train.take(real_idx), recipe.data.shift), real_idx, synthetic, synthetic_dir, pool,
                  None if other is None else train.take(other), other)


def shifted(images: ImageSet, shift) -> ImageSet:
    """`images` under the evaluated site's acquisition shift (data.shift; unchanged without one)."""
    return images if shift is None else dataclasses.replace(images, images=shift_images(images.images, shift))


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
    kind: str  # one of recipe.arms.ARMS (the registry)
    # synthetic images added per real image of each class (real+synthetic Rx, synthetic); None for every other arm,
    # those that use synthetic images their own way (top-up, replace, pretrain: see `synthetic`) included
    add_ratio: float | None
    replace_p: float | None = None  # real+replace arms: the probability of swapping a drawn real image for a variation
    pseudo_confidence: float | None = None  # real+pseudo arms: the teacher's confidence a pool image needs
    replace_by_class: str | None = None  # real+replace arms with evaluate.replace_p_by_class: "inverse" or "by class"

    @property
    def name(self) -> str:
        if self.replace_p is not None:
            return f"{self.kind} p{self.replace_p:g}" + (f" {self.replace_by_class}" if self.replace_by_class else "")
        if self.pseudo_confidence is not None:
            return f"{self.kind} t{self.pseudo_confidence:g}"
        return self.kind if self.add_ratio is None or self.kind == "synthetic" else f"{self.kind} {self.add_ratio:g}x"

    @property
    def spec(self) -> ArmSpec:
        """Its entry in the arm registry (synthaug.recipe.arms); for a first stage's stand-in (`first_stage_arm`), one
        with its arm's use of synthetic images and nothing else of its own."""
        if self.kind.endswith(FIRST_STAGE):
            own = arm_spec(self.kind.removesuffix(FIRST_STAGE))
            return ArmSpec(self.kind, data=own.data, uses_synthetic=own.uses_synthetic)
        return arm_spec(self.kind)

    @property
    def classic(self) -> bool:
        return self.spec.classic

    @property
    def topup(self) -> bool:
        """Tops classes up with synthetic images (itself, or the arm whose head a +crt arm re-trains)."""
        return self.spec.uses_synthetic == "topup"

    @property
    def rebalance(self) -> str | None:
        """The re-balancing scheme (recipe.arms.REBALANCE) of the arm, None when it has none."""
        return self.spec.rebalance

    @property
    def soft(self) -> bool:
        """Trains on soft labels: the synthetic set's own (a release's teacher probabilities) or, for a top-up arm,
        those of the in-task teacher (`soft_teacher_arm`)."""
        return self.spec.soft is not None

    @property
    def stream(self) -> str:
        """The name its batches are seeded by: its own; a soft top-up arm's (teacher or set labels) is its hard-label
        arm's, so that the two draw the same batches and differ by their synthetic images' targets alone."""
        return self.name.replace("+set-soft", "").replace("+soft", "") if self.spec.soft and self.topup else self.name

    @property
    def crt(self) -> bool:
        """Decoupled re-training: the arm without +crt (`crt_base`), then its head alone re-trained on the real images."""
        return self.spec.first_stage == "base"

    @property
    def pretrain(self) -> bool:
        """Trains first on the whole synthetic set, then fine-tunes on the real images."""
        return self.spec.first_stage == "synthetic"

    @property
    def reference(self) -> bool:
        """A cross-site reference (model sharing, raw sharing): site A's real images, for studies only."""
        return self.spec.reference

    @property
    def synthetic(self) -> bool:
        return self.spec.uses_synthetic is not None


FIRST_STAGE = " first stage"


def first_stage_arm(arm: Arm) -> Arm:
    """The stand-in that names a pretrain or model-sharing arm's first stage in the cache (`<kind> first stage`): its
    key holds the classifier settings and the stage's data, none of the arm's own augmentation or re-balancing keys."""
    return Arm(arm.kind + FIRST_STAGE, None)


def expand_arms(cfg: EvaluateConfig) -> list[Arm]:
    """The arms of `cfg.arms`, one per value of the evaluate list each expands by (ratios, replace_p, pseudo_confidence)."""
    arms = []
    for kind in cfg.arms:
        spec = arm_spec(kind)
        if spec.expand == "ratios":
            arms += [Arm(kind, r) for r in cfg.ratios]
        elif spec.expand == "replace_p":
            by_class = cfg.replace_p_by_class and ("inverse" if cfg.replace_p_by_class == "inverse" else "by class")
            arms += [Arm(kind, None, p, replace_by_class=by_class or None) for p in cfg.replace_p]
        elif spec.expand == "pseudo_confidence":
            arms += [Arm(kind, None, pseudo_confidence=t) for t in cfg.pseudo_confidence]
        else:
            arms.append(Arm(kind, spec.fixed_ratio))
    return arms


def top_ratio(arms: list[Arm]) -> float:
    """The largest synthetic-to-real ratio of the arms (0 when none uses synthetic images)."""
    return max((a.add_ratio for a in arms if a.add_ratio is not None), default=0.0)


def synthetic_needed(arms: list[Arm], real_counts: dict[int, int]) -> dict[int, int]:
    """Synthetic images each class must have for the ratio arms (real+synthetic, synthetic)."""
    return {c: count_at_ratio(top_ratio(arms), n) for c, n in real_counts.items()}


def real_counts(regime: Regime) -> dict[int, int]:
    return {c: int((regime.train.labels == c).sum()) for c in regime.classes}


def topup_counts(regime: Regime, cfg: EvaluateConfig) -> dict[int, int]:
    """Synthetic images of each class a real+topup arm adds: up to `evaluate.top_up` images in all (none past it)."""
    return top_up_counts(real_counts(regime), None if cfg.top_up == "balance" else cfg.top_up)


def rare_classes(regime: Regime, cfg: EvaluateConfig) -> list[int]:
    """The classes whose real training count is below `evaluate.rare_below` (or below the median class count)."""
    real = real_counts(regime)
    below = float(np.median(list(real.values()))) if cfg.rare_below == "median" else cfg.rare_below
    return [c for c, n in real.items() if n < below]


def check_synthetic(regime: Regime, arms: list[Arm], cfg: EvaluateConfig) -> None:
    """Refuse, naming what to generate, when a synthetic set is too small for the arms (a `generate --balance` set
    leaves the largest class empty: only the top-up arms take it), and refuse replace arms on a set without variations."""
    real = real_counts(regime)
    needed = synthetic_needed(arms, real)
    have = {c: int((regime.synthetic.images.labels == c).sum()) for c in regime.classes}
    for c, want in needed.items():
        if have[c] < want:
            named = ", ".join(sorted({a.kind for a in arms if a.add_ratio is not None}))
            raise UserError(
                f"{regime.synthetic_dir}: the arms {named} need {want} synthetic images of class {c} ({regime.class_names[c]}), "
                f"found {have[c]}; run `synthaug generate` with --ratio {top_ratio(arms):g} (or --per-class {max(needed.values())})"
                + ("; a set made with --balance tops classes up: evaluate it with the real+topup arms" if have[c] == 0 else "")
            )
    if any(a.topup for a in arms):
        for c, want in topup_counts(regime, cfg).items():
            if have[c] < want:
                raise UserError(
                    f"{regime.synthetic_dir}: the real+topup arms need {want} synthetic images of class {c} ({regime.class_names[c]}) "
                    f"to reach evaluate.top_up {cfg.top_up} ({real[c] + want} images), found {have[c]}; run `synthaug generate` with "
                    f"--balance (up to the largest class) or --per-class {max(topup_counts(regime, cfg).values())}"
                )
    if any(a.replace_p is not None for a in arms) and not regime.synthetic.variations:
        raise UserError(f"{regime.synthetic_dir}: the real+replace arms swap real images for their own variations, and this set has none; "
                        "make one with `synthaug generate --from-real --per-real K`")


def teacher_arm(arm: Arm) -> Arm:
    """The arm whose classifier labels the pool for a real+pseudo arm: same seed and augmentation, real images only."""
    return Arm("real+classic" if arm.classic else "real", None)


def soft_teacher_arm(arm: Arm) -> Arm | None:
    """The arm whose classifier gives a real+topup+soft arm's synthetic images their targets: the class-balanced real
    arm of the same seed and augmentation (the strongest re-balancing in the long-tailed study). None for other arms."""
    return Arm("real+balanced+classic" if arm.classic else "real+balanced", None) if arm.spec.soft == "teacher" else None


def crt_base(arm: Arm) -> Arm:
    """The arm a +crt arm re-trains the head of: the same arm without +crt (its very model, same key and stream)."""
    return Arm(arm.kind.replace("+crt", ""), arm.add_ratio)


def crt_steps(cfg: EvaluateConfig) -> int:
    """Steps of a +crt arm's head re-training: evaluate.crt_steps, or a quarter of evaluate.steps."""
    return cfg.crt_steps or max(1, cfg.steps // 4)


def arm_data(regime: Regime, arm: Arm, pool_probs: np.ndarray | None = None, cfg: EvaluateConfig | None = None) -> ArmDataset:
    """The data of an arm, as the dataset of `synthaug.data.arms` a user would build, by its registry entry's `data`:
    real images, added synthetic ones (at a ratio, or topped up to `cfg.top_up`), real images with their variations
    beside them, real images with the pool images whose teacher probabilities `pool_probs` (N_pool, classes) pass the
    arm's confidence, or B's and A's real images. A +crt arm's is what its head is re-trained on, the real images (its
    first stage trains on `crt_base`'s data); a pretrain or model-sharing arm's is that of its fine-tuning.
    Synthetic samples weigh `cfg.synthetic_weight` (1 without `cfg`). A soft top-up arm takes the set's soft labels:
    evaluate sets them to its teacher's probabilities first."""
    weight = cfg.synthetic_weight if cfg is not None else 1.0
    return _BUILDERS[arm.spec.data](regime, arm, {"real_index": regime.train_indices, "classes": regime.classes}, weight, pool_probs, cfg)


def _real(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    return ArmDataset(regime.train, **real)


def _with_site_a(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    other = _other_site(regime, arm)
    return ArmDataset((np.concatenate([regime.train.images, other.images]), np.concatenate([regime.train.labels, other.labels])),
                      real_index=np.concatenate([regime.train_indices, regime.other_site_indices]), classes=regime.classes)


def _with_pseudo_labels(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    probs = pool_probs[:, regime.classes]  # only the evaluated classes can be a pseudo-label
    keep = np.flatnonzero(probs.max(axis=1) >= arm.pseudo_confidence)
    labels = np.asarray(regime.classes, dtype=np.int64)[probs[keep].argmax(axis=1)]
    return ArmDataset((np.concatenate([regime.train.images, regime.pool.images[keep]]), np.concatenate([regime.train.labels, labels])),
                      real_index=np.concatenate([regime.train_indices, np.full(len(keep), -1)]), classes=regime.classes)


def _with_replacement(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    p = replace_probabilities(regime, arm, cfg) if arm.replace_by_class else arm.replace_p
    return ReplaceWithVariations(regime.train, regime.synthetic, p, weight=weight, **real)


def _topped_up(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    return TopUp(regime.train, regime.synthetic, None if cfg.top_up == "balance" else cfg.top_up, weight=weight, soft_labels=arm.soft, **real)


def _synthetic_only(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    return SyntheticOnly(regime.train, regime.synthetic, **real)


def _added(regime, arm, real, weight, pool_probs, cfg) -> ArmDataset:
    return AddSynthetic(regime.train, regime.synthetic, arm.add_ratio, weight=weight, soft_labels=arm.soft, **real)


_BUILDERS = {"real": _real, "site-a": _with_site_a, "pseudo": _with_pseudo_labels, "replace": _with_replacement, "topup": _topped_up,
             "synthetic-only": _synthetic_only, "add": _added}  # one per recipe.arms.DataKind


def first_stage_data(regime: Regime, arm: Arm) -> ArmDataset:
    """What a pretrain arm (the whole synthetic set) or a model-sharing arm (site A's real images) trains on before
    it is fine-tuned on the regime's real images."""
    if arm.spec.first_stage == "synthetic":
        return WholeSynthetic(regime.synthetic, classes=regime.classes, soft_labels=arm.soft)
    other = _other_site(regime, arm)
    return ArmDataset(other, real_index=regime.other_site_indices, classes=regime.classes)


def _other_site(regime: Regime, arm: Arm) -> ImageSet:
    if regime.other_site is None:
        raise UserError(f"evaluate.arms: {arm.kind} uses site A's real images, a reference for cross-site studies; "
                        "it needs data.site with side B")
    return regime.other_site


def replace_probabilities(regime: Regime, arm: Arm, cfg: EvaluateConfig) -> np.ndarray:
    """Per real training image, the probability a real+replace arm swaps it (`evaluate.replace_p_by_class`): p x
    n_max / n_c ("inverse") or p x the class's factor (1 for classes not named), clipped to 1."""
    real = real_counts(regime)
    if cfg.replace_p_by_class == "inverse":
        factor = {c: max(real.values()) / max(n, 1) for c, n in real.items()}
    else:
        factor = dict.fromkeys(regime.classes, 1.0)
        for name, f in cfg.replace_p_by_class.items():
            (c,) = class_indices([name], regime.class_names, "evaluate.replace_p_by_class", known=regime.classes)
            factor[c] = f
    per_class = np.zeros(len(regime.class_names))
    for c, f in factor.items():
        per_class[c] = min(1.0, arm.replace_p * f)
    return per_class[regime.train.labels]
