"""`synthaug evaluate`: does adding synthetic images help a classifier on the real test set, and by how much?

In every regime (`regimes`) each arm trains the same classifier for the same number of steps from
the same initialisation (per seed), selects its checkpoint on the real val split, and is scored once
on the real test split. Gains over the baselines come with a 95 % interval over independent units (a real subset
with its own generator; the classifier seeds inside it averaged first; see intervals.py and summary.py). Every arm of
one (subset, seed) shares the real data and the initialisation. Batch order, classical augmentation and replacement draws are not shared:
each arm draws them from its own stream, seeded by (seed, the arm's name) (`_train_arm`). The arms train
on sets of different sizes, so one shared stream would not give them the same batches anyway; seeding by
name makes each arm's numbers reproducible on their own, whichever other arms run beside it, which is what
lets a finished arm be cached and reused, and a real+pseudo arm's teacher be the very model of its real arm.
Every finished arm is cached under `<out>/cache/` by a hash of everything that decides its numbers;
re-running skips it unless `force`. Each row carries ACC and AUC, and for long-tailed data balanced ACC, macro-F1 and
the recall of each class and of the rare ones (`_label_scores`, made again from the row's test predictions at every read).

One process: run it without `accelerate launch` (fit and generate scale out across processes; an arm's
classifier is small). On success it prints one line (`result_line`): where the report is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import get_int_from_env
from tqdm.auto import tqdm

from synthaug.auditing.audit import read_audit_summary
from synthaug.classifier.harness import (CLASSIFIER_FIELDS, auc_terms, class_weights, classification_metrics, initial_classifier,
                                         label_metrics, logit_adjustment, predict, train_classifier)
from synthaug.data.arms import ArmDataset, stream_id
from synthaug.data.images import load_split
from synthaug.storage.pixels import to_model_tensor
from synthaug.core.errors import UserError
from synthaug.core.version import __version__
from synthaug.storage.files import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from synthaug.evaluation.plots import accuracy_vs_size_png, real_beside_synthetic_png
from synthaug.recipe.sections import EvaluateConfig
from synthaug.recipe.recipe import Recipe
from synthaug.evaluation.summary import PER_IMAGE_FIELDS, summarise, val_only_rows
from synthaug.evaluation.regimes import (Arm, Regime, arm_data, check_synthetic, crt_base, crt_steps, expand_arms, first_stage_arm, first_stage_data, load_regime,
                                         rare_classes, regime_label, shifted, soft_teacher_arm, teacher_arm)
from synthaug.evaluation.report import grid_name, render_evaluate_report, verdicts
from synthaug.storage.release import ReleaseDir
from synthaug.storage.rundir import Run, SynthDir, open_run
from synthaug.core.runtime import hardware, pick_device
from synthaug.core.tracking import check_trackers, finish, flat_config, log_curve


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
        parts[split] = shifted(data.take(np.flatnonzero(keep)), recipe.data.shift)  # the evaluated site's scanner
        if not len(parts[split].labels):
            raise UserError(f"data: the {split} split has no images of the chosen classes")
    val, test = parts["val"], parts["test"]
    return EvalData(
        to_model_tensor(val.images, device), torch.from_numpy(val.labels).to(device),
        to_model_tensor(test.images, device), test.labels,
        _digest(val.images, val.labels, test.images, test.labels),
        {"val": len(val.labels), "test": len(test.labels), "val_per_class": val.counts(), "test_per_class": test.counts()},
    )


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def arm_key(arm: Arm, cfg: EvaluateConfig, seed: int, train_digest: str, eval_digest: str, first_stage: str | None = None) -> str:
    """Hash of everything that decides an arm's numbers: data, classifier settings, arm and seed (and, for an arm
    fine-tuned from a first stage, that stage's key and the fine-tuning's learning rate, or a +crt arm's head steps)."""
    settings = cfg.model_dump(mode="json", include=CLASSIFIER_FIELDS)
    if first_stage is not None:
        settings.update(first_stage=first_stage, **({"crt_steps": crt_steps(cfg)} if arm.crt else {"finetune_lr": cfg.finetune_lr}))
    if arm.spec.data == "site-a":
        settings["ceiling_steps"] = ceiling_steps(cfg)
    if arm.classic:
        settings["classic"] = cfg.classic.model_dump(mode="json", exclude={"rot90"} if not cfg.classic.rot90 else None)
    if arm.synthetic and arm.spec.data != "synthetic-only" and cfg.synthetic_weight != 1.0:
        settings["synthetic_weight"] = cfg.synthetic_weight
    # the settings of the newer options enter only the keys of the arms that use them: older keys stay what they were
    if arm.rebalance == "logit_adjusted":
        settings["logit_tau"] = cfg.logit_tau
    if arm.rebalance == "reweight_effective":
        settings["effective_beta"] = cfg.effective_beta
    if arm.replace_by_class:
        settings["replace_p_by_class"] = (cfg.replace_p_by_class if isinstance(cfg.replace_p_by_class, str)
                                          else {str(k): v for k, v in cfg.replace_p_by_class.items()})
    blob = json.dumps({"v": __version__, "arm": arm.name, "seed": seed, "cfg": settings,
                       "train": train_digest, "eval": eval_digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def ceiling_steps(cfg: EvaluateConfig) -> int:
    """The steps of the raw-sharing ceiling (real+site-a arms): those of model sharing's first stage and fine-tuning."""
    return (cfg.pretrain_steps or cfg.steps) + cfg.steps


def _key_of(arm: Arm, arm_set: ArmDataset, cfg: EvaluateConfig, seed: int, data: EvalData, first_stage: str | None = None) -> str:
    """The cache key of an arm trained on `arm_set` (its images and labels, and any variations or soft labels beside them)."""
    variations = getattr(arm_set, "variations", None)
    extra = (variations, arm_set.variation_start, arm_set.variation_count) if variations is not None else ()
    soft = (arm_set.soft_targets,) if arm_set.soft_targets is not None else ()
    return arm_key(arm, cfg, seed, _digest(arm_set.images, arm_set.labels, *extra, *soft), data.digest, first_stage)


def run_arm(regime: Regime, arm: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, force: bool,
            device, show_progress: bool, keep_model: bool = False) -> dict:
    """Train, select on val and test once: one row of results.csv (read from the cache when it is there). `keep_model`:
    keep the trained weights in the cache too (`{key}.model.pt`): a +crt arm starts from them, a soft top-up arm's teacher
    labels with them."""
    pool_probs = _teacher_probs(regime, arm, seed, cfg, data, cache, device, show_progress) if arm.pseudo_confidence else None
    teacher = soft_teacher_arm(arm)
    if teacher is not None:  # the synthetic images' soft labels: the in-task teacher's probabilities
        probs = _soft_labels(regime, teacher, seed, cfg, data, cache, device, show_progress)
        regime = dataclasses.replace(regime, synthetic=dataclasses.replace(regime.synthetic, soft_labels=probs))
    arm_set = arm_data(regime, arm, pool_probs, cfg)
    labels, n_synth = arm_set.labels, arm_set.n_synthetic
    first, stage = None, {}
    if arm.spec.first_stage in ("synthetic", "site-a"):
        first = _first_stage(regime, arm, seed, cfg, data, cache, device, show_progress)
        stage = {"init_state": first["state"], "lr": cfg.finetune_lr}
    elif arm.crt:  # the representation: the very model of the arm without +crt; then the head alone, class-balanced
        first = _arm_model(regime, crt_base(arm), seed, cfg, data, cache, device, show_progress)
        stage = {"init_state": first["state"], "steps": crt_steps(cfg), "head_only": True}
    elif arm.spec.data == "site-a":
        # the raw-sharing ceiling sees A's images, as model sharing does: it gets the same steps as model sharing's two
        # stages, or with thousands of A's images and the steps of a few-shot arm it is under-trained, no ceiling
        stage = {"steps": ceiling_steps(cfg)}
    if first is not None:
        n_synth = first["n_synthetic"]
    key = _key_of(arm, arm_set, cfg, seed, data, first and first["key"])
    cached = cache / f"{key}.json"
    if cached.is_file() and not force:
        try:
            row = read_json(cached, "cached arm")
        except UserError as exc:  # a damaged entry is trained again, never trusted
            warnings.warn(f"{exc}; training the arm again")
        else:
            row.update(cached=True, run=str(regime.run))  # a shared cache may hold it from another run on the same data
            row.setdefault("val_bacc", float("nan"))  # cached before balanced metrics: val is not known again
            return _label_scores(row, regime, cfg, data)
    model, info = _train_arm(regime, arm, arm_set, seed, cfg, data, device, show_progress, **stage)
    if keep_model:
        _write_state(cache / f"{key}.model.pt", model)
    test_probs = predict(model, data.test_images)  # the one look at test
    rare = rare_classes(regime, cfg)
    test = classification_metrics(data.test_labels, test_probs, rare)
    row = {
        "regime": regime.label, "n_real": int(len(regime.train.labels)), "subset_seed": regime.subset_seed,
        "run": str(regime.run), "arm": arm.name, "kind": arm.kind, "ratio": arm.add_ratio, "replace_p": arm.replace_p, "seed": seed,
        "n_real_used": 0 if arm.spec.data == "synthetic-only" else int(len(regime.train.labels)),
        "classifier": cfg.classifier, "steps": info.steps, "batch_size": cfg.batch_size, "n_synthetic": n_synth,
        "n_pseudo": int(len(labels) - len(regime.train.labels)) if arm.pseudo_confidence else 0,
        "rebalance": arm.rebalance, "best_step": info.best_step, "val_acc": info.val["acc"], "val_auc": info.val["auc"],
        "val_bacc": info.val["bacc"], "test_acc": test["acc"], "test_auc": test["auc"], "test_bacc": test["bacc"], "test_f1": test["f1"],
        "test_rare_recall": test["rare_recall"], "rare_classes": rare,
        **{f"recall_{c}": test["recall"][c] for c in regime.classes},
        "wall_s": info.wall_s, "key": key, "curve": info.curve,
        # each test image's predicted class and its term of the AUC: the intervals add the test set's own sampling noise from them
        "test_pred": test_probs.argmax(1).astype(int).tolist(),
        "test_auc_terms": _significant(auc_terms(data.test_labels, test_probs)),
    }
    atomic_write_json(cached, row)
    row["cached"] = False
    return row


def _significant(values: np.ndarray | None, digits: int = 6) -> list[float] | None:
    """`values` to `digits` significant digits, as a list (None stays None): a row's per-image AUC terms, one a test
    image, kept short in results.json and the cache; the statistics need no more (summary.paired_gain)."""
    return None if values is None else [float(f"{v:.{digits}g}") for v in values]


def _label_scores(row: dict, regime: Regime, cfg: EvaluateConfig, data: EvalData) -> dict:
    """The row's scores that follow from its test predictions: balanced ACC, macro-F1, per-class recall and the recall
    of the rare classes. Made again at every read, so that rows cached before them, or with another
    `evaluate.rare_below` (which is in no key: it changes no weight), get them too."""
    rare = rare_classes(regime, cfg)
    row["rare_classes"] = rare
    if row.get("test_pred") is None:
        return row
    scores = label_metrics(data.test_labels, np.asarray(row["test_pred"]), len(regime.class_names), rare)
    row.update({"test_bacc": scores["bacc"], "test_f1": scores["f1"], "test_rare_recall": scores["rare_recall"],
                **{f"recall_{c}": scores["recall"][c] for c in regime.classes}})
    return row


def _train_arm(regime: Regime, arm: Arm, arm_set: ArmDataset, seed: int, cfg: EvaluateConfig, data: EvalData, device, show_progress: bool,
               stream: str | None = None, **stage):
    """Train the arm's classifier: the batches are `ArmBatches(arm_set, cfg.batch_size, seed, arm.stream, ...)`'s. `stage`:
    train_classifier's init_state, steps, lr and head_only, for the two stages of the pretrain, model-sharing and +crt arms."""
    soft = None if arm_set.soft_targets is None else torch.from_numpy(arm_set.soft_targets).to(device)
    return train_classifier(
        to_model_tensor(arm_set.images, device), torch.from_numpy(arm_set.labels).to(device), data.val_images, data.val_labels, cfg,
        seed, num_classes=len(regime.class_names), augment=cfg.classic if arm.classic else None,
        stream=stream_id(stream or arm.stream), show_progress=show_progress, desc=f"{regime.label} {stream or arm.name} seed {seed}",
        soft_targets=soft, **_usage(regime, arm_set, arm, cfg, device), **stage,
    )


def _first_stage(regime: Regime, arm: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, device,
                 show_progress: bool) -> dict:
    """The classifier a pretrain arm (on the whole synthetic set) or a model-sharing arm (on site A's real images)
    starts its fine-tuning from: `evaluate.pretrain_steps` steps, its checkpoint chosen on val. It does not depend on
    the regime's real subset, so every subset of a study shares one, cached beside the arms. {"state", "key", "n_synthetic"}."""
    first_set = first_stage_data(regime, arm)
    stage = first_stage_arm(arm)
    steps = cfg.pretrain_steps or cfg.steps
    key = _key_of(stage, first_set, cfg.model_copy(update={"steps": steps}), seed, data)
    path = cache / f"{key}.first-stage.pt"
    state = _cached_state(path, lambda: _train_arm(regime, arm, first_set, seed, cfg, data, device, show_progress, stream=stage.name, steps=steps)[0],
                          "first stage")
    return {"state": state, "key": key, "n_synthetic": first_set.n_synthetic}


def _arm_model(regime: Regime, arm: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, device, show_progress: bool) -> dict:
    """The weights of `arm`'s classifier as run_arm trains it (same data, seed and stream: the same model), kept in the
    cache beside its row as `{key}.model.pt` (run_arm keeps them there too when told). {"state", "key", "n_synthetic"}."""
    arm_set = arm_data(regime, arm, cfg=cfg)
    key = _key_of(arm, arm_set, cfg, seed, data)
    state = _cached_state(cache / f"{key}.model.pt", lambda: _train_arm(regime, arm, arm_set, seed, cfg, data, device, show_progress)[0],
                          f"{arm.name} model")
    return {"state": state, "key": key, "n_synthetic": arm_set.n_synthetic}


def _cached_state(path: Path, train: Callable[[], torch.nn.Module], what: str) -> dict:
    """The weights kept at `path`, or those of `train()`, written there first."""
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged: trained again, never trusted
            warnings.warn(f"{path}: unreadable ({type(exc).__name__}); training the {what} again")
    return _write_state(path, train())


def _write_state(path: Path, model: torch.nn.Module) -> dict:
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return state


def _soft_labels(regime: Regime, teacher: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, device,
                 show_progress: bool) -> np.ndarray:
    """The targets of a soft top-up arm's synthetic images (float32 (N_synthetic, K)): the class probabilities of the
    very model of the `teacher` arm of this seed, over the evaluated classes."""
    model = initial_classifier(cfg, regime.train.images.shape[-1], len(regime.class_names), seed)
    model.load_state_dict(_arm_model(regime, teacher, seed, cfg, data, cache, device, show_progress)["state"])
    probs = predict(model.to(device), to_model_tensor(regime.synthetic.images.images, device))
    probs[:, np.setdiff1d(np.arange(probs.shape[1]), regime.classes)] = 0.0  # a class not evaluated is never a target
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _teacher_probs(regime: Regime, arm: Arm, seed: int, cfg: EvaluateConfig, data: EvalData, cache: Path, device,
                   show_progress: bool) -> np.ndarray:
    """The pool's class probabilities under the teacher (the real[+classic] arm of this seed, trained the same way, so
    the same model), cached beside the arms: every confidence threshold reuses one teacher."""
    if regime.pool is None:
        raise UserError(f"{regime.run}: the {arm.kind} arms label an unlabeled pool; give the recipe data.unlabeled")
    teacher = teacher_arm(arm)
    teacher_set = arm_data(regime, teacher, cfg=cfg)
    key = _key_of(teacher, teacher_set, cfg, seed, data)
    path = cache / f"{key}.pool-{_digest(regime.pool.images)[:16]}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:  # damaged: labelled again, never trusted
            warnings.warn(f"{path}: unreadable ({type(exc).__name__}); labelling the pool again")
    model, _ = _train_arm(regime, teacher, teacher_set, seed, cfg, data, device, show_progress)
    probs = predict(model, to_model_tensor(regime.pool.images, device))
    buffer = io.BytesIO()
    np.save(buffer, probs)
    atomic_write_bytes(path, buffer.getvalue())
    return probs


def _usage(regime: Regime, arm_set: ArmDataset, arm: Arm, cfg: EvaluateConfig, device) -> dict:
    """How an arm uses its images: loss weights of added synthetic ones (the dataset's `sample_weight`), the
    replacement of real images by variations (its `replacement`), and its re-balancing (class-balanced batches, logit
    adjustment or class weights, from the classes it trains on): `ArmBatches`' `balanced` and `class_weight`."""
    replace = arm_set.replacement(device)
    if replace is not None:
        return {"replace": replace}
    usage, weight, classes = {}, arm_set.sample_weight, len(regime.class_names)
    if arm.rebalance in ("reweight_inverse", "reweight_effective"):
        per_class = class_weights(arm_set.labels, classes, arm.rebalance.removeprefix("reweight_"), cfg.effective_beta)
        weight = per_class[arm_set.labels].astype(np.float32) * (1.0 if weight is None else weight)
    if weight is not None:
        usage["sample_weight"] = torch.from_numpy(weight).to(device)
    if arm.rebalance == "balanced" or arm.crt:  # a +crt arm's head stage: class-balanced batches
        usage["balanced"] = True
    if arm.rebalance == "logit_adjusted":
        usage["logit_adjust"] = torch.from_numpy(logit_adjustment(arm_set.labels, classes, cfg.logit_tau)).float().to(device)
    return usage


def _merge_config(recipes: list[Recipe]) -> EvaluateConfig:
    first = recipes[0].evaluate
    for recipe in recipes[1:]:
        # regimes: experiment's; the seeds of evaluate.resample's units differ by design (experiment.regime_recipe)
        own = {"regimes", "seeds"} if first.resample is not None else {"regimes"}
        ours, theirs = (r.evaluate.model_dump(mode="json", exclude=own) for r in (recipes[0], recipe))
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        if differ:
            raise UserError(f"evaluate: the runs' recipes disagree on evaluate.{', evaluate.'.join(differ)}; "
                            f"set them alike with --set evaluate.FIELD=VALUE")
    keys = {(r.data.medmnist, str(r.data.folder), r.data.size, r.data.channels) for r in recipes}
    if len(keys) > 1:
        raise UserError("evaluate: the runs were trained on different data sources; compare runs of one dataset")
    return first


def evaluate(
    runs: Sequence[Run | Recipe | str | Path],
    out_dir: Path,
    synthetic_dirs: list[Path] | None = None,
    force: bool = False,
    show_progress: bool = True,
    command: str | None = None,
    cache_dir: Path | None = None,
    wait: bool = False,
    arm_names: Sequence[str] | None = None,
    val_only: bool = False,
) -> dict:
    """Train and test every arm x seed of every run (regime), then write report.md, results.json,
    results.csv and the plots into `out_dir`, and print `result_line`. Each run is a `Run`
    (`rundir.open_run(path, overrides)`), a Recipe or a folder, one per (regime, subset seed): two runs of one
    subset are refused (compare them in separate evaluates). `cache_dir` (default `out_dir/cache`) may be shared
    by several reports: an arm's key covers all it depends on. One evaluate per `out_dir` at a time: a second is
    refused naming the first's PID, or queues with `wait`. One process: refused under a several-process
    `accelerate launch`, before any work. `arm_names`: only these of the recipe's arms (a sweep's confirmation of its
    two chosen arms). `val_only`: the report and results.json show val numbers only (a sweep's lever tries; the
    cached arms still hold their test scores, which the sweep never reads)."""
    check_one_process("evaluate")
    if not runs:
        raise UserError("evaluate: give at least one run directory")
    if synthetic_dirs and len(synthetic_dirs) != len(runs):
        raise UserError(f"--synthetic: given {len(synthetic_dirs)} time(s) for {len(runs)} run(s); give one per run, in order")
    runs = [open_run(run) for run in runs]
    check_one_run_per_subset(runs)
    recipes = [run.recipe for run in runs]
    cfg = _merge_config(recipes)
    arms = expand_arms(cfg)
    if arm_names is not None:
        unknown = sorted(set(arm_names) - {a.name for a in arms})
        if unknown:
            raise UserError(f"evaluate: no arm named {', '.join(unknown)} in evaluate.arms; arms: {', '.join(a.name for a in arms)}")
        arms = [a for a in arms if a.name in arm_names]
    need_synthetic = any(a.synthetic for a in arms)
    device = pick_device()
    out_dir = Path(out_dir)
    with FolderLock(out_dir, "evaluate", wait):
        results = _evaluate(runs, recipes, cfg, arms, need_synthetic, device, out_dir, synthetic_dirs, force, show_progress, command,
                            cache_dir, val_only)
    print(result_line(results, out_dir), flush=True)
    return results


def result_line(results: dict, out_dir: Path) -> str:
    """What `evaluate` prints when it has written its report: where the report is, and the verdict of each regime."""
    return "\n".join([f"report: {out_dir / 'report.md'}", *verdicts(results)])


# Accelerate's own test for several processes (accelerate.utils.environment.get_cpu_distributed_information)
_WORLD_SIZE = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def check_one_process(command: str) -> None:
    """Refuse `command` (evaluate, experiment, sweep) in one of several processes (`accelerate launch`), before any
    work: each process would take the same folder lock, and all but one be refused, perhaps after hours of fitting.
    The processes are counted from the environment as Accelerate counts them; no process group is started."""
    processes = get_int_from_env(_WORLD_SIZE, 1)
    if processes > 1:
        raise UserError(f"{command} runs on one process, not the {processes} of `accelerate launch`; run `synthaug {command}` "
                        "without accelerate launch (fit and generate scale out with accelerate launch)")


def check_one_run_per_subset(runs: list[Run]) -> None:
    """Refuse two runs of one regime and subset seed (e.g. two generators on one subset): the statistics pair the arms
    by (regime, subset seed, seed), so the two runs' rows would be averaged together as if they were one."""
    seen: dict[tuple[str, int], Path] = {}
    for run in runs:
        subset = run.recipe.data.subset
        key = (regime_label(subset), subset.seed if subset else 0)
        if key in seen and run.root.resolve() == seen[key].resolve():
            raise UserError(f"evaluate: the run {run.root} is given twice; give each run once")
        if key in seen:
            raise UserError(f"evaluate: the runs {seen[key]} and {run.root} are both the regime {key[0]} on subset seed {key[1]}, "
                            "and one report would average them together; to compare them, evaluate each in its own report "
                            "(one evaluate per run, a different --out each; --cache may be shared)")
        seen[key] = run.root


def _evaluate(runs, recipes, cfg, arms, need_synthetic, device, out_dir, synthetic_dirs, force, show_progress, command, cache_dir,
              val_only: bool = False) -> dict:
    began = time.perf_counter()
    regimes = [load_regime(run, (synthetic_dirs or [None] * len(runs))[i], need_synthetic, show_progress) for i, run in enumerate(runs)]
    audits = [read_audit_summary(r.synthetic_dir) for r in regimes]  # a damaged audit.json stops us before any training
    data = load_eval_data(recipes[0], regimes[0].classes, device)
    # each run's own seeds: alike but for evaluate.resample's units, each with its own (experiment.regime_recipe)
    jobs = [(r, a, s) for r, recipe in zip(regimes, recipes) for a in arms for s in recipe.evaluate.seeds]
    for regime in regimes:  # fail before any training if a synthetic set is too small
        if need_synthetic:
            check_synthetic(regime, arms, cfg)
    rows = []
    cache = Path(cache_dir or out_dir / "cache")
    trackers = check_trackers(cfg.log_with, "evaluate.log_with")
    tracker = Accelerator(cpu=device.type == "cpu", log_with=trackers, project_dir=str(out_dir / "logs")) if trackers else None
    if tracker is not None:
        tracker.init_trackers("evaluate", config=flat_config(cfg.model_dump(mode="json")))
    # the arms whose weights other arms start from (+crt) or label with (soft top-up): kept, so they train once
    kept = {crt_base(a).name for a in arms if a.crt} | {soft_teacher_arm(a).name for a in arms if soft_teacher_arm(a) is not None}
    bar = tqdm(jobs, desc="evaluate", unit="arm", disable=not show_progress)
    for regime, arm, seed in bar:
        bar.set_postfix_str(f"{regime.label} {arm.name} seed {seed}")
        rows.append(run_arm(regime, arm, seed, cfg, data, cache, force, device, show_progress, keep_model=arm.name in kept))
        if tracker is not None:
            log_curve(tracker, f"{regime.label} s{regime.subset_seed}/{arm.name}/seed {seed}", rows[-1]["curve"])
    bar.close()
    if tracker is not None:
        finish(tracker)
    if val_only:  # test fields out of every row: the report has nothing to show but val
        rows = val_only_rows(rows)
    results = summarise(rows, cfg, None if val_only else data.test_labels, "val" if val_only else "test")
    results.update({
        "commands": [command] if command else [],
        "config": cfg.model_dump(mode="json"),
        "data": {"source": recipes[0].data.medmnist or Path(recipes[0].data.folder).name, "size": recipes[0].data.size,
                 "class_names": regimes[0].class_names, **data.sizes,
                 # the labels the rows' test_pred are scored against, so that a report can be made again from this file
                 "test_labels": None if val_only else data.test_labels.astype(int).tolist(),
                 "regimes": [{"regime": r.label, "run": str(r.run), "subset_seed": r.subset_seed,
                              "real_train": len(r.train.labels), "real_per_class": r.train.counts(), "rare_classes": rare_classes(r, cfg),
                              "synthetic_available": r.synthetic.images.counts() if r.synthetic is not None else None,
                              "synthetic_dir": str(r.synthetic_dir), "generator": generator_summary(run, r.synthetic_dir),
                              "audit": a} for r, run, a in zip(regimes, runs, audits)]},
        "hardware": hardware(device),
        "wall_s_this_run": round(time.perf_counter() - began, 1),
        "wall_s_arms": round(sum(r["wall_s"] for r in rows), 1),
        "arms_from_cache": sum(r["cached"] for r in rows),
    })
    write_report(out_dir, results, regimes)
    return results


def generator_summary(run: Run, synthetic_dir: Path) -> str:
    """The run's diffusion models in a few words: size, steps, fit wall time, and how its synthetic set was sampled."""
    if run.recipe.evaluate.release is not None:
        try:
            return f"release {Path(synthetic_dir).name}: " + str(ReleaseDir(synthetic_dir).read_manifest().get("generator", "?"))
        except UserError:
            return "?"
    try:
        models = run.dir.read_summary().get("models", {})
        sampler = ((SynthDir(synthetic_dir).read_manifest() or {}).get("recipe", {})).get("generate", {})
    except UserError:
        return "?"
    recipe = run.recipe
    wall = sum(m.get("wall_s") or 0 for m in models.values())
    return (f"{recipe.model.conditioning} UNet {recipe.model.block_out_channels}, {recipe.train.steps} steps x batch "
            f"{recipe.train.batch_size}, fit {wall:.0f} s; {sampler.get('sampler', '?')} {sampler.get('steps', '')} steps"
            + (f", variations of the real images at strength {sampler.get('strength')}" if sampler.get("from_real") else "")
            + (f", translations from {sampler.get('translate_from')} classes at strength {sampler.get('strength')}, gamma {sampler.get('gamma')}"
               if sampler.get("translate") else "")
            + (f", guidance {sampler.get('guidance_scale'):g}" if sampler.get("guidance_scale", 1) != 1 else ""))


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def write_results_json(path: Path, results: dict) -> None:
    """results.json, indented, with every list of numbers on one line: each row's test predictions and AUC terms
    (thousands of numbers) would otherwise take a line each and make the file ten times larger."""
    text = json.dumps(results, indent=2, default=str)
    atomic_write_text(path, _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(" ", "").replace("\n", "").split(",")) + "]", text) + "\n")


def write_report(out_dir: Path, results: dict, regimes: Sequence[Regime] = ()) -> None:
    """results.csv, results.json, the plots and report.md (with a notes.md beside it); the real-beside-synthetic grid
    of each of `regimes` (none when a report is made again from its results.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame([{k: v for k, v in r.items() if k not in ("curve", "cached", *PER_IMAGE_FIELDS)} for r in results["rows"]])
    atomic_write_text(out_dir / "results.csv", rows.to_csv(index=False))
    write_results_json(out_dir / "results.json", results)
    atomic_write_bytes(out_dir / "accuracy_vs_size.png", accuracy_vs_size_png(results))
    for regime in regimes:
        if regime.synthetic is not None:
            title = f"{regime.label}: real training images (left) | synthetic (right)"
            grid = real_beside_synthetic_png(regime.train, regime.synthetic.images, regime.classes, regime.class_names, title)
            atomic_write_bytes(out_dir / grid_name(str(regime.run)), grid)
    notes = out_dir / "notes.md"
    atomic_write_text(out_dir / "report.md", render_evaluate_report(results, notes.read_text() if notes.is_file() else None))
