"""Images/s of `synthaug generate` per sampler, beside diffusers' DDPMPipeline on the same UNet.

    python benchmarks/generate_throughput.py --run runs/quickstart [--images 32] [--ddpm-images 16] [--threads 1]

synthaug is timed end to end through `generate()` (model loading, sampling in blocks of 16, PNG
encoding and atomic writes, metadata.csv and manifest.json) into a fresh temporary folder;
the reference is `DDPMPipeline(unet, scheduler)(batch_size=N, output_type="np")` with the same
scheduler, the same steps and all N images in one batch (sampling only, nothing written).
Without --run, the quickstart recipe's UNet architecture with untrained weights is used (speed
does not depend on the weights). Prints a markdown table for reports/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline

from synthaug.storage.files import atomic_write_json, atomic_write_text
from synthaug.generation.generate import BLOCK_SIZE, generate, load_model
from synthaug.recipe.recipe import load_recipe
from synthaug.storage.rundir import RunDir, model_dir_name
from synthaug.core.runtime import pick_device
from synthaug.diffusion.sampling import sampling_scheduler

SAMPLERS = [("dpm-solver++", 20), ("ddim", 50), ("ddpm", 1000)]


def untrained_run(folder: Path) -> RunDir:
    """A one-class run holding the quickstart architecture with untrained weights."""
    from synthaug.diffusion.unet import build_noise_scheduler, build_unet
    from synthaug.recipe.recipe import recipe_to_yaml

    recipe = load_recipe(Path(__file__).parent.parent / "recipes/quickstart.yaml", [f"output_dir={folder}", "name=bench", "model.conditioning=per_class"])
    run = RunDir(recipe.run_dir)
    run.root.mkdir(parents=True)
    atomic_write_text(run.recipe, recipe_to_yaml(recipe))
    model_dir = model_dir_name("per_class", 0, "normal")
    atomic_write_json(run.classes, {"class_names": ["normal"], "classes": [0], "conditioning": "per_class", "models": {"0": model_dir},
                                    "channels": 1, "size": recipe.data.size, "counts": {"0": 100}, "split_counts": {"0": 100},
                                    "subset": None, "train_indices": []})
    torch.manual_seed(0)
    DDPMPipeline(unet=build_unet(recipe.model, 1, 1), scheduler=build_noise_scheduler(recipe.diffusion)).save_pretrained(str(run.model(model_dir)))
    return run


def time_synthaug(run: RunDir, class_idx: int, sampler: str, steps: int, n: int, scratch: Path, batch_size: int | None) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    began = time.perf_counter()
    generate(run.root, per_class=n, classes=[class_idx], out=out, sampler=sampler, steps=steps, batch_size=batch_size, show_progress=False)
    return n / (time.perf_counter() - began)


def time_diffusers(run: RunDir, model_dir: str, sampler: str, steps: int, n: int) -> float:
    """All n images in one pipeline call; on a GPU under the same bf16 autocast that generate uses."""
    device = pick_device()
    began = time.perf_counter()
    unet, train_scheduler = load_model(run, model_dir, device)
    pipeline = DDPMPipeline(unet=unet, scheduler=sampling_scheduler(train_scheduler, sampler, steps))
    pipeline.set_progress_bar_config(disable=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pipeline(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    return n / (time.perf_counter() - began)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run with at least one finished model (default: untrained quickstart architecture)")
    parser.add_argument("--images", type=int, default=32, help="images per sampler for DPM-Solver++ and DDIM (a multiple of 16 is fairest)")
    parser.add_argument("--ddpm-images", type=int, default=16, help="images for DDPM 1000 steps")
    parser.add_argument("--batch-size", type=int, help="generate's --batch-size (default: the recipe's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice, one per core)")
    parser.add_argument("--per-class-estimate", type=int, default=5000, help="report the time --per-class N would take for the run's classes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        run = RunDir(Path(args.run)) if args.run else untrained_run(scratch / "runs")
        info = run.read_classes()
        class_idx = next(c for c in info.classes if run.is_finished(info.models[c]))
        model_dir = info.models[class_idx]
        print(f"# generate throughput: {run.root} (model {model_dir}), {info.size} px, {info.channels} channel(s)")
        gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
        print(f"# {cpu_name()}{gpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
              f"cuda {torch.cuda.is_available()}, torch {torch.__version__}, python {platform.python_version()}")
        print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print()
        print("| sampler | steps | images | synthaug generate img/s | diffusers DDPMPipeline img/s | synthaug / diffusers |")
        print("|---|---|---|---|---|---|")
        rates = {}
        for sampler, steps in SAMPLERS:
            n = args.ddpm_images if sampler == "ddpm" else args.images
            ours = time_synthaug(run, class_idx, sampler, steps, n, scratch, args.batch_size)
            reference = time_diffusers(run, model_dir, sampler, steps, n)
            rates[sampler] = ours
            print(f"| {sampler} | {steps} | {n} | {ours:.2f} | {reference:.2f} | {ours / reference:.2f} |", flush=True)
        print()
        print(f"# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        classes = len(info.classes)
        per_class = args.per_class_estimate
        drawn = classes * BLOCK_SIZE * -(-per_class // BLOCK_SIZE)  # whole blocks of 16 are sampled
        for sampler, steps in SAMPLERS:
            hours = drawn / rates[sampler] / 3600
            print(f"# --per-class {per_class} for {classes} classes ({drawn} images sampled) with {sampler} {steps}: "
                  f"about {hours:.1f} h at the rate above (extrapolated)")


if __name__ == "__main__":
    main()
