"""The recipe's sections: one strict pydantic class per stage (data, model, diffusion, train, generate,
audit, evaluate). `synthaug.recipe` assembles them into the `Recipe` and loads it; validators name
their field first ("size: must be ..."), which the loader turns into the field path of a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from synthaug.core.errors import UserError
from synthaug.recipe.arms import ARMS, DEFAULT_ARMS, USAGE_ARMS

MEDMNIST_SIZES = (28, 64, 128, 224)


def medmnist_info() -> dict:
    """medmnist.INFO (flags, class names, URLs, MD5s); medmnist is installed without its dependencies."""
    try:
        import medmnist
    except ImportError:
        raise UserError("medmnist is not installed: run `pip install --no-deps medmnist` (see README, Set-up)") from None
    return medmnist.INFO


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LongTailConfig(_Strict):
    """An exponential long-tailed profile: the most frequent class (in the training split) gets `head` images, the
    k-th of K classes by natural frequency head x ratio^(-k / (K - 1)), so the rarest gets head / ratio."""

    ratio: float = Field(gt=1)  # head / tail (the imbalance ratio rho)
    head: int = Field(gt=0)


class SubsetConfig(_Strict):
    """A subset of the real training split, for low-data and long-tailed regimes: exactly one of `fraction` and
    `per_class` (stratified), `long_tail` (an exponential profile) or `counts` (per class, by name or index)."""

    fraction: float | None = Field(None, gt=0, le=1)
    per_class: int | None = Field(None, gt=0)
    long_tail: LongTailConfig | None = None
    counts: dict[int | str, Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)  # name or index; others: none
    seed: int = 0

    @model_validator(mode="after")
    def _one_of(self):
        given = [f for f in ("fraction", "per_class", "long_tail", "counts") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"fraction: give exactly one of 'fraction', 'per_class', 'long_tail' or 'counts' (got {given or 'none'})")
        return self

    def record(self) -> dict:
        """The subset as classes.json records it: the fields of its kind (so files of runs made before long_tail and
        counts existed read the same)."""
        return self.model_dump(mode="json", exclude={k for k in ("long_tail", "counts") if getattr(self, k) is None})

    def slug(self) -> str:
        """The regime's part of a run name: 25pc, f0.1, lt60h600 or counts-<hash>, then -s<seed>."""
        if self.per_class is not None:
            size = f"{self.per_class}pc"
        elif self.fraction is not None:
            size = f"f{self.fraction:g}"
        elif self.long_tail is not None:
            size = f"lt{self.long_tail.ratio:g}h{self.long_tail.head}"
        else:
            named = {str(k): v for k, v in self.counts.items()}
            size = "counts-" + hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:6]
        return f"{size}-s{self.seed}"

    def label(self) -> str:
        """The regime as reports name it (several subsets of one label are its independent units)."""
        if self.per_class is not None:
            return f"{self.per_class}/class"
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        if self.long_tail is not None:
            return f"long tail rho {self.long_tail.ratio:g}, head {self.long_tail.head}"
        return "counts " + ", ".join(f"{k}: {v}" for k, v in self.counts.items())


class UnlabeledConfig(_Strict):
    """Images without labels that the generator may learn the data's appearance from (`data.unlabeled`).

    Default: the rest of the MedMNIST training split (every image of the chosen classes outside the labelled
    subset) with its labels discarded; `count` or `fraction` draw part of it with `seed`. `folder`: every image
    under a folder instead, classes ignored. Val and test never enter the pool.
    """

    folder: Path | None = None
    count: int | None = Field(None, gt=0)
    fraction: float | None = Field(None, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _amount(self):
        if self.count is not None and self.fraction is not None:
            raise ValueError("count: give at most one of 'count' or 'fraction' (neither: the whole pool)")
        return self


class SiteConfig(_Strict):
    """One training split shared out between two sites (`data.site`), for cross-site studies: per class, a fixed
    `reserve` fraction (drawn with `seed`) belongs to site B and the rest to site A. A's generators and classifiers see
    only A's part; B's labelled subsets are drawn only from the reserve, as disjoint blocks (subset seed k takes block
    k), so B's units share no image and none of them was seen by A."""

    side: Literal["A", "B"]
    reserve: float = Field(0.25, gt=0, lt=1)
    seed: int = 0


class ShiftConfig(_Strict):
    """An acquisition shift of the evaluated site's real images (`data.shift`; synthaug.data.shift): the haematoxylin,
    eosin and DAB concentrations of every pixel times `hed_scale` plus `hed_bias`, then the illumination times
    1 + `brightness`. The defaults change nothing."""

    hed_scale: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)
    hed_bias: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    brightness: float = Field(0.0, gt=-1, lt=1)


class DataConfig(_Strict):
    medmnist: str | None = None
    folder: Path | None = None
    size: int = 28
    root: Path | None = None
    channels: Literal[1, 3] | None = None
    classes: list[int | str] | None = None
    subset: SubsetConfig | None = None
    unlabeled: UnlabeledConfig | None = None
    site: SiteConfig | None = None
    shift: ShiftConfig | None = None

    @model_validator(mode="after")
    def _source(self):
        if (self.medmnist is None) == (self.folder is None):
            raise ValueError("medmnist: give exactly one of 'medmnist' (a MedMNIST flag) or 'folder' (a directory)")
        if self.medmnist is not None:
            info = medmnist_info()
            flag = self.medmnist.lower()
            flags_2d = sorted(k for k in info if not k.endswith("3d"))
            if flag not in flags_2d:
                raise ValueError(f"medmnist: unknown MedMNIST 2D flag {self.medmnist!r}; expected one of {', '.join(flags_2d)}")
            if "multi-label" in info[flag]["task"]:
                raise ValueError(f"medmnist: {flag} is multi-label; synthaug needs one label per image")
            self.__dict__["medmnist"] = flag
            if self.size not in MEDMNIST_SIZES:
                raise ValueError(f"size: must be one of {MEDMNIST_SIZES} for MedMNIST, got {self.size}")
        if self.size < 8:
            raise ValueError(f"size: must be at least 8, got {self.size}")
        if self.unlabeled is not None and self.unlabeled.folder is None and self.subset is None:
            raise ValueError("unlabeled: the rest of the training split is empty without data.subset; "
                             "label a subset (data.subset) or give unlabeled.folder")
        return self


class ModelConfig(_Strict):
    sample_size: int | None = None
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    layers_per_block: int = Field(2, ge=1)
    attention_levels: list[bool] | None = None
    norm_num_groups: int = Field(32, ge=1)
    conditioning: Literal["per_class", "class_conditional"] = "per_class"
    cfg_dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _shape(self):
        levels = len(self.block_out_channels)
        if self.attention_levels is None:
            self.__dict__["attention_levels"] = [i == 1 for i in range(levels)] if levels > 1 else [False]
        if len(self.attention_levels) != levels:
            raise ValueError(
                f"attention_levels: has {len(self.attention_levels)} entries, expected one per block_out_channels entry ({levels})"
            )
        for ch in self.block_out_channels:
            if ch <= 0 or ch % self.norm_num_groups:
                raise ValueError(f"block_out_channels: entry {ch} must be a positive multiple of norm_num_groups ({self.norm_num_groups})")
        return self


class DiffusionConfig(_Strict):
    # Defaults from the BloodMNIST studies (reports/bloodmnist): the cosine schedule with v-prediction (and min-SNR
    # weighting, train.snr_gamma) kept the colours of small pixel-space models that diffusers' linear/epsilon defaults lost.
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"


GENERATOR_AUGMENTS = ("hflip", "vflip", "rot90")


class PrivacyConfig(_Strict):
    """`train.privacy`: DP-SGD with Opacus (synthaug.diffusion.privacy). Each model is (epsilon, delta)-differentially
    private with respect to one of its training images: Poisson-sampled batches, each image's gradient clipped to
    `max_grad_norm`, and Gaussian noise calibrated so that the RDP accountant reaches `epsilon` at the last step."""

    epsilon: float = Field(gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)  # must be below 1 / (the model's training images)
    max_grad_norm: float = Field(1.0, gt=0)


class TrainConfig(_Strict):
    steps: int = Field(gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = Field(1, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    sample_every: int = Field(0, ge=0)
    # Label-preserving transforms of the generator's training batches; hflip + rot90 give all 8 dihedral
    # symmetries, for data with no orientation (blood cells, pathology, dermatology). Chest X-rays: none.
    augment: list[Literal[GENERATOR_AUGMENTS]] = Field(default_factory=lambda: ["hflip"])
    snr_gamma: float | None = Field(5.0, gt=0)  # min-SNR-gamma loss weighting (Hang et al. 2023); null: plain MSE
    log_with: list[str] = Field(default_factory=list)  # Accelerate trackers (tensorboard, wandb, ...): loss, lr, images/s, grids
    # With data.unlabeled: the share of each batch drawn from the labelled images (the rest from the pool, with the
    # null class), and the steps of a first model trained on the pool alone that every model then starts from.
    labelled_share: float = Field(0.5, gt=0, le=1)
    pretrain_steps: int = Field(0, ge=0)
    # Class-balanced batches: every class equally likely in a batch of the class-conditional model, each image of a
    # class equally likely within it. Off, a 10-image class beside a 600-image one is seen about 1 draw in 130.
    balanced_batches: bool = False
    privacy: PrivacyConfig | None = None  # differentially private fits (DP-SGD); null: ordinary training
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _legacy_hflip(cls, raw):  # runs made before train.augment stored `hflip: true|false`: augment [hflip] or []
        if isinstance(raw, dict) and "hflip" in raw:
            raw, hflip = {k: v for k, v in raw.items() if k != "hflip"}, raw["hflip"]
            if "augment" in raw or not isinstance(hflip, bool):
                raise ValueError("hflip: replaced by train.augment; give only augment (e.g. [hflip, rot90])")
            raw["augment"] = ["hflip"] if hflip else []
        return raw

    @model_validator(mode="after")
    def _unique_augments(self):
        if len(set(self.augment)) != len(self.augment):
            raise ValueError(f"augment: has repeated entries {self.augment}")
        return self


class GenerateConfig(_Strict):
    """Defaults for `synthaug generate`; its flags override them."""

    sampler: Literal["dpm-solver++", "ddim", "ddpm"] = "dpm-solver++"
    steps: int | None = Field(None, gt=0)
    guidance_scale: float = Field(1.0, ge=0)
    batch_size: int = Field(256, gt=0)
    seed: int = 0
    format: Literal["png", "npz", "both"] = "png"
    reject_copies: bool = False  # redraw near-copies of training images (synthaug.reference.filters.copy_filter, audit.copy_quantile on real val)
    # Redraw candidates the audit's feature classifier (evaluate.* settings, trained on the run's real training
    # images) does not assign to their own class with at least this probability (synthaug.reference.filters.confidence_filter, calibrated on val).
    filter_confidence: float | None = Field(None, gt=0, lt=1)
    # Variations of the run's real training images (SDEdit) instead of images drawn from noise: each is noised to a
    # strength drawn uniformly from [lo, hi] (one number: fixed) and denoised over the last strength x steps steps.
    from_real: bool = False
    strength: list[float] = Field(default_factory=lambda: [0.5], min_length=1, max_length=2)
    # Head-to-tail translation (Diff-Mix, Wang et al., CVPR 2024), for class_conditional runs: each image of a class
    # starts from a real training image of another class (`translate_from`: `larger`, the classes with more real images
    # than it; `other`, every other class), noised to `strength` (up to 1) and denoised as its own class, so a rare class
    # borrows the backgrounds, staining and positions of the common ones. Labelled softly: s^gamma its own class,
    # 1 - s^gamma the source's (Diff-Mix's annotation). gamma < 1 weighs the target above s itself, since the denoiser
    # commits to the class it is asked for well before s reaches 1. 0.8 is the value of Diff-Mix's own released training
    # scripts and README (with s = 0.7: target 0.75), the one we could check in the authors' material; issue 30 suggested
    # about 0.5 (target 0.84 at s = 0.7), a value for a sweep's `source` lever, not fitted here.
    translate: bool = False
    translate_from: Literal["larger", "other"] = "larger"
    gamma: float = Field(0.8, gt=0)

    def as_recorded(self) -> dict:
        """The settings a set's manifest records and `experiment` matches a set by: without the translation fields when
        not translating, so that a set drawn before translations existed still matches its recipe (and is reused)."""
        raw = self.model_dump(mode="json")
        return raw if self.translate else {k: v for k, v in raw.items() if k not in ("translate", "translate_from", "gamma")}

    @model_validator(mode="after")
    def _strength(self):
        # A variation at strength 1 would ignore its source; a translation at 1 is a pure sample of its class, labelled wholly so.
        if any(not 0 < s <= 1 or (s == 1 and not self.translate) for s in self.strength) or self.strength != sorted(self.strength):
            within = "0 < LO <= HI <= 1 with translate" if self.translate else "0 < LO <= HI < 1"
            raise ValueError(f"strength: one number or LO,HI with {within}, got {self.strength}")
        if self.translate and self.from_real:
            raise ValueError("translate: not with from_real (a translation starts from a real image of another class, a variation "
                             "from one of its own; choose one)")
        if (self.from_real or self.translate) and self.reject_copies:
            raise ValueError(f"reject_copies: not with {'translate' if self.translate else 'from_real'} (a "
                             f"{'translation' if self.translate else 'variation'} resembles its own source by design; "
                             "`synthaug audit` measures its distance to the other training images)")
        return self


# The arms of evaluate (names, data, stages, roles): synthaug.recipe.arms, the one registry.


def _top_up(value):
    if value == "balance" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"expected 'balance' (every class up to the largest class's real count) or a whole number >= 1, got {value!r}")


def _rare_below(value):
    if value == "median" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"expected a whole number >= 1 (a real training count) or 'median', got {value!r}")


def _replace_p_by_class(value):
    if value is None or value == "inverse":
        return value
    if (isinstance(value, dict) and value and all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in value)
            and all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in value.values())):
        return value
    raise ValueError(f"expected 'inverse' (p x largest class count / class count) or {{class: factor > 0, ...}}, got {value!r}")


class ClassicAugConfig(_Strict):
    """Classical augmentation of the `+classic` arms (torch ops): flips, rotation, shift, brightness, contrast."""

    hflip: bool = True
    vflip: bool = False
    rot90: bool = False  # random quarter turns: with the flips, all 8 dihedral symmetries (data with no orientation)
    rotate_deg: float = Field(10.0, ge=0, le=180)
    shift: float = Field(0.1, ge=0, lt=0.5)
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)


class ResampleConfig(_Strict):
    """`evaluate.resample`: `units` subsamples of one training split as the units of a verdict on a user's own data,
    each a `fraction` of every class (subset seed `seed` + k for unit k) with its own generator and classifier seeds.
    They overlap, so their intervals are the corrected resampled t (`evaluation.intervals.resampled_interval`)."""

    units: int = Field(5, ge=5)  # intervals.MIN_UNITS: fewer units never give a verdict
    # Above 0.5 the overlap correction is still valid but widens the interval x sqrt(1 + units f / (1 - f)) when the
    # seeds' own noise dominates (x2.4 at 0.5 with 5 units): reports/intervals.md, benchmarks/interval_coverage.py.
    fraction: float = Field(0.5, gt=0, le=0.5)
    seed: int = 0


class EvaluateConfig(_Strict):
    """`synthaug evaluate` / `experiment`: arms, regimes and the downstream classifier (MedMNIST v2 protocol defaults)."""

    regimes: list[SubsetConfig] = Field(default_factory=list)
    resample: ResampleConfig | None = None  # units drawn from one split (instead of regimes); see ResampleConfig
    arms: list[Literal[ARMS]] = Field(default_factory=lambda: list(DEFAULT_ARMS), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _removed_bootstrap(cls, raw):
        # Runs made before 2026-11-29 store `bootstrap` in their recipe.yaml, and must still open: the field is
        # dropped with a warning instead of refused (the intervals no longer resample).
        if isinstance(raw, dict) and "bootstrap" in raw:
            warnings.warn("evaluate.bootstrap is no longer used (intervals are Student t over independent subsets); "
                          "delete the field", stacklevel=2)
            raw = {k: v for k, v in raw.items() if k != "bootstrap"}
        return raw

    ratios: list[float] = Field(default_factory=lambda: [1.0, 5.0], min_length=1)
    replace_p: list[float] = Field(default_factory=lambda: [0.5], min_length=1)  # one real+replace arm per probability
    replace_variations: int = Field(5, ge=1)  # K: variations of each real image `experiment` draws for the real+replace arms
    pseudo_confidence: list[float] = Field(default_factory=lambda: [0.9], min_length=1)  # one real+pseudo arm per threshold
    synthetic_weight: float = Field(1.0, gt=0, le=1)  # loss weight of a synthetic sample (a real one weighs 1)
    # Another site's synthetic set (a folder made by `synthaug release`) as every regime's synthetic set: no generator is
    # fitted here, its classes are matched to this data's by name.
    release: Path | None = None
    pretrain_steps: int | None = Field(None, gt=0)  # pretrain and model-sharing arms: steps of the first stage (None: steps)
    finetune_lr: float | None = Field(None, gt=0)  # and the learning rate of their fine-tuning on the real images (None: lr)
    crt_steps: int | None = Field(None, gt=0)  # +crt arms: steps of the head's re-training (None: steps // 4)
    # real+replace arms: p per class instead of one p, so rarer classes are swapped more often: "inverse" p x n_max / n_c,
    # or {class (name or index): factor} p x factor (others x 1); clipped to 1. null: the same p for every class.
    replace_p_by_class: Annotated[Literal["inverse"] | dict[int | str, float] | None, BeforeValidator(_replace_p_by_class)] = None
    # real+topup arms: each class gets synthetic images up to this many, real ones included ("balance": the largest class's)
    top_up: Annotated[int | Literal["balance"], BeforeValidator(_top_up)] = "balance"
    logit_tau: float = Field(1.0, gt=0)  # logit_adjusted arms: tau of tau x log(prior)
    effective_beta: float = Field(0.999, gt=0, lt=1)  # reweight_effective arms: beta of the effective number
    # Rare classes (their mean test recall is reported): real training count below this, or below the median class count
    rare_below: Annotated[int | Literal["median"], BeforeValidator(_rare_below)] = 60
    log_with: list[str] = Field(default_factory=list)  # Accelerate trackers: each arm's val curve
    classifier: Literal["small_cnn", "resnet18"] = "resnet18"
    width: int = Field(32, gt=0)
    steps: int = Field(2000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    gamma: float = Field(0.1, gt=0, le=1)
    eval_every: int | None = Field(None, gt=0)
    select_on: Literal["auc", "acc", "bacc"] = "auc"  # bacc: balanced accuracy (mean recall over classes), for long-tailed data
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    classic: ClassicAugConfig = Field(default_factory=ClassicAugConfig)

    @model_validator(mode="after")
    def _lists(self):
        if self.resample is not None and self.regimes:
            raise ValueError("resample: give either evaluate.regimes or evaluate.resample (which makes the regimes), not both")
        if any(not 0 < p < 1 for p in self.pseudo_confidence):
            raise ValueError(f"pseudo_confidence: thresholds in (0, 1), got {self.pseudo_confidence}")
        if any(not 0 < p <= 1 for p in self.replace_p):
            raise ValueError(f"replace_p: probabilities in (0, 1], got {self.replace_p}")
        if any(r <= 0 for r in self.ratios):
            raise ValueError(f"ratios: every ratio of synthetic to real images must be > 0, got {self.ratios}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones: fractions of the steps strictly between 0 and 1, got {self.milestones}")
        for name, values in (("seeds", self.seeds), ("arms", self.arms), ("ratios", self.ratios), ("replace_p", self.replace_p),
                             ("pseudo_confidence", self.pseudo_confidence)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: has repeated entries {values}")
        return self


class MembershipConfig(_Strict):
    """`audit.membership`: the membership-inference attacks of the audit (synthaug.auditing.membership). Members: the
    run's training images; non-members: real images of the same distribution the run never saw (`non_members`: the val
    split, or the training split's images outside the run's subset). At most `members` / `non_member_count` of each,
    drawn with `seed` (null: all)."""

    members: int | None = Field(1000, gt=0)
    non_member_count: int | None = Field(1000, gt=0)
    non_members: Literal["val", "train_rest"] = "val"
    # The model attack's timesteps as fractions of diffusion.num_train_timesteps (0.05, 0.2, 0.4: t = 50, 200, 400 of
    # 1000), each with `noise_draws` seeded noise draws per image.
    timesteps: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=lambda: [0.05, 0.2, 0.4], min_length=1)
    noise_draws: int = Field(2, ge=1)
    resamples: int = Field(1000, ge=100)  # bootstrap resamples (intervals) and label permutations (the fair coin)
    seed: int = 0


class AuditConfig(_Strict):
    """Settings of `synthaug audit` and of the copy filter (`generate --reject-copies`); the audit's flags override them."""

    k: int = Field(5, ge=1)
    copy_quantile: float = Field(0.99, gt=0, lt=1)
    closest_pairs: int = Field(16, ge=1)
    seed: int = 0
    # How the judge (the feature classifier of label fidelity and of generate.filter_confidence) draws its batches:
    # on long-tailed data a uniformly trained judge rarely names a rare class, so it would call good rare images
    # off-class; `balanced` trains it with class-balanced batches (the re-balancing a user would use anyway).
    judge_sampling: Literal["uniform", "balanced"] = "uniform"
    membership: MembershipConfig = Field(default_factory=MembershipConfig)


# The levers of `synthaug sweep`, each a list of values (classic, source, usage: named settings), swept one at a time in `order`.
SWEEP_LEVERS = ("conditioning", "augment", "balanced_batches", "classic", "source", "strength", "guidance_scale", "steps", "filter_confidence", "usage", "ratio",
                "replace_variations")
# The levers that change the generator or its sampling: nothing to sweep when the synthetic set is another site's release.
GENERATOR_LEVERS = ("conditioning", "augment", "balanced_batches", "source", "strength", "guidance_scale", "steps", "filter_confidence",
                    "replace_variations")


class SourceConfig(_Strict):
    """A generation mode of the `source` lever: drawn from noise, varied from the real images, or translated from other
    classes' real images (translate, with its rule translate_from and label gamma), with its own sampling."""

    from_real: bool
    translate: bool = False  # always set by a source: a noise or variations source turns translation off
    translate_from: Literal["larger", "other"] | None = None
    gamma: float | None = Field(None, gt=0)
    strength: list[float] | None = Field(None, min_length=1, max_length=2)
    guidance_scale: float | None = Field(None, ge=0)
    steps: int | None = Field(None, gt=0)


class UsageConfig(_Strict):
    """A usage mode of the `usage` lever: its synthetic arms (beside the real ones) and how they use the images."""

    arms: list[Literal[USAGE_ARMS]] = Field(min_length=1)
    ratios: list[float] | None = Field(None, min_length=1)
    replace_p: list[float] | None = Field(None, min_length=1)
    synthetic_weight: float | None = Field(None, gt=0, le=1)


class SweepConfig(_Strict):
    """`synthaug sweep`: each lever in `order` is tried at every value, with the levers before it at their chosen values."""

    order: list[Literal[SWEEP_LEVERS]] = Field(min_length=1)
    conditioning: list[Literal["per_class", "class_conditional"]] | None = Field(None, min_length=1)
    augment: list[list[Literal[GENERATOR_AUGMENTS]]] | None = Field(None, min_length=1)
    balanced_batches: list[bool] | None = Field(None, min_length=1)
    classic: dict[str, ClassicAugConfig] | None = Field(None, min_length=1)
    source: dict[str, SourceConfig] | None = Field(None, min_length=1)  # or a list of modes: [noise, variations]
    strength: list[list[float]] | None = Field(None, min_length=1)  # each one number or [LO, HI]
    guidance_scale: list[Annotated[float, Field(ge=0)]] | None = Field(None, min_length=1)
    steps: list[Annotated[int, Field(gt=0)]] | None = Field(None, min_length=1)
    filter_confidence: list[Annotated[float, Field(gt=0, lt=1)] | None] | None = Field(None, min_length=1)  # null: no filter
    usage: dict[str, UsageConfig] | None = Field(None, min_length=1)
    ratio: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)
    replace_variations: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1)
    # The real subsets of the one test comparison, none of them seen by a choice; default: CONFIRM_UNITS new subset
    # seeds (after the largest of evaluate.regimes) at each size of evaluate.regimes.
    confirm: list[SubsetConfig] | None = Field(None, min_length=1)
    # The classifier seeds of that comparison (default: evaluate.seeds). More seeds there than while choosing narrow the
    # verdict's interval (each subset's seeds are averaged; the subset stays the unit) at the cost of one test look only.
    confirm_seeds: list[int] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw):  # source: [noise, variations, translations] and strength: [0.35, [0.2, 0.5]]
        if not isinstance(raw, dict):
            return raw
        source, strength = raw.get("source"), raw.get("strength")
        if isinstance(source, list):
            if not all(mode in ("noise", "variations", "translations") for mode in source):
                raise ValueError(f"source: a list of the modes noise, variations and translations, or named settings "
                                 f"{{NAME: {{from_real: ...}}}}; got {source}")
            raw = {**raw, "source": {mode: {"from_real": mode == "variations", "translate": mode == "translations"} for mode in source}}
        if isinstance(strength, list):
            raw = {**raw, "strength": [s if isinstance(s, list) else [s] for s in strength]}
        return raw

    @model_validator(mode="after")
    def _levers(self):
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"order: has repeated entries {self.order}")
        for lever in SWEEP_LEVERS:  # a lever with values that `order` leaves out keeps the recipe's value
            values = getattr(self, lever)
            if values is None and lever in self.order:
                raise ValueError(f"{lever}: listed in sweep.order but given no values")
            if isinstance(values, list) and len({repr(v) for v in values}) != len(values):
                raise ValueError(f"{lever}: has repeated entries {values}")
        if self.confirm_seeds is not None and len(set(self.confirm_seeds)) != len(self.confirm_seeds):
            raise ValueError(f"confirm_seeds: has repeated entries {self.confirm_seeds}")
        if any(not 1 <= len(s) <= 2 or s != sorted(s) or not 0 < s[0] <= s[-1] < 1 for s in self.strength or []):
            raise ValueError(f"strength: each value one number or [LO, HI] with 0 < LO <= HI < 1, got {self.strength}")
        return self
