"""`synthaug generate`: decide what to draw, draw it in fixed blocks, and hand it to the synthetic-set writer.

The noise of image i of class c comes from a generator seeded by (seed, c, i) alone, and the UNet sees
fixed blocks of consecutive indices (BLOCK_SIZE), so the bytes of an image never depend on the batch
size, the process count or what is already on disk. Candidates that a filter rejects are redrawn
from (seed, c, i, attempt). How the set is laid out on disk is `synthset`'s business.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from synthaug.storage.pixels import to_uint8
from synthaug.core.errors import UserError
from synthaug.storage.files import FolderLock, atomic_write_json, atomic_write_text, remove_stale_temps
from synthaug.reference.filters import CandidateFilter, confidence_filter, copy_filter, filter_name, filter_record
from synthaug.diffusion.unet import null_class
from synthaug.generation.plan import Sources, class_targets, load_sources, resolve_settings
from synthaug.recipe.sections import GenerateConfig
from synthaug.recipe.recipe import Recipe
from synthaug.storage.rundir import Run, RunDir, SynthDir, open_run
from synthaug.core.runtime import on_cpu
from synthaug.diffusion.sampling import denoise, image_generator, sampling_scheduler, variation_start
from synthaug.storage.synthnpz import npz_name, npz_up_to_date, write_npz
from synthaug.storage.synthset import WORK_DIR, ClassTarget, PngWriter, check_capacity, check_compatible, check_foreign_files, check_writable, collect_metadata, extra_files, generation_id_of, image_file, new_manifest, plan_blocks, provenance_of, rejections, repair_damaged

# On CPU the UNet always sees blocks of BLOCK_SIZE consecutive indices of one class, whatever
# --batch-size: matrix kernels pick their reduction order by batch shape (a row computed in a batch
# of 1, 5 or 64 differs by ~1e-6, which flips pixels after a few sampler steps), so a fixed block is
# what makes image i a function of (seed, class, i) alone. Measured: 16 is within ~6% of the
# per-core throughput of batch 64-128 on the quickstart UNet.
BLOCK_SIZE = 16


MAX_ATTEMPTS = 20  # candidates drawn for one image before a filter is declared too strict


@dataclass
class Candidates:
    """The accepted image of each requested index, and what was rejected on the way."""

    images: np.ndarray  # uint8 (N, H, W, C)
    attempts: list[int]  # candidates rejected before the kept one
    rejected_by: list[list[str]]  # per rejected candidate, the name of the filter that rejected it
    accepted: np.ndarray  # bool (N,): False where MAX_ATTEMPTS candidates were all rejected
    strengths: list[float]  # variations: the strength of each kept image (NaN for images drawn from noise)


def sample_candidates(
    unet: UNet2DModel,
    train_scheduler: DDPMScheduler,
    settings: GenerateConfig,
    class_idx: int,
    indices: list[int],
    filters: Sequence[CandidateFilter] = (),
    sources: Sources | None = None,
) -> Candidates:
    """Images `indices` of class `class_idx`, sampled together; every filter sees every candidate.

    A rejected image i is redrawn from the generator of (seed, class, i, attempt). The redraws of an
    attempt are the indices rejected at the previous one, so what is computed together is a function
    of the indices alone (never of which files already exist). With `sources`, each image is a
    variation of its real source image (`plan.Sources`), drawn at its own strength.
    """
    n = len(indices)
    images: np.ndarray | None = None
    rejected_by: list[list[str]] = [[] for _ in range(n)]
    strengths = [float("nan")] * n
    todo = list(range(n))
    for attempt in range(MAX_ATTEMPTS):
        if sources is None:
            generators = [image_generator(settings.seed, class_idx, indices[k], attempt) for k in todo]
            drawn = _draw(unet, train_scheduler, settings, class_idx, generators)
        else:
            generators = [sources.generator(settings.seed, class_idx, indices[k], attempt) for k in todo]
            for k, gen in zip(todo, generators):
                strengths[k] = sources.strength_of(gen)
            drawn = _vary(unet, train_scheduler, settings, class_idx, generators, [strengths[k] for k in todo],
                          sources.init(class_idx, [indices[k] for k in todo], unet.device))
        if images is None:
            images = np.empty((n, *drawn.shape[1:]), dtype=np.uint8)
        images[todo] = drawn
        verdict: list[str | None] = [None] * len(todo)
        for candidate_filter in filters:
            open_ = [j for j, why in enumerate(verdict) if why is None]
            if not open_:
                break
            keep = np.asarray(candidate_filter(drawn[open_], class_idx), dtype=bool).reshape(-1)
            if keep.shape != (len(open_),):
                raise ValueError(f"candidate filter {filter_name(candidate_filter)} returned {keep.shape[0]} decisions for {len(open_)} images")
            for j, ok in zip(open_, keep):
                if not ok:
                    verdict[j] = filter_name(candidate_filter)
        for k, why in zip(todo, verdict):
            if why is not None:
                rejected_by[k].append(why)
        todo = [k for k, why in zip(todo, verdict) if why is not None]
        if not todo:
            break
    accepted = np.ones(n, dtype=bool)
    accepted[todo] = False
    return Candidates(images, [len(r) for r in rejected_by], rejected_by, accepted, strengths)


def _draw(unet, train_scheduler, settings: GenerateConfig, class_idx: int, generators: list[torch.Generator]) -> np.ndarray:
    """Images drawn from noise, one per generator, in one batch."""
    scheduler = sampling_scheduler(train_scheduler, settings.sampler, settings.steps)
    labels = [class_idx] * len(generators) if null_class(unet) is not None else None
    return to_uint8(denoise(unet, scheduler, generators, labels, settings.guidance_scale))


def _vary(unet, train_scheduler, settings: GenerateConfig, class_idx: int, generators: list[torch.Generator], strengths: list[float],
          init: torch.Tensor) -> np.ndarray:
    """Variations of `init`, one per generator; images that start at the same sampler step share a batch.

    Which images share a model call depends on their strengths, a function of their keys alone, so the
    bytes of a variation still never depend on the batch size or on what is already on disk.
    """
    starts = np.array([variation_start(s, settings.steps) for s in strengths])
    out = np.empty((len(generators), *init.shape[2:], init.shape[1]), dtype=np.uint8)
    for start in sorted(set(starts.tolist())):
        group = np.flatnonzero(starts == start)
        scheduler = sampling_scheduler(train_scheduler, settings.sampler, settings.steps)
        labels = [class_idx] * len(group) if null_class(unet) is not None else None
        out[group] = to_uint8(denoise(unet, scheduler, [generators[g] for g in group], labels, settings.guidance_scale,
                                      init=init[torch.as_tensor(group)], start=start))
    return out


def load_model(run: RunDir, model_dir: str, device: torch.device) -> tuple[UNet2DModel, DDPMScheduler]:
    folder = run.model(model_dir)
    try:
        unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UserError(f"{folder}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return unet.to(device).eval(), scheduler


def generate(
    run: Run | Recipe | RunDir | str | Path | None = None,
    *,
    per_class: int | None = None,
    ratio: float | None = None,
    balance: bool = False,
    per_real: int | None = None,
    out: str | Path | None = None,
    classes: Sequence[int | str] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    format: str | None = None,
    reject_copies: bool | None = None,
    filter_confidence: float | None = None,
    from_real: bool | None = None,
    strength: Sequence[float] | None = None,
    candidate_filters: Sequence[CandidateFilter] = (),
    show_progress: bool = True,
    wait: bool = False,
) -> Path:
    """Write a labelled synthetic set from a run's models; returns the output folder.

    `run`: a `Run` (`rundir.open_run`), a Recipe, a run folder (default: the most recent run under runs/).
    Exactly one of `per_class`, `ratio`, `balance`, `per_real`. Settings left None come from the run's recipe (`generate:`).
    `from_real`: variations of the run's real training images (SDEdit) at `strength` (one value or [lo, hi]);
    `ratio` R is then R variations per real image on average, `per_real` K exactly K of each.
    Image i of class c depends on (seed, c, i) alone: the same call gives the same bytes whatever
    the batch size (on CPU), the number of processes, or interruptions; files already on disk are
    kept. `candidate_filters` reject candidates (see `filters.CandidateFilter`); a rejected image is redrawn
    from (seed, c, i, attempt); `reject_copies` adds the near-copy filter (`filters.copy_filter`),
    `filter_confidence` (a probability) the classifier-confidence filter (`filters.confidence_filter`).
    Launch under `accelerate launch` to split the work across processes. One generate per output folder at a
    time: a second is refused naming the first's PID, or queues with `wait`.
    """
    state = PartialState(cpu=on_cpu())
    device = state.device
    run = open_run(run)
    recipe = run.recipe
    train_steps = recipe.diffusion.num_train_timesteps
    settings = resolve_settings(recipe.generate, train_steps, sampler=sampler, steps=steps, guidance_scale=guidance_scale, batch_size=batch_size, seed=seed, format=format, reject_copies=reject_copies,
                                filter_confidence=filter_confidence, from_real=from_real, strength=list(strength) if strength is not None else None)
    if settings.guidance_scale != 1.0 and run.info.conditioning != "class_conditional":
        raise UserError(f"--guidance-scale: applies to class_conditional runs only; {run.root} has one model per class")
    if per_real is not None and not settings.from_real:
        raise UserError("--per-real: counts variations of real images; add --from-real (or use --per-class/--ratio)")
    targets = class_targets(run, per_class, ratio, balance, classes, per_real)
    sources = load_sources(run, settings) if settings.from_real else None
    out = SynthDir(Path(out) if out is not None else run.dir.synthetic)
    images_root = out.root / WORK_DIR if settings.format == "npz" else out.root
    block = BLOCK_SIZE if device.type == "cpu" else BLOCK_SIZE * math.ceil(settings.batch_size / BLOCK_SIZE)
    if settings.steps > train_steps:
        raise UserError(f"--steps: at most the run's diffusion.num_train_timesteps ({train_steps}), got {settings.steps}")
    filters = list(candidate_filters)
    if settings.reject_copies:
        filters.append(copy_filter(run, device))
    if settings.filter_confidence is not None:
        with state.main_process_first():  # the first build trains and caches the classifier; the others load it
            filters.append(confidence_filter(run, settings.filter_confidence, device, show_progress and state.is_main_process))
    provenance = provenance_of(run.dir, targets, settings, block, device, [filter_record(f) for f in filters])
    if sources is not None:  # images drawn from noise keep the provenance (and generation ids) they always had
        provenance.update(mode="from_real", strength=list(sources.strength), sources_sha256=sources.digest())
    generation_id = generation_id_of(provenance)
    npz_path = out.root / npz_name(recipe) if settings.format in ("npz", "both") else None
    check_writable(out.root)  # every process checks, so that all of them stop on bad input, none waits for the others
    check_capacity(out.root, targets, run.info.size, run.info.channels)
    check_foreign_files(out.root)  # before anything of ours lands there
    lock = FolderLock(out.root, "generate", wait)
    lock.check_free()  # every process checks before the main one takes it, so that a refused launch stops everywhere
    state.wait_for_everyone()
    with lock if state.is_main_process else contextlib.nullcontext():
        state.wait_for_everyone()  # the folder is ours before anyone checks what it holds
        check_compatible(out, provenance, generation_id)
        if state.is_main_process:
            remove_stale_temps(out.root)
            for target in targets:
                remove_stale_temps(images_root / target.folder)
            damaged = repair_damaged(images_root, targets, generation_id)
            if damaged:
                print(f"{out.root}: {damaged} damaged image(s) on disk will be drawn again", flush=True)
        state.wait_for_everyone()
        if settings.format == "npz" and npz_up_to_date(out, npz_path, generation_id, targets):
            if state.is_main_process:
                print(f"{npz_path}: up to date ({sum(t.count for t in targets)} images), nothing to do", flush=True)
            return out.root
        blocks = plan_blocks(images_root, targets, block)
        state.wait_for_everyone()  # every process planned from the same files before any is written

        manifest = new_manifest(run, targets, settings, provenance, generation_id, npz_path, device)
        if state.is_main_process and blocks:
            if settings.format != "npz":
                out.metadata.unlink(missing_ok=True)  # until the end, no metadata.csv rather than one that lies
            atomic_write_json(out.manifest, manifest)
        state.wait_for_everyone()

        by_class = {t.class_idx: t for t in targets}
        began = time.perf_counter()
        with state.split_between_processes(blocks) as mine:
            _sample_blocks(mine, by_class, run.dir, settings, images_root, provenance, generation_id, filters, sources, device,
                           show_progress and state.is_main_process, state)
        state.wait_for_everyone()
        wall = time.perf_counter() - began

        if state.is_main_process:
            table = collect_metadata(images_root, targets, generation_id, manifest["run"], provenance)
            if npz_path is not None:
                write_npz(npz_path, images_root, table["file_name"].tolist(), table["label"].to_numpy(), run.info.size, run.info.channels)
            if settings.format != "npz":
                atomic_write_text(out.metadata, table.to_csv(index=False))
            rejected = {str(t.class_idx): rejections(table[table["label"] == t.class_idx]) for t in targets}
            for c, entry in manifest["classes"].items():
                entry["kept"] = int((table["label"] == int(c)).sum())  # images written (= count)
                entry["dropped"] = sum(rejected[c].values())  # candidates rejected on the way, every filter
                entry["rejected"] = rejected[c]  # the same, per filter
            manifest.update(complete=True, extra_files_on_disk=extra_files(images_root, targets) if settings.format != "npz" else 0)
            atomic_write_json(out.manifest, manifest)
            if settings.format == "npz":
                shutil.rmtree(images_root, ignore_errors=True)
            drawn = sum(len(b.missing) for b in blocks)
            rate = f" in {wall:.0f} s, {drawn / wall:.2f} img/s" if drawn else ""
            print(f"{out.root}: {manifest['total']} images of {len(targets)} classes, {drawn} new{rate}", flush=True)
            if manifest["extra_files_on_disk"]:
                print(f"{out.root}: {manifest['extra_files_on_disk']} older image(s) on disk are not in this set's metadata.csv (other classes or a larger --per-class)", flush=True)
        state.wait_for_everyone()
        return out.root


def _sample_blocks(blocks: list, by_class: dict[int, ClassTarget], run: RunDir, settings: GenerateConfig, images_root: Path,
                   provenance: dict, generation_id: str, filters, sources: Sources | None, device: torch.device, show_progress: bool, state) -> None:
    """Sample this process's blocks and hand their missing images to the writer."""
    bar = tqdm(total=sum(len(b.missing) for b in blocks), desc=f"generate ({state.num_processes} process{'es' if state.num_processes > 1 else ''})",
               unit="img", disable=not show_progress, dynamic_ncols=True)
    writer = PngWriter()
    loaded: tuple[str | None, tuple | None] = (None, None)
    try:
        for block in blocks:
            target = by_class[block.class_idx]
            if loaded[0] != target.model_dir:
                loaded = (target.model_dir, load_model(run, target.model_dir, device))
            unet, train_scheduler = loaded[1]
            indices = list(range(block.start, block.start + block.size))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                found = sample_candidates(unet, train_scheduler, settings, target.class_idx, indices, filters, sources)
            items, failed = [], []
            for i in block.missing:
                k = i - block.start
                if not found.accepted[k]:
                    failed.append(i)
                    continue
                record = {"generation_id": generation_id, "class": target.class_idx, "index": i, "attempt": found.attempts[k],
                          "rejected_by": found.rejected_by[k], "seed": settings.seed, "sampler": settings.sampler, "steps": settings.steps,
                          "guidance_scale": settings.guidance_scale, "model_sha256": provenance["model_sha256"][target.model_dir]}
                if sources is not None:
                    record.update(source_index=sources.source(target.class_idx, i)[1], strength=round(found.strengths[k], 6))
                items.append((images_root / image_file(target, i), found.images[k], record))
            writer.submit(items)
            bar.update(len(items))
            if failed:
                reasons = sorted({r for i in failed for r in found.rejected_by[i - block.start]})
                raise UserError(
                    f"class {target.class_idx} ({target.name}), image {failed[0]}: all {MAX_ATTEMPTS} candidates rejected by {', '.join(reasons)}; "
                    "loosen the filter (the images written so far are kept)"
                )
    finally:
        bar.close()
        writer.close()
