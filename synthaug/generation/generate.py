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
from synthaug.storage.cards import write_dataset_card
from synthaug.storage.files import FolderLock, atomic_write_json, atomic_write_text, remove_stale_temps
from synthaug.reference.filters import CandidateFilter, confidence_filter, copy_filter, filter_name, filter_record
from synthaug.diffusion.unet import null_class
from synthaug.generation.plan import RealStarts, class_targets, load_sources, load_translations, resolve_settings
from synthaug.recipe.sections import GenerateConfig
from synthaug.recipe.recipe import Recipe
from synthaug.storage.rundir import Run, RunDir, SynthDir, open_run
from synthaug.core.runtime import on_cpu
from synthaug.diffusion.sampling import denoise, image_generator, sampling_scheduler, variation_start
from synthaug.storage.synthnpz import npz_name, npz_up_to_date, write_npz
from synthaug.storage.synthset import WORK_DIR, Block, ClassTarget, PngWriter, check_capacity, check_compatible, check_foreign_files, check_writable, collect_metadata, extra_files, generation_id_of, image_file, new_manifest, plan_blocks, provenance_of, rejections, repair_damaged

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
    strengths: list[float]  # variations, translations: the strength of each kept image (NaN for images drawn from noise)


def sample_candidates(
    unet: UNet2DModel,
    train_scheduler: DDPMScheduler,
    settings: GenerateConfig,
    class_idx: int,
    indices: list[int],
    filters: Sequence[CandidateFilter] = (),
    sources: RealStarts | None = None,
) -> Candidates:
    """Images `indices` of class `class_idx`, sampled together; every filter sees every candidate.

    A rejected image i is redrawn from the generator of (seed, class, i, attempt). The redraws of an
    attempt are the indices rejected at the previous one, so what is computed together is a function
    of the indices alone (never of which files already exist). With `sources`, each image starts from its real
    source image (`plan.Sources`: a variation, `plan.Translations`: a translation), drawn at its own strength.
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
            generators = [sources.generator(class_idx, indices[k], attempt) for k in todo]
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


FROM_NOISE = -1  # the "start" of an image at strength 1: drawn from noise, its source unused


def _vary(unet, train_scheduler, settings: GenerateConfig, class_idx: int, generators: list[torch.Generator], strengths: list[float],
          init: torch.Tensor) -> np.ndarray:
    """Images denoised as class `class_idx` from `init` (variations of it, or translations of another class's images),
    one per generator; images that start at the same sampler step share a batch.

    Which images share a model call depends on their strengths, a function of their keys alone, so the
    bytes of a variation still never depend on the batch size or on what is already on disk. Strength 1 (translations
    only) is drawn from noise, as images without a source are: noised to the first sampler timestep, the source would
    still show through by sqrt(alpha_bar) (0.03 at DDIM's first step of 1000), and such an image is labelled wholly
    its own class.
    """
    starts = np.array([FROM_NOISE if s >= 1 else variation_start(s, settings.steps) for s in strengths])
    out = np.empty((len(generators), *init.shape[2:], init.shape[1]), dtype=np.uint8)
    for start in sorted(set(starts.tolist())):
        group = np.flatnonzero(starts == start)
        scheduler = sampling_scheduler(train_scheduler, settings.sampler, settings.steps)
        labels = [class_idx] * len(group) if null_class(unet) is not None else None
        start_from = {} if start == FROM_NOISE else {"init": init[torch.as_tensor(group)], "start": start}
        out[group] = to_uint8(denoise(unet, scheduler, [generators[g] for g in group], labels, settings.guidance_scale, **start_from))
    return out


def load_model(run: RunDir, model_dir: str, device: torch.device) -> tuple[UNet2DModel, DDPMScheduler]:
    folder = run.model(model_dir)
    try:
        unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UserError(f"{folder}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return unet.to(device).eval(), scheduler


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    """What `generate` draws and how; the fields are the `synthaug generate` flags. Settings left None come from the
    run's recipe (`generate:`).

    Exactly one of `per_class` (N images per class), `ratio` (R times each class's real count), `balance` (True: up to the
    largest class; N: up to N images, real and synthetic together) and `per_real` (K variations of each real image). `from_real`: variations of the run's real training
    images (SDEdit) at `strength` (one value or [lo, hi]); `ratio` R is then R variations per real image on average.
    `translate`: head-to-tail translations of class_conditional runs (Diff-Mix): each image starts from a real image of a
    class with more real images (`translate_from` "larger") or of any other class ("other"), noised to `strength` (up to
    1) and denoised as its own class; metadata.csv labels it softly, s^`gamma` its class and 1 - s^gamma the source's.
    `candidate_filters` reject candidates (see `filters.CandidateFilter`), each redrawn from (seed, c, i, attempt);
    `reject_copies` adds the near-copy filter (`filters.copy_filter`), `filter_confidence` (a probability) the
    classifier-confidence filter (`filters.confidence_filter`). `wait`: queue behind another generate writing into the
    same folder instead of refusing.
    """

    per_class: int | None = None
    ratio: float | None = None
    balance: bool | int = False
    per_real: int | None = None
    out: str | Path | None = None  # default: the run's synthetic/ folder
    classes: Sequence[int | str] | None = None  # names, indices or digit strings; default every trained class
    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    format: str | None = None
    reject_copies: bool | None = None
    filter_confidence: float | None = None
    from_real: bool | None = None
    strength: Sequence[float] | None = None
    translate: bool | None = None
    translate_from: str | None = None
    gamma: float | None = None
    candidate_filters: Sequence[CandidateFilter] = ()
    show_progress: bool = True
    wait: bool = False


@dataclass
class Generation:
    """One generate call resolved: what to draw, with which filters, into which folder, under which generation id."""

    run: Run
    settings: GenerateConfig
    targets: list[ClassTarget]
    sources: RealStarts | None  # variations and translations: the real images they start from
    filters: list[CandidateFilter]
    out: SynthDir
    images_root: Path  # where the PNGs go: the folder itself, or its work folder while only an npz is wanted
    block_size: int
    provenance: dict
    generation_id: str
    npz_path: Path | None
    device: torch.device


def generate(run: Run | Recipe | RunDir | str | Path | None = None, options: GenerateOptions | None = None, **keywords) -> Path:
    """Write a labelled synthetic set from a run's models; returns the output folder.

    `run`: a `Run` (`rundir.open_run`), a Recipe, a run folder (default: `rundir.default_run`, the only finished run under runs/).
    `options`: a `GenerateOptions`, or its fields given as keywords (not both).
    Image i of class c depends on (seed, c, i) alone: the same call gives the same bytes whatever
    the batch size (on CPU), the number of processes, or interruptions; files already on disk are kept.
    Launch under `accelerate launch` to split the work across processes. One generate per output folder at a
    time: a second is refused naming the first's PID, or queues with `wait`.
    """
    if options is not None and keywords:
        raise TypeError(f"generate: give options or keywords, not both (got options and {', '.join(keywords)})")
    options = options if options is not None else GenerateOptions(**keywords)
    state = PartialState(cpu=on_cpu())
    job = resolve_generation(open_run(run), options, state)
    check_output_folder(job)
    with hold_folder(job.out.root, options.wait, state):
        prepare_folder(job, state)
        if npz_is_current(job, state):
            return job.out.root
        blocks = plan_blocks(job.images_root, job.targets, job.block_size)
        state.wait_for_everyone()  # every process planned from the same files before any is written
        manifest = start_manifest(job, blocks, state)
        wall_s = draw_blocks(job, blocks, options.show_progress and state.is_main_process, state)
        if state.is_main_process:
            finish_folder(job, blocks, manifest, wall_s)
        state.wait_for_everyone()
    return job.out.root


def checked_settings(run: Run, options: GenerateOptions) -> GenerateConfig:
    """The run's generate settings with the options applied, refused when they do not fit the run."""
    train_steps = run.recipe.diffusion.num_train_timesteps
    strength = list(options.strength) if options.strength is not None else None
    settings = resolve_settings(run.recipe.generate, train_steps, sampler=options.sampler, steps=options.steps, guidance_scale=options.guidance_scale,
                                batch_size=options.batch_size, seed=options.seed, format=options.format, reject_copies=options.reject_copies,
                                filter_confidence=options.filter_confidence, from_real=options.from_real, strength=strength,
                                translate=options.translate, translate_from=options.translate_from, gamma=options.gamma)
    if settings.guidance_scale != 1.0 and run.info.conditioning != "class_conditional":
        raise UserError(f"--guidance-scale: applies to class_conditional runs only; {run.root} has one model per class")
    if settings.translate and run.info.conditioning != "class_conditional":
        raise UserError(f"--translate: needs a class_conditional run (one model that denoises any class's image as the class asked "
                        f"for); {run.root} has one model per class")
    for flag, given in (("--translate-from", options.translate_from), ("--gamma", options.gamma)):
        if given is not None and not settings.translate:
            raise UserError(f"{flag}: a setting of translations; add --translate")
    if options.per_real is not None and not settings.from_real:
        raise UserError("--per-real: counts variations of real images; add --from-real (or use --per-class/--ratio)")
    if settings.steps > train_steps:
        raise UserError(f"--steps: at most the run's diffusion.num_train_timesteps ({train_steps}), got {settings.steps}")
    return settings


def resolve_generation(run: Run, options: GenerateOptions, state: PartialState) -> Generation:
    """Everything drawn and written follows from this: settings, per-class targets, variation sources, filters, the
    output folder and the provenance whose hash is the generation id. Every process resolves the same."""
    device = state.device
    settings = checked_settings(run, options)
    targets = class_targets(run, options.per_class, options.ratio, options.balance, options.classes, options.per_real)
    if settings.translate:
        sources = load_translations(run, settings, targets)
    else:
        sources = load_sources(run, settings) if settings.from_real else None
    out = SynthDir(Path(options.out) if options.out is not None else run.dir.synthetic)
    images_root = out.root / WORK_DIR if settings.format == "npz" else out.root
    block_size = BLOCK_SIZE if device.type == "cpu" else BLOCK_SIZE * math.ceil(settings.batch_size / BLOCK_SIZE)
    filters = candidate_filters_of(run, settings, options, state)
    provenance = provenance_of(run.dir, targets, settings, block_size, device, [filter_record(f) for f in filters])
    if sources is not None:  # images drawn from noise keep the provenance (and generation ids) they always had
        provenance.update(mode="translate" if settings.translate else "from_real", strength=list(sources.strength), sources_sha256=sources.digest())
    if settings.translate:  # gamma decides the labels, not the pixels: still another set
        provenance.update(translate_from=settings.translate_from, gamma=settings.gamma)
    npz_path = out.root / npz_name(run.recipe) if settings.format in ("npz", "both") else None
    return Generation(run, settings, targets, sources, filters, out, images_root, block_size, provenance, generation_id_of(provenance),
                      npz_path, device)


def candidate_filters_of(run: Run, settings: GenerateConfig, options: GenerateOptions, state: PartialState) -> list[CandidateFilter]:
    """The caller's candidate filters, then the near-copy and the classifier-confidence filters the settings ask for."""
    filters = list(options.candidate_filters)
    if settings.reject_copies:
        filters.append(copy_filter(run, state.device))
    if settings.filter_confidence is not None:
        with state.main_process_first():  # the first build trains and caches the classifier; the others load it
            filters.append(confidence_filter(run, settings.filter_confidence, state.device, options.show_progress and state.is_main_process))
    return filters


def check_output_folder(job: Generation) -> None:
    """Refuse a folder that cannot take the set: unwritable, too small, or holding files generate did not make.
    Every process checks, so that all of them stop on bad input and none waits for the others."""
    check_writable(job.out.root)
    check_capacity(job.out.root, job.targets, job.run.info.size, job.run.info.channels)
    check_foreign_files(job.out.root)  # before anything of ours lands there


@contextlib.contextmanager
def hold_folder(root: Path, wait: bool, state: PartialState):
    """The output folder's lock, held by the main process while every process works in the folder."""
    lock = FolderLock(root, "generate", wait)
    lock.check_free()  # every process checks before the main one takes it, so that a refused launch stops everywhere
    state.wait_for_everyone()
    with lock if state.is_main_process else contextlib.nullcontext():
        state.wait_for_everyone()  # the folder is ours before anyone checks what it holds
        yield


def prepare_folder(job: Generation, state: PartialState) -> None:
    """Refuse a folder drawn with other settings; clear what an interrupted run left (half-written files, damaged images)."""
    check_compatible(job.out, job.provenance, job.generation_id)
    if state.is_main_process:
        remove_stale_temps(job.out.root)
        for target in job.targets:
            remove_stale_temps(job.images_root / target.folder)
        damaged = repair_damaged(job.images_root, job.targets, job.generation_id)
        if damaged:
            print(f"{job.out.root}: {damaged} damaged image(s) on disk will be drawn again", flush=True)
    state.wait_for_everyone()


def npz_is_current(job: Generation, state: PartialState) -> bool:
    """Whether an npz-only set is already written with this generation id, so nothing is left to do."""
    if job.settings.format != "npz" or not npz_up_to_date(job.out, job.npz_path, job.generation_id, job.targets):
        return False
    if state.is_main_process:
        print(f"{job.npz_path}: up to date ({sum(t.count for t in job.targets)} images), nothing to do", flush=True)
    return True


def start_manifest(job: Generation, blocks: list[Block], state: PartialState) -> dict:
    """The manifest of the set, written unfinished (and metadata.csv removed) before any image is drawn."""
    manifest = new_manifest(job.run, job.targets, job.settings, job.provenance, job.generation_id, job.npz_path, job.device)
    if state.is_main_process and blocks:
        if job.settings.format != "npz":
            job.out.metadata.unlink(missing_ok=True)  # until the end, no metadata.csv rather than one that lies
        atomic_write_json(job.out.manifest, manifest)
    state.wait_for_everyone()
    return manifest


def draw_blocks(job: Generation, blocks: list[Block], show_progress: bool, state: PartialState) -> float:
    """Draw the missing images of the blocks, split between the processes; returns the wall time in seconds."""
    began = time.perf_counter()
    with state.split_between_processes(blocks) as mine:
        _sample_blocks(mine, job, show_progress, state)
    state.wait_for_everyone()
    return time.perf_counter() - began


def finish_folder(job: Generation, blocks: list[Block], manifest: dict, wall_s: float) -> None:
    """Main process, once every image is on disk: metadata.csv and/or the npz, then the manifest marked complete."""
    out, images_root, targets = job.out, job.images_root, job.targets
    table = collect_metadata(images_root, targets, job.generation_id, manifest["run"], job.provenance, len(job.run.info.class_names))
    if job.npz_path is not None:
        write_npz(job.npz_path, images_root, table["file_name"].tolist(), table["label"].to_numpy(), job.run.info.size, job.run.info.channels)
    if job.settings.format != "npz":
        atomic_write_text(out.metadata, table.to_csv(index=False))
    rejected = {str(t.class_idx): rejections(table[table["label"] == t.class_idx]) for t in targets}
    for c, entry in manifest["classes"].items():
        entry["kept"] = int((table["label"] == int(c)).sum())  # images written (= count)
        entry["dropped"] = sum(rejected[c].values())  # candidates rejected on the way, every filter
        entry["rejected"] = rejected[c]  # the same, per filter
    manifest.update(complete=True, extra_files_on_disk=extra_files(images_root, targets) if job.settings.format != "npz" else 0)
    atomic_write_json(out.manifest, manifest)
    write_dataset_card(out.root)  # README.md for sharing, from the finished manifest (and audit.json, if any)
    if job.settings.format == "npz":
        shutil.rmtree(images_root, ignore_errors=True)
    drawn = sum(len(b.missing) for b in blocks)
    rate = f" in {wall_s:.0f} s, {drawn / wall_s:.2f} img/s" if drawn else ""
    print(f"{out.root}: {manifest['total']} images of {len(targets)} classes, {drawn} new{rate}", flush=True)
    if manifest["extra_files_on_disk"]:
        print(f"{out.root}: {manifest['extra_files_on_disk']} older image(s) on disk are not in this set's metadata.csv (other classes or a larger --per-class)", flush=True)


def _sample_blocks(blocks: list[Block], job: Generation, show_progress: bool, state: PartialState) -> None:
    """Sample this process's blocks and hand their missing images to the writer."""
    bar = tqdm(total=sum(len(b.missing) for b in blocks), desc=f"generate ({state.num_processes} process{'es' if state.num_processes > 1 else ''})",
               unit="img", disable=not show_progress, dynamic_ncols=True)
    writer = PngWriter()
    by_class = {t.class_idx: t for t in job.targets}
    settings, sources, device = job.settings, job.sources, job.device
    loaded: tuple[str | None, tuple | None] = (None, None)
    try:
        for block in blocks:
            target = by_class[block.class_idx]
            if loaded[0] != target.model_dir:
                loaded = (target.model_dir, load_model(job.run.dir, target.model_dir, device))
            unet, train_scheduler = loaded[1]
            indices = list(range(block.start, block.start + block.size))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                found = sample_candidates(unet, train_scheduler, settings, target.class_idx, indices, job.filters, sources)
            items, failed = [], []
            for i in block.missing:
                k = i - block.start
                if not found.accepted[k]:
                    failed.append(i)
                    continue
                record = {"generation_id": job.generation_id, "class": target.class_idx, "index": i, "attempt": found.attempts[k],
                          "rejected_by": found.rejected_by[k], "seed": settings.seed, "sampler": settings.sampler, "steps": settings.steps,
                          "guidance_scale": settings.guidance_scale, "model_sha256": job.provenance["model_sha256"][target.model_dir]}
                if sources is not None:
                    record.update(sources.record(target.class_idx, i), strength=round(found.strengths[k], 6))
                items.append((job.images_root / image_file(target, i), found.images[k], record))
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
