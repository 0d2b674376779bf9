"""Regimes and arms of `evaluate`: the leak guard, a synthetic set from another run, the arms a config expands to, and
what the long-tail arms train on (top-up counts, rare classes, replace probabilities per class)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import EVAL_NAMES, eval_synthetic, write_synthetic

from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import evaluate
from synthaug.recipe.sections import EvaluateConfig
from synthaug.evaluation.regimes import (PLAIN_BASELINES, Arm, arm_data, check_synthetic, expand_arms, is_non_synthetic, load_regime, rare_classes,
                                         replace_probabilities)
from synthaug.storage.rundir import RunDir, open_run


def test_leak_guard_refuses_real_arms_that_saw_less_than_the_generator(eval_run, tmp_path):
    run = eval_run("tiny", 8)
    with pytest.raises(UserError, match="would not see"):
        evaluate([open_run(run, ["data.subset.per_class=4"])], tmp_path / "out", show_progress=False)
    # A superset is fine: the 8-per-class subset contains the 4-per-class one (same subset seed).
    small = eval_run("tiny-small", 4)
    regime = load_regime(open_run(small, ["data.subset.per_class=8"]))
    assert regime.train.counts() == [8, 8]
    # A synthetic set sampled from another run's generator: refused.
    write_synthetic(RunDir(small).synthetic, *eval_synthetic(16), EVAL_NAMES, run=run)
    with pytest.raises(UserError, match="was generated from the run"):
        load_regime(open_run(small))
    # Another subset seed draws other images: refused.
    with pytest.raises(UserError, match="would not see"):
        load_regime(open_run(small, ["data.subset.seed=5"]))


def test_arms_expand_per_ratio():
    names = [a.name for a in expand_arms(EvaluateConfig(ratios=[1, 5]))]
    assert names == ["real", "real+classic", "real+synthetic 1x", "real+synthetic 5x", "real+synthetic+classic 1x",
                     "real+synthetic+classic 5x", "synthetic"]



TAIL_NAMES = ["head", "middle", "tail"]
TAIL_COUNTS = {"head": 8, "middle": 4, "tail": 1}


def tail_run(tmp_path, name: str = "tail", synthetic=(0, 4, 7), variations: bool = False, **evaluate_cfg):
    """A run over 12 px folders (12 images per class and split) whose generator saw a long tail of 8, 4 and 1 real
    images, with `synthetic[c]` synthetic images of class c: by default a `generate --balance` set (none of the largest
    class); `variations`: each a variation of a real image of its class (source_index), cycling through them."""
    from conftest import TINY_EVAL, make_images, make_run, tiny_recipe_dict, write_class_folders

    from synthaug.recipe.recipe import recipe_from_dict

    data = write_class_folders(tmp_path / "images", TAIL_NAMES, n=12, size=12, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": 12, "subset": {"counts": TAIL_COUNTS}}, tmp_path / "runs", name,
                           evaluate={**TINY_EVAL, "seeds": [0], **evaluate_cfg})
    run = make_run(recipe_from_dict(raw))
    images, labels = make_images(max(synthetic), len(TAIL_NAMES), 12, 1, seed=7)
    keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(synthetic)])
    write_synthetic(run.synthetic, images[keep], labels[keep], TAIL_NAMES)
    if variations:
        regime = load_regime(open_run(run.root), need_synthetic=False, show_progress=False)
        table = pd.read_csv(run.synthetic / "metadata.csv")
        table["source_index"] = [int(regime.train_indices[regime.train.labels == c][i % TAIL_COUNTS[TAIL_NAMES[c]]])
                                 for c, n in enumerate(synthetic) for i in range(n)]
        table.to_csv(run.synthetic / "metadata.csv", index=False)
    return run.root


def test_new_arm_kinds_expand_and_compete_as_baselines_or_not():
    cfg = EvaluateConfig(arms=["real", "real+balanced+classic", "real+logit_adjusted", "real+topup+reweight_effective+classic",
                               "real+replace"], replace_p=[0.25, 0.5], replace_p_by_class="inverse")
    arms = expand_arms(cfg)
    assert [a.name for a in arms] == ["real", "real+balanced+classic", "real+logit_adjusted", "real+topup+reweight_effective+classic",
                                      "real+replace p0.25 inverse", "real+replace p0.5 inverse"]
    assert [(a.rebalance, a.topup, a.classic, a.synthetic) for a in arms[1:4]] == [
        ("balanced", False, True, False), ("logit_adjusted", False, False, False), ("reweight_effective", True, True, True)]
    assert expand_arms(EvaluateConfig(arms=["real+replace"], replace_p_by_class={"tail": 2}))[0].name == "real+replace p0.5 by class"
    baselines = [a.name for a in arms if is_non_synthetic(a.name)]
    assert baselines == ["real", "real+balanced+classic", "real+logit_adjusted"]
    assert is_non_synthetic("real+pseudo+classic t0.9") and not is_non_synthetic("synthetic") and not is_non_synthetic("real+synthetic 1x")


def test_a_topup_arm_adds_target_minus_count_synthetic_images_per_class(tmp_path):
    run = tail_run(tmp_path)
    regime = load_regime(open_run(run), show_progress=False)
    assert regime.train.counts() == [8, 4, 1] and regime.synthetic.images.counts() == [0, 4, 7]
    for top_up, added in (("balance", [0, 4, 7]), (5, [0, 1, 4])):
        cfg = EvaluateConfig(arms=["real", "real+topup+balanced+classic"], top_up=top_up)
        check_synthetic(regime, expand_arms(cfg), cfg)  # the largest class has no synthetic image: a top-up needs none
        data = arm_data(regime, Arm("real+topup+balanced+classic", None), cfg=cfg)
        synthetic = data.labels[data.is_synthetic]
        assert np.bincount(synthetic, minlength=3).tolist() == added and data.n_synthetic == sum(added)
        assert np.bincount(data.labels, minlength=3).tolist() == [8 + added[0], 4 + added[1], 1 + added[2]]
        first = [np.flatnonzero(regime.synthetic.images.labels == c)[:n] for c, n in enumerate(added)]  # the first of each class
        assert np.array_equal(data.images[data.is_synthetic], regime.synthetic.images.images[np.concatenate(first)])
    cfg = EvaluateConfig(arms=["real+topup"], top_up=10)
    with pytest.raises(UserError, match=r"^\S+: the real\+topup arms need 2 synthetic images of class 0 \(head\) to reach evaluate.top_up "
                                        r"10 \(10 images\), found 0; run `synthaug generate` with --balance .* or --per-class 9$"):
        check_synthetic(regime, expand_arms(cfg), cfg)
    cfg = EvaluateConfig(arms=["real", "real+synthetic"], ratios=[1])
    with pytest.raises(UserError, match=r"the arms real\+synthetic need 8 synthetic images of class 0 \(head\), found 0; .* a set made "
                                        r"with --balance tops classes up: evaluate it with the real\+topup arms$"):
        check_synthetic(regime, expand_arms(cfg), cfg)


def test_rare_classes_and_replace_probabilities_per_class(tmp_path):
    regime = load_regime(open_run(tail_run(tmp_path, synthetic=(2, 2, 2), variations=True)), show_progress=False)
    assert rare_classes(regime, EvaluateConfig()) == [0, 1, 2]  # all below the default 60
    assert rare_classes(regime, EvaluateConfig(rare_below=5)) == [1, 2]
    assert rare_classes(regime, EvaluateConfig(rare_below="median")) == [2]  # below the median count, 4
    arm = Arm("real+replace", None, 0.25, replace_by_class="inverse")
    per_image = replace_probabilities(regime, arm, EvaluateConfig(replace_p_by_class="inverse"))
    assert [sorted(set(per_image[regime.train.labels == c])) for c in range(3)] == [[0.25], [0.5], [1.0]]  # 0.25 x 8 / 1 clipped to 1
    per_image = replace_probabilities(regime, arm, EvaluateConfig(replace_p_by_class={"tail": 3, 1: 2}))
    assert [float(per_image[regime.train.labels == c][0]) for c in range(3)] == [0.25, 0.5, 0.75]
    with pytest.raises(UserError, match=r"^evaluate.replace_p_by_class: no class 'nope'; expected one of 0 \(head\), 1 \(middle\), 2 \(tail\)$"):
        replace_probabilities(regime, arm, EvaluateConfig(replace_p_by_class={"nope": 2}))


def test_arm_fields_and_the_plain_baselines_are_named_for_what_they_hold():
    """`add_ratio` is the ratio of the arms that add synthetic images at one; top-up and replace arms use synthetic images
    with none. PLAIN_BASELINES are the two every gain is also reported against, not every baseline."""
    cfg = EvaluateConfig(arms=["real", "real+classic", "real+balanced", "real+synthetic", "real+topup", "real+replace", "synthetic"],
                         ratios=[2], replace_p=[0.5])
    arms = {a.name: a for a in expand_arms(cfg)}
    assert (arms["real+synthetic 2x"].add_ratio, arms["synthetic"].add_ratio) == (2, 1)
    for name in ("real+topup", "real+replace p0.5"):
        assert arms[name].add_ratio is None and arms[name].synthetic
    assert arms["real"].add_ratio is None and not arms["real"].synthetic
    assert PLAIN_BASELINES == ("real", "real+classic")
    assert is_non_synthetic("real+balanced") and "real+balanced" not in PLAIN_BASELINES  # a baseline, chosen on val


def test_every_registered_arm_builds_its_data_from_its_registry_entry(tmp_path):
    """The one registry (synthaug.recipe.arms) decides what each arm trains on: synthetic images exactly where its entry
    uses them in its own stage, the real images untouched, and a builder for every kind of data."""
    from typing import get_args

    from synthaug.evaluation.regimes import _BUILDERS
    from synthaug.recipe.arms import ARM_REGISTRY, DataKind

    assert set(_BUILDERS) == set(get_args(DataKind))
    import dataclasses

    regime = load_regime(open_run(tail_run(tmp_path, synthetic=(8, 8, 8))), show_progress=False)
    soft = np.eye(3, dtype=np.float32)[regime.synthetic.images.labels]  # the +soft arms' targets (a teacher's, in evaluate)
    regime = dataclasses.replace(regime, synthetic=dataclasses.replace(regime.synthetic, soft_labels=soft))
    cfg = EvaluateConfig(ratios=[1])
    for name, spec in ARM_REGISTRY.items():
        if spec.data in ("pseudo", "site-a", "replace"):  # need a pool, site A or variations: tested with their arms
            continue
        (arm,) = [a for a in expand_arms(cfg.model_copy(update={"arms": [name]}))]
        data = arm_data(regime, arm, cfg=cfg)
        adds = spec.data in ("add", "topup", "synthetic-only")
        assert (data.n_synthetic > 0) == adds, name
        assert is_non_synthetic(name) == (spec.uses_synthetic is None and not spec.reference), name
        if spec.data != "synthetic-only":
            assert np.array_equal(data.images[~data.is_synthetic], regime.train.images), name
