"""Sampling: turn trained UNets into images, and `generate`, the labelled synthetic set on disk.

`denoise` is the one sampling loop (used for training-time grids and by `generate`). Every image
carries its own torch.Generator, so the noise of image i of class c depends on its seed alone. The
arithmetic must not depend on the batch either: `generate` evaluates the UNet on fixed blocks of
consecutive indices (see BLOCK_SIZE), so which other images share a model call never varies.

    <out>/<safe class name>/<class_idx>_<i:06d>.png   8-bit PNG; its text chunk "synthaug" holds its provenance
    <out>/metadata.csv      file_name,label,class_name, then provenance (imagefolder layout); written last
    <out>/manifest.json     resolved recipe, provenance, counts (kept, dropped, rejected per filter), package versions
    <out>/synthetic_<flag>.npz   --format npz|both: MedMNIST layout (train_images, train_labels)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from pydantic import ValidationError
from tqdm.auto import tqdm

from synthaug.data import to_uint8
from synthaug.errors import UserError
from synthaug.models import null_class
from synthaug.recipe import GenerateConfig, Recipe, load_recipe
from synthaug.rundir import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, package_versions, remove_stale_temps, safe_name

SAMPLERS = ("dpm-solver++", "ddim", "ddpm")
DEFAULT_STEPS = {"dpm-solver++": 20, "ddim": 50, "ddpm": None}  # None: every training timestep


def sampling_scheduler(train_scheduler: DDPMScheduler, sampler: str, steps: int | None):
    """The inference scheduler for `sampler`, configured from the training scheduler, with its timesteps set."""
    config = train_scheduler.config
    if sampler == "dpm-solver++":
        # Without thresholding DPM-Solver++ diverges to saturated noise on small pixel-space models (FINDINGS.md).
        scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", thresholding=True)
    elif sampler == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    elif sampler == "ddpm":
        scheduler = DDPMScheduler.from_config(config)
    else:
        raise ValueError(f"sampler must be one of {SAMPLERS}")
    steps = steps or DEFAULT_STEPS[sampler] or config.num_train_timesteps
    scheduler.set_timesteps(steps)
    return scheduler


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from a tuple of integers (negative ones allowed), well mixed."""
    entropy = [k % 2**64 for k in key]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state % 2**63))


def image_generator(seed: int, class_idx: int, index: int, attempt: int = 0) -> torch.Generator:
    """The generator of image `index` of class `class_idx`: seeded from (seed, class, index) alone.

    `attempt` > 0: the redraw of a candidate that a filter rejected `attempt` times.
    """
    return seeded_generator(seed, class_idx, index) if attempt == 0 else seeded_generator(seed, class_idx, index, attempt)


@torch.inference_mode()
def denoise(
    unet: UNet2DModel,
    scheduler,
    generators: list[torch.Generator],
    labels: list[int] | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """Sample one image per generator; returns float (N, C, H, W) in [-1, 1] on the UNet's device.

    `labels` are needed for class-conditional UNets; `guidance_scale` != 1 applies classifier-free
    guidance against the UNet's null class.
    """
    device, dtype = unet.device, unet.dtype
    size, channels = unet.config.sample_size, unet.config.in_channels
    shape = (len(generators), channels, size, size)
    sample = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    sample = sample * scheduler.init_noise_sigma
    class_labels = None
    guided = False
    if null_class(unet) is not None:
        if labels is None:
            raise ValueError("a class-conditional UNet needs labels")
        class_labels = torch.tensor(labels, device=device)
        guided = guidance_scale != 1.0
        if guided:
            class_labels = torch.cat([class_labels, torch.full_like(class_labels, null_class(unet))])
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(sample, t)
        if guided:
            cond, uncond = unet(torch.cat([model_in, model_in]), t, class_labels=class_labels).sample.chunk(2)
            model_out = uncond + guidance_scale * (cond - uncond)
        else:
            model_out = unet(model_in, t, class_labels=class_labels).sample
        step_kwargs = {"generator": generators} if isinstance(scheduler, DDPMScheduler) else {}
        sample = scheduler.step(model_out, t, sample, **step_kwargs).prev_sample
    return sample.clamp(-1, 1)


def image_grid(images: np.ndarray, columns: int | None = None) -> Image.Image:
    """uint8 (N, H, W, C) -> one PIL image with the images tiled in rows."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = img
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_sample_grid(
    unet: UNet2DModel, train_scheduler: DDPMScheduler, path: Path, labels: list[int] | None, n: int, seed: int
) -> None:
    """A grid of `n` images (DPM-Solver++, 20 steps) written atomically to `path`."""
    scheduler = sampling_scheduler(train_scheduler, "dpm-solver++", 20)
    generators = [image_generator(seed, -1, i) for i in range(n)]
    grid_labels = None if labels is None else [labels[i % len(labels)] for i in range(n)]
    images = to_uint8(denoise(unet, scheduler, generators, grid_labels))
    atomic_write_bytes(path, png_bytes(image_grid(images)))


# ---------------------------------------------------------------------------------------------
# `synthaug generate`: the labelled synthetic set on disk

# On CPU the UNet always sees blocks of BLOCK_SIZE consecutive indices of one class, whatever
# --batch-size: matrix kernels pick their reduction order by batch shape (a row computed in a batch
# of 1, 5 or 64 differs by ~1e-6, which flips pixels after a few sampler steps), so a fixed block is
# what makes image i a function of (seed, class, i) alone. Measured: 16 is within ~6% of the
# per-core throughput of batch 64-128 on the quickstart UNet.
BLOCK_SIZE = 16
MAX_ATTEMPTS = 20  # candidates drawn for one image before a filter is declared too strict
WORK_DIR = ".work"  # --format npz: the PNGs live here while generating, and go once the npz is written
METADATA_COLUMNS = [
    "file_name", "label", "class_name", "index", "attempt", "rejected_by",
    "seed", "sampler", "steps", "guidance_scale", "model_dir", "model_sha256", "run",
]
PNG_KEY = "synthaug"  # PNG text chunk holding each image's provenance (JSON)


class CandidateFilter(Protocol):
    """Decides which candidate images to keep: `keep = f(images, class_idx)`.

    `images` is uint8 (N, H, W, C), all of class `class_idx`; the result is a bool array (N,). The
    decision about one image must depend on that image alone (not on the rest of the batch), so
    that generation stays deterministic. `describe()` returns what the manifest records about the
    filter (its rule and parameters).
    """

    def __call__(self, images: np.ndarray, class_idx: int) -> np.ndarray: ...

    def describe(self) -> dict: ...


def filter_name(candidate_filter) -> str:
    """The name a filter is recorded under: its `name` attribute, else its class or function name."""
    return str(getattr(candidate_filter, "name", None) or getattr(candidate_filter, "__name__", None) or type(candidate_filter).__name__)


def _filter_record(candidate_filter) -> dict:
    describe = getattr(candidate_filter, "describe", None)
    return {"name": filter_name(candidate_filter), **(describe() if callable(describe) else {})}


@dataclass
class Candidates:
    """The accepted image of each requested index, and what was rejected on the way."""

    images: np.ndarray  # uint8 (N, H, W, C)
    attempts: list[int]  # candidates rejected before the kept one
    rejected_by: list[list[str]]  # per rejected candidate, the name of the filter that rejected it
    accepted: np.ndarray  # bool (N,): False where MAX_ATTEMPTS candidates were all rejected


def sample_candidates(
    unet: UNet2DModel,
    train_scheduler: DDPMScheduler,
    settings: GenerateConfig,
    class_idx: int,
    indices: list[int],
    filters: Sequence[CandidateFilter] = (),
) -> Candidates:
    """Images `indices` of class `class_idx`, sampled together; every filter sees every candidate.

    A rejected image i is redrawn from the generator of (seed, class, i, attempt). The redraws of an
    attempt are the indices rejected at the previous one, so what is computed together is a function
    of the indices alone (never of which files already exist).
    """
    conditional = null_class(unet) is not None
    n = len(indices)
    images: np.ndarray | None = None
    rejected_by: list[list[str]] = [[] for _ in range(n)]
    todo = list(range(n))
    for attempt in range(MAX_ATTEMPTS):
        generators = [image_generator(settings.seed, class_idx, indices[k], attempt) for k in todo]
        scheduler = sampling_scheduler(train_scheduler, settings.sampler, settings.steps)
        labels = [class_idx] * len(todo) if conditional else None
        drawn = to_uint8(denoise(unet, scheduler, generators, labels, settings.guidance_scale))
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
    return Candidates(images, [len(r) for r in rejected_by], rejected_by, accepted)


@dataclass(frozen=True)
class ClassTarget:
    """What generate writes for one class."""

    class_idx: int
    name: str
    folder: str  # safe_name(name): the sub-folder of the output
    count: int  # images wanted
    model_dir: str


@dataclass(frozen=True)
class Block:
    """One model call's worth of work: `size` consecutive indices from `start`, of which `missing` need writing."""

    class_idx: int
    start: int
    size: int
    missing: tuple[int, ...]


def image_file(target: ClassTarget, index: int) -> str:
    """The path of image `index` of a class, relative to the output folder (forward slashes)."""
    return f"{target.folder}/{target.class_idx}_{index:06d}.png"


def latest_run(root: Path = Path("runs")) -> RunDir:
    """The run under `root` whose classes.json was written last."""
    runs = sorted((p.parent for p in root.glob("*/classes.json")), key=lambda p: (p / "classes.json").stat().st_mtime)
    if not runs:
        raise UserError(f"--run: no run under {root}/ (train one with `synthaug fit RECIPE`, or give --run DIR)")
    return RunDir(runs[-1])


def _open_run(run) -> tuple[RunDir, Recipe]:
    """A run given as a Recipe, a RunDir or a folder (default: the most recent run under runs/)."""
    if isinstance(run, Recipe):
        run_dir = RunDir(run.run_dir)
        run_dir.read_classes()
        return run_dir, run
    run_dir = run if isinstance(run, RunDir) else latest_run() if run is None else RunDir(Path(run))
    if not run_dir.root.is_dir():
        raise UserError(f"--run {run_dir.root}: no such directory")
    run_dir.read_classes()
    return run_dir, load_recipe(run_dir.recipe)


def resolve_settings(defaults: GenerateConfig, **flags) -> GenerateConfig:
    """The recipe's generate section with the given flags (None: not given) applied; `steps` resolved to a number.

    Steps in the recipe belong to the recipe's sampler: another sampler without --steps gets its own default.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    merged = defaults.model_dump()
    if "sampler" in given and given["sampler"] != defaults.sampler and "steps" not in given:
        merged["steps"] = None
    merged.update(given)
    try:
        settings = GenerateConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        raise UserError(f"{flag}: {err['msg']} (got {err.get('input')!r})") from None
    return settings


def _pick_classes(requested, info: dict) -> list[int]:
    names, trained = info["class_names"], [int(c) for c in info["classes"]]
    if requested is None:
        return trained
    chosen = []
    for item in requested:
        if isinstance(item, str) and item in names:
            c = names.index(item)
        elif isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            c = int(item)
        else:
            c = None
        if c not in trained:
            valid = ", ".join(f"{t} ({names[t]})" for t in trained)
            raise UserError(f"--classes: the run has no trained class {item!r}; expected one of {valid}")
        chosen.append(c)
    return sorted(set(chosen))


def class_targets(run: RunDir, info: dict, per_class: int | None, ratio: float | None, balance: bool, classes=None) -> list[ClassTarget]:
    """How many images each class gets: N each (--per-class), R times its real count (--ratio), or up to the largest class (--balance)."""
    if sum(x is not None and x is not False for x in (per_class, ratio, balance)) != 1:
        raise UserError("--per-class/--ratio/--balance: give exactly one (N images per class, R times each class's real count, or top up to the largest class)")
    if per_class is not None and (isinstance(per_class, bool) or int(per_class) != per_class or per_class < 0):
        raise UserError(f"--per-class: expected a whole number >= 0, got {per_class!r}")
    if ratio is not None and not ratio >= 0:
        raise UserError(f"--ratio: expected a number >= 0, got {ratio!r}")
    chosen = _pick_classes(classes, info)
    unfinished = [c for c in chosen if not run.is_finished(info["models"][str(c)])]
    if len(unfinished) == len(chosen):
        raise UserError(f"--run {run.root}: no finished model for the chosen classes; finish `synthaug fit` on it first")
    if unfinished and classes is not None:
        raise UserError(f"--classes: class(es) {unfinished} of {run.root} have no finished model yet; finish `synthaug fit` first")
    if unfinished:
        warnings.warn(f"{run.root}: no finished model for class(es) {unfinished} yet; generating the others")
    counts = {int(c): int(n) for c, n in info["counts"].items()}
    largest = max(counts.values())
    targets = []
    for c in chosen:
        if c in unfinished:
            continue
        if per_class is not None:
            n = int(per_class)
        elif ratio is not None:
            n = int(math.floor(ratio * counts[c] + 0.5))
        else:
            n = largest - counts[c]
        name = info["class_names"][c]
        targets.append(ClassTarget(c, name, safe_name(name), n, info["models"][str(c)]))
    return targets


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", suffix=".tmp")
        probe.close()
    except OSError as exc:
        raise UserError(f"--out {out}: not a writable directory ({exc.strerror or type(exc).__name__})") from None


def load_model(run: RunDir, model_dir: str, device: torch.device) -> tuple[UNet2DModel, DDPMScheduler]:
    folder = run.model(model_dir)
    try:
        unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UserError(f"{folder}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return unet.to(device).eval(), scheduler


def _model_sha256(run: RunDir, model_dir: str) -> str:
    weights = sorted((run.model(model_dir) / "unet").glob("*.safetensors"))
    if not weights:
        raise UserError(f"{run.model(model_dir)}/unet: no safetensors weights")
    return hashlib.sha256(weights[0].read_bytes()).hexdigest()  # a model's weights fit in memory anyway


def _provenance(run: RunDir, targets: list[ClassTarget], settings: GenerateConfig, block: int, device: torch.device, filters) -> dict:
    """Everything that decides the pixels; images made under different provenance never share a folder."""
    models = sorted({t.model_dir for t in targets})
    return {
        "seed": settings.seed,
        "sampler": settings.sampler,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "block_size": block,
        "device": device.type,
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "model_sha256": {m: _model_sha256(run, m) for m in models},
        "filters": [_filter_record(f) for f in filters],
    }


def _generation_id(provenance: dict) -> str:
    return hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]


def _encode_png(image: np.ndarray, record: dict) -> bytes:
    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps(record, sort_keys=True))
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_provenance(path: Path) -> dict:
    """The provenance record `generate` stored in a PNG's text chunk."""
    try:
        with Image.open(path) as img:
            return json.loads(img.info[PNG_KEY])
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (UnidentifiedImageError, OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: not an image written by synthaug generate ({type(exc).__name__}); delete it and rerun") from None


def _plan(images_root: Path, targets: list[ClassTarget], block: int) -> list[Block]:
    """Blocks holding at least one image that is not on disk yet, in class-then-index order."""
    blocks = []
    for target in targets:
        folder = images_root / target.folder
        present = {p.name for p in folder.glob(f"{target.class_idx}_*.png")} if folder.is_dir() else set()
        missing = [i for i in range(target.count) if image_file(target, i).split("/")[1] not in present]
        for start in sorted({i // block * block for i in missing}):
            blocks.append(Block(target.class_idx, start, block, tuple(i for i in missing if start <= i < start + block)))
    return blocks


def _npz_name(recipe: Recipe) -> str:
    """Never a name medmnist would take for its own file: `synthetic_<flag>[_<size>].npz`."""
    if recipe.data.medmnist:
        return f"synthetic_{recipe.data.medmnist}{'' if recipe.data.size == 28 else f'_{recipe.data.size}'}.npz"
    return f"synthetic_{recipe.name}.npz"


def _write_npz(path: Path, images_root: Path, files: list[str], labels: np.ndarray, size: int, channels: int) -> None:
    """A MedMNIST-layout npz (train_images, train_labels), filled through a memory map so memory stays flat."""
    shape = (len(files), size, size) if channels == 1 else (len(files), size, size, channels)
    scratch = path.with_name(f".{path.name}.images.tmp")
    tmp = path.with_name(f".{path.name}.tmp")
    images = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
    try:
        for k, name in enumerate(files):
            with Image.open(images_root / name) as img:
                pixels = np.asarray(img)
            images[k] = pixels
        label_dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.int64
        arrays = {"train_images": images, "train_labels": labels.astype(label_dtype).reshape(-1, 1)}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, array in arrays.items():
                entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same bytes every run
                entry.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(entry, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
        del images
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)


def _collect(images_root: Path, targets: list[ClassTarget], generation_id: str, run_path: str, provenance: dict) -> pd.DataFrame:
    """metadata.csv, rebuilt from the files on disk and the provenance stored in each of them."""
    rows = []
    for target in targets:
        for i in range(target.count):
            name = image_file(target, i)
            record = read_provenance(images_root / name)
            if record.get("generation_id") != generation_id:
                raise UserError(f"{images_root / name}: made by a different generate command (other seed, sampler, steps, model or filters); use another --out or delete that folder")
            rows.append({
                "file_name": name,
                "label": target.class_idx,
                "class_name": target.name,
                "index": i,
                "attempt": record["attempt"],
                "rejected_by": ";".join(record["rejected_by"]),
                "seed": provenance["seed"],
                "sampler": provenance["sampler"],
                "steps": provenance["steps"],
                "guidance_scale": provenance["guidance_scale"],
                "model_dir": target.model_dir,
                "model_sha256": provenance["model_sha256"][target.model_dir],
                "run": run_path,
            })
    return pd.DataFrame(rows, columns=METADATA_COLUMNS)


def _extra_files(images_root: Path, targets: list[ClassTarget]) -> int:
    """Images on disk from earlier commands (other classes or a larger --per-class) that this set does not list."""
    wanted = {image_file(t, i) for t in targets for i in range(t.count)}
    return sum(1 for p in images_root.glob("*/*.png") if f"{p.parent.name}/{p.name}" not in wanted)


def _check_compatible(manifest_path: Path, provenance: dict, generation_id: str) -> None:
    """Refuse to add images to a folder whose images were made under other provenance."""
    try:
        previous = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return  # no manifest (or a foreign one): the per-file check at the end still guards the set
    if previous.get("generation_id") in (None, generation_id):
        return
    before = previous.get("provenance", {})
    changed = [f"{key} {before.get(key)!r} -> {value!r}" for key, value in provenance.items() if before.get(key) != value]
    raise UserError(f"--out {manifest_path.parent}: holds images made with other settings ({'; '.join(changed)}); use another --out or delete it")


class _Writer:
    """Encodes and writes PNGs on a small thread pool while the model samples; a bounded queue keeps memory flat."""

    def __init__(self, workers: int = 2, max_pending: int = 8):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synthaug-png")
        self.pending: deque = deque()
        self.max_pending = max_pending

    def submit(self, items: list[tuple[Path, np.ndarray, dict]]) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._write, items))

    @staticmethod
    def _write(items) -> None:
        for path, image, record in items:
            atomic_write_bytes(path, _encode_png(image, record))

    def close(self) -> None:
        """Wait for every queued write (finished images are never thrown away), then raise the first failure."""
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)


def generate(
    run: str | Path | RunDir | Recipe | None = None,
    *,
    per_class: int | None = None,
    ratio: float | None = None,
    balance: bool = False,
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
    candidate_filters: Sequence[CandidateFilter] = (),
    show_progress: bool = True,
) -> Path:
    """Write a labelled synthetic set from a run's models; returns the output folder.

    `run`: a run folder, RunDir or Recipe (default: the most recent run under runs/). Exactly one of
    `per_class`, `ratio`, `balance`. Settings left None come from the run's recipe (`generate:`).
    Image i of class c depends on (seed, c, i) alone: the same call gives the same bytes whatever
    the batch size (on CPU), the number of processes, or interruptions; files already on disk are
    kept. `candidate_filters` reject candidates (see `CandidateFilter`); a rejected image is redrawn
    from (seed, c, i, attempt); `reject_copies` adds the audit's near-copy filter
    (`synthaug.audit.copy_filter`), `filter_confidence` (a probability) its classifier-confidence filter
    (`synthaug.audit.confidence_filter`). Launch under `accelerate launch` to split the work across processes.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    device = state.device
    run_dir, recipe = _open_run(run)
    info = run_dir.read_classes()
    settings = resolve_settings(recipe.generate, sampler=sampler, steps=steps, guidance_scale=guidance_scale, batch_size=batch_size, seed=seed, format=format, reject_copies=reject_copies,
                                filter_confidence=filter_confidence)
    if settings.guidance_scale != 1.0 and info["conditioning"] != "class_conditional":
        raise UserError(f"--guidance-scale: applies to class_conditional runs only; {run_dir.root} has one model per class")
    targets = class_targets(run_dir, info, per_class, ratio, balance, classes)
    out = Path(out) if out is not None else run_dir.synthetic
    images_root = out / WORK_DIR if settings.format == "npz" else out
    block = BLOCK_SIZE if device.type == "cpu" else BLOCK_SIZE * math.ceil(settings.batch_size / BLOCK_SIZE)
    train_steps = recipe.diffusion.num_train_timesteps
    settings = settings.model_copy(update={"steps": settings.steps or DEFAULT_STEPS[settings.sampler] or train_steps})
    if settings.steps > train_steps:
        raise UserError(f"--steps: at most the run's diffusion.num_train_timesteps ({train_steps}), got {settings.steps}")
    filters = list(candidate_filters)
    if settings.reject_copies:
        from synthaug.audit import copy_filter

        filters.append(copy_filter(run_dir.root, recipe, device))
    if settings.filter_confidence is not None:
        from synthaug.audit import confidence_filter

        with state.main_process_first():  # the first build trains and caches the classifier; the others load it
            filters.append(confidence_filter(run_dir.root, settings.filter_confidence, recipe, device, show_progress and state.is_main_process))
    provenance = _provenance(run_dir, targets, settings, block, device, filters)
    generation_id = _generation_id(provenance)
    manifest_path, metadata_path = out / "manifest.json", out / "metadata.csv"
    npz_path = out / _npz_name(recipe) if settings.format in ("npz", "both") else None
    _check_writable(out)  # every process checks, so that all of them stop on bad input, none waits for the others
    _check_compatible(manifest_path, provenance, generation_id)
    if state.is_main_process:
        remove_stale_temps(out)
        for target in targets:
            remove_stale_temps(images_root / target.folder)
    state.wait_for_everyone()
    if settings.format == "npz" and _npz_up_to_date(manifest_path, npz_path, generation_id, targets):
        if state.is_main_process:
            print(f"{npz_path}: up to date ({sum(t.count for t in targets)} images), nothing to do", flush=True)
        return out
    blocks = _plan(images_root, targets, block)
    state.wait_for_everyone()  # every process planned from the same files before any is written

    run_path = str(run_dir.root.resolve())
    manifest = {
        "complete": False,
        "generation_id": generation_id,
        "provenance": provenance,
        "run": run_path,
        "format": settings.format,
        "class_names": list(info["class_names"]),
        "classes": {
            str(t.class_idx): {"name": t.name, "folder": t.folder, "count": t.count, "real_count": int(info["counts"][str(t.class_idx)]), "model_dir": t.model_dir}
            for t in targets
        },
        "total": sum(t.count for t in targets),
        "npz": npz_path.name if npz_path else None,
        "recipe": {**recipe.model_dump(mode="json"), "generate": settings.model_dump(mode="json")},
        "versions": package_versions(),
        "determinism": DETERMINISM_NOTE[device.type],
    }
    if state.is_main_process and blocks:
        if settings.format != "npz":
            metadata_path.unlink(missing_ok=True)  # until the end, no metadata.csv rather than one that lies
        atomic_write_json(manifest_path, manifest)
    state.wait_for_everyone()

    by_class = {t.class_idx: t for t in targets}
    began = time.perf_counter()
    with state.split_between_processes(blocks) as mine:
        _sample_blocks(mine, by_class, run_dir, settings, images_root, provenance, generation_id, filters, device, show_progress and state.is_main_process, state)
    state.wait_for_everyone()
    wall = time.perf_counter() - began

    if state.is_main_process:
        table = _collect(images_root, targets, generation_id, run_path, provenance)
        if npz_path is not None:
            _write_npz(npz_path, images_root, table["file_name"].tolist(), table["label"].to_numpy(), int(info["size"]), int(info["channels"]))
        if settings.format != "npz":
            atomic_write_text(metadata_path, table.to_csv(index=False))
        rejected = {str(t.class_idx): _rejections(table[table["label"] == t.class_idx]) for t in targets}
        for c, entry in manifest["classes"].items():
            entry["kept"] = int((table["label"] == int(c)).sum())  # images written (= count)
            entry["dropped"] = sum(rejected[c].values())  # candidates rejected on the way, every filter
            entry["rejected"] = rejected[c]  # the same, per filter
        manifest.update(complete=True, extra_files_on_disk=_extra_files(images_root, targets) if settings.format != "npz" else 0)
        atomic_write_json(manifest_path, manifest)
        if settings.format == "npz":
            shutil.rmtree(images_root, ignore_errors=True)
        drawn = sum(len(b.missing) for b in blocks)
        rate = f" in {wall:.0f} s, {drawn / wall:.2f} img/s" if drawn else ""
        print(f"{out}: {manifest['total']} images of {len(targets)} classes, {drawn} new{rate}", flush=True)
        if manifest["extra_files_on_disk"]:
            print(f"{out}: {manifest['extra_files_on_disk']} older image(s) on disk are not in this set's metadata.csv (other classes or a larger --per-class)", flush=True)
    state.wait_for_everyone()
    return out


DETERMINISM_NOTE = {
    "cpu": "float32 on CPU in fixed blocks of 16 indices: same bytes for the same command on the same machine and software, whatever --batch-size, processes or interruptions",
    "cuda": "bf16 autocast on GPU in blocks of --batch-size (rounded up to 16): same bytes only with the same --batch-size, GPU model and software",
}


def _rejections(rows: pd.DataFrame) -> dict:
    """Rejected candidates of one class, per filter."""
    counts: dict[str, int] = {}
    for entry in rows["rejected_by"]:
        for name in filter(None, str(entry).split(";")) if isinstance(entry, str) else ():
            counts[name] = counts.get(name, 0) + 1
    return counts


def _npz_up_to_date(manifest_path: Path, npz_path: Path, generation_id: str, targets: list[ClassTarget]) -> bool:
    try:
        previous = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    counts = {str(t.class_idx): t.count for t in targets}
    return bool(
        previous.get("complete") and previous.get("generation_id") == generation_id and npz_path.is_file()
        and {c: e.get("count") for c, e in previous.get("classes", {}).items()} == counts
    )


def _sample_blocks(blocks: list[Block], by_class: dict[int, ClassTarget], run: RunDir, settings: GenerateConfig, images_root: Path,
                   provenance: dict, generation_id: str, filters, device: torch.device, show_progress: bool, state) -> None:
    """Sample this process's blocks and hand their missing images to the writer."""
    bar = tqdm(total=sum(len(b.missing) for b in blocks), desc=f"generate ({state.num_processes} process{'es' if state.num_processes > 1 else ''})",
               unit="img", disable=not show_progress, dynamic_ncols=True)
    writer = _Writer()
    loaded: tuple[str | None, tuple | None] = (None, None)
    try:
        for block in blocks:
            target = by_class[block.class_idx]
            if loaded[0] != target.model_dir:
                loaded = (target.model_dir, load_model(run, target.model_dir, device))
            unet, train_scheduler = loaded[1]
            indices = list(range(block.start, block.start + block.size))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                found = sample_candidates(unet, train_scheduler, settings, target.class_idx, indices, filters)
            items, failed = [], []
            for i in block.missing:
                k = i - block.start
                if not found.accepted[k]:
                    failed.append(i)
                    continue
                record = {"generation_id": generation_id, "class": target.class_idx, "index": i, "attempt": found.attempts[k],
                          "rejected_by": found.rejected_by[k], "seed": settings.seed, "sampler": settings.sampler, "steps": settings.steps,
                          "guidance_scale": settings.guidance_scale, "model_sha256": provenance["model_sha256"][target.model_dir]}
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
