"""The arms of `evaluate`, in one registry: each arm's name, how its training data is built, how it uses synthetic
images, its stages and its role (a candidate for the best baseline, a synthetic arm, or a cross-site reference).

The recipe validates `evaluate.arms` against it, `synthaug.evaluation.regimes` builds each arm's data from its `data`
(one builder per kind of data) and `synthaug.evaluation.evaluate` trains its stages from `first_stage`. Adding an arm is
one entry here, plus a builder only when its data is of a new kind.

    real[+classic]                   the real training images (+classic: flips, rotation, shift, brightness, contrast)
    real+S[+classic]                 re-balanced real images, S in REBALANCE
    real+pseudo[+classic] tT         the real images and the pool images the real[+classic] arm of the same seed labels
                                     with confidence >= T (self-training)
    real+crt[+classic]               decoupled re-training (Kang et al. 2020): the real arm, then its last linear layer
                                     alone re-trained on the real images with class-balanced batches (evaluate.crt_steps)
    real+synthetic[+soft][+crt][+classic] Rx  real + R x as many synthetic images per class as real ones; +soft: their
                                     targets are the set's soft labels (a release's teacher); +crt: SYNAuG's head re-training
    synthetic                        synthetic only, as many per class as real (classification accuracy score)
    real+replace[+classic] pP        each drawn real image swapped for one of its own variations with probability P
    real+topup[+S][+crt][+classic]   real images plus synthetic ones of each class up to evaluate.top_up in all
    real+topup+soft[+balanced][+classic]  the top-up's synthetic images labelled by the probabilities of an in-task
                                     teacher, the real+balanced[+classic] arm's classifier of the same seed
    real+topup+set-soft[+balanced][+classic]  the top-up's synthetic images labelled by the set's own soft labels (a
                                     translated set's s^gamma / 1 - s^gamma, generate --translate; a release's teacher)
    pretrain[+soft][+classic]        the whole synthetic set first (evaluate.pretrain_steps, chosen on val), then
                                     fine-tuned on the real images (evaluate.finetune_lr)
    model-sharing[+classic]          (reference, data.site side B) site A's classifier fine-tuned on B's real images
    real+site-a[+classic]            (reference, data.site side B) B's real images plus A's: the raw-sharing ceiling
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Re-balancing for long-tailed data: `balanced` batches draw every class equally often; `logit_adjusted` trains on the
# logits plus evaluate.logit_tau x log(class prior) (Menon et al. 2021); `reweight_inverse` / `reweight_effective` weigh
# each image's loss by 1 / n_c or by the inverse effective number (1 - beta) / (1 - beta^n_c) (Cui et al. 2019).
REBALANCE = ("balanced", "logit_adjusted", "reweight_inverse", "reweight_effective")

# How an arm's own training set is built (one builder each in synthaug.evaluation.regimes.arm_data):
#   real: the real images; add: real + synthetic at a ratio; synthetic-only; topup: real + synthetic up to a count;
#   replace: real images swapped for their variations; pseudo: real + teacher-labelled pool images; site-a: B's + A's real
DataKind = Literal["real", "add", "synthetic-only", "topup", "replace", "pseudo", "site-a"]
Role = Literal["baseline", "synthetic", "reference"]


@dataclass(frozen=True)
class ArmSpec:
    """One arm kind. `uses_synthetic`: how the arm, in any of its stages, uses the synthetic set (None: it never does);
    `first_stage`: what it trains on before its own data ("synthetic": the whole set, "site-a": A's real images,
    "base": the very model of the arm without +crt, whose head alone it re-trains); `soft`: whose probabilities its
    synthetic images' targets are ("set": the set's own soft labels, "teacher": the in-task teacher's);
    `expand`: the evaluate list that makes one arm per value (its name gets the value: `real+synthetic 4x`)."""

    name: str
    data: DataKind
    uses_synthetic: Literal["ratio", "topup", "replace", "whole"] | None = None
    reference: bool = False
    first_stage: Literal["synthetic", "site-a", "base"] | None = None
    soft: Literal["set", "teacher"] | None = None
    rebalance: str | None = None
    expand: Literal["ratios", "replace_p", "pseudo_confidence"] | None = None
    fixed_ratio: float | None = None  # the synthetic arm: as many synthetic images per class as real ones

    @property
    def classic(self) -> bool:
        return self.name.endswith("+classic")

    @property
    def role(self) -> Role:
        """baseline: may be chosen as the best arm without synthetic data; reference: reported, never chosen."""
        return "reference" if self.reference else "synthetic" if self.uses_synthetic else "baseline"


def _with_classic(name: str, **fields) -> list[ArmSpec]:
    return [ArmSpec(name, **fields), ArmSpec(f"{name}+classic", **fields)]


_SPECS: list[ArmSpec] = [
    *_with_classic("real", data="real"),
    *_with_classic("real+synthetic", data="add", uses_synthetic="ratio", expand="ratios"),
    ArmSpec("synthetic", data="synthetic-only", uses_synthetic="ratio", fixed_ratio=1.0),
    *_with_classic("real+replace", data="replace", uses_synthetic="replace", expand="replace_p"),
    *_with_classic("real+pseudo", data="pseudo", expand="pseudo_confidence"),
    *(spec for r in REBALANCE for spec in _with_classic(f"real+{r}", data="real", rebalance=r)),
    *_with_classic("real+topup", data="topup", uses_synthetic="topup"),
    *(spec for r in REBALANCE for spec in _with_classic(f"real+topup+{r}", data="topup", uses_synthetic="topup", rebalance=r)),
    *_with_classic("real+synthetic+soft", data="add", uses_synthetic="ratio", soft="set", expand="ratios"),
    *_with_classic("pretrain", data="real", uses_synthetic="whole", first_stage="synthetic"),
    *_with_classic("pretrain+soft", data="real", uses_synthetic="whole", first_stage="synthetic", soft="set"),
    *_with_classic("model-sharing", data="real", reference=True, first_stage="site-a"),
    *_with_classic("real+site-a", data="site-a", reference=True),
    *_with_classic("real+crt", data="real", first_stage="base"),
    *_with_classic("real+topup+crt", data="real", uses_synthetic="topup", first_stage="base"),
    *_with_classic("real+synthetic+crt", data="real", uses_synthetic="ratio", first_stage="base", expand="ratios"),
    *_with_classic("real+topup+soft", data="topup", uses_synthetic="topup", soft="teacher"),
    *_with_classic("real+topup+soft+balanced", data="topup", uses_synthetic="topup", soft="teacher", rebalance="balanced"),
    *_with_classic("real+topup+set-soft", data="topup", uses_synthetic="topup", soft="set"),
    *_with_classic("real+topup+set-soft+balanced", data="topup", uses_synthetic="topup", soft="set", rebalance="balanced"),
]
ARM_REGISTRY: dict[str, ArmSpec] = {spec.name: spec for spec in _SPECS}
ARMS = tuple(ARM_REGISTRY)
DEFAULT_ARMS = ("real", "real+classic", "real+synthetic", "real+synthetic+classic", "synthetic")
# the arms `synthaug sweep`'s usage lever chooses among: every arm that uses synthetic images beside real ones
USAGE_ARMS = tuple(name for name, spec in ARM_REGISTRY.items() if spec.uses_synthetic and spec.data != "synthetic-only")


def arm_spec(arm_name: str) -> ArmSpec:
    """The registry entry of an arm, by its kind or its full name (`real+synthetic 4x`)."""
    return ARM_REGISTRY[arm_name.split(" ")[0]]
