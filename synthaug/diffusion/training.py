"""`synthaug fit`: train one DDPM per class (or one class-conditional DDPM) under Accelerate.

Every random draw of step s (batch indices, flips, noise, timesteps, guidance dropout) comes from a
generator seeded by (seed, class, step, micro-step, rank), so a run resumed from a checkpoint ends
with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMPipeline, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from synthaug.core.errors import UserError
from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.diffusion.monitor import Monitor
from synthaug.diffusion.objective import min_snr_weight, training_batch
from synthaug.diffusion.jobs import Job, make_jobs, prepare_run
from synthaug.recipe.recipe import Recipe
from synthaug.storage.files import FolderLock, atomic_write_json, atomic_write_text, remove_stale_temps, replace_dir, temp_dir_beside
from synthaug.storage.rundir import POOL_CLASS, RunDir, checkpoint_step
from synthaug.core.runtime import on_cpu, package_versions, seeded_generator
from synthaug.core.tracking import check_trackers, finish, flat_config, log_image

METRIC_COLUMNS = ["step", "class", "loss", "lr", "images_per_s", "copy_fraction"]


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
    old = pd.read_csv(run.metrics) if run.metrics.is_file() else pd.DataFrame(columns=METRIC_COLUMNS)
    mine = old["class"] == job.class_idx
    kept = old[~mine | (old["step"] <= keep_until)]
    table = pd.concat([kept, pd.DataFrame(rows, columns=METRIC_COLUMNS)], ignore_index=True) if rows else kept
    atomic_write_text(run.metrics, table.to_csv(index=False))


def _start_from(unet: UNet2DModel, run: RunDir, model_dir: str) -> None:
    """Load the finished (EMA) weights of `model_dir`, e.g. the pool-pretrained model, into `unet`."""
    if not run.is_finished(model_dir):
        raise UserError(f"{run.model(model_dir)}: not trained yet; fit trains it first (rerun `synthaug fit`)")
    unet.load_state_dict(UNet2DModel.from_pretrained(str(run.model(model_dir)), subfolder="unet").state_dict())


def train_job(recipe: Recipe, run: RunDir, job: Job, num_classes: int, class_name: str, show_progress: bool, monitor: Monitor | None) -> dict:
    """Train one model to `train.steps`, resuming from its last checkpoint; save the EMA model as a pipeline."""
    cfg = recipe.train
    accelerator = make_accelerator(recipe)
    device = accelerator.device
    torch.manual_seed(int(seeded_generator(cfg.seed, job.class_idx).initial_seed()))
    unet = build_unet(recipe.model, job.images.shape[1], num_classes)
    noise_scheduler = build_noise_scheduler(recipe.diffusion)
    if job.init_from is not None:  # before EMA, optimizer and any checkpoint: a resume then overwrites all of them
        _start_from(unet, run, job.init_from)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, job.steps)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(device)
    accelerator.register_for_checkpointing(lr_schedule, ema)

    start, checkpoint = 0, run.latest_checkpoint(job.model_dir)
    if checkpoint is not None:
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as exc:
            raise UserError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc}); delete it to restart this model") from None
        start = checkpoint_step(checkpoint)
        if accelerator.is_main_process:
            print(f"{job.model_dir}: resuming from step {start} ({checkpoint.relative_to(run.root)})", flush=True)
    if accelerator.is_main_process:
        _write_metrics(run, job, [], keep_until=start)
    accelerator.init_trackers(job.model_dir, config=flat_config(recipe.model_dump(mode="json")))

    rows: list[dict] = []
    images_per_step = cfg.batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
    bar = tqdm(total=job.steps, initial=start, desc=f"fit {job.model_dir}", disable=not (show_progress and accelerator.is_main_process), unit="step")
    unet.train()
    began, loss_value, step = time.perf_counter(), float("nan"), start
    try:
        for step in range(start, job.steps):
            tick = time.perf_counter()
            for micro in range(cfg.gradient_accumulation_steps):
                gen = seeded_generator(cfg.seed, job.class_idx, step, micro, accelerator.process_index)
                x, noise, t, labels = training_batch(recipe, job, num_classes, gen, device)
                with accelerator.accumulate(unet):
                    noisy = noise_scheduler.add_noise(x, noise, t)
                    with accelerator.autocast():
                        pred = unet(noisy, t, class_labels=labels).sample
                    if recipe.diffusion.prediction_type == "epsilon":
                        target = noise
                    else:
                        target = noise_scheduler.get_velocity(x, noise, t)
                    loss = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
                    if cfg.snr_gamma is not None:
                        loss = loss * min_snr_weight(noise_scheduler, t, cfg.snr_gamma, recipe.diffusion.prediction_type)
                    loss = loss.mean()
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            lr_schedule.step()
            ema.step(unet.parameters())
            loss_value = accelerator.reduce(loss.detach(), "mean").item()
            speed = images_per_step / (time.perf_counter() - tick)
            rows.append({"step": step + 1, "class": job.class_idx, "loss": loss_value, "lr": lr_schedule.get_last_lr()[0], "images_per_s": speed})
            accelerator.log({k: rows[-1][k] for k in ("loss", "lr", "images_per_s")}, step=step + 1)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{speed:.1f}")
            bar.update(1)
            done = step + 1
            if cfg.sample_every and done % cfg.sample_every == 0 and done < job.steps:
                rows[-1]["copy_fraction"] = _grid(accelerator, unet, ema, noise_scheduler, monitor, job, num_classes, done, cfg.seed)
            if done % cfg.checkpoint_every == 0 and done < job.steps:
                # Metrics first: a resume drops rows past its checkpoint, so they never run ahead of it.
                if accelerator.is_main_process:
                    _write_metrics(run, job, rows, keep_until=start)
                _save_checkpoint(accelerator, run, job, done)
    except KeyboardInterrupt:
        # One process can stop anywhere and keep its work; several would have to agree on a step first.
        if accelerator.num_processes == 1 and step > start:
            _write_metrics(run, job, [r for r in rows if r["step"] <= step], keep_until=start)
            _save_checkpoint(accelerator, run, job, step)
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - began

    final_copies = _grid(accelerator, unet, ema, noise_scheduler, monitor, job, num_classes, job.steps, cfg.seed)
    if rows and rows[-1]["step"] == job.steps:
        rows[-1]["copy_fraction"] = final_copies
    if accelerator.is_main_process:
        final = copy.deepcopy(accelerator.unwrap_model(unet)).float().eval()
        ema.copy_to(final.parameters())
        tmp = temp_dir_beside(run.model(job.model_dir))
        DDPMPipeline(unet=final, scheduler=noise_scheduler).save_pretrained(str(tmp), safe_serialization=True)
        replace_dir(tmp, run.model(job.model_dir))
        _write_metrics(run, job, rows, keep_until=start)
        shutil.rmtree(run.checkpoints(job.model_dir), ignore_errors=True)
    finish(accelerator)
    accelerator.wait_for_everyone()
    trained = job.steps - start
    result = {
        "class": job.class_idx,
        "class_name": class_name,
        "model_dir": job.model_dir,
        "real_images": int(job.images.shape[0]),
        "unlabeled_images": int(job.pool.shape[0]) if job.pool is not None else 0,  # mixed into every batch (data.unlabeled)
        "steps": job.steps,
        "resumed_from": start,
        "final_loss": loss_value,
        "wall_s": round(wall, 2),
        "images_per_s": round(trained * images_per_step / wall, 2) if trained else None,
    }
    if accelerator.is_main_process:
        pool_note = f" + {result['unlabeled_images']} unlabeled" if result["unlabeled_images"] else ""
        print(
            f"{job.model_dir}: {job.steps} steps ({trained} this run), {result['real_images']} {'unlabeled' if job.class_idx == POOL_CLASS else 'real'} images"
            f"{pool_note}, "
            f"loss {loss_value:.4f}, {result['images_per_s']} img/s, {wall:.0f} s -> {run.model(job.model_dir)}",
            flush=True,
        )
    return result


def _grid(accelerator, unet, ema: EMAModel, noise_scheduler, monitor: Monitor | None, job: Job, num_classes: int, step: int, seed: int) -> float | None:
    """A sample grid from the EMA weights and its copy fraction (main process only)."""
    fraction = None
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(unet)
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
        model.eval()
        labels = None if job.labels is None else [num_classes] if job.class_idx == POOL_CLASS else list(range(num_classes))
        grid, fraction = monitor.grid(model, noise_scheduler, job.model_dir, job.class_idx, labels, step, seed)
        log_image(accelerator, "samples", grid, step)
        if fraction is not None:
            accelerator.log({"copy_fraction": fraction}, step=step)
        model.train()
        ema.restore(model.parameters())
    accelerator.wait_for_everyone()
    return fraction


def fit(recipe: Recipe, show_progress: bool = True, wait: bool = False) -> RunDir:
    """Train every model the recipe asks for into its run directory; finished models are skipped.

    One `fit` per run directory at a time: a second is refused naming the first's PID, or queues with `wait`.
    """
    probe = make_accelerator(recipe)
    lock = FolderLock(recipe.run_dir, "fit", wait)
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
    for job in jobs:
        if run.is_finished(job.model_dir):
            if probe.is_main_process:
                print(f"{job.model_dir}: already trained, skipped", flush=True)
            continue
        name = data.class_names[job.class_idx] if job.class_idx >= 0 else "all classes" if job.class_idx == -1 else "unlabeled pool"
        summary["models"][job.model_dir] = train_job(recipe, run, job, num_classes, name, show_progress, monitor)
        if probe.is_main_process:
            summary["wall_s_this_run"] = round(time.perf_counter() - began, 2)
            atomic_write_json(run.summary, summary)
    probe.wait_for_everyone()
    return run
