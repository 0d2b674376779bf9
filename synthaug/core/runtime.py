"""What a run needs from the machine: seeded random generators, the one device rule, and what was used.

Every random draw in synthaug comes from a generator seeded by a tuple of integers (`seeded_generator`),
never from a shared stream, so a result depends on its key alone: not on batch sizes, processes,
interruptions or what ran before.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from synthaug.core.errors import UserError
from synthaug.core.version import __version__


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from a tuple of integers (negative ones allowed), well mixed."""
    entropy = [k % 2**64 for k in key]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state % 2**63))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given torch device (checked), else the GPU when there is one, else the CPU: the one device rule."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device}: not a torch device (expected e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use cpu")
    return device


def on_cpu() -> bool:
    """True where `pick_device()` gives the CPU (Accelerate's `cpu=` flag)."""
    return pick_device().type == "cpu"


def package_versions() -> dict:
    """Versions of the packages that decide a run's weights and images, recorded in summary.json and manifests."""
    import accelerate
    import diffusers


    return {
        "synthaug": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def hardware(device) -> dict:
    """The machine a report's numbers came from."""

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "synthaug": __version__,
    }
