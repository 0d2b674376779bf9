"""`synthaug fit`: train one DDPM per class (or one class-conditional DDPM) under Accelerate.

Every random draw of step s (batch indices, flips, noise, timesteps, guidance dropout) comes from a
generator seeded by (seed, class, step, micro-step, rank), so a run resumed from a checkpoint ends
with the same weights as one that was never interrupted. A Ctrl-C stops it at the end of the step under way,
with that step's checkpoint (`StopRequest`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from synthaug.core.errors import UserError
from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.diffusion.monitor import GRID_COPY_COLUMN, OLD_GRID_COPY_COLUMN, Monitor
from synthaug.diffusion.pipeline import SynthaugPipeline
from synthaug.diffusion.objective import min_snr_weight, training_batch
from synthaug.diffusion.jobs import Job, make_jobs, prepare_run
from synthaug.diffusion.privacy import EPSILON_COLUMN, PrivateTraining, check_private_fit, make_private
from synthaug.recipe.recipe import Recipe
from synthaug.storage.cards import write_model_card
from synthaug.storage.files import FolderLock, atomic_write_json, atomic_write_text, remove_stale_temps, replace_dir, temp_dir_beside
from synthaug.storage.rundir import POOL_CLASS, RunDir, checkpoint_step
from synthaug.core.runtime import on_cpu, package_versions, seeded_generator
from synthaug.core.tracking import check_trackers, finish, flat_config, log_image

METRIC_COLUMNS = ["step", "class", "loss", "lr", "images_per_s", GRID_COPY_COLUMN]


def make_accelerator(recipe: Recipe) -> Accelerator:
    if recipe.train.mixed_precision == "fp16" and on_cpu():
        raise UserError("train.mixed_precision: fp16 needs a GPU; use 'no' or 'bf16' on CPU")
    return Accelerator(
        cpu=on_cpu(),
        mixed_precision=recipe.train.mixed_precision,
        gradient_accumulation_steps=recipe.train.gradient_accumulation_steps,
        log_with=check_trackers(recipe.train.log_with, "train.log_with"),
        project_dir=str(recipe.run_dir / "logs"),
    )


def _save_checkpoint(accelerator: Accelerator, run: RunDir, job: Job, step: int) -> None:
    """`save_state` into a temporary folder, renamed into place; older checkpoints go only after that."""
    folder = run.checkpoints(job.model_dir)
    final = run.checkpoint(job.model_dir, step)
    tmp = folder / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
        for old in folder.glob("step_*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _write_metrics(run: RunDir, job: Job, rows: list[dict], keep_until: int) -> None:
    """Rewrite metrics.csv: other models' rows, this model's rows up to `keep_until`, then `rows`."""
    old = pd.read_csv(run.metrics).rename(columns={OLD_GRID_COPY_COLUMN: GRID_COPY_COLUMN}) if run.metrics.is_file() else pd.DataFrame(columns=METRIC_COLUMNS)
    mine = old["class"] == job.class_idx
    kept = old[~mine | (old["step"] <= keep_until)]
    private = [EPSILON_COLUMN] if EPSILON_COLUMN in old.columns or any(EPSILON_COLUMN in row for row in rows) else []
    table = pd.concat([kept, pd.DataFrame(rows, columns=METRIC_COLUMNS + private)], ignore_index=True) if rows else kept
    atomic_write_text(run.metrics, table.to_csv(index=False))


def _start_from(unet: UNet2DModel, run: RunDir, model_dir: str) -> None:
    """Load the finished (EMA) weights of `model_dir`, e.g. the pool-pretrained model, into `unet`."""
    if not run.is_finished(model_dir):
        raise UserError(f"{run.model(model_dir)}: not trained yet; fit trains it first (rerun `synthaug fit`)")
    unet.load_state_dict(UNet2DModel.from_pretrained(str(run.model(model_dir)), subfolder="unet").state_dict())


@dataclass
class Training:
    """One model's training under way: its prepared UNet, optimizer, LR schedule and EMA weights, the step this run
    resumed from, and the metrics.csv rows of the steps trained since (written with each checkpoint)."""

    recipe: Recipe
    run: RunDir
    job: Job
    num_classes: int
    monitor: Monitor | None
    accelerator: Accelerator
    unet: torch.nn.Module  # as accelerator.prepare wrapped it
    noise_scheduler: DDPMScheduler
    ema: EMAModel
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    start: int = 0
    rows: list[dict] = field(default_factory=list)
    private: PrivateTraining | None = None  # train.privacy: DP-SGD's sampling, noise and accountant


class StopRequest:
    """A Ctrl-C (SIGINT) during `fit`, noted instead of raised, so that training stops at a step boundary.

    Raised wherever it lands, it could save weights one optimizer step ahead of their step number (that step then runs
    twice after the resume), or the EMA weights swapped in for a sample grid. Only with one process (several would first
    have to agree on a step) and where Python's own handler is in place; a second Ctrl-C raises at once, as it would
    without this (the last checkpoint stands).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.requested = False
        self.installed = False

    def __enter__(self) -> StopRequest:
        self.installed = (self.enabled and threading.current_thread() is threading.main_thread()
                          and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if self.installed:
            signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # so that a second Ctrl-C raises at once

    def __exit__(self, *exc) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def train_job(recipe: Recipe, run: RunDir, job: Job, num_classes: int, class_name: str, show_progress: bool,
              monitor: Monitor | None, stop: StopRequest) -> dict:
    """Train one model to `train.steps`, resuming from its last checkpoint; save the EMA model as a pipeline.

    On a Ctrl-C (`stop`) it saves the checkpoint of the step just finished and raises KeyboardInterrupt; a Ctrl-C in the
    last step lets the model finish instead (`fit` stops after it).
    """
    t = build_training(recipe, run, job, num_classes, monitor)
    t.start = resume_from_checkpoint(t)
    t.accelerator.init_trackers(job.model_dir, config=flat_config(recipe.model_dump(mode="json")))
    images_per_step = recipe.train.batch_size * recipe.train.gradient_accumulation_steps * t.accelerator.num_processes
    show = show_progress and t.accelerator.is_main_process
    loss, began = float("nan"), time.perf_counter()
    with tqdm(total=job.steps, initial=t.start, desc=f"fit {job.model_dir}", disable=not show, unit="step") as bar:
        t.unet.train()
        for step in range(t.start, job.steps):
            tick = time.perf_counter()
            loss = train_step(t, step)
            done = step + 1
            check_finite(t, done, loss)
            log_metrics(t, done, loss, images_per_s=images_per_step / (time.perf_counter() - tick))
            if t.private is not None:
                t.rows[-1][EPSILON_COLUMN] = t.private.after_step(done)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{t.rows[-1]['images_per_s']:.1f}")
            bar.update(1)
            maybe_sample_grid(t, done)
            checkpointed = maybe_checkpoint(t, done)
            if stop.requested and done < job.steps:  # step `done` is complete: its weights, LR schedule, EMA and row
                if not checkpointed:
                    save_checkpoint(t, done)
                raise KeyboardInterrupt
    wall = time.perf_counter() - began
    if t.private is not None:
        t.private.close()
    finish_job(t)
    return report(t, class_name, loss, wall, images_per_step)


def build_training(recipe: Recipe, run: RunDir, job: Job, num_classes: int, monitor: Monitor | None) -> Training:
    """A new UNet (or `job.init_from`'s finished weights), its EMA, AdamW and warmup-cosine LR schedule, prepared by a new
    Accelerator that checkpoints the schedule and the EMA weights with the model and optimizer."""
    cfg = recipe.train
    accelerator = make_accelerator(recipe)
    if cfg.privacy is not None:
        check_private_fit(recipe, accelerator.num_processes)
    torch.manual_seed(int(seeded_generator(cfg.seed, job.class_idx).initial_seed()))
    unet = build_unet(recipe.model, job.images.shape[1], num_classes)
    noise_scheduler = build_noise_scheduler(recipe.diffusion)
    if job.init_from is not None:  # before EMA, optimizer and any checkpoint: a resume then overwrites all of them
        _start_from(unet, run, job.init_from)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, job.steps)
    private = None
    if cfg.privacy is not None:  # the same UNet, with per-sample gradient hooks; the DP optimizer in the AdamW's place
        private = make_private(cfg.privacy, unet, optimizer, job.images.shape[0], cfg.batch_size, job.steps, job.model_dir)
        optimizer = private.optimizer
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(lr_schedule, ema, *([private.accountant] if private else []))
    return Training(recipe, run, job, num_classes, monitor, accelerator, unet, noise_scheduler, ema, optimizer, lr_schedule,
                    private=private)


def resume_from_checkpoint(t: Training) -> int:
    """Load the model's last checkpoint, if any, and drop its metrics.csv rows past it; the step to start from."""
    start, checkpoint = 0, t.run.latest_checkpoint(t.job.model_dir)
    if checkpoint is not None:
        try:
            t.accelerator.load_state(str(checkpoint))
        except Exception as exc:
            raise UserError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc}); delete it to restart this model") from None
        start = checkpoint_step(checkpoint)
        if t.accelerator.is_main_process:
            print(f"{t.job.model_dir}: resuming from step {start} ({checkpoint.relative_to(t.run.root)})", flush=True)
    if t.accelerator.is_main_process:
        _write_metrics(t.run, t.job, [], keep_until=start)
    if t.private is not None:
        t.private.check_budget(start)
    return start


def train_step(t: Training, step: int) -> float:
    """Step `step` (0-based): `train.gradient_accumulation_steps` micro-batches, each drawn from its own seeded
    generator, one optimizer step, then the LR schedule and the EMA; the loss averaged over processes."""
    cfg, accelerator = t.recipe.train, t.accelerator
    if t.private is not None:
        return private_step(t, step)
    for micro in range(cfg.gradient_accumulation_steps):
        gen = seeded_generator(cfg.seed, t.job.class_idx, step, micro, accelerator.process_index)
        x, noise, timesteps, labels = training_batch(t.recipe, t.job, t.num_classes, gen, accelerator.device)
        with accelerator.accumulate(t.unet):
            loss = denoising_loss(t, x, noise, timesteps, labels)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(t.unet.parameters(), 1.0)
            t.optimizer.step()
            t.optimizer.zero_grad(set_to_none=True)
    t.lr_schedule.step()
    t.ema.step(t.unet.parameters())
    return accelerator.reduce(loss.detach(), "mean").item()


def private_step(t: Training, step: int) -> float:
    """Step `step` of DP-SGD (one process, no accumulation): a Poisson batch and the step's noise, both from seeded
    generators, per-sample clipping in place of the global one, then the LR schedule, the EMA and the accountant."""
    cfg, private = t.recipe.train, t.private
    gen = seeded_generator(cfg.seed, t.job.class_idx, step, 0, 0)
    private.seed_noise(seeded_generator(cfg.seed, t.job.class_idx, step, 0, 0, 1), t.accelerator.device)
    idx = private.poisson_indices(gen)
    loss = torch.zeros(())  # an empty batch (possible with Poisson sampling) is a step of noise alone
    if len(idx):
        x, noise, timesteps, labels = training_batch(t.recipe, t.job, t.num_classes, gen, t.accelerator.device, idx=idx)
        with private.quiet_backward():
            loss = denoising_loss(t, x, noise, timesteps, labels)
            t.accelerator.backward(loss)
    else:
        private.empty_batch()
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    t.lr_schedule.step()
    t.ema.step(t.unet.parameters())
    return loss.detach().item()


def check_finite(t: Training, done: int, loss: float) -> None:
    """Stop at the first step whose loss or updated weights are not finite, before that step's row, grid, checkpoint or
    model is written, so that diverged weights are never saved (the last checkpoint, if any, holds finite ones)."""
    if not math.isfinite(loss):
        broken = f"the loss became {loss}"
    elif not bool(torch.stack([torch.isfinite(w).all() for w in t.unet.parameters()]).all()):
        broken = "the weights became non-finite"
    else:
        return
    raise UserError(f"{t.job.model_dir}: {broken} at step {done}; nothing of that step was saved. Lower train.lr (now "
                    f"{t.recipe.train.lr:g}) or check the data for non-finite pixels, and fit again under another name (--set name=...)")


def denoising_loss(t: Training, x: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                   labels: torch.Tensor | None) -> torch.Tensor:
    """The batch's mean squared error of the predicted noise (or velocity), each image weighted by min-SNR when
    `train.snr_gamma` is set."""
    noisy = t.noise_scheduler.add_noise(x, noise, timesteps)
    with t.accelerator.autocast():
        pred = t.unet(noisy, timesteps, class_labels=labels).sample
    prediction_type = t.recipe.diffusion.prediction_type
    target = noise if prediction_type == "epsilon" else t.noise_scheduler.get_velocity(x, noise, timesteps)
    loss = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if t.recipe.train.snr_gamma is not None:
        loss = loss * min_snr_weight(t.noise_scheduler, timesteps, t.recipe.train.snr_gamma, prediction_type)
    return loss.mean()


def log_metrics(t: Training, done: int, loss: float, images_per_s: float) -> None:
    """Step `done`'s loss, learning rate and speed: a metrics.csv row (written with the next checkpoint) and the trackers."""
    lr = t.lr_schedule.get_last_lr()[0]
    t.rows.append({"step": done, "class": t.job.class_idx, "loss": loss, "lr": lr, "images_per_s": images_per_s})
    t.accelerator.log({k: t.rows[-1][k] for k in ("loss", "lr", "images_per_s")}, step=done)


def maybe_sample_grid(t: Training, done: int) -> None:
    """Every `train.sample_every` steps, a sample grid, its grid copy fraction added to the step's row; `finish_job` samples the
    last step's."""
    every = t.recipe.train.sample_every
    if every and done % every == 0 and done < t.job.steps:
        t.rows[-1][GRID_COPY_COLUMN] = sample_grid(t, done)


def maybe_checkpoint(t: Training, done: int) -> bool:
    """Every `train.checkpoint_every` steps, the checkpoint of step `done` (the last step saves the model instead); whether
    one was saved."""
    if done % t.recipe.train.checkpoint_every == 0 and done < t.job.steps:
        save_checkpoint(t, done)
        return True
    return False


def save_checkpoint(t: Training, done: int) -> None:
    """metrics.csv up to step `done`, then the checkpoint of step `done`. Metrics first: a resume drops rows past its
    checkpoint, so they never run ahead of it."""
    if t.accelerator.is_main_process:
        _write_metrics(t.run, t.job, t.rows, keep_until=t.start)
    _save_checkpoint(t.accelerator, t.run, t.job, done)


def sample_grid(t: Training, step: int) -> float | None:
    """A sample grid from the EMA weights and its copy fraction (main process only). The training weights are back in the
    model afterwards, even when the grid is interrupted."""
    fraction = None
    if t.accelerator.is_main_process:
        model = t.accelerator.unwrap_model(t.unet)
        t.ema.store(model.parameters())
        t.ema.copy_to(model.parameters())
        model.eval()
        try:
            job = t.job
            labels = None if job.labels is None else [t.num_classes] if job.class_idx == POOL_CLASS else list(range(t.num_classes))
            grid, fraction = t.monitor.grid(model, t.noise_scheduler, job.model_dir, job.class_idx, labels, step,
                                            t.recipe.train.seed)
            log_image(t.accelerator, "samples", grid, step)
            if fraction is not None:
                t.accelerator.log({GRID_COPY_COLUMN: fraction}, step=step)
        finally:
            model.train()
            t.ema.restore(model.parameters())
    t.accelerator.wait_for_everyone()
    return fraction


def finish_job(t: Training) -> None:
    """The last step's sample grid, metrics.csv, the EMA weights saved as a pipeline (`SynthaugPipeline.save_pretrained`),
    the checkpoints removed, the trackers closed. Metrics before the model: a saved model is finished and never trained
    again, so rows written after it would be lost to a kill in between (rows past the last checkpoint are dropped by the
    resume that follows a kill before it)."""
    final_copies = sample_grid(t, t.job.steps)
    if t.rows and t.rows[-1]["step"] == t.job.steps:
        t.rows[-1][GRID_COPY_COLUMN] = final_copies
    if t.accelerator.is_main_process:
        final = copy.deepcopy(t.accelerator.unwrap_model(t.unet)).float().eval()
        t.ema.copy_to(final.parameters())
        _write_metrics(t.run, t.job, t.rows, keep_until=t.start)
        tmp = temp_dir_beside(t.run.model(t.job.model_dir))
        SynthaugPipeline(unet=final, scheduler=t.noise_scheduler).save_pretrained(str(tmp), safe_serialization=True)
        replace_dir(tmp, t.run.model(t.job.model_dir))
        shutil.rmtree(t.run.checkpoints(t.job.model_dir), ignore_errors=True)
    finish(t.accelerator)
    t.accelerator.wait_for_everyone()


def report(t: Training, class_name: str, loss: float, wall: float, images_per_step: int) -> dict:
    """The model's entry in summary.json, printed as one line."""
    job = t.job
    trained = job.steps - t.start
    result = {
        "class": job.class_idx,
        "class_name": class_name,
        "model_dir": job.model_dir,
        "real_images": int(job.images.shape[0]),
        "unlabeled_images": int(job.pool.shape[0]) if job.pool is not None else 0,  # mixed into every batch (data.unlabeled)
        "steps": job.steps,
        "resumed_from": t.start,
        "final_loss": loss,
        "wall_s": round(wall, 2),
        "images_per_s": round(trained * images_per_step / wall, 2) if trained else None,
        **({"privacy": t.private.record()} if t.private is not None else {}),
    }
    if t.accelerator.is_main_process:
        pool_note = f" + {result['unlabeled_images']} unlabeled" if result["unlabeled_images"] else ""
        print(
            f"{job.model_dir}: {job.steps} steps ({trained} this run), {result['real_images']} {'unlabeled' if job.class_idx == POOL_CLASS else 'real'} images"
            f"{pool_note}, "
            f"loss {loss:.4f}, {result['images_per_s']} img/s, {wall:.0f} s -> {t.run.model(job.model_dir)}",
            flush=True,
        )
    return result


def fit(recipe: Recipe, show_progress: bool = True, wait: bool = False) -> RunDir:
    """Train every model the recipe asks for into its run directory; finished models are skipped.

    One `fit` per run directory at a time: a second is refused naming the first's PID, or queues with `wait`.
    """
    probe = make_accelerator(recipe)
    lock = FolderLock(recipe.run_dir, "fit", wait, remove_unused=True)  # a fit that failed before any work leaves no folder
    lock.check_free()  # every rank checks before the main process takes it, so a refused launch stops everywhere
    probe.wait_for_everyone()
    with lock if probe.is_main_process else contextlib.nullcontext():
        return _fit(recipe, probe, show_progress)


def _fit(recipe: Recipe, probe: Accelerator, show_progress: bool) -> RunDir:
    run, data, classes, pool = prepare_run(recipe, probe.is_main_process)
    if probe.is_main_process:
        for model_dir in ("models", "checkpoints"):
            remove_stale_temps(run.root / model_dir)
            for sub in (run.root / model_dir).glob("*"):
                remove_stale_temps(sub)
    probe.wait_for_everyone()
    num_classes = len(data.class_names)
    jobs = make_jobs(recipe, data, classes, pool, probe.device)
    summary = {"versions": package_versions(), "device": str(probe.device), "processes": probe.num_processes, "models": {}}
    summary["models"] = run.read_summary().get("models", {})
    todo = [job for job in jobs if not run.is_finished(job.model_dir)]
    monitor = Monitor(recipe, probe.device) if probe.is_main_process and todo else None
    began = time.perf_counter()
    with StopRequest(enabled=probe.num_processes == 1) as stop:
        for job in jobs:
            if run.is_finished(job.model_dir):
                if probe.is_main_process:
                    print(f"{job.model_dir}: already trained, skipped", flush=True)
                continue
            name = data.class_names[job.class_idx] if job.class_idx >= 0 else "all classes" if job.class_idx == -1 else "unlabeled pool"
            summary["models"][job.model_dir] = train_job(recipe, run, job, num_classes, name, show_progress, monitor, stop)
            if probe.is_main_process:
                summary["wall_s_this_run"] = round(time.perf_counter() - began, 2)
                atomic_write_json(run.summary, summary)
            if stop.requested:  # a Ctrl-C in the model's last step: it finished, the next one does not start
                raise KeyboardInterrupt
    probe.wait_for_everyone()
    if probe.is_main_process:  # every model finished: the run's model card (README.md), for sharing
        write_model_card(run)
    return run
