"""The expected run time of `synthaug experiment`, printed in one line before it starts.

Images to process (diffusion training steps x batch, synthetic images to draw, classifier steps x batch for every arm
and seed) over images per second measured on this machine, right before, with the recipe's own models (`measure_rates`:
a few steps on random images). Finished work (resumed fits, cached arms) and other jobs on the machine move the real
time, so the line is an order of magnitude, not a promise.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from synthaug.classifier.networks import build_classifier
from synthaug.data.images import load_split, resolve_classes
from synthaug.data.subsets import subset_indices
from synthaug.diffusion.unet import build_unet
from synthaug.evaluation.regimes import expand_arms
from synthaug.generation.plan import resolve_settings
from synthaug.recipe.recipe import Recipe

# Images per timed step on a CPU: the recipe's batch up to this. A batch of 8 made the small CNN's step look 14 x slower
# per image than at its batch of 64 (7 h 48 min estimated for an experiment that took about 35 min); above 32 a
# resnet18 probe would take a minute.
CPU_PROBE_BATCH = 32


def probe_batch(batch: int, device) -> int:
    return min(batch, CPU_PROBE_BATCH) if device.type == "cpu" else batch


def _images_per_second(step, batch: int, device) -> float:
    """Images/s of `step()` on `batch` images: one untimed step (allocation, kernels chosen), then two timed ones."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * batch / max(time.perf_counter() - began, 1e-9)


def measure_rates(recipe: Recipe, channels: int, num_classes: int, device) -> dict[str, float]:
    """Images/s of the recipe's diffusion training step, of drawing a synthetic image (one model call per sampler step)
    and of its classifier's training step, on `device`, with random images of the recipe's size."""
    size, batch = recipe.data.size, probe_batch(recipe.train.batch_size, device)
    x = torch.randn(batch, channels, size, size, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    t = torch.randint(0, recipe.diffusion.num_train_timesteps, (batch,), device=device)
    unet = build_unet(recipe.model, channels, num_classes).to(device)
    conditional = recipe.model.conditioning == "class_conditional"
    call = (lambda: unet(x, t, class_labels=labels).sample) if conditional else (lambda: unet(x, t).sample)
    opt = torch.optim.AdamW(unet.parameters())

    def fit_step():
        opt.zero_grad()
        ((call() - x) ** 2).mean().backward()
        opt.step()

    fit = _images_per_second(fit_step, batch, device)
    with torch.no_grad():
        forward = _images_per_second(call, batch, device)
    sampler_steps = resolve_settings(recipe.generate, recipe.diffusion.num_train_timesteps).steps
    guided = 2 if conditional and recipe.generate.guidance_scale != 1 else 1  # guidance: a conditional and a null call
    ev = recipe.evaluate
    clf_batch = probe_batch(ev.batch_size, device)
    classifier = build_classifier(ev, channels, num_classes).to(device)
    clf_opt = torch.optim.Adam(classifier.parameters())
    xc = torch.randn(clf_batch, channels, size, size, device=device)
    yc = torch.randint(0, num_classes, (clf_batch,), device=device)

    def clf_step():
        clf_opt.zero_grad()
        torch.nn.functional.cross_entropy(classifier(xc), yc).backward()
        clf_opt.step()

    return {"fit": fit, "generate": forward / (sampler_steps * guided), "classifier": _images_per_second(clf_step, clf_batch, device)}


def expected_seconds(units: int, models: int, fit_steps: int, fit_batch: int, synthetic_images: int, classifier_runs: int,
                     classifier_steps: int, classifier_batch: int, fit_rate: float, generate_rate: float,
                     classifier_rate: float) -> dict[str, float]:
    """Seconds of each stage and in all: per unit, `models` diffusion models of `fit_steps` x `fit_batch` images,
    `synthetic_images` drawn and `classifier_runs` classifiers (arms x seeds) of `classifier_steps` x
    `classifier_batch`; rates in images/s."""
    stages = {"fit": units * models * fit_steps * fit_batch / fit_rate,
              "generate": units * synthetic_images / generate_rate,
              "classifiers": units * classifier_runs * classifier_steps * classifier_batch / classifier_rate}
    return {**stages, "total": sum(stages.values())}


def synthetic_count(amount: dict, real: dict[int, int]) -> int:
    """Synthetic images `generate` draws for one unit with these real counts per class, for `experiment.synthetic_amount`'s
    amount ({"ratio": R}, {"per_real": K}, {"balance": True | N} or {})."""
    if "ratio" in amount:
        return int(sum(np.ceil(amount["ratio"] * n) for n in real.values()))
    if "per_real" in amount:
        return amount["per_real"] * sum(real.values())
    if "balance" in amount:
        target = max(real.values()) if amount["balance"] is True else amount["balance"]
        return sum(max(0, target - n) for n in real.values())
    return 0


def duration(seconds: float) -> str:
    """3 h 05 min, 12 min, 40 s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def estimate_line(units: list[Recipe], amount: dict, device) -> str:
    """One line: the experiment's expected run time on `device` for these regime recipes, from their real training
    counts, their steps and the images/s `measure_rates` finds now."""
    first = units[0]
    train = load_split(first.data, "train")
    classes = resolve_classes(first.data)
    counts = []
    for unit in units:
        chosen = train.labels[subset_indices(train.labels, unit.data.subset, classes, train.class_names, unit.data.site)]
        counts.append({c: int((chosen == c).sum()) for c in classes})
    rates = measure_rates(first, train.channels, len(train.class_names), device)
    ev = first.evaluate
    models = 1 if first.model.conditioning == "class_conditional" else len(classes)
    synthetic = max(synthetic_count(amount, c) for c in counts)
    runs = len(expand_arms(ev)) * len(ev.seeds)
    t = expected_seconds(len(units), models if amount else 0, first.train.steps, first.train.batch_size, synthetic, runs,
                         ev.steps, ev.batch_size, rates["fit"], rates["generate"], rates["classifier"])
    return (f"expected run time on {device.type}: about {duration(t['total'])} for {len(units)} unit(s) of "
            f"{sum(counts[0].values())} real images (fit {duration(t['fit'])} at {rates['fit']:.0f} img/s, generate "
            f"{duration(t['generate'])} at {rates['generate']:.1f} img/s, {runs} classifiers per unit {duration(t['classifiers'])} "
            f"at {rates['classifier']:.0f} img/s, measured now; less where work is already done)")
