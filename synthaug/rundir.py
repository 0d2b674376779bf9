"""The run directory: the contract between stages. `fit` writes it; generate, evaluate and audit read it.

    <output_dir>/<name>/
      recipe.yaml                 the resolved recipe the run was made with
      classes.json                class names, real counts, subset spec and the chosen train indices
      metrics.csv                 step, class, loss, lr, images_per_s (appended as training goes)
      summary.json                versions, device, wall time, images/s per class (rewritten per class)
      models/<model_dir>/         EMA UNet + DDPMScheduler as a diffusers DDPMPipeline (safetensors);
                                  per_class: one per class (`<idx>_<name>`), class_conditional: `all`
      checkpoints/<model_dir>/step_<N>/   accelerate `save_state` (model, optimizer, lr, EMA); last good one kept
      samples/<model_dir>/step_<N>.png    sample grids during and after training
      synthetic/                  default output of `synthaug generate`
      audit/features.pt           cache of the classifier trained on the run's real images (audit, --filter-confidence)

Every file is written under a temporary name and renamed, so a crash never leaves half a file;
a finished model directory appears in one rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from synthaug.errors import UserError

CONDITIONAL_MODEL_DIR = "all"


def safe_name(name: str) -> str:
    """A class name made safe as one path component: no separators, no '..', no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_").lstrip(".")
    return cleaned or "class"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    def model(self, model_dir: str) -> Path:
        return self.root / "models" / model_dir

    def checkpoints(self, model_dir: str) -> Path:
        return self.root / "checkpoints" / model_dir

    def samples(self, model_dir: str) -> Path:
        return self.root / "samples" / model_dir

    def is_finished(self, model_dir: str) -> bool:
        return (self.model(model_dir) / "model_index.json").is_file()

    def latest_checkpoint(self, model_dir: str) -> Path | None:
        found = sorted(self.checkpoints(model_dir).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        return found[-1] if found else None

    def read_classes(self) -> dict:
        try:
            return json.loads(self.classes.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.root}: not a synthaug run (no classes.json); run `synthaug fit` first") from None


def package_versions() -> dict:
    """Versions of the packages that decide a run's weights and images, recorded in summary.json and manifests."""
    import platform

    import accelerate
    import diffusers
    import numpy
    import torch

    import synthaug

    return {
        "synthaug": synthaug.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def model_dir_name(conditioning: str, class_idx: int | None = None, class_name: str | None = None) -> str:
    if conditioning == "class_conditional":
        return CONDITIONAL_MODEL_DIR
    return f"{class_idx:02d}_{safe_name(class_name)}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def temp_dir_beside(path: Path) -> Path:
    """A fresh temporary directory next to `path`, to fill and then `replace_dir` into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))


def replace_dir(tmp: Path, path: Path) -> None:
    """Move a filled temporary directory to `path`, replacing what was there."""
    path = Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def remove_stale_temps(directory: Path) -> None:
    """Delete temporary files and directories left by a crash (`.<name>.*.tmp`)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for item in directory.glob(".*.tmp"):
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
