"""Experiment tracking the Accelerate way: `train.log_with` / `evaluate.log_with` name Accelerate's trackers
(`tensorboard`, `wandb`, `mlflow`, ... or `all`); off by default. Logs go under `<run>/logs/` (fit) and
`<report>/logs/` (evaluate) for trackers that write files.
"""

from __future__ import annotations

import numpy as np
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from synthaug.core.errors import UserError


def check_trackers(names: list[str], field: str) -> list[str] | None:
    """The tracker names as Accelerate takes them (None: tracking off); unknown or uninstalled ones are a one-line error."""
    if not names:
        return None
    known = {t.value for t in LoggerType}
    available = {t.value if isinstance(t, LoggerType) else str(t) for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise UserError(f"{field}: unknown tracker {name!r}; Accelerate knows {', '.join(sorted(known))}")
        if name != "all" and name not in available:
            raise UserError(f"{field}: {name} is not installed here (for tensorboard: pip install 'synthaug[track]')")
    return list(names)


def flat_config(values: dict, prefix: str = "") -> dict:
    """A nested recipe as the flat str/int/float/bool mapping trackers store as hyperparameters."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return out


def log_image(accelerator: Accelerator, name: str, image: np.ndarray, step: int) -> None:
    """A uint8 (H, W, C) image (a sample grid) to every tracker that takes images."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: image[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({name: [image]}, step=step)


def log_curve(accelerator: Accelerator, prefix: str, curve: list[dict]) -> None:
    """An arm's val curve (evaluate): one point per evaluation step."""
    for point in curve:
        accelerator.log({f"{prefix}/{k}": v for k, v in point.items() if k != "step"}, step=point["step"])


def finish(accelerator: Accelerator) -> None:
    """Close the trackers; unlike `Accelerator.end_training` this leaves the process group alone, which later models
    of the same `fit` still use."""
    for tracker in accelerator.trackers:
        tracker.finish()
