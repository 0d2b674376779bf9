"""`synthaug release`: pack one finished, audited synthetic set into a folder another site can use anywhere
(the layout: `synthaug.storage.release`).

What leaves the site is decided here and nowhere else: the images (re-encoded, without the run's provenance chunk,
which names the run's folder), metadata.csv, the dataset card, the audit with its paths removed (never its figures:
they show real training images beside their nearest synthetic ones), the recipe with paths reduced to names,
optionally the soft labels of the site's own classifier (the teacher) and the generator's weights. Never a real
image: a set of variations of real images is refused.

The release gates (`Gates`) read the set's audit: the near-copy rate must not exceed that of the real non-member
(val) images, calibrated by the audit on val, never on test, beyond the sampling noise of the set's own rate (the lower
end of its exact 95 % interval is compared), and every membership-inference attack the audit ran
must have an AUC at most `max_membership_auc`. A failing gate refuses the release in one line; `override` releases
anyway and the card and release.json say so.
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from scipy.stats import binomtest

from synthaug.auditing.audit import read_audit_summary
from synthaug.classifier.harness import predict
from synthaug.core.errors import UserError
from synthaug.core.runtime import pick_device
from synthaug.core.version import __version__
from synthaug.data.synthetic import read_synthetic
from synthaug.reference.realdata import load_run_data, real_features
from synthaug.storage.cards import audit_figures
from synthaug.storage.files import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from synthaug.storage.pixels import to_model_tensor
from synthaug.storage.release import IMAGES, RELEASE_FORMAT, SOFT_PREFIX, ReleaseDir, file_sha256
from synthaug.storage.rundir import CONDITIONAL_MODEL_DIR, SynthDir, open_run, safe_name

# The membership-inference gate's default: the target for a released set, an attack at most 5 points of AUC
# better than a coin. The copy gate's default threshold is not a constant: the real val images' own rate.
DEFAULT_MAX_MEMBERSHIP_AUC = 0.55


@dataclass(frozen=True)
class Gates:
    """Thresholds a set must pass to be released. `max_copy_rate` None: the rate of real val images over the audit's
    val-calibrated near-copy threshold (non-members of the training set: what an honest image scores)."""

    max_copy_rate: float | None = None
    max_membership_auc: float = DEFAULT_MAX_MEMBERSHIP_AUC


def gate_results(report: dict, gates: Gates) -> list[dict]:
    """Each gate of `gates` on the audit `report`: {"gate", "value", "threshold", "passed", "calibration"}."""
    overall = report["memorization"]["overall"]
    copy_threshold = gates.max_copy_rate if gates.max_copy_rate is not None else overall["real_val_over_threshold"]
    # A set passes unless it shows more near-copies than the threshold beyond its own sampling noise: the lower end of
    # the exact 95 % interval of its rate (1 flagged of 16 honest images is no evidence against a 5 % val rate).
    lower = float(binomtest(int(overall["flagged"]), int(overall["n_synthetic"])).proportion_ci(0.95, "exact").low)
    results = [{"gate": "near-copy rate", "value": overall["flagged_fraction"], "lower_95": lower, "threshold": copy_threshold,
                "passed": lower <= copy_threshold,
                "calibration": "given" if gates.max_copy_rate is not None else "real val images' rate (non-members)"}]
    for name, attack in membership_attacks(report).items():
        results.append({"gate": f"membership inference AUC ({name})", "value": attack["auc"], "threshold": gates.max_membership_auc,
                        "passed": attack["auc"] <= gates.max_membership_auc, "calibration": "documented default"})
    return results


def membership_attacks(report: dict) -> dict[str, dict]:
    """The membership-inference attacks an audit ran on the run and its set, by name, each with its "auc" (none in an
    audit made before them); not its "baseline" (the same attack with real test images in place of the set)."""
    found = {}

    def visit(node, path: list[str]) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("auc"), (int, float)):
                found[" / ".join(path) or "attack"] = node
                return
            for key, value in node.items():
                visit(value, [*path, str(key)])

    visit({k: v for k, v in (report.get("membership") or {}).items() if k != "baseline"}, [])
    return found


def release(synthetic_dir: str | Path, out: str | Path, *, teacher: bool = False, teacher_filter: float | None = None,
            with_weights: bool = False, gates: Gates = Gates(), override: bool = False, show_progress: bool = True,
            overrides: list[str] | None = None, wait: bool = False) -> Path:
    """Pack the finished, audited set in `synthetic_dir` into the new folder `out`; returns `out`.

    `teacher`: ship the soft labels of the run's own classifier (the audit's feature classifier: the evaluate harness
    trained on the run's real training images, chosen on val) for every image. `teacher_filter` P: keep only images
    that classifier gives at least P for their own class (implies `teacher`). `with_weights`: ship the generator.
    Refused in one line: an unfinished set, a set of variations, an unaudited or stale audit, a failing gate (unless
    `override`), an `out` that exists. `overrides`: `--set` pairs for the run's recipe (e.g. data.root). The set's folder
    is locked while it is read (no generate or audit writes into it meanwhile; `wait`: queue behind one)."""
    folder, out = Path(synthetic_dir), Path(out)
    if out.exists():
        raise UserError(f"--out {out}: exists; a release is written to a new folder (delete it or choose another)")
    if teacher_filter is not None and not 0 < teacher_filter < 1:
        raise UserError(f"--teacher-filter: a probability strictly between 0 and 1, got {teacher_filter}")
    manifest = SynthDir(folder).read_manifest() if folder.is_dir() else None
    if not manifest or not manifest.get("complete"):
        raise UserError(f"--synthetic {folder}: not a finished synthetic set (no complete manifest.json); finish it with the "
                        "`synthaug generate` command that made it")
    run = open_run(Path(manifest["run"]), overrides)
    with FolderLock(folder, "release", wait):
        return _release(folder, out, run, teacher, teacher_filter, with_weights, gates, override, show_progress)


def _release(folder: Path, out: Path, run, teacher: bool, teacher_filter: float | None, with_weights: bool, gates: Gates, override: bool,
             show_progress: bool) -> Path:
    synthetic = read_synthetic(folder, run, show_progress)
    if synthetic.variations:
        raise UserError(f"--synthetic {folder}: holds variations or translations of real training images (generate --from-real, "
                        "--translate), each a noised copy of a real image; release a set drawn from noise")
    figures = audit_figures(folder)
    if figures is None:
        raise UserError(f"--synthetic {folder}: unaudited; run `synthaug audit --run {run.root} --synthetic {folder}` first")
    if figures["stale"]:
        raise UserError(f"--synthetic {folder}: its audit.json is of another version of the set; run `synthaug audit` again")
    report = read_json(SynthDir(folder).audit_json, "audit.json")
    results = gate_results(report, gates)
    failed = [g for g in results if not g["passed"]]
    if failed and not override:
        g = failed[0]
        shown = f"{g['value']:.4f}" + (f" (95 % lower bound {g['lower_95']:.4f})" if "lower_95" in g else "")
        raise UserError(f"release gate failed: {g['gate']} {shown} > {g['threshold']:.4f} ({g['calibration']}); "
                        f"{len(failed)} gate(s) failed in all; see {SynthDir(folder).audit_md} (--override-gates releases anyway, "
                        "and the card says so)")
    soft, teacher_info = None, None
    keep = np.arange(len(synthetic.images.labels))
    if teacher or teacher_filter is not None:
        soft, teacher_info = _teacher_soft_labels(run, synthetic.images.images, show_progress)
        if teacher_filter is not None:
            own = soft[np.arange(len(keep)), synthetic.images.labels]
            keep = np.flatnonzero(own >= teacher_filter)
            dropped = {run.info.class_names[c]: int(((synthetic.images.labels == c) & (own < teacher_filter)).sum()) for c in run.info.classes}
            teacher_info.update(filter=teacher_filter, dropped=dropped)
            if not len(keep):
                raise UserError(f"--teacher-filter {teacher_filter}: the teacher doubts every image; nothing would be released")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a release killed half-way starts again from nothing
    try:
        _write(tmp, run, synthetic, keep, soft, teacher_info, report, results, failed and override, with_weights, folder)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"release: {len(keep)} images of {len(run.info.classes)} classes -> {out}"
          + (f" (gates overridden: {', '.join(g['gate'] for g in failed)})" if failed else ""), flush=True)
    return out


def _teacher_soft_labels(run, images: np.ndarray, show_progress: bool) -> tuple[np.ndarray, dict]:
    """The run's own classifier's probabilities over every class (N, K) and what it is (how it scored on val)."""
    data = load_run_data(run)
    device = pick_device()
    model, training, _ = real_features(data, device, show_progress)
    columns = predict(model.to(device).eval(), to_model_tensor(images, device))
    soft = np.zeros((len(images), len(run.info.class_names)), dtype=np.float32)
    soft[:, data.classes] = columns
    cfg = data.recipe.evaluate
    info = {"classifier": cfg.classifier, "width": cfg.width, "steps": cfg.steps, "trained_on": f"the run's {len(data.train.labels)} real training images",
            "selected_on": "val", "selected_step": training.get("best_step"),
            "val": {k: training.get("val", {}).get(k) for k in ("acc", "bacc", "auc")}}
    return soft, info


def _write(tmp: Path, run, synthetic, keep: np.ndarray, soft, teacher_info, report: dict, gates: list[dict], overridden: bool,
           with_weights: bool, folder: Path) -> None:
    names = list(run.info.class_names)
    target = ReleaseDir(tmp)
    rows, files = [], {}
    for i in keep:
        label = int(synthetic.images.labels[i])
        name = f"{IMAGES}/{safe_name(names[label])}/{Path(synthetic.files[i]).name}"
        buffer = io.BytesIO()
        pixels = synthetic.images.images[i]
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
        atomic_write_bytes(tmp / name, buffer.getvalue())
        files[name] = file_sha256(tmp / name)
        row = {"file_name": name, "label": label, "class_name": names[label]}
        if soft is not None:
            row.update({f"{SOFT_PREFIX}{k}": float(soft[i, k]) for k in range(len(names))})
        rows.append(row)
    atomic_write_text(target.metadata, pd.DataFrame(rows).to_csv(index=False))
    scrub = _scrubber(run.root, folder, run.recipe)
    if len(keep) == len(synthetic.images.labels):  # the same images under the release's own metadata.csv: the audit still describes them
        report = {**report, "synthetic_metadata_sha256": file_sha256(target.metadata)}
    atomic_write_json(target.audit_json, scrub(report))
    atomic_write_text(target.audit_md, scrub(SynthDir(folder).audit_md.read_text()))
    atomic_write_text(target.recipe, yaml.safe_dump(_portable_recipe(run.recipe), sort_keys=False))
    if with_weights:
        shutil.copytree(run.dir.models / CONDITIONAL_MODEL_DIR if (run.dir.models / CONDITIONAL_MODEL_DIR).is_dir() else run.dir.models,
                        target.model)
    for path in [target.metadata, target.audit_json, target.audit_md, target.recipe, *sorted(target.model.rglob("*"))]:
        if path.is_file():
            files[path.relative_to(tmp).as_posix()] = file_sha256(path)
    counts = pd.Series([names[int(synthetic.images.labels[i])] for i in keep]).value_counts().to_dict()
    recipe = run.recipe
    summary = read_audit_summary(folder) or {}
    manifest = {
        "format": RELEASE_FORMAT, "synthaug": __version__, "name": recipe.name, "class_names": names,
        "classes": [names[c] for c in run.info.classes], "counts": {n: int(counts.get(n, 0)) for n in (names[c] for c in run.info.classes)},
        "size": run.info.size, "channels": run.info.channels, "generation_id": (SynthDir(folder).read_manifest() or {}).get("generation_id"),
        "generator": (f"{recipe.model.conditioning} UNet {recipe.model.block_out_channels}, {recipe.train.steps} steps x batch "
                      f"{recipe.train.batch_size}, trained on {sum(run.info.counts.values())} real images"),
        "real_training_images": int(sum(run.info.counts.values())),
        "gates": gates, "gates_overridden": bool(overridden), "teacher": teacher_info, "soft_labels": soft is not None,
        "weights": with_weights, "privacy": _privacy(run), "audit": scrub(summary), "files": files,
    }
    atomic_write_json(target.manifest, manifest)
    atomic_write_text(target.card, render_release_card(manifest))


def _privacy(run) -> dict | None:
    """The generator's differential privacy: the epsilon its fit spent (the largest of its models'; summary.json) and
    delta; None for an ordinary fit."""
    if run.recipe.train.privacy is None:
        return None
    spent = [m["privacy"]["epsilon"] for m in run.dir.read_summary().get("models", {}).values() if m.get("privacy")]
    return {**run.recipe.train.privacy.model_dump(mode="json"), "epsilon_spent": max(spent) if spent else None}


def _portable_recipe(recipe) -> dict:
    """The recipe with every path reduced to its last name: nothing of the site's machine leaves with it."""
    raw = recipe.model_dump(mode="json")
    raw["output_dir"] = "."
    data = raw["data"]
    data["root"] = None
    for holder, key in ((data, "folder"), (data.get("unlabeled") or {}, "folder")):
        if holder.get(key):
            holder[key] = Path(holder[key]).name
    raw.get("evaluate", {}).pop("release", None)
    return raw


def _scrubber(run_root: Path, folder: Path, recipe):
    """A function that replaces the site's paths (run, set, data root) in strings, lists and dicts by placeholders."""
    places = {str(p): label for p, label in ((run_root.resolve(), "<run>"), (folder.resolve(), "<set>"), (run_root, "<run>"), (folder, "<set>"))}
    if recipe.data.root is not None:
        places[str(Path(recipe.data.root))] = "<data root>"
        places[str(Path(recipe.data.root).resolve())] = "<data root>"
    pattern = re.compile("|".join(re.escape(p) for p in sorted(places, key=len, reverse=True) if p not in ("", ".")))

    def scrub(value):
        if isinstance(value, str):
            return pattern.sub(lambda m: places[m.group(0)], value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value
    return scrub


def render_release_card(manifest: dict) -> str:
    """README.md of a release: what it is, what made it, what its audit and gates found, how to use it."""
    lines = [f"# Release {manifest['name']}", "",
             f"{sum(manifest['counts'].values())} synthetic images of {len(manifest['counts'])} classes, made by synthaug "
             f"{manifest['synthaug']} from a generator ({manifest['generator']}). No real image is included.", "",
             "| class | images |", "|---|---|", *(f"| {n} | {c} |" for n, c in manifest["counts"].items()), "",
             "## Gates", "", "| gate | value | threshold | passed | threshold from |", "|---|---|---|---|---|",
             *(f"| {g['gate']} | {g['value']:.4f} | {g['threshold']:.4f} | {'yes' if g['passed'] else '**no**'} | {g['calibration']} |"
               for g in manifest["gates"]), ""]
    if manifest["gates_overridden"]:
        lines += ["**The release was made with failing gates (--override-gates).**", ""]
    if not any(g["gate"].startswith("membership") for g in manifest["gates"]):
        lines += ["The audit holds no membership-inference figures: only the near-copy gate was checked.", ""]
    privacy = manifest.get("privacy")
    lines += ["## Privacy", "", (f"The generator was fitted with DP-SGD: epsilon {privacy.get('epsilon_spent')} spent of a budget of "
                                 f"{privacy.get('epsilon')}, delta {privacy.get('delta')}."
                                 if privacy else "The generator was fitted without differential privacy (epsilon = infinity)."), ""]
    teacher = manifest.get("teacher")
    if teacher:
        val = teacher["val"]
        lines += ["## Soft labels", "", f"metadata.csv's soft_<k> columns are the probabilities of class k (release.json class_names) "
                  f"under the site's own classifier ({teacher['classifier']}, width {teacher['width']}, {teacher['steps']} steps, trained on "
                  f"{teacher['trained_on']}, checkpoint chosen on val at step {teacher['selected_step']}; val ACC "
                  f"{_fmt(val.get('acc'))}, balanced ACC {_fmt(val.get('bacc'))})."]
        if teacher.get("filter") is not None:
            lines += [f"Images it gave less than {teacher['filter']} for their own class were dropped: {teacher['dropped']}."]
        lines += [""]
    lines += ["## Use", "", "In a recipe of the receiving site: `evaluate.release: <this folder>` (classes matched by name), with the arms "
              "real+synthetic[+soft][+classic], pretrain[+soft][+classic] (see the docs, cross-site). Files and their SHA-256 are in "
              "release.json; the reader refuses a changed or missing file.", ""]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "?" if value is None else f"{value:.3f}"


