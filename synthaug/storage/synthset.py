"""The on-disk synthetic set: file names, PNG provenance, metadata.csv, manifest.json, the npz, the writer thread.

    <out>/<safe class name>/<class_idx>_<i:06d>.png   8-bit PNG; its text chunk "synthaug" holds its provenance
    <out>/metadata.csv      file_name,label,class_name, then provenance (imagefolder layout); written last
    <out>/manifest.json     resolved recipe, provenance, counts (kept, dropped, rejected per filter), package versions
    <out>/synthetic_<flag>.npz   --format npz|both: MedMNIST layout (train_images, train_labels)

`generate` decides what to draw; this module decides how it is named, written, read back and described.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from synthaug.storage.pixels import encode_png
from synthaug.core.errors import UserError
from synthaug.storage.files import atomic_write_bytes
from synthaug.storage.release import SOFT_PREFIX
from synthaug.recipe.sections import GenerateConfig
from synthaug.storage.rundir import Run, RunDir, SynthDir
from synthaug.core.runtime import package_versions

WORK_DIR = ".work"  # --format npz: the PNGs live here while generating, and go once the npz is written


METADATA_COLUMNS = [
    "file_name", "label", "class_name", "index", "attempt", "rejected_by",
    "seed", "sampler", "steps", "guidance_scale", "model_dir", "model_sha256", "run",
]


# Variations of real images (generate --from-real) add: the index of the real image varied (in the real train
# split) and the noise strength it was varied at.
VARIATION_COLUMNS = ["source_index", "strength"]
# Translations (generate --translate) add the same, the class of the real image they start from, and their soft label:
# soft_<k>, the weight of class k (release's SOFT_PREFIX; every class of the run, most of them 0).
TRANSLATION_COLUMNS = [*VARIATION_COLUMNS, "source_class"]
PNG_KEY = "synthaug"  # PNG text chunk holding each image's provenance (JSON)


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


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", suffix=".tmp")
        probe.close()
    except OSError as exc:
        raise UserError(f"--out {out}: not a writable directory ({exc.strerror or type(exc).__name__})") from None


def model_sha256(run: RunDir, model_dir: str) -> str:
    weights = sorted((run.model(model_dir) / "unet").glob("*.safetensors"))
    if not weights:
        raise UserError(f"{run.model(model_dir)}/unet: no safetensors weights")
    return hashlib.sha256(weights[0].read_bytes()).hexdigest()  # a model's weights fit in memory anyway


def provenance_of(run: RunDir, targets: list[ClassTarget], settings: GenerateConfig, block: int, device: torch.device, filters: list[dict]) -> dict:
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
        "model_sha256": {m: model_sha256(run, m) for m in models},
        "filters": filters,  # each filter's record (filters.filter_record)
    }


def generation_id_of(provenance: dict) -> str:
    return hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]


def provenance_png(image: np.ndarray, record: dict) -> bytes:
    """An image as PNG bytes with its provenance record in the text chunk PNG_KEY."""
    return encode_png(image, {PNG_KEY: record})


DAMAGED = (UnidentifiedImageError, OSError, ValueError, SyntaxError)  # what PIL raises on a damaged PNG


def decode_png(path: Path) -> tuple[Image.Image, dict | None]:
    """A PNG fully decoded, and the provenance record `generate` stored in its text chunk (None when it has none).
    Raises FileNotFoundError, or one of DAMAGED for a file that does not decode."""
    with Image.open(path) as img:
        img.load()
        raw = img.info.get(PNG_KEY)
    return img, None if raw is None else json.loads(raw)


def read_provenance(path: Path) -> dict:
    """The provenance record `generate` stored in a PNG's text chunk."""
    try:
        record = decode_png(path)[1]
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except DAMAGED as exc:
        raise UserError(f"{path}: not an image written by synthaug generate ({type(exc).__name__}); delete it and rerun") from None
    if record is None:
        raise UserError(f"{path}: not an image written by synthaug generate (no provenance); delete it and rerun")
    return record


# What a synthetic folder may hold besides its class folders: generate's and audit's own files (README.md: the dataset card).
OWN_FILES = re.compile(r"^(README\.md|manifest\.json|metadata\.csv|audit\.json|audit\.md|audit_[a-z_]+\.png|synthetic_[\w.-]+\.npz|\.synthaug\.lock|\..*\.tmp)$")
OWN_IMAGE = re.compile(r"^(\d+_\d{6}\.png|\..*\.tmp)$")


def check_foreign_files(out: Path) -> None:
    """Refuse an output folder holding files `generate` did not make (a folder of real images, say), before any work."""
    if not out.is_dir():
        return
    for entry in sorted(out.iterdir()):
        if entry.is_dir() and entry.name != WORK_DIR:
            stray = next((p for p in sorted(entry.iterdir()) if not OWN_IMAGE.match(p.name)), None)
        elif entry.is_dir():
            stray = next((p for p in sorted(entry.rglob("*")) if p.is_file() and not OWN_IMAGE.match(p.name)), None)
        else:
            stray = None if OWN_FILES.match(entry.name) else entry
        if stray is not None:
            raise UserError(f"--out {out}: holds files synthaug generate did not make (e.g. {stray}); "
                            "write synthetic images into an empty or new folder, never beside real data")


def repair_damaged(images_root: Path, targets: list[ClassTarget], generation_id: str) -> int:
    """Decode every image already on disk; delete the damaged ones (they are drawn again) and refuse images of another
    generation. Returns how many were damaged."""
    damaged = 0
    for target in targets:
        folder = images_root / target.folder
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"{target.class_idx}_*.png")):
            try:
                record = decode_png(path)[1]
            except DAMAGED:
                path.unlink(missing_ok=True)
                damaged += 1
                continue
            if record is None or record.get("generation_id") != generation_id:
                raise UserError(f"{path}: made by a different generate command (other seed, sampler, steps, model or filters); "
                                "use another --out or delete that folder")
    return damaged


def check_capacity(out: Path, targets: list[ClassTarget], size: int, channels: int) -> None:
    """Refuse an amount that cannot fit: its PNGs on the disk of `out`, its metadata.csv table in memory."""
    total = sum(t.count for t in targets)
    disk = total * (size * size * channels + 300)  # an 8-bit PNG rarely exceeds its raw pixels; plus file-system overhead
    memory = total * 1200  # one metadata row while the table is built
    free = shutil.disk_usage(out if out.exists() else out.parent).free if (out.exists() or out.parent.exists()) else None
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if free is not None and disk > free:
        raise UserError(f"--per-class/--ratio: {total:,} images need about {disk / 2**30:.1f} GiB under {out}, which has "
                        f"{free / 2**30:.1f} GiB free; ask for fewer or choose another --out")
    if ram is not None and memory > ram / 2:
        raise UserError(f"--per-class/--ratio: {total:,} images are too many for one set on this machine "
                        f"({ram / 2**30:.0f} GiB memory); generate several smaller sets (other --seed or --out)")


def plan_blocks(images_root: Path, targets: list[ClassTarget], block: int) -> list[Block]:
    """Blocks holding at least one image that is not on disk yet, in class-then-index order."""
    blocks = []
    for target in targets:
        folder = images_root / target.folder
        present = {p.name for p in folder.glob(f"{target.class_idx}_*.png")} if folder.is_dir() else set()
        missing = [i for i in range(target.count) if image_file(target, i).split("/")[1] not in present]
        for start in sorted({i // block * block for i in missing}):
            blocks.append(Block(target.class_idx, start, block, tuple(i for i in missing if start <= i < start + block)))
    return blocks


def translation_label(target: int, source: int, strength: float, gamma: float, class_count: int) -> np.ndarray:
    """The soft label of a translation (Diff-Mix's annotation): s^gamma on the class it was denoised as, 1 - s^gamma on
    the class of the real image it started from; float64 (class_count,)."""
    label = np.zeros(class_count)
    weight = strength**gamma
    label[target] += weight
    label[source] += 1 - weight
    return label


def collect_metadata(images_root: Path, targets: list[ClassTarget], generation_id: str, run_path: str, provenance: dict,
                     class_count: int) -> pd.DataFrame:
    """metadata.csv, rebuilt from the files on disk and the provenance stored in each of them; `class_count`: the run's
    classes (a translation's soft label has a column for each)."""
    mode = provenance.get("mode")
    starts = {"from_real": VARIATION_COLUMNS, "translate": TRANSLATION_COLUMNS}.get(mode, [])
    soft = [f"{SOFT_PREFIX}{k}" for k in range(class_count)] if mode == "translate" else []
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
                **{column: record[column] for column in starts},
                **(dict(zip(soft, translation_label(target.class_idx, record["source_class"], record["strength"], provenance["gamma"],
                                                    class_count))) if soft else {}),
            })
    return pd.DataFrame(rows, columns=METADATA_COLUMNS + starts + soft)


def extra_files(images_root: Path, targets: list[ClassTarget]) -> int:
    """Images on disk from earlier commands (other classes or a larger --per-class) that this set does not list."""
    wanted = {image_file(t, i) for t in targets for i in range(t.count)}
    return sum(1 for p in images_root.glob("*/*.png") if f"{p.parent.name}/{p.name}" not in wanted)


def check_compatible(folder: SynthDir, provenance: dict, generation_id: str) -> None:
    """Refuse to add images to a folder whose images were made under other provenance."""
    previous = folder.read_manifest()
    if previous is None or previous.get("generation_id") in (None, generation_id):
        return  # no manifest yet: the per-file check at the end still guards the set
    before = previous.get("provenance", {})
    changed = [f"{SETTING_WORDS.get(key, key)}: {_in_words(key, before.get(key))} there, {_in_words(key, value)} now"
               for key, value in provenance.items() if before.get(key) != value]
    raise UserError(f"--out {folder.root}: holds images made with other settings ({'; '.join(changed)}); "
                    "give another --out (e.g. --out <run>/synthetic-2) or delete that folder")


# The provenance fields in the words of the flags that set them, for the refusal above.
SETTING_WORDS = {"seed": "--seed", "sampler": "--sampler", "steps": "--steps", "guidance_scale": "--guidance-scale",
                 "strength": "--strength", "mode": "the source", "block_size": "the block size (--batch-size on a GPU)",
                 "device": "the device", "precision": "the precision", "model_sha256": "the run's model weights",
                 "filters": "the candidate filters (--reject-copies, --filter-confidence)",
                 "sources_sha256": "the real images varied or translated", "translate_from": "--translate-from",
                 "gamma": "--gamma"}


def _in_words(key: str, value) -> str:
    if key == "mode":
        return {"from_real": "variations of real images (--from-real)", "translate": "translations of other classes' real images (--translate)"
                }.get(value, "images drawn from noise")
    if key == "model_sha256":
        return "other weights" if value else "none"
    if key == "filters":
        return ", ".join(f.get("name", "?") for f in value) if value else "none"
    return "not set" if value is None else repr(value)


class PngWriter:
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
            atomic_write_bytes(path, provenance_png(image, record))

    def close(self) -> None:
        """Wait for every queued write (finished images are never thrown away), then raise the first failure."""
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)


DETERMINISM_NOTE = {
    "cpu": "float32 on CPU in fixed blocks of 16 indices: same bytes for the same command on the same machine and software, whatever --batch-size, processes or interruptions",
    "cuda": "bf16 autocast on GPU in blocks of --batch-size (rounded up to 16): same bytes only with the same --batch-size, GPU model and software",
}


def rejections(rows: pd.DataFrame) -> dict:
    """Rejected candidates of one class, per filter."""
    counts: dict[str, int] = {}
    for entry in rows["rejected_by"]:
        for name in filter(None, str(entry).split(";")) if isinstance(entry, str) else ():
            counts[name] = counts.get(name, 0) + 1
    return counts


def new_manifest(run: Run, targets: list[ClassTarget], settings: GenerateConfig, provenance: dict, generation_id: str,
                 npz_path: Path | None, device: torch.device) -> dict:
    """manifest.json of a set in progress (`complete: false`); generate fills in the counts at the end."""
    return {
        "complete": False,
        "generation_id": generation_id,
        "provenance": provenance,
        "run": str(run.root.resolve()),
        "format": settings.format,
        "class_names": list(run.info.class_names),
        "classes": {
            str(t.class_idx): {"name": t.name, "folder": t.folder, "count": t.count, "real_count": run.info.counts[t.class_idx], "model_dir": t.model_dir}
            for t in targets
        },
        "total": sum(t.count for t in targets),
        "npz": npz_path.name if npz_path else None,
        "recipe": {**run.recipe.model_dump(mode="json"), "generate": settings.as_recorded()},
        "versions": package_versions(),
        "determinism": DETERMINISM_NOTE[device.type],
    }
