"""Decoupled re-training (+crt, Kang et al. 2020): a head-only stage on the arm's real images with class-balanced batches,
started from the very model of the arm without +crt; real+crt competes for the best baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthaug.classifier.harness import train_classifier
from synthaug.classifier.networks import build_classifier, classifier_head
from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import evaluate
from synthaug.evaluation.regimes import crt_base, crt_steps, expand_arms, is_non_synthetic
from synthaug.recipe.sections import EvaluateConfig
from synthaug.storage.pixels import to_model_tensor
from synthaug.storage.rundir import open_run

HEAD = {"head.weight", "head.bias"}


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    return {name for name, value in model.state_dict().items() if not torch.equal(before[name], value)}


def test_a_head_only_stage_changes_the_last_linear_layer_alone():
    rng = np.random.default_rng(0)
    images = to_model_tensor(rng.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8))
    labels = torch.from_numpy(np.repeat([0, 1, 2], [16, 6, 2]))
    cfg = EvaluateConfig(classifier="small_cnn", width=4, steps=6, batch_size=8, eval_every=3)
    first, _ = train_classifier(images, labels, images, labels, cfg, 0, num_classes=3, show_progress=False)
    state = {name: value.clone() for name, value in first.state_dict().items()}
    stage = dict(num_classes=3, show_progress=False, init_state=state, steps=4, balanced=True)
    head, _ = train_classifier(images, labels, images, labels, cfg, 0, head_only=True, **stage)
    assert changed(state, head) == HEAD  # every other weight and BatchNorm statistic to the bit
    assert all(p.requires_grad for p in head.parameters())  # the returned model is whole again
    whole, _ = train_classifier(images, labels, images, labels, cfg, 0, **stage)  # the same stage, not head-only
    assert changed(state, whole) > HEAD
    for name in ("small_cnn", "resnet18"):
        model = build_classifier(EvaluateConfig(classifier=name, width=4), 1, 3)
        assert classifier_head(model) is list(model.modules())[-1] and classifier_head(model).out_features == 3


def test_crt_arms_expand_and_only_real_crt_is_a_baseline():
    cfg = EvaluateConfig(arms=["real+crt", "real+crt+classic", "real+topup+crt+classic", "real+synthetic+crt"], ratios=[1, 5])
    arms = expand_arms(cfg)
    assert [a.name for a in arms] == ["real+crt", "real+crt+classic", "real+topup+crt+classic", "real+synthetic+crt 1x", "real+synthetic+crt 5x"]
    assert [crt_base(a).name for a in arms] == ["real", "real+classic", "real+topup+classic", "real+synthetic 1x", "real+synthetic 5x"]
    assert [is_non_synthetic(a.name) for a in arms] == [True, True, False, False, False]
    assert [a.synthetic for a in arms] == [False, False, True, True, True] and all(a.crt for a in arms)
    assert [a.classic for a in arms] == [False, True, True, False, False] and not any(a.crt for a in map(crt_base, arms))
    assert crt_steps(cfg) == 500 and crt_steps(cfg.model_copy(update={"crt_steps": 7})) == 7


def test_crt_arms_start_from_the_kept_model_and_compete_for_the_best_baseline(tmp_path, monkeypatch):
    import synthaug.evaluation.evaluate as evaluate_module
    from test_regimes import tail_run

    arms = ["real", "real+crt", "real+topup", "real+topup+crt"]
    run = tail_run(tmp_path, arms=arms, select_on="bacc", rare_below=5)  # 8, 4, 1 real images; a --balance set tops up 0, 4, 7
    calls, real_train = [], evaluate_module.train_classifier

    def spy(images, labels, *args, **kwargs):
        model, info = real_train(images, labels, *args, **kwargs)
        calls.append((kwargs["desc"].split(" ")[-3], np.bincount(labels.cpu().numpy(), minlength=3).tolist(), kwargs, model))
        return model, info

    monkeypatch.setattr(evaluate_module, "train_classifier", spy)
    out = tmp_path / "report"
    results = evaluate([run], out, show_progress=False)
    assert [c[0] for c in calls] == arms  # the base arms train once: the +crt arms start from their kept models
    by_arm = {c[0]: c for c in calls}
    rows = {r["arm"]: r for r in results["rows"]}
    for arm in ("real+crt", "real+topup+crt"):
        base = crt_base(expand_arms(EvaluateConfig(arms=[arm]))[0]).name
        _, counts, kwargs, model = by_arm[arm]
        kept = torch.load(out / "cache" / f"{rows[base]['key']}.model.pt", weights_only=True)
        assert counts == [8, 4, 1] and kwargs["head_only"] and kwargs["balanced"] and kwargs["steps"] == 1  # real images, 6 // 4 steps
        assert all(torch.equal(kwargs["init_state"][name], value) for name, value in kept.items())
        assert changed(kept, model) == HEAD and rows[arm]["steps"] == 1
    assert by_arm["real+topup"][1] == [8, 8, 8] and rows["real+topup+crt"]["n_synthetic"] == 11 and rows["real+crt"]["n_synthetic"] == 0
    best = results["best_baseline"][rows["real"]["regime"]]
    assert set(best["val"]) == {"real", "real+crt"} and best["arm"] == max(("real", "real+crt"), key=lambda a: rows[a]["val_bacc"])
    # real+crt is chosen when its val is the best
    cached = out / "cache" / f"{rows['real+crt']['key']}.json"
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "val_bacc": 2.0}))
    again = evaluate([run], out, show_progress=False)
    assert again["arms_from_cache"] == 4 and again["best_baseline"][rows["real"]["regime"]]["arm"] == "real+crt"
    # evaluate.crt_steps enters the +crt arms' keys alone; the kept models are reused
    calls.clear()
    longer = evaluate([open_run(run, ["evaluate.crt_steps=2"])], out, show_progress=False)
    assert longer["arms_from_cache"] == 2 and [c[0] for c in calls] == ["real+crt", "real+topup+crt"]
    assert {r["steps"] for r in longer["rows"] if "crt" in r["arm"]} == {2}
    with pytest.raises(UserError, match=r"evaluate\.crt_steps") as refused:
        open_run(run, ["evaluate.crt_steps=0"])
    assert "\n" not in str(refused.value)
