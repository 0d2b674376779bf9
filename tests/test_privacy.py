"""Differentially private fits (`train.privacy`, synthaug.diffusion.privacy): the epsilon reported is the accountant's,
a resumed DP fit ends bit-exactly where an uninterrupted one does, over-budget and unsupported fits are refused."""

import builtins
import json

import pandas as pd
import pytest
import torch
from opacus.accountants import RDPAccountant
from safetensors.torch import load_file

import synthaug.diffusion.training as train_module
from synthaug.core.errors import UserError
from synthaug.diffusion.privacy import check_private_fit
from synthaug.diffusion.training import fit
from synthaug.storage.rundir import RunDir

pytestmark = pytest.mark.filterwarnings("ignore:.*MD5 differs")

PRIVATE = {"steps": 6, "checkpoint_every": 2, "privacy": {"epsilon": 8, "delta": 1e-3, "max_grad_norm": 1.0}}
CONDITIONAL = {"conditioning": "class_conditional"}


def weights(run: RunDir) -> dict:
    return load_file(run.model("all") / "unet" / "diffusion_pytorch_model.safetensors")


def test_a_dp_fit_reports_the_accountants_epsilon_and_resumes_bit_exactly(tiny_recipe, monkeypatch):
    whole = fit(tiny_recipe("whole", model=CONDITIONAL, train=PRIVATE), show_progress=False)
    spent = json.loads(whole.summary.read_text())["models"]["all"]["privacy"]
    accountant = RDPAccountant()  # the figure the accountant gives for the run's noise, sampling rate and steps
    accountant.history = [(spent["noise_multiplier"], spent["sample_rate"], 6)]
    assert spent["epsilon"] == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9)
    assert 7 < spent["epsilon"] <= 8 and spent["sample_rate"] == pytest.approx(4 / 24)
    epsilon = pd.read_csv(whole.metrics)["epsilon"].tolist()
    assert len(epsilon) == 6 and epsilon == sorted(epsilon) and epsilon[-1] == pytest.approx(spent["epsilon"])
    assert "target epsilon 8 at delta 0.001" in (whole.root / "README.md").read_text()

    real_save = train_module._save_checkpoint

    def save_then_crash(accelerator, run, job, step):
        real_save(accelerator, run, job, step)
        if step == 4:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    recipe = tiny_recipe("resumed", model=CONDITIONAL, train=PRIVATE)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(recipe, show_progress=False)
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    resumed = fit(recipe, show_progress=False)
    again = json.loads(resumed.summary.read_text())["models"]["all"]
    assert again["resumed_from"] == 4 and again["privacy"]["epsilon"] == spent["epsilon"]  # the accountant came back too
    a, b = weights(whole), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(resumed.metrics)["epsilon"].tolist() == epsilon


def test_a_fit_that_would_exceed_its_budget_stops_and_saves_no_model(tiny_recipe, monkeypatch):
    import opacus.accountants.utils as utils

    calibrated = utils.get_noise_multiplier
    monkeypatch.setattr(utils, "get_noise_multiplier", lambda **kw: calibrated(**kw) / 2)  # too little noise for the budget
    recipe = tiny_recipe("over", model=CONDITIONAL, train=PRIVATE)
    with pytest.raises(UserError, match=r"train.privacy.epsilon: 6 steps .* would spend epsilon .* > 8; nothing trained"):
        fit(recipe, show_progress=False)
    run = RunDir(recipe.run_dir)
    assert not run.is_finished("all") and run.latest_checkpoint("all") is None


def test_without_opacus_a_dp_fit_names_the_extra_in_one_line(tiny_recipe, monkeypatch):
    real_import = builtins.__import__

    def no_opacus(name, *args, **kwargs):
        if name.split(".")[0] == "opacus":
            raise ImportError("No module named 'opacus'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opacus)
    with pytest.raises(UserError) as error:
        fit(tiny_recipe("no-opacus", model=CONDITIONAL, train=PRIVATE), show_progress=False)
    assert str(error.value) == 'train.privacy: needs Opacus, which is not installed; install the extra: pip install -e ".[privacy]"'


@pytest.mark.parametrize("train, processes, message", [
    ({}, 2, "runs in one process"),
    ({"gradient_accumulation_steps": 2}, 1, "gradient_accumulation_steps: 1"),
    ({"balanced_batches": True}, 1, "balanced_batches: false"),
])
def test_unsupported_dp_fits_are_refused_in_one_line(tiny_recipe, train, processes, message):
    with pytest.raises(UserError, match=message):
        check_private_fit(tiny_recipe(model=CONDITIONAL, train={**PRIVATE, **train}), processes)


def test_a_delta_not_below_one_over_n_is_refused(tiny_recipe):
    recipe = tiny_recipe("delta", model=CONDITIONAL, train={**PRIVATE, "privacy": {"epsilon": 8, "delta": 0.1}})
    with pytest.raises(UserError, match=r"train.privacy.delta: 0.1 is not below 1/N = 1/24"):
        fit(recipe, show_progress=False)
