"""`synthaug evaluate`: does adding synthetic images help a classifier on the real test set, and by how much?

A *regime* is one run directory: the real training subset its diffusion models saw and the
synthetic set sampled from them. In every regime each *arm* trains the same classifier for the same
number of steps from the same initialisation (per seed), selects its checkpoint on the real val
split, and is scored once on the real test split:

    real                      the regime's real training images
    real+classic              the same, with classical augmentation (flips, rotation, shift, brightness, contrast)
    real+synthetic Rx         real + R x as many synthetic images per class as there are real ones
    real+synthetic+classic Rx the same, augmented
    synthetic                 synthetic only, as many per class as real (classification accuracy score, CAS)

Synthetic images never enter val or test. The leak guard: the real arms of a regime must see every
real image the run's generators were trained on (`classes.json` `train_indices`), so a generator
never carries real information the compared classifier did not have.

Gains over `real` and over `real+classic` come with a 95 % paired bootstrap confidence interval:
the units are (subset, seed) pairs, so every arm of one unit shares the real data, the
initialisation and the batch-order seed. Every finished arm is cached under `<out>/cache/` by a
hash of everything that decides its numbers; re-running skips it unless `force`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from torch import nn
from tqdm.auto import tqdm

import synthaug
from synthaug.audit import read_audit_summary
from synthaug.data import ImageSet, load_split, resolve_classes, subset_indices, to_model_tensor
from synthaug.dataset import SynthDataset
from synthaug.errors import UserError
from synthaug.models import SmallCNN, build_classifier
from synthaug.recipe import ClassicAugConfig, EvaluateConfig, Recipe, SubsetConfig, load_recipe
from synthaug.rundir import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text
from synthaug.sample import seeded_generator

BASELINES = ("real", "real+classic")
PREDICT_BATCH = 512


# ---------------------------------------------------------------------------------------------
# Classifier training (also used by `synthaug audit` for its feature extractor)


@dataclass
class TrainInfo:
    """What training a classifier did: the val-selected step and the val curve."""

    steps: int
    best_step: int
    val: dict  # metrics of the selected checkpoint on the val split
    curve: list[dict] = field(default_factory=list)  # {"step", "loss", "val_acc", "val_auc"} at every evaluation
    wall_s: float = 0.0


def make_classifier(cfg: EvaluateConfig, channels: int, num_classes: int) -> nn.Module:
    """The recipe's downstream classifier (`small_cnn` honours `evaluate.width`)."""
    if cfg.classifier == "small_cnn":
        return SmallCNN(channels, num_classes, width=cfg.width)
    return build_classifier(cfg.classifier, channels, num_classes)


def classic_augment(x: torch.Tensor, cfg: ClassicAugConfig, gen: torch.Generator) -> torch.Tensor:
    """Random flips, rotation, shift (one affine warp), brightness and contrast of a batch in [-1, 1]."""
    n, device = x.shape[0], x.device

    def uniform(scale: float) -> torch.Tensor:  # in [-scale, scale], drawn on the CPU generator
        return ((torch.rand(n, generator=gen) * 2 - 1) * scale).to(device)

    if cfg.hflip:
        x = torch.where((torch.rand(n, generator=gen) < 0.5).to(device)[:, None, None, None], x.flip(-1), x)
    if cfg.vflip:
        x = torch.where((torch.rand(n, generator=gen) < 0.5).to(device)[:, None, None, None], x.flip(-2), x)
    if cfg.rotate_deg or cfg.shift:
        angle = uniform(math.radians(cfg.rotate_deg))
        shift_x, shift_y = uniform(2 * cfg.shift), uniform(2 * cfg.shift)  # affine_grid spans [-1, 1]: width 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness:
        x = x + 2 * uniform(cfg.brightness)[:, None, None, None]
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(cfg.contrast))[:, None, None, None] + mean
    return x.clamp(-1, 1)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities (N, K) of float images (N, C, H, W) in [-1, 1], in eval mode."""
    was_training = model.training
    model.eval()
    probs = [torch.softmax(model(images[i : i + batch_size]).float(), 1).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(probs).numpy()


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """ACC, AUC (binary, or macro one-vs-rest for several classes) and the recall of each class."""
    labels = np.asarray(labels)
    num_classes = probs.shape[1]
    pred = probs.argmax(1)
    present = np.unique(labels)
    if len(present) < 2:
        auc = float("nan")  # AUC is undefined when the split holds one class
    elif num_classes == 2:
        auc = roc_auc_score(labels, probs[:, 1])
    else:
        # Renormalise over the classes present so sklearn's OvR sees probabilities that sum to 1.
        sub = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
        auc = roc_auc_score(labels, sub, multi_class="ovr", average="macro", labels=present)
    recall = recall_score(labels, pred, labels=list(range(num_classes)), average=None, zero_division=0)
    return {"acc": float(accuracy_score(labels, pred)), "auc": float(auc), "recall": [float(r) for r in recall]}


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless shuffled epochs of indices (the last partial batch of an epoch is dropped)."""
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def train_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    cfg: EvaluateConfig,
    seed: int,
    num_classes: int | None = None,
    augment: ClassicAugConfig | None = None,
    stream: int = 0,
    show_progress: bool = True,
    desc: str = "classifier",
) -> tuple[nn.Module, TrainInfo]:
    """Train `cfg.classifier` for `cfg.steps` steps (Adam, x`gamma` at each milestone) and return the
    checkpoint with the best val `select_on` metric, with its TrainInfo.

    Images are float (N, C, H, W) in [-1, 1] on the training device, labels int64. The initial weights
    depend on `seed` alone (so arms of one seed start alike); batch order and augmentation on
    (`seed`, `stream`). `augment` applies `classic_augment` to every batch.
    """
    if len(train_images) == 0:
        raise UserError("evaluate: an arm has no training images")
    device = train_images.device
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeded_generator(seed, 7).initial_seed()))
        model = make_classifier(cfg, train_images.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    milestones = sorted({max(1, int(m * cfg.steps)) for m in cfg.milestones})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.gamma)
    gen = seeded_generator(seed, stream)
    eval_every = cfg.eval_every or max(1, cfg.steps // 10)
    val_np = val_labels.cpu().numpy()
    best_score, best_state, best_step, best_val, curve = None, None, 0, {}, []
    began = time.perf_counter()
    batches = _batches(len(train_images), cfg.batch_size, gen)
    model.train()
    for step in tqdm(range(1, cfg.steps + 1), desc=desc, disable=not show_progress, leave=False, unit="step"):
        idx = next(batches).to(device)
        x, y = train_images[idx], train_labels[idx]
        if augment is not None:
            x = classic_augment(x, augment, gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == cfg.steps:
            val = classification_metrics(val_np, predict(model, val_images))
            curve.append({"step": step, "loss": float(loss.detach()), "val_acc": val["acc"], "val_auc": val["auc"]})
            other = "acc" if cfg.select_on == "auc" else "auc"
            score = tuple(-1.0 if math.isnan(val[k]) else val[k] for k in (cfg.select_on, other))
            if best_score is None or score > best_score:  # ties keep the earlier checkpoint
                best_score, best_step, best_val = score, step, val
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model, TrainInfo(cfg.steps, best_step, best_val, curve, round(time.perf_counter() - began, 2))


# ---------------------------------------------------------------------------------------------
# Statistics


def _bootstrap_means(pairs: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means over the first axis of `n_boot` resamples of the pairs (rows) with replacement: (n_boot, ...)."""
    picks = np.random.default_rng(seed).integers(0, len(pairs), size=(n_boot, len(pairs)))
    return pairs[picks].mean(1)


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap_ci(diffs, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap CI (resampling the pairs with replacement)."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return float("nan"), float("nan"), float("nan")
    return (float(diffs.mean()), *_percentile_interval(_bootstrap_means(diffs, n_boot, seed), level))


# ---------------------------------------------------------------------------------------------
# Regimes: real and synthetic data of one run


@dataclass
class Regime:
    run: Path
    label: str  # "50/class", "10%", "100%"
    subset_seed: int
    class_names: list[str]
    classes: list[int]
    train: ImageSet  # the real training images the real arms see
    synthetic: ImageSet | None
    synthetic_dir: Path


def regime_label(subset: SubsetConfig | None) -> str:
    if subset is None:
        return "100%"
    if subset.per_class is not None:
        return f"{subset.per_class}/class"
    return f"{subset.fraction * 100:g}%"


def _read_synthetic(folder: Path, class_names: list[str], channels: int, size: int) -> ImageSet:
    """A synthetic set written by `synthaug generate`, decoded into memory, each class in file-name (index) order."""
    synth = SynthDataset(folder, as_rgb=channels == 3)
    if synth.class_names != class_names:
        raise UserError(f"{folder}: its classes {synth.class_names} are not the run's {class_names}")
    images, labels = synth.to_numpy()
    if len(labels) and images.shape[1:] != (size, size, channels):
        raise UserError(f"{folder}: images are {images.shape[1:]} (H, W, C), the run's are {(size, size, channels)}")
    order = np.lexsort(([p.name for p in synth.files], labels))
    return ImageSet(images[order], labels[order], class_names)


def load_regime(run_path: Path, recipe: Recipe, synthetic_dir: Path | None = None, need_synthetic: bool = True) -> Regime:
    """The real training images of `recipe.data` (the run's recipe, maybe overridden) and the run's synthetic
    set, after the leak guard: the real arms must see every real image the run's generators saw."""
    run = RunDir(Path(run_path))
    info = run.read_classes()
    classes = resolve_classes(recipe.data)
    if classes != info["classes"]:
        raise UserError(f"{run.root}: trained classes {info['classes']} but the evaluation data selects {classes}")
    train = load_split(recipe.data, "train")
    real_idx = subset_indices(train.labels, recipe.data.subset, classes, train.class_names)
    run_idx = np.asarray(info["train_indices"], dtype=np.int64)
    unseen = np.setdiff1d(run_idx, real_idx)
    if unseen.size or (run_idx.size and run_idx.max() >= len(train.labels)):
        raise UserError(
            f"{run.root}: its diffusion models were trained on {max(unseen.size, 1)} real training image(s) that the real "
            f"arms here would not see (run subset {info['subset']}, real arms data.subset "
            f"{recipe.data.subset.model_dump() if recipe.data.subset else None}); a generator may only learn from real "
            f"images the compared classifier sees: evaluate with the run's own data.subset or a larger one"
        )
    synthetic_dir = Path(synthetic_dir) if synthetic_dir else run.synthetic
    manifest = synthetic_dir / "manifest.json"
    if need_synthetic and manifest.is_file():  # a set sampled from another run's generator may have seen other real images
        made_by = json.loads(manifest.read_text()).get("run")
        if made_by and Path(made_by).resolve() != run.root.resolve():
            raise UserError(f"{synthetic_dir}: was generated from the run {made_by}, not {run.root}; evaluate each run with its own synthetic set")
    synthetic = _read_synthetic(synthetic_dir, train.class_names, train.channels, recipe.data.size) if need_synthetic else None
    subset = recipe.data.subset
    return Regime(run.root, regime_label(subset), subset.seed if subset else 0, train.class_names, classes,
                  train.take(real_idx), synthetic, synthetic_dir)


# ---------------------------------------------------------------------------------------------
# Arms


@dataclass(frozen=True)
class Arm:
    kind: str  # one of recipe.ARMS
    ratio: float | None  # synthetic images per real image of each class; None: no synthetic

    @property
    def name(self) -> str:
        return self.kind if self.ratio is None or self.kind == "synthetic" else f"{self.kind} {self.ratio:g}x"

    @property
    def classic(self) -> bool:
        return self.kind.endswith("classic")


def expand_arms(cfg: EvaluateConfig) -> list[Arm]:
    arms = []
    for kind in cfg.arms:
        if kind in ("real+synthetic", "real+synthetic+classic"):
            arms += [Arm(kind, r) for r in cfg.ratios]
        else:
            arms.append(Arm(kind, 1.0 if kind == "synthetic" else None))
    return arms


def top_ratio(arms: list[Arm]) -> float:
    """The largest synthetic-to-real ratio of the arms (0 when none uses synthetic images)."""
    return max((a.ratio for a in arms if a.ratio is not None), default=0.0)


def per_class_count(ratio: float, real: int) -> int:
    """Synthetic images of a class with `real` real ones at `ratio` (rounded half up, as `generate --ratio`)."""
    return int(math.floor(ratio * real + 0.5))


def synthetic_needed(arms: list[Arm], real_counts: dict[int, int]) -> dict[int, int]:
    """Synthetic images each class must have for these arms."""
    return {c: per_class_count(top_ratio(arms), n) for c, n in real_counts.items()}


def check_synthetic(regime: Regime, arms: list[Arm]) -> None:
    """Refuse, naming the --per-class to generate, when a synthetic set is too small for the arms."""
    real = {c: int((regime.train.labels == c).sum()) for c in regime.classes}
    needed = synthetic_needed(arms, real)
    for c, want in needed.items():
        have = int((regime.synthetic.labels == c).sum())
        if have < want:
            raise UserError(
                f"{regime.synthetic_dir}: the arms need {want} synthetic images of class {c} ({regime.class_names[c]}), "
                f"found {have}; run `synthaug generate` with --ratio {top_ratio(arms):g} (or --per-class {max(needed.values())})"
            )


def _take_synthetic(regime: Regime, ratio: float) -> ImageSet:
    """The first round(ratio x real count) synthetic images of every class (smaller ratios use a prefix)."""
    picked = []
    for c in regime.classes:
        want = per_class_count(ratio, int((regime.train.labels == c).sum()))
        picked.append(np.flatnonzero(regime.synthetic.labels == c)[:want])  # enough: see check_synthetic
    return regime.synthetic.take(np.concatenate(picked))


def arm_data(regime: Regime, arm: Arm) -> tuple[np.ndarray, np.ndarray, int]:
    """uint8 images, labels and the number of synthetic images an arm trains on."""
    if arm.ratio is None:
        return regime.train.images, regime.train.labels, 0
    synth = _take_synthetic(regime, arm.ratio)
    if arm.kind == "synthetic":
        return synth.images, synth.labels, len(synth.labels)
    return (np.concatenate([regime.train.images, synth.images]), np.concatenate([regime.train.labels, synth.labels]), len(synth.labels))


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def arm_key(arm: Arm, cfg: EvaluateConfig, seed: int, train_digest: str, eval_digest: str) -> str:
    """Hash of everything that decides an arm's numbers: data, classifier settings, arm and seed."""
    settings = cfg.model_dump(mode="json", include={"classifier", "width", "steps", "batch_size", "lr", "weight_decay",
                                                   "milestones", "gamma", "eval_every", "select_on"})
    if arm.classic:
        settings["classic"] = cfg.classic.model_dump(mode="json")
    blob = json.dumps({"v": synthaug.__version__, "arm": arm.name, "seed": seed, "cfg": settings,
                       "train": train_digest, "eval": eval_digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# The harness


@dataclass
class EvalData:
    """The real val and test splits, as tensors on the training device."""

    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: np.ndarray
    digest: str
    sizes: dict


def load_eval_data(recipe: Recipe, classes: list[int], device) -> EvalData:
    parts = {}
    for split in ("val", "test"):
        data = load_split(recipe.data, split)
        keep = np.isin(data.labels, classes)
        parts[split] = data.take(np.flatnonzero(keep))
        if not len(parts[split].labels):
            raise UserError(f"data: the {split} split has no images of the chosen classes")
    val, test = parts["val"], parts["test"]
    return EvalData(
        to_model_tensor(val.images, device), torch.from_numpy(val.labels).to(device),
        to_model_tensor(test.images, device), test.labels,
        _digest(val.images, val.labels, test.images, test.labels),
        {"val": len(val.labels), "test": len(test.labels), "val_per_class": val.counts(), "test_per_class": test.counts()},
    )


def run_arm(regime: Regime, arm: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, force: bool,
            device, show_progress: bool) -> dict:
    """Train, select on val and test once: one row of results.csv (read from the cache when it is there)."""
    images, labels, n_synth = arm_data(regime, arm)
    key = arm_key(arm, cfg, seed, _digest(images, labels), data.digest)
    cached = cache / f"{key}.json"
    if cached.is_file() and not force:
        row = json.loads(cached.read_text())
        row.update(cached=True, run=str(regime.run))  # a shared cache may hold it from another run on the same data
        return row
    model, info = train_classifier(
        to_model_tensor(images, device), torch.from_numpy(labels).to(device), data.val_images, data.val_labels, cfg, seed,
        num_classes=len(regime.class_names), augment=cfg.classic if arm.classic else None,
        stream=zlib.crc32(arm.name.encode()), show_progress=show_progress, desc=f"{regime.label} {arm.name} seed {seed}",
    )
    test = classification_metrics(data.test_labels, predict(model, data.test_images))  # the one look at test
    row = {
        "regime": regime.label, "n_real": int(len(regime.train.labels)), "subset_seed": regime.subset_seed,
        "run": str(regime.run), "arm": arm.name, "kind": arm.kind, "ratio": arm.ratio, "seed": seed,
        "n_real_used": 0 if arm.kind == "synthetic" else int(len(regime.train.labels)),
        "classifier": cfg.classifier, "steps": info.steps, "batch_size": cfg.batch_size, "n_synthetic": n_synth,
        "best_step": info.best_step, "val_acc": info.val["acc"], "val_auc": info.val["auc"],
        "test_acc": test["acc"], "test_auc": test["auc"],
        **{f"recall_{c}": test["recall"][c] for c in regime.classes},
        "wall_s": info.wall_s, "key": key, "curve": info.curve,
    }
    atomic_write_json(cached, row)
    row["cached"] = False
    return row


def _merge_config(recipes: list[Recipe]) -> EvaluateConfig:
    first = recipes[0].evaluate
    for recipe in recipes[1:]:
        ours, theirs = (r.evaluate.model_dump(mode="json", exclude={"regimes"}) for r in (recipes[0], recipe))  # regimes: experiment's
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        if differ:
            raise UserError(f"evaluate: the runs' recipes disagree on evaluate.{', evaluate.'.join(differ)}; "
                            f"set them alike with --set evaluate.FIELD=VALUE")
    keys = {(r.data.medmnist, str(r.data.folder), r.data.size, r.data.channels) for r in recipes}
    if len(keys) > 1:
        raise UserError("evaluate: the runs were trained on different data sources; compare runs of one dataset")
    return first


def evaluate(
    runs: list[Path],
    out_dir: Path,
    overrides: list[str] | None = None,
    synthetic_dirs: list[Path] | None = None,
    force: bool = False,
    show_progress: bool = True,
    command: str | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """Train and test every arm x seed of every run (regime), then write report.md, results.json,
    results.csv and the plots into `out_dir`. `overrides` are `--set` pairs applied to each run's recipe.
    `cache_dir` (default `out_dir/cache`) may be shared by several reports: an arm's key covers all it depends on."""
    if not runs:
        raise UserError("evaluate: give at least one run directory")
    if synthetic_dirs and len(synthetic_dirs) != len(runs):
        raise UserError(f"--synthetic: given {len(synthetic_dirs)} time(s) for {len(runs)} run(s); give one per run, in order")
    recipes = []
    for run in runs:
        if not RunDir(Path(run)).recipe.is_file():
            raise UserError(f"{run}: not a synthaug run (no recipe.yaml); run `synthaug fit` first")
        recipes.append(load_recipe(RunDir(Path(run)).recipe, overrides))
    cfg = _merge_config(recipes)
    arms = expand_arms(cfg)
    need_synthetic = any(a.ratio is not None for a in arms)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    began = time.perf_counter()
    regimes = [load_regime(run, recipe, (synthetic_dirs or [None] * len(runs))[i], need_synthetic)
               for i, (run, recipe) in enumerate(zip(runs, recipes))]
    data = load_eval_data(recipes[0], regimes[0].classes, device)
    jobs = [(r, a, s) for r in regimes for a in arms for s in cfg.seeds]
    for regime in regimes:  # fail before any training if a synthetic set is too small
        if need_synthetic:
            check_synthetic(regime, arms)
    rows = []
    cache = Path(cache_dir or out_dir / "cache")
    bar = tqdm(jobs, desc="evaluate", unit="arm", disable=not show_progress)
    for regime, arm, seed in bar:
        bar.set_postfix_str(f"{regime.label} {arm.name} seed {seed}")
        rows.append(run_arm(regime, arm, seed, cfg, data, cache, force, device, show_progress))
    bar.close()
    results = summarise(rows, cfg)
    results.update({
        "commands": [command] if command else [],
        "config": cfg.model_dump(mode="json"),
        "data": {"source": recipes[0].data.medmnist or Path(recipes[0].data.folder).name, "size": recipes[0].data.size,
                 "class_names": regimes[0].class_names, **data.sizes,
                 "regimes": [{"regime": r.label, "run": str(r.run), "subset_seed": r.subset_seed,
                              "real_train": len(r.train.labels), "real_per_class": r.train.counts(),
                              "synthetic_available": r.synthetic.counts() if r.synthetic is not None else None,
                              "synthetic_dir": str(r.synthetic_dir), "generator": generator_summary(r.run),
                              "audit": read_audit_summary(r.synthetic_dir)} for r in regimes]},
        "hardware": hardware(device),
        "wall_s_this_run": round(time.perf_counter() - began, 1),
        "wall_s_arms": round(sum(r["wall_s"] for r in rows), 1),
        "arms_from_cache": sum(r["cached"] for r in rows),
    })
    write_report(out_dir, results, regimes)
    return results


def summarise(rows: list[dict], cfg: EvaluateConfig) -> dict:
    """Mean/std per regime x arm; paired-bootstrap gains over each baseline present and over the best of them
    (chosen on val); the synthetic-only arm's accuracy relative to real-only (CAS ratio)."""
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in rows])
    summary, gains, best = [], [], {}
    for (regime, arm), group in table.groupby(["regime", "arm"], sort=False):
        summary.append({
            "regime": regime, "arm": arm, "n_real": float(group["n_real_used"].mean()), "n_synthetic": float(group["n_synthetic"].mean()),
            "runs": len(group), "steps": int(group["steps"].iloc[0]),
            **{f"{m}_{stat}": float(getattr(group[f"test_{m}"], stat)(ddof=1) if stat == "std" else group[f"test_{m}"].mean())
               for m in ("acc", "auc") for stat in ("mean", "std")},
        })
    for regime, group in table.groupby("regime", sort=False):
        by_arm = {arm: g.set_index(["subset_seed", "seed"]) for arm, g in group.groupby("arm", sort=False)}
        present = [b for b in BASELINES if b in by_arm]
        for base in present:
            for arm in by_arm:
                if arm == base or (base != "real" and arm in BASELINES):  # "real vs real+classic" is the reverse of a row above
                    continue
                gains.append(_paired_gain(regime, arm, base, by_arm[arm], by_arm[base], cfg.bootstrap))
        if not present:
            continue
        # The strongest arm without synthetic data, judged on val (the selection metric) only: test never picks it.
        val_of = {b: float(by_arm[b][f"val_{cfg.select_on}"].mean()) for b in present}
        chosen = max(present, key=lambda b: val_of[b])  # ties: the first, `real`
        entry = {"arm": chosen, "val": val_of, "select_on": cfg.select_on}
        for arm in by_arm:
            if arm not in BASELINES:
                gains.append({**_paired_gain(regime, arm, chosen, by_arm[arm], by_arm[chosen], cfg.bootstrap), "best_baseline": True})
        if "synthetic" in by_arm and "real" in by_arm:
            entry["cas"] = _paired_ratio(by_arm["synthetic"], by_arm["real"], cfg.bootstrap)
        best[regime] = entry
    return {"rows": rows, "summary": summary, "gains": gains, "best_baseline": best}


def _paired_gain(regime: str, arm: str, base: str, other: pd.DataFrame, ref: pd.DataFrame, n_boot: int) -> dict:
    """Mean test ACC/AUC difference arm - base over the (subset, seed) pairs both have, with its bootstrap CI."""
    units = ref.index.intersection(other.index)
    entry = {"regime": regime, "arm": arm, "vs": base, "pairs": len(units)}
    for m in ("acc", "auc"):
        diffs = (other.loc[units, f"test_{m}"] - ref.loc[units, f"test_{m}"]).to_numpy()
        mean, lo, hi = paired_bootstrap_ci(diffs, n_boot)
        entry.update({f"d{m}": mean, f"d{m}_lo": lo, f"d{m}_hi": hi, f"d{m}_excludes_0": bool(lo > 0 or hi < 0)})
    return entry


def _paired_ratio(num: pd.DataFrame, den: pd.DataFrame, n_boot: int, level: float = 0.95, seed: int = 0) -> dict:
    """Ratio of mean test ACC (num / den) over shared (subset, seed) pairs, with a percentile bootstrap CI of the pairs."""
    units = den.index.intersection(num.index)
    if not len(units):
        return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan"), "pairs": 0}
    acc = np.stack([num.loc[units, "test_acc"].to_numpy(float), den.loc[units, "test_acc"].to_numpy(float)], axis=1)
    means = _bootstrap_means(acc, n_boot, seed)
    lo, hi = _percentile_interval(means[:, 0] / means[:, 1], level)
    return {"ratio": float(acc[:, 0].mean() / acc[:, 1].mean()), "lo": lo, "hi": hi, "pairs": len(units)}


def generator_summary(run: Path) -> str:
    """The run's diffusion models in a few words: size, steps, fit wall time, sampler (from its files)."""
    rundir = RunDir(Path(run))
    try:
        recipe = load_recipe(rundir.recipe)
        models = json.loads(rundir.summary.read_text()).get("models", {}) if rundir.summary.is_file() else {}
    except (UserError, ValueError):
        return "?"
    manifest = rundir.synthetic / "manifest.json"
    sampler = json.loads(manifest.read_text()).get("recipe", {}).get("generate", {}) if manifest.is_file() else {}
    wall = sum(m.get("wall_s") or 0 for m in models.values())
    return (f"{recipe.model.conditioning} UNet {recipe.model.block_out_channels}, {recipe.train.steps} steps x batch "
            f"{recipe.train.batch_size}, fit {wall:.0f} s; {sampler.get('sampler', '?')} {sampler.get('steps', '')} steps")


def hardware(device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "synthaug": synthaug.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _ci(entry: dict, m: str) -> str:
    sign = "**yes**" if entry[f"d{m}_excludes_0"] else "no"
    return f"{entry[f'd{m}']:+.3f} [{entry[f'd{m}_lo']:+.3f}, {entry[f'd{m}_hi']:+.3f}] | {sign}"


def render_report(results: dict, notes: str | None = None) -> str:
    cfg, data, hw = results["config"], results["data"], results["hardware"]
    seeds = cfg["seeds"]
    lines = [f"# synthaug evaluate: {data['source']}", "",
             "Generated by `synthaug evaluate`; every number below comes from the runs and commands listed here.", ""]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines += ["## Commands", "", "```bash", *results["commands"], "```", "",
              "## Set-up", "",
              f"- Hardware: {hw['cpu']} ({hw['cpu_count']} cores, {hw['torch_threads']} torch threads), device `{hw['device']}`"
              + (f", GPU {hw['gpu']}" if hw["gpu"] else "") + f"; torch {hw['torch']}, synthaug {hw['synthaug']}.",
              f"- Classifier: `{cfg['classifier']}`" + (f" (width {cfg['width']})" if cfg["classifier"] == "small_cnn" else "")
              + f", Adam lr {cfg['lr']:g}, x{cfg['gamma']:g} at {', '.join(f'{m:.0%}' for m in cfg['milestones'])} of "
              f"**{cfg['steps']} steps for every arm**, batch {cfg['batch_size']}, checkpoint chosen on val {cfg['select_on'].upper()} "
              f"every {cfg['eval_every'] or max(1, cfg['steps'] // 10)} steps, test scored once per arm.",
              f"- Seeds: {seeds}; classic augmentation: {cfg['classic']}.",
              f"- Real val / test images: {data['val']} {data['val_per_class']} / {data['test']} {data['test_per_class']} "
              f"(classes {data['class_names']}).",
              f"- Wall time: {results['wall_s_arms']:.0f} s of classifier training over {len(results['rows'])} arms "
              f"({results['arms_from_cache']} read from the cache); this invocation {results['wall_s_this_run']:.0f} s.", "",
              "| regime | run | subset seed | real train (per class) | synthetic available (per class) | generator |",
              "|---|---|---|---|---|---|"]
    for r in data["regimes"]:
        lines.append(f"| {r['regime']} | `{r['run']}` | {r['subset_seed']} | {r['real_train']} {r['real_per_class']} | "
                     f"{r['synthetic_available']} | {r['generator']} |")
    pairs = pd.DataFrame(results["rows"]).groupby("regime")[["subset_seed", "seed"]].apply(lambda g: len(g.drop_duplicates())).min()
    if pairs < 3:  # the units of every interval: (subset, seed) pairs
        lines += ["", f"**Only {pairs} (subset, seed) pair(s) in a regime: too few for any claim; use at least 3 seeds or subsets.**"]
    lines += ["", "## Test accuracy and AUC (mean ± std over seeds and subsets)", "",
              "| regime | arm | real | synthetic | steps | runs | ACC | AUC |", "|---|---|---|---|---|---|---|---|"]
    for s in results["summary"]:
        lines.append(f"| {s['regime']} | {s['arm']} | {s['n_real']:.0f} | {s['n_synthetic']:.0f} | {s['steps']} | {s['runs']} | "
                     f"{_fmt(s['acc_mean'], s['acc_std'])} | {_fmt(s['auc_mean'], s['auc_std'])} |")
    lines += ["", "## Gain over the baselines (paired by subset and seed, 95 % bootstrap CI)", "",
              "| regime | arm | vs | pairs | ΔACC [95 % CI] | excludes 0 | ΔAUC [95 % CI] | excludes 0 |", "|---|---|---|---|---|---|---|---|"]
    for g in results["gains"]:
        if not g.get("best_baseline"):
            lines.append(f"| {g['regime']} | {g['arm']} | {g['vs']} | {g['pairs']} | {_ci(g, 'acc')} | {_ci(g, 'auc')} |")
    lines += _best_baseline_lines(results)
    lines += ["", "A percentile bootstrap over a handful of pairs (3-15) is coarse and tends to be too narrow: it knows "
              "only these seeds and subsets. A CI that excludes 0 on so few pairs is a hint, not proof.", "",
              "## Per-class test recall (mean over seeds)", ""]
    names = data["class_names"]
    recall_cols = [k for k in results["rows"][0] if k.startswith("recall_")]
    lines += ["| regime | arm | " + " | ".join(names[int(k.split('_')[1])] for k in recall_cols) + " |",
              "|---|---|" + "---|" * len(recall_cols)]
    table = pd.DataFrame(results["rows"])
    for (regime, arm), group in table.groupby(["regime", "arm"], sort=False):
        lines.append(f"| {regime} | {arm} | " + " | ".join(f"{group[k].mean():.3f}" for k in recall_cols) + " |")
    lines += _audit_lines(data["regimes"])
    lines += ["", "## Plots", "", "![accuracy vs training-set size](accuracy_vs_size.png)", ""]
    for r in data["regimes"]:
        lines.append(f"![real beside synthetic, {r['regime']}]({_grid_name(r['run'])})")
    lines += ["", "Files: `results.csv` (one row per regime x arm x seed), `results.json` (everything, with the val "
              "curve of each arm), `cache/` (finished arms; delete or pass `--force` to redo)."]
    return "\n".join(lines) + "\n"


def _best_baseline_lines(results: dict) -> list[str]:
    """Gains over the best arm without synthetic data (chosen on val), and the CAS ratio."""
    best = results.get("best_baseline") or {}
    if not best:
        return []
    lines = ["", "## Gain over the best arm without synthetic data (chosen on val)", "",
             "Per regime, `real` or `real+classic`, whichever has the higher mean val "
             f"{next(iter(best.values()))['select_on'].upper()}; test never enters the choice.", "",
             "| regime | best baseline (val) | arm | pairs | ΔACC [95 % CI] | excludes 0 | ΔAUC [95 % CI] | excludes 0 |",
             "|---|---|---|---|---|---|---|---|"]
    for g in results["gains"]:
        if g.get("best_baseline"):
            chosen = best[g["regime"]]
            val = ", ".join(f"{k} {v:.3f}" for k, v in chosen["val"].items())
            lines.append(f"| {g['regime']} | {g['vs']} ({val}) | {g['arm']} | {g['pairs']} | {_ci(g, 'acc')} | {_ci(g, 'auc')} |")
    cas = {regime: b["cas"] for regime, b in best.items() if "cas" in b}
    if cas:
        lines += ["", "Synthetic-only accuracy relative to real-only (CAS ratio: mean test ACC of `synthetic` / `real`, "
                  "95 % bootstrap CI over the pairs):", ""]
        lines += [f"- {regime}: {c['ratio']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] ({c['pairs']} pairs)" for regime, c in cas.items()]
    return lines


def _audit_lines(regimes: list[dict]) -> list[str]:
    """The audit summary of each regime's synthetic set (`synthaug audit`), real baselines beside it."""
    lines = ["", "## Audit of the synthetic sets (synthetic / real test / real val)", ""]
    audited = [r for r in regimes if r.get("audit")]
    if not audited:
        return lines + ["Not audited: run `synthaug audit --run RUN` for each run, then evaluate again to include it here."]
    lines += ["| regime | Fréchet distance | precision | recall | density | coverage | near-copies (real val over threshold) |",
              "|---|---|---|---|---|---|---|"]
    for r in regimes:
        a = r.get("audit")
        if not a:
            lines.append(f"| {r['regime']} (subset seed {r['subset_seed']}) | not audited | | | | | |")
            continue
        cells = [" / ".join(_num(a[f"{m}_{c}"]) for c in ("synthetic", "test", "val")) for m in ("fd", "precision", "recall", "density", "coverage")]
        copies = f"{a['flagged']} ({_num(a['flagged_fraction'])}; real val {_num(a['real_val_over_threshold'])})"
        stale = " **(set changed since the audit)**" if a["stale"] else ""
        lines.append(f"| {r['regime']} (subset seed {r['subset_seed']}){stale} | " + " | ".join(cells) + f" | {copies} |")
    return lines


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _grid_name(run: str) -> str:
    return f"samples_{Path(run).name}.png"


def write_report(out_dir: Path, results: dict, regimes: list[Regime]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame([{k: v for k, v in r.items() if k not in ("curve", "cached")} for r in results["rows"]])
    atomic_write_text(out_dir / "results.csv", rows.to_csv(index=False))
    atomic_write_json(out_dir / "results.json", results)
    plot_accuracy_vs_size(results, out_dir / "accuracy_vs_size.png")
    for regime in regimes:
        if regime.synthetic is not None:
            atomic_write_bytes(out_dir / _grid_name(str(regime.run)), sample_grid(regime))
    notes = out_dir / "notes.md"
    atomic_write_text(out_dir / "report.md", render_report(results, notes.read_text() if notes.is_file() else None))


def plot_accuracy_vs_size(results: dict, path: Path) -> None:
    """Test ACC and AUC against real training-set size, one line per arm, 95 % bootstrap CI of the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(results["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("acc", "auc")):
        for arm, group in table.groupby("arm", sort=False):
            points = []
            for size, at in group.groupby("n_real"):
                values = at[f"test_{metric}"].to_numpy()
                mean, lo, hi = paired_bootstrap_ci(values, results["config"]["bootstrap"])
                points.append((size, mean, mean - lo, hi - mean))
            xs, ys, lo, hi = map(np.array, zip(*sorted(points)))
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=arm)
        if table["n_real"].max() > 4 * table["n_real"].min():
            ax.set_xscale("log")
        ax.set_xlabel("real training images")
        ax.set_ylabel(f"test {metric.upper()}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{results['data']['source']}: mean over seeds, bars = 95 % bootstrap CI of the mean")
    atomic_write_bytes(path, _png(fig))


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def sample_grid(regime: Regime, per_class: int = 8) -> bytes:
    """One row per class: `per_class` real training images, a gap, then `per_class` synthetic ones (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, synth = regime.train, regime.synthetic
    h, w, c = real.images.shape[1:]
    fig, axes = plt.subplots(len(regime.classes), 1, figsize=(8, 0.55 * len(regime.classes) + 0.6), squeeze=False)
    for ax, cls in zip(axes[:, 0], regime.classes):
        row = np.zeros((2 * per_class + 1, h, w, c), np.uint8)
        r_idx, s_idx = np.flatnonzero(real.labels == cls)[:per_class], np.flatnonzero(synth.labels == cls)[:per_class]
        row[: len(r_idx)] = real.images[r_idx]
        row[per_class + 1 : per_class + 1 + len(s_idx)] = synth.images[s_idx]
        strip = np.concatenate(list(row), axis=1)
        ax.imshow(strip[..., 0] if c == 1 else strip, cmap="gray" if c == 1 else None, vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(regime.class_names[cls], rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title(f"{regime.label}: real training images (left) | synthetic (right)", fontsize=9)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# fit -> generate -> evaluate over a recipe's regimes


def regime_recipe(recipe: Recipe, subset: SubsetConfig | None) -> Recipe:
    """The recipe of one regime: the same settings on that training subset, named `<name>-<regime>`."""
    from synthaug.recipe import recipe_from_dict

    if subset is None or (subset.fraction == 1.0):
        slug = "full"
    else:
        slug = (f"{subset.per_class}pc" if subset.per_class is not None else f"f{subset.fraction:g}") + f"-s{subset.seed}"
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-{slug}"
    raw["data"]["subset"] = subset.model_dump() if subset is not None else None
    return recipe_from_dict(raw, f"{recipe.name} regime {slug}")


def experiment(recipe: Recipe, out_dir: Path | None = None, force: bool = False, show_progress: bool = True,
               command: str | None = None) -> dict:
    """For every regime in `evaluate.regimes` (default: the recipe's own data.subset): fit its diffusion
    models on that subset only, generate as many synthetic images as the arms need, then evaluate all
    regimes together into `out_dir` (default reports/<name>)."""
    from synthaug.sample import generate
    from synthaug.train import fit

    regimes = recipe.evaluate.regimes or [recipe.data.subset]
    ratio = top_ratio(expand_arms(recipe.evaluate))
    runs = []
    for subset in regimes:
        sub = regime_recipe(recipe, subset)
        run = fit(sub, show_progress=show_progress)
        if ratio:
            generate(sub, ratio=ratio, show_progress=show_progress)  # R x each class's real count
        runs.append(run.root)
    return evaluate(runs, Path(out_dir or f"reports/{recipe.name}"), force=force, show_progress=show_progress, command=command)
