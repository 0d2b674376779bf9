"""`synthaug fit`: the run directory, resume after a crash or kill -9, two processes, reruns, and the training helpers."""

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_recipe_dict, write_class_folders
from diffusers import DDPMPipeline
from PIL import Image
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

import synthaug.diffusion.training as train_module
from synthaug.core.errors import UserError
from synthaug.diffusion.monitor import Monitor
from synthaug.storage.files import FolderLock
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.storage.rundir import RunDir
from synthaug.diffusion.training import _write_metrics, fit

pytestmark = pytest.mark.filterwarnings("ignore:.*MD5 differs")


def unet_weights(run: RunDir, model_dir: str) -> dict:
    return load_file(run.model(model_dir) / "unet" / "diffusion_pytorch_model.safetensors")


def test_per_class_fit_writes_the_run_directory(tiny_recipe):
    recipe = tiny_recipe(data={"subset": {"per_class": 5, "seed": 1}}, train={"sample_every": 2})
    run = fit(recipe, show_progress=False)
    classes = json.loads(run.classes.read_text())
    assert classes["class_names"] == ["malignant", "normal, benign"]
    assert classes["models"] == {"0": "00_malignant", "1": "01_normal_benign"}
    assert classes["counts"] == {"0": 5, "1": 5} and classes["split_counts"] == {"0": 12, "1": 12}
    assert classes["subset"]["per_class"] == 5 and len(classes["train_indices"]) == 10
    for model_dir in ("00_malignant", "01_normal_benign"):
        pipe = DDPMPipeline.from_pretrained(run.model(model_dir))
        assert pipe.unet.config.in_channels == 1 and pipe.unet.config.num_class_embeds is None
        image = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
        assert image.shape == (1, 28, 28, 1)
        assert (run.samples(model_dir) / "step_0000002.png").is_file()
        assert (run.samples(model_dir) / "step_0000004.png").is_file()
        assert not run.checkpoints(model_dir).exists()  # removed once the model is saved
    metrics = pd.read_csv(run.metrics)
    assert list(metrics.columns) == ["step", "class", "loss", "lr", "images_per_s", "grid_copy_fraction"]
    assert metrics.groupby("class")["step"].apply(list).to_dict() == {0: [1, 2, 3, 4], 1: [1, 2, 3, 4]}
    summary = json.loads(run.summary.read_text())
    assert summary["device"] == "cpu" and set(summary["models"]) == {"00_malignant", "01_normal_benign"}
    assert yaml.safe_load(run.recipe.read_text())["data"]["subset"]["per_class"] == 5


def test_class_conditional_rgb_model(tmp_path, blood_root):
    raw = tiny_recipe_dict({"medmnist": "bloodmnist", "root": str(blood_root)}, tmp_path / "runs", model={"conditioning": "class_conditional"})
    run = fit(recipe_from_dict(raw), show_progress=False)
    pipe = DDPMPipeline.from_pretrained(run.model("all"))
    assert pipe.unet.config.num_class_embeds == 9  # 8 classes + the null class
    assert pipe.unet.config.in_channels == 3
    assert set(pd.read_csv(run.metrics)["class"]) == {-1}


def test_folder_data_and_chosen_classes(tmp_path):
    root = write_class_folders(tmp_path / "imgs", ["benign", "cyst", "tumour"], n=3, size=20, channels=3)
    raw = tiny_recipe_dict({"folder": str(root), "size": 16, "classes": ["cyst"]}, tmp_path / "runs")
    run = fit(recipe_from_dict(raw), show_progress=False)
    assert [p.name for p in (run.root / "models").iterdir()] == ["01_cyst"]
    assert DDPMPipeline.from_pretrained(run.model("01_cyst")).unet.config.sample_size == 16


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_recipe, monkeypatch):
    whole = fit(tiny_recipe("whole", train={"steps": 6, "checkpoint_every": 2, "augment": ["hflip", "vflip", "rot90"]}), show_progress=False)

    real_save = train_module._save_checkpoint

    def save_then_crash(accelerator, run, job, step):
        real_save(accelerator, run, job, step)
        if job.class_idx == 1 and step == 4:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    recipe = tiny_recipe("resumed", train={"steps": 6, "checkpoint_every": 2, "augment": ["hflip", "vflip", "rot90"]})
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(recipe, show_progress=False)
    run = RunDir(recipe.run_dir)
    assert run.is_finished("00_malignant") and not run.is_finished("01_normal_benign")
    assert run.latest_checkpoint("01_normal_benign").name == "step_0000004"
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)

    fit(recipe, show_progress=False)
    summary = json.loads(run.summary.read_text())["models"]
    assert summary["01_normal_benign"]["resumed_from"] == 4
    for model_dir in ("00_malignant", "01_normal_benign"):
        a, b = unet_weights(whole, model_dir), unet_weights(run, model_dir)
        assert all(torch.equal(a[k], b[k]) for k in a)
    resumed_metrics = pd.read_csv(run.metrics)
    assert resumed_metrics.groupby("class").size().tolist() == [6, 6]  # no duplicated rows after resuming


class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs."""


def test_a_kill_right_after_a_model_is_saved_loses_no_metrics_rows(tiny_recipe, monkeypatch):
    real_replace = train_module.replace_dir

    def replace_then_kill(tmp, path):
        real_replace(tmp, path)
        if path.parent.name == "models":  # the model is in place, so finished: a rerun skips it
            raise Killed

    monkeypatch.setattr(train_module, "replace_dir", replace_then_kill)
    recipe = tiny_recipe("killed", train={"steps": 4, "checkpoint_every": 2})
    with pytest.raises(Killed):
        fit(recipe, show_progress=False)
    monkeypatch.setattr(train_module, "replace_dir", real_replace)
    run = RunDir(recipe.run_dir)
    assert run.is_finished("00_malignant")
    fit(recipe, show_progress=False)
    assert pd.read_csv(run.metrics).groupby("class")["step"].apply(list).to_dict() == {0: [1, 2, 3, 4], 1: [1, 2, 3, 4]}


@contextlib.contextmanager
def sigint_after_optimizer_step(n: int):
    """Ctrl-C right after the `n`-th optimizer step: the weights have moved, the LR schedule and EMA not yet."""
    calls = 0

    def hook(optimizer, args, kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            signal.raise_signal(signal.SIGINT)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def sigint_in_sample_grid(n: int):
    """Ctrl-C inside the `n`-th sample grid, while the EMA weights are swapped into the model."""
    real_grid, calls = Monitor.grid, 0

    def grid(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            signal.raise_signal(signal.SIGINT)
        return real_grid(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Monitor, "grid", grid)
        yield


@contextlib.contextmanager
def sigint_at_line(n: int):
    """Ctrl-C at the `n`-th line run in synthaug/diffusion/training.py (none for n = 0); yields the count so far."""
    count = 0

    def line(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if count == n:
                signal.raise_signal(signal.SIGINT)
        return line

    sys.settrace(lambda frame, event, arg: line if frame.f_code.co_filename == train_module.__file__ else None)
    try:
        yield lambda: count
    finally:
        sys.settrace(None)


# The SIGINT handler the suite started with, read at collection: a process that a non-interactive shell starts in the
# background (as a CI runner may start pytest) has SIGINT ignored from its start, and Python then installs no handler.
STARTUP_SIGINT = signal.getsignal(signal.SIGINT)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler for the test, as in a `synthaug fit` started from a terminal: fit notes a Ctrl-C only
    where that handler is in place (it leaves an application's own handler alone, and an ignored SIGINT ignored). Warns
    when an earlier test changed the handler the suite started with."""
    previous = signal.getsignal(signal.SIGINT)
    if previous != STARTUP_SIGINT:
        warnings.warn(f"SIGINT handler left by an earlier test: {previous!r} (the suite started with {STARTUP_SIGINT!r})")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_at_any_moment_then_the_same_command_ends_with_the_uninterrupted_weights(tiny_recipe, python_sigint_handler):
    settings = dict(data={"classes": [0]}, train={"steps": 12, "checkpoint_every": 4, "sample_every": 6})
    with sigint_at_line(0) as lines_run:
        whole = fit(tiny_recipe("whole", **settings), show_progress=False)
    recipe = tiny_recipe("interrupted", **settings)
    run = RunDir(recipe.run_dir)
    rng = random.Random(0)
    # First the two moments where a Ctrl-C raised wherever it landed saved the wrong weights: inside the grid of step 6,
    # and right after step 7's optimizer step; then two random lines, each within the first quarter of a whole fit's.
    moments = [(sigint_in_sample_grid(1), "step_0000006"), (sigint_after_optimizer_step(1), "step_0000007"),
               (sigint_at_line(rng.randrange(1, lines_run() // 4)), None), (sigint_at_line(rng.randrange(1, lines_run() // 4)), None)]
    for moment, checkpoint in moments:
        with moment, pytest.raises(KeyboardInterrupt):
            fit(recipe, show_progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if checkpoint:  # the step just finished, neither the one before nor the periodic checkpoint (step 4)
            assert run.latest_checkpoint("00_malignant").name == checkpoint
    fit(recipe, show_progress=False)
    a, b = unet_weights(whole, "00_malignant"), unet_weights(run, "00_malignant")
    assert all(torch.equal(a[k], b[k]) for k in a)
    columns = ["step", "class", "loss", "lr", "grid_copy_fraction"]
    assert pd.read_csv(run.metrics)[columns].equals(pd.read_csv(whole.metrics)[columns])


def test_seed_changes_the_weights(tiny_recipe):
    a = fit(tiny_recipe("seed0", train={"seed": 0}), show_progress=False)
    b = fit(tiny_recipe("seed1", train={"seed": 1}), show_progress=False)
    wa, wb = unet_weights(a, "00_malignant"), unet_weights(b, "00_malignant")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_rerun_skips_finished_models_and_refuses_a_changed_recipe(tiny_recipe, capsys):
    recipe = tiny_recipe("again")
    run = fit(recipe, show_progress=False)
    stamp = (run.model("00_malignant") / "model_index.json").stat().st_mtime_ns
    fit(recipe, show_progress=False)
    assert "00_malignant: already trained, skipped" in capsys.readouterr().out
    assert (run.model("00_malignant") / "model_index.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="holds a run made with a different recipe"):
        fit(tiny_recipe("again", train={"lr": 0.5}), show_progress=False)


def test_a_failed_fit_leaves_no_run_folder_it_made_but_keeps_one_holding_work(tiny_recipe, tmp_path):
    recipe = tiny_recipe("nodata", data={"root": str(tmp_path / "missing")})
    with pytest.raises(UserError):
        fit(recipe, show_progress=False)
    assert not recipe.run_dir.exists()
    run = fit(tiny_recipe("kept"), show_progress=False)
    before = sorted(p.name for p in run.root.iterdir())
    with pytest.raises(UserError, match="different recipe"):
        fit(tiny_recipe("kept", train={"lr": 0.5}), show_progress=False)
    assert sorted(p.name for p in run.root.iterdir()) == before


def test_a_fit_that_diverges_stops_in_one_line_and_saves_no_such_weights(tiny_recipe):
    # a huge lr after one warm-up step at lr 0: the first steps are checkpointed, then the weights overflow
    recipe = tiny_recipe("diverged", train={"lr": 1e30, "warmup_steps": 2, "steps": 8, "checkpoint_every": 1})
    pattern = r"^00_malignant: the (loss|weights) became (nan|inf|non-finite) at step (\d+); .*train\.lr \(now 1e\+30\)"
    with pytest.raises(UserError, match=pattern) as err:
        fit(recipe, show_progress=False)
    assert "\n" not in str(err.value)
    stopped_at = int(re.match(pattern, str(err.value)).group(3))
    run = RunDir(recipe.run_dir)
    assert not run.is_finished("00_malignant") and stopped_at > 1
    checkpoint = run.latest_checkpoint("00_malignant")
    assert checkpoint.name == f"step_{stopped_at - 1:07d}"
    assert all(torch.isfinite(w).all() for w in load_file(checkpoint / "model.safetensors").values())
    with pytest.raises(UserError, match=f"at step {stopped_at};"):  # the rerun resumes from it and stops again
        fit(recipe, show_progress=False)


def test_a_nan_in_the_data_stops_the_fit_at_its_first_step(tiny_recipe, monkeypatch):
    real_jobs = train_module.make_jobs

    def with_nan(*args, **kwargs):
        jobs = real_jobs(*args, **kwargs)
        jobs[0].images[:] = float("nan")  # class 0's images, as the model sees them
        return jobs

    monkeypatch.setattr(train_module, "make_jobs", with_nan)
    recipe = tiny_recipe("nan-data")
    with pytest.raises(UserError, match=r"^00_malignant: the loss became nan at step 1; .*non-finite pixels"):
        fit(recipe, show_progress=False)
    assert not RunDir(recipe.run_dir).is_finished("00_malignant")


def test_unreadable_checkpoint_is_named(tiny_recipe):
    recipe = tiny_recipe("broken")
    broken = RunDir(recipe.run_dir).checkpoints("00_malignant") / "step_0000002"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="step_0000002: unreadable checkpoint"):
        fit(recipe, show_progress=False)


def _write_recipe(tmp_path, breast_root, name, **train) -> Path:
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", name, train=train)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env():
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes(tmp_path, breast_root):
    path = _write_recipe(tmp_path, breast_root, "killed", steps=100, checkpoint_every=5)
    command = [sys.executable, "-m", "synthaug", "fit", str(path), "--no-progress"]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs" / "killed" / "checkpoints" / "00_malignant"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("step_*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("step_*")), "no checkpoint appeared before the kill"
    done = subprocess.run(command, env=_env(), check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "runs" / "killed" / "summary.json").read_text())["models"]
    assert summary["00_malignant"]["resumed_from"] >= 5
    assert summary["01_normal_benign"]["steps"] == 100


@pytest.mark.slow
def test_two_cpu_processes_with_accelerate_launch(tmp_path, breast_root):
    path = _write_recipe(tmp_path, breast_root, "ddp", steps=3, checkpoint_every=2)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "-m", "synthaug", "fit", str(path), "--no-progress"]
    done = subprocess.run(command, env=_env(), check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2
    assert set(summary["models"]) == {"00_malignant", "01_normal_benign"}
    run = RunDir(tmp_path / "runs" / "ddp")
    # One process writes: every step of every model once in metrics.csv, and models that load and sample.
    assert pd.read_csv(run.metrics).groupby("class")["step"].apply(list).to_dict() == {0: [1, 2, 3], 1: [1, 2, 3]}
    for model_dir in ("00_malignant", "01_normal_benign"):
        pipe = DDPMPipeline.from_pretrained(run.model(model_dir))
        image = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
        assert image.shape == (1, 28, 28, 1) and np.isfinite(image).all()


def test_sample_grids_report_their_copy_fraction(tiny_recipe, capsys):
    run = fit(tiny_recipe("watched", train={"steps": 4, "sample_every": 2}), show_progress=False)
    out = capsys.readouterr().out
    assert "00_malignant: step 2: " in out and "images of this step's sample grid are near-copies of training images" in out
    metrics = pd.read_csv(run.metrics)
    at_grids = metrics[metrics["step"].isin([2, 4])]
    assert at_grids["grid_copy_fraction"].between(0, 1).all() and len(at_grids) == 4  # 2 grids x 2 models
    assert metrics[~metrics["step"].isin([2, 4])]["grid_copy_fraction"].isna().all()
    # legible: two rows of eight 28 px images, each row drawn at least 70 px tall (with the class's name at its left)
    with Image.open(run.samples("00_malignant") / "step_0000002.png") as grid:
        assert grid.height >= 2 * 70 and grid.width >= 8 * 70
    # a metrics.csv written before the column was renamed keeps its grid numbers under the new name
    old = metrics.rename(columns={"grid_copy_fraction": "copy_fraction"})
    run.metrics.write_text(old.to_csv(index=False))
    _write_metrics(run, SimpleNamespace(class_idx=0), [], keep_until=4)
    again = pd.read_csv(run.metrics)
    assert "copy_fraction" not in again and again["grid_copy_fraction"].equals(metrics["grid_copy_fraction"])


def test_a_second_fit_of_one_run_is_refused_naming_the_first(tiny_recipe):
    recipe = tiny_recipe("busy")
    with FolderLock(recipe.run_dir, "fit"):
        with pytest.raises(UserError, match=f"in use by another synthaug process \\(PID {os.getpid()}, synthaug fit\\)"):
            fit(recipe, show_progress=False)
    assert not (recipe.run_dir / "classes.json").exists()  # refused before writing anything
    fit(recipe, show_progress=False)


def test_fit_logs_loss_lr_speed_and_grids_to_tensorboard(tiny_recipe):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = fit(tiny_recipe("tracked", train={"steps": 4, "sample_every": 2, "log_with": ["tensorboard"]}), show_progress=False)
    events = EventAccumulator(str(run.root / "logs" / "00_malignant")).Reload()
    assert {"loss", "lr", "images_per_s", "grid_copy_fraction"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert events.Tags()["images"]  # the sample grids
    with pytest.raises(UserError, match="train.log_with: unknown tracker 'tensorbored'"):
        fit(tiny_recipe("typo", train={"log_with": ["tensorbored"]}), show_progress=False)


def test_a_conditional_model_learns_from_the_unlabeled_pool_after_pretraining_on_it(tiny_recipe):
    recipe = tiny_recipe(data={"subset": {"per_class": 3}, "unlabeled": {"count": 8}}, model={"conditioning": "class_conditional"},
                         train={"pretrain_steps": 2, "labelled_share": 0.5})
    run = fit(recipe, show_progress=False)
    classes = json.loads(run.classes.read_text())
    assert classes["unlabeled"]["count"] == 8 and not set(classes["unlabeled"]["indices"]) & set(classes["train_indices"])
    assert classes["models"] == {"0": "all", "1": "all"}  # generate samples from the conditional model only
    assert run.is_finished("pool") and run.is_finished("all")
    steps = pd.read_csv(run.metrics).groupby("class")["step"].max().to_dict()
    assert steps == {-2: 2, -1: 4}
    again = fit(tiny_recipe(name="again", data={"subset": {"per_class": 3}, "unlabeled": {"count": 8}},
                            model={"conditioning": "class_conditional"}, train={"pretrain_steps": 2, "labelled_share": 0.5}), show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(unet_weights(run, "all").values(), unet_weights(again, "all").values()))
    without_pool = fit(tiny_recipe(name="no_pool", data={"subset": {"per_class": 3}}, model={"conditioning": "class_conditional"}), show_progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(unet_weights(run, "all").values(), unet_weights(without_pool, "all").values()))


def test_per_class_models_start_from_the_pool_model(tiny_recipe):
    # A learning rate of ~0 keeps each class's model where it started: the pool model's EMA weights.
    recipe = tiny_recipe(data={"subset": {"per_class": 3}, "unlabeled": {}}, train={"pretrain_steps": 3, "lr": 1e-12, "ema_decay": 0.5})
    run = fit(recipe, show_progress=False)
    pool = unet_weights(run, "pool")
    for model_dir in ("00_malignant", "01_normal_benign"):
        mine = unet_weights(run, model_dir)
        assert all(torch.allclose(mine[k], pool[k], atol=1e-6) for k in pool)
    out = json.loads(run.summary.read_text())["models"]["pool"]
    assert out["class_name"] == "unlabeled pool" and out["real_images"] == 18


def test_a_run_with_a_pool_resumes_to_the_same_weights(tiny_recipe, monkeypatch):
    # Crash while fine-tuning the conditional model from the pool model: the resume ends where an uninterrupted run does.
    settings = dict(data={"subset": {"per_class": 3}, "unlabeled": {"count": 8}}, model={"conditioning": "class_conditional"},
                    train={"steps": 6, "checkpoint_every": 2, "pretrain_steps": 2})
    whole = fit(tiny_recipe("whole", **settings), show_progress=False)
    real_save = train_module._save_checkpoint

    def save_then_crash(accelerator, run, job, step):
        real_save(accelerator, run, job, step)
        if job.model_dir == "all" and step == 4:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    recipe = tiny_recipe("resumed", **settings)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(recipe, show_progress=False)
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    run = fit(recipe, show_progress=False)
    assert json.loads(run.summary.read_text())["models"]["all"]["resumed_from"] == 4
    for model_dir in ("pool", "all"):
        a, b = unet_weights(whole, model_dir), unet_weights(run, model_dir)
        assert all(torch.equal(a[k], b[k]) for k in a)
