"""Regimes and arms of `evaluate`: the leak guard, a synthetic set from another run, and the arms a config expands to."""

from __future__ import annotations

import pytest
from conftest import EVAL_NAMES, eval_synthetic, write_synthetic

from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import evaluate
from synthaug.recipe.sections import EvaluateConfig
from synthaug.evaluation.regimes import expand_arms, load_regime
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

