"""`synthaug audit`: fidelity, diversity and memorization of a synthetic set, each beside a real-vs-real baseline.

Two spaces, two jobs:

- **Feature space** (fidelity and diversity): the penultimate layer of the evaluate harness's
  classifier trained on the run's own real training images (`reference.real_features`; no downloaded
  Inception weights, they fit grey X-rays and pathology tiles poorly). Fréchet distance overall and
  per class, improved precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al.
  2020). Every figure is computed on sets of the same size and class mix: synthetic vs real training
  images, and real test and real val vs real training images (the baselines: what "as good as real" looks like).
- **Pixel space** (memorization): each synthetic image's nearest training image by normalized
  correlation (the mirror image too when the run trained with horizontal flips). The copy threshold of
  a class is the `copy_quantile` quantile of the same nearest-neighbour correlation of the real val
  images of that class (`filters.copy_thresholds`, the very thresholds of `generate --reject-copies`):
  a real image of a new patient exceeds it with probability about 1 - copy_quantile, so a synthetic set
  whose flagged fraction is far above that is copying. The real test images, which set no threshold
  (they score the classifier arms), give the out-of-sample rate as a reported baseline.
- **Label fidelity**: the share of each class's synthetic images that the feature classifier (the
  judge: trained on the run's real labelled training images, selected on real val) assigns to their
  own class, beside the same share of real val and real test images.

Per class, both the copy rate and the label fidelity are reported: rare classes (a 10-image class is
where memorization starts) hide in the overall numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from synthaug.classifier.harness import CLASSIFIER_FIELDS, PREDICT_BATCH, extract_features, predict
from synthaug.data.images import ImageSet
from synthaug.data.synthetic import read_synthetic
from synthaug.core.errors import UserError
from synthaug.storage.cards import write_dataset_card, write_model_card
from synthaug.storage.files import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from synthaug.reference.filters import copy_thresholds
from synthaug.reference.metrics import NearestImages, frechet_distance, knn_distances, nearest_by_correlation, paired_correlation, prdc
from synthaug.auditing.membership import membership
from synthaug.auditing.plots import closest_pairs_png, similarity_png
from synthaug.recipe.recipe import Recipe
from synthaug.reference.realdata import CALIBRATION_SPLIT, RunData, load_run_data, real_features
from synthaug.auditing.report import CANDIDATES, METRICS, render_audit_markdown
from synthaug.core.formatting import percent, significant
from synthaug.storage.pixels import to_model_tensor
from synthaug.storage.rundir import Run, RunDir, SynthDir, open_run
from synthaug.core.runtime import pick_device

# `--set` may change how a run is audited, never what made it.
AUDIT_OVERRIDABLE = ("audit.", "evaluate.", "data.root=")


def check_audit_overrides(overrides: list[str]) -> None:
    for pair in overrides:
        if not pair.startswith(AUDIT_OVERRIDABLE):
            raise UserError(f"--set {pair}: an audit may only change audit.*, evaluate.* and data.root (the rest made the run)")


def _equal_draws(labels: dict[str, np.ndarray], classes: list[int], seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Per class, the same number of images from each candidate set (the smallest count), drawn at random."""
    rng = np.random.default_rng(seed)
    draws = {}
    for c in classes:
        members = {name: np.flatnonzero(labels[name] == c) for name in CANDIDATES}
        n = min(len(m) for m in members.values())
        draws[c] = {name: np.sort(rng.choice(m, n, replace=False)) for name, m in members.items()}
    return draws


def _compare(reference: torch.Tensor, candidates: dict[str, torch.Tensor], k: int, device: torch.device) -> dict:
    """Fréchet distance and PRDC of each candidate set against the reference; None where the sets are too small."""
    row = {"n": len(candidates["synthetic"]), "reference_n": len(reference)}
    for name, candidate in candidates.items():
        row[f"fd_{name}"] = frechet_distance(reference, candidate) if min(len(reference), len(candidate)) >= 2 else None
        scores = prdc(reference, candidate, k, device) if min(len(reference), len(candidate)) > k else {}
        for metric in METRICS[1:]:
            row[f"{metric}_{name}"] = scores.get(metric)
    return row


def fidelity(data: RunData, features: dict[str, torch.Tensor], synthetic_labels: np.ndarray, k: int, seed: int, device: torch.device) -> dict:
    """Overall and per-class metrics. Reference: the generator's training images; candidates: equal-size, same-class-mix
    draws of the synthetic, real test and real val images."""
    labels = {"synthetic": synthetic_labels, "test": data.test.labels, "val": data.val.labels}
    draws = _equal_draws(labels, data.classes, seed)
    rows = {
        data.class_names[c]: _compare(
            features["train"][data.train.labels == c], {name: features[name][draws[c][name]] for name in CANDIDATES}, k, device
        )
        for c in data.classes
    }
    every = {name: np.concatenate([draws[c][name] for c in data.classes]) for name in CANDIDATES}
    overall = _compare(features["train"], {name: features[name][every[name]] for name in CANDIDATES}, k, device)
    return {"overall": overall, "per_class": rows}


def _fraction(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _over(nearest: NearestImages, labels: np.ndarray, thresholds: dict[int, float]) -> np.ndarray:
    """Which images are at or over their class's copy threshold."""
    return nearest.correlation >= np.array([thresholds[int(c)] for c in labels], dtype=np.float64)


def _pool_copies(data: RunData, synthetic: ImageSet, quantile: float, device, show_progress: bool) -> dict:
    """The copy check against the unlabeled images the generator also saw, calibrated like the labelled one: each
    class's threshold is the `quantile` quantile of the real val images' nearest-pool-image correlation."""
    nearest = {name: nearest_by_correlation(images, data.pool, data.mirror, device, show_progress, rotations=data.rotations)
               for name, images in (("synthetic", synthetic.images), ("test", data.test.images), ("val", data.val.images))}
    calibration = getattr(data, CALIBRATION_SPLIT)
    thresholds = copy_thresholds(nearest[CALIBRATION_SPLIT], calibration.labels, data.classes, quantile)
    over = {name: _over(nearest[name], labels, thresholds)
            for name, labels in (("synthetic", synthetic.labels), ("test", data.test.labels), ("val", data.val.labels))}
    return {"pool_images": int(len(data.pool)), "calibration_split": CALIBRATION_SPLIT, "flagged": int(over["synthetic"].sum()),
            "flagged_fraction": _fraction(over["synthetic"]), "real_val_over_threshold": _fraction(over["val"]),
            "real_test_over_threshold": _fraction(over["test"]), "median_correlation_synthetic": _median(nearest["synthetic"].correlation),
            "median_correlation_real_test": _median(nearest["test"].correlation)}


def memorization(
    data: RunData,
    synthetic: ImageSet,
    files: list[str],
    nearest: dict[str, NearestImages],
    feature_nn: dict[str, np.ndarray],
    thresholds: dict[int, float],
    quantile: float,
) -> dict:
    """Per class and overall: flagged fraction (the copy rate) of the synthetic set beside the real val (the
    calibration split: in-sample) and real test (out-of-sample) rates, and the class's real training images."""
    labels = {"synthetic": synthetic.labels, "test": data.test.labels, "val": data.val.labels, "train": data.train.labels}
    over = {name: _over(nearest[name], labels[name], thresholds) for name in CANDIDATES}

    def row(masks: dict[str, np.ndarray], threshold: float | None) -> dict:
        synth_feat, test_feat = feature_nn["synthetic"][masks["synthetic"]], feature_nn["test"][masks["test"]]
        calibration_feat = feature_nn[CALIBRATION_SPLIT][masks[CALIBRATION_SPLIT]]
        feature_close = float(np.quantile(calibration_feat, 1 - quantile)) if calibration_feat.size else None
        return {
            "train_images": int(masks["train"].sum()),
            "n_synthetic": int(masks["synthetic"].sum()),
            "threshold": threshold,
            "flagged": int(over["synthetic"][masks["synthetic"]].sum()),
            "flagged_fraction": _fraction(over["synthetic"][masks["synthetic"]]),
            "real_test_over_threshold": _fraction(over["test"][masks["test"]]),
            "real_val_over_threshold": _fraction(over["val"][masks["val"]]),
            "median_correlation_synthetic": _median(nearest["synthetic"].correlation[masks["synthetic"]]),
            "median_correlation_real_test": _median(nearest["test"].correlation[masks["test"]]),
            "max_correlation_synthetic": float(nearest["synthetic"].correlation[masks["synthetic"]].max()) if masks["synthetic"].any() else None,
            "median_feature_distance_synthetic": _median(synth_feat),
            "median_feature_distance_real_test": _median(test_feat),
            "feature_close_fraction": _fraction(synth_feat <= feature_close) if feature_close is not None else None,
        }

    per_class = {
        data.class_names[c]: row({name: labels[name] == c for name in labels}, thresholds[c]) for c in data.classes
    }
    overall = row({name: np.ones(len(labels[name]), dtype=bool) for name in labels}, None)
    near = nearest["synthetic"]
    flagged = [
        {
            "file": files[i],
            "class": int(synthetic.labels[i]),
            "class_name": data.class_names[synthetic.labels[i]],
            "correlation": round(float(near.correlation[i]), 6),
            "threshold": round(thresholds[int(synthetic.labels[i])], 6),
            "nearest_train_index": int(data.train_indices[near.index[i]]),
            "mirrored": bool(near.mirrored[i]),
            "quarter_turns": 0 if near.quarter_turns is None else int(near.quarter_turns[i]),
        }
        for i in np.argsort(-near.correlation, kind="stable")
        if over["synthetic"][i]
    ]
    return {"overall": overall, "per_class": per_class, "flagged": flagged}


FIGURES = {"closest_pairs": "audit_closest_pairs.png", "similarity": "audit_similarity.png"}


def _judged_classes(data: RunData, model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The class (a label of the run, int64 (N,)) the feature classifier assigns to each uint8 (N, H, W, C) image."""
    columns = [predict(model, to_model_tensor(images[i : i + PREDICT_BATCH], device)).argmax(1) for i in range(0, len(images), PREDICT_BATCH)]
    return np.asarray(data.classes, dtype=np.int64)[np.concatenate(columns)] if columns else np.zeros(0, dtype=np.int64)


def label_fidelity(data: RunData, model: torch.nn.Module, training: dict, synthetic: ImageSet, device: torch.device) -> dict:
    """Per class and overall: the share of synthetic images the judge (the feature classifier, trained on the run's real
    labelled training images and selected on real val) assigns to their own class, beside that share of real val
    (the judge's selection split) and real test images; and where each class's synthetic images went."""
    judged = {name: _judged_classes(data, model, images, device)
              for name, images in (("synthetic", synthetic.images), ("val", data.val.images), ("test", data.test.images))}
    labels = {"synthetic": synthetic.labels, "val": data.val.labels, "test": data.test.labels}
    own = {name: judged[name] == labels[name] for name in labels}

    def row(masks: dict[str, np.ndarray]) -> dict:
        mine = masks["synthetic"]
        return {
            "n_synthetic": int(mine.sum()),
            "own_class": int(own["synthetic"][mine].sum()),
            "own_class_fraction": _fraction(own["synthetic"][mine]),
            "real_val_own_class_fraction": _fraction(own["val"][masks["val"]]),
            "real_test_own_class_fraction": _fraction(own["test"][masks["test"]]),
            "assigned_to": {data.class_names[c]: int((judged["synthetic"][mine] == c).sum()) for c in data.classes},
        }

    val = training.get("val", {})
    judge = {
        "trained_on": "the run's real labelled training images",
        "train_images": int(len(data.train.labels)),
        "selected_on": CALIBRATION_SPLIT,
        "steps": training.get("steps"),
        "selected_step": training.get("best_step"),
        "val_acc": val.get("acc"),
        "val_auc": None if val.get("auc") is None or np.isnan(val["auc"]) else val["auc"],
    }
    return {
        "judge": judge,
        "overall": row({name: np.ones(len(labels[name]), dtype=bool) for name in labels}),
        "per_class": {data.class_names[c]: row({name: labels[name] == c for name in labels}) for c in data.classes},
    }


def audit(
    run: Run | Recipe | RunDir | str | Path,
    synthetic_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    command: str | None = None,
    wait: bool = False,
) -> dict:
    """Audit a synthetic set (default `<run>/synthetic`) against its run; writes audit.json, audit.md and figures into it.

    `run`: a `Run` (`rundir.open_run(path, ["audit.k=3"])` for other `audit`/`evaluate` settings), a Recipe or a
    folder. `command`: the command line that reproduces the audit, for audit.md. Returns the report.
    """
    began = time.perf_counter()
    device = pick_device(device)
    run = open_run(run)
    data = load_run_data(run)
    folder = Path(synthetic_dir) if synthetic_dir is not None else data.run.synthetic
    with FolderLock(folder, "audit", wait) if folder.is_dir() else contextlib.nullcontext():  # no generate rewrites it meanwhile
        return _audit(run, data, folder, device, show_progress, command, began)


def _audit(run: Run, data: RunData, folder: Path, device, show_progress: bool, command: str | None, began: float) -> dict:
    tick = began
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timing[name] = round(now - tick, 3)
        tick = now

    settings = data.recipe.audit
    read = read_synthetic(folder, run, show_progress)
    synthetic, files = read.images, read.files
    lap("load")

    # A variation resembles its own source by design: the copy check looks at the other training images.
    source_rows = _source_rows(read.source_index, data.train_indices)
    nearest = {
        name: nearest_by_correlation(images, data.train.images, data.mirror, device, show_progress,
                                     exclude=source_rows if name == "synthetic" and read.variations else None, rotations=data.rotations)
        for name, images in (("synthetic", synthetic.images), ("test", data.test.images), ("val", data.val.images))
    }
    # The thresholds of generate --reject-copies: calibrated on real val, never on test (a reported baseline only).
    calibration = getattr(data, CALIBRATION_SPLIT)
    thresholds = copy_thresholds(nearest[CALIBRATION_SPLIT], calibration.labels, data.classes, settings.copy_quantile)
    lap("pixel_nearest_neighbours")
    model, feature_training, features = real_features(data, device, show_progress)
    features = {**features, "synthetic": extract_features(model, synthetic.images, device)}
    lap("features")
    feature_nn = {name: knn_distances(features[name], features["train"], 1, device=device)[0][:, 0] for name in CANDIDATES}
    lap("feature_nearest_neighbours")
    fidelity_report = fidelity(data, features, synthetic.labels, settings.k, settings.seed, device)
    lap("fidelity_metrics")
    memorization_report = memorization(data, synthetic, files, nearest, feature_nn, thresholds, settings.copy_quantile)
    fidelity_of_labels = label_fidelity(data, model, feature_training, synthetic, device)
    lap("label_fidelity")
    membership_report = membership(run, data, features, model, synthetic, device)
    lap("membership")
    if read.variations:
        memorization_report["variations"] = _variations_report(data, synthetic, source_rows)
    if data.pool is not None:
        memorization_report["pool"] = _pool_copies(data, synthetic, settings.copy_quantile, device, show_progress)
    atomic_write_bytes(folder / FIGURES["closest_pairs"], closest_pairs_png(data, synthetic, files, nearest["synthetic"], thresholds, settings.closest_pairs))
    atomic_write_bytes(folder / FIGURES["similarity"], similarity_png(data, synthetic, nearest, feature_nn, thresholds))
    lap("report_and_figures")
    timing["total"] = round(time.perf_counter() - began, 3)

    pixel_pairs = (len(synthetic.labels) + len(data.test.labels) + len(data.val.labels)) * len(data.train.labels) * data.symmetries
    counts = lambda labels: {data.class_names[c]: int((labels == c).sum()) for c in data.classes}  # noqa: E731
    classifier = data.recipe.evaluate
    report = {
        "run": str(data.run.root),
        "synthetic": str(folder),
        "synthetic_metadata_sha256": _metadata_digest(folder),
        "command": command or f"synthaug audit --run {data.run.root} --synthetic {folder}",
        "settings": {
            **settings.model_dump(),
            "mirror": data.mirror,
            "rotations": data.rotations,
            "calibration_split": CALIBRATION_SPLIT,
            "feature_classifier": classifier.classifier,
            "feature_classifier_steps": classifier.steps,
            "feature_classifier_config": classifier.model_dump(include=CLASSIFIER_FIELDS),
            "feature_classifier_training": feature_training,
            "feature_dim": int(features["train"].shape[1]),
        },
        "sizes": {
            "synthetic": counts(synthetic.labels),
            "train": counts(data.train.labels),
            "test": counts(data.test.labels),
            "val": counts(data.val.labels),
        },
        "fidelity": fidelity_report,
        "memorization": memorization_report,
        "label_fidelity": fidelity_of_labels,
        "membership": membership_report,
        "figures": FIGURES,
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "timing_s": timing,
        "pixel_pairs_compared": pixel_pairs,
    }
    atomic_write_json(SynthDir(folder).audit_json, report)
    atomic_write_text(SynthDir(folder).audit_md, render_audit_markdown(report))
    write_dataset_card(folder)  # the cards carry the audit's figures once there are some
    write_model_card(run)
    over = memorization_report["overall"]
    print(
        f"audit: {over['n_synthetic']} synthetic images, {over['flagged']} flagged as near-copies "
        f"({100 * over['flagged_fraction']:.2f} %; real images over the val-calibrated threshold: val {percent(over['real_val_over_threshold'])}, "
        f"test {percent(over['real_test_over_threshold'])}), "
        f"label fidelity {percent(fidelity_of_labels['overall']['own_class_fraction'])} "
        f"(real val: {percent(fidelity_of_labels['overall']['real_val_own_class_fraction'])}), "
        f"FD {significant(fidelity_report['overall']['fd_synthetic'])} (real test: {significant(fidelity_report['overall']['fd_test'])}, "
        f"real val: {significant(fidelity_report['overall']['fd_val'])}), "
        f"{timing['total']:.1f} s -> {folder / 'audit.md'}",
        flush=True,
    )
    return report


def _source_rows(source_index: np.ndarray, train_indices: np.ndarray) -> np.ndarray:
    """Each synthetic image's source as a row of the run's training images (-1 for images drawn from noise)."""
    position = {int(t): row for row, t in enumerate(train_indices)}
    return np.array([position.get(int(s), -1) for s in source_index], dtype=np.int64)


def _variations_report(data: RunData, synthetic: ImageSet, source_rows: np.ndarray) -> dict:
    """How close each variation stays to its own source (pixel correlation), per class and overall."""
    varied = source_rows >= 0
    correlation = paired_correlation(synthetic.images[varied], data.train.images[source_rows[varied]])
    labels = synthetic.labels[varied]

    def summary(values: np.ndarray) -> dict:
        return {"n": int(values.size), **({f"{name}_source_correlation": float(np.quantile(values, q)) for name, q in
                                           (("p10", 0.1), ("median", 0.5), ("p90", 0.9))} if values.size else {})}

    return {"overall": summary(correlation), "per_class": {data.class_names[c]: summary(correlation[labels == c]) for c in data.classes}}


def _metadata_digest(folder: Path) -> str:
    """Identifies the synthetic set an audit describes: `generate` adding images rewrites metadata.csv."""
    return hashlib.sha256(SynthDir(folder).metadata.read_bytes()).hexdigest()


def _label_fidelity_summary(labels: dict | None) -> dict:
    """read_audit_summary's label fidelity: overall, on real val, and the class where the synthetic share is lowest
    (None values for audits made before label fidelity existed)."""
    if not labels:
        return {"label_fidelity": None, "label_fidelity_real_val": None, "label_fidelity_lowest": None}
    rows = {name: row for name, row in labels["per_class"].items() if row["n_synthetic"]}
    name = min(rows, key=lambda n: rows[n]["own_class_fraction"], default=None)
    return {"label_fidelity": labels["overall"]["own_class_fraction"],
            "label_fidelity_real_val": labels["overall"]["real_val_own_class_fraction"],
            "label_fidelity_lowest": None if name is None else {
                "class": name, "synthetic": rows[name]["own_class_fraction"], "real_val": rows[name]["real_val_own_class_fraction"]}}


def read_audit_summary(synthetic_dir: str | Path) -> dict | None:
    """The headline numbers of a synthetic set's audit.json (for other reports), or None when it has not been audited.

    `stale` is True when the set has changed since (its metadata.csv is not the one audited).
    """
    folder = SynthDir(Path(synthetic_dir))
    try:
        report = read_json(folder.audit_json, "audit.json")
    except FileNotFoundError:
        return None
    try:
        fid, mem = report["fidelity"]["overall"], report["memorization"]["overall"]
    except (KeyError, TypeError):
        raise UserError(f"{folder.audit_json}: incomplete audit.json; rerun `synthaug audit` on the set") from None
    current = _metadata_digest(folder.root) if folder.metadata.is_file() else None
    return {
        "stale": current != report.get("synthetic_metadata_sha256"),
        **{f"{m}_{s}": fid[f"{m}_{s}"] for m in METRICS for s in CANDIDATES},
        "flagged": mem["flagged"],
        "flagged_fraction": mem["flagged_fraction"],
        "real_val_over_threshold": mem["real_val_over_threshold"],
        "real_test_over_threshold": mem.get("real_test_over_threshold"),
        "calibration_split": report["settings"].get("calibration_split", "test"),  # audits before the fix calibrated on test
        **_label_fidelity_summary(report.get("label_fidelity")),
        "copy_quantile": report["settings"]["copy_quantile"],
    }
