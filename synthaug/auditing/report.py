"""audit.md of `synthaug audit`."""

from __future__ import annotations
from synthaug.core.formatting import fixed, percent, significant


CANDIDATES = ("synthetic", "test", "val")  # each compared with the training images; test and val are the baselines


METRICS = ("fd", "precision", "recall", "density", "coverage")


def render_audit_markdown(report: dict) -> str:
    s, fid, mem = report["settings"], report["fidelity"], report["memorization"]
    sizes = report["sizes"]
    total = lambda part: sum(sizes[part].values())  # noqa: E731
    lines = [
        f"# Audit of `{report['synthetic']}`",
        "",
        f"Run `{report['run']}`: {total('synthetic')} synthetic images against the {total('train')} real training images the "
        f"generator saw; baselines: {total('test')} real test images and {total('val')} real val images (val calibrates the copy "
        "threshold and selects the feature classifier; test sets nothing). "
        f"Device {report['device']}, {report['timing_s']['total']:.1f} s in all. Reproduce: `{report['command']}`.",
        "",
        "## Fidelity and diversity (feature space)",
        "",
        f"Features: the penultimate layer ({s['feature_dim']} values) of the evaluate harness's `{s['feature_classifier']}` trained "
        f"for {s['feature_classifier_steps']} steps on the run's real training images (val-selected step "
        f"{s['feature_classifier_training']['best_step']}, val accuracy {fixed(s['feature_classifier_training']['val'].get('acc'))}). "
        "Reference: those training images. Each cell "
        "reads **synthetic / real test / real val**: synthetic images against the reference, then the real-vs-real "
        "baselines, real test and real val images against the reference: what real images of new patients score (where the "
        "test split is shifted from the training split, as in some MedMNIST sets, val is the closer baseline). The three "
        "sets are drawn at random to the same size and class mix (n per row). Fréchet distance: lower is closer. Precision "
        f"and density (fidelity), recall and coverage (diversity), k = {s['k']}.",
        "",
        "| classes | n | Fréchet distance | precision | recall | density | coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in [("all", fid["overall"])] + list(fid["per_class"].items()):
        cells = [" / ".join(significant(row[f"fd_{name}"]) for name in CANDIDATES)]
        cells += [" / ".join(fixed(row[f"{m}_{name}"]) for name in CANDIDATES) for m in METRICS[1:]]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Memorization (pixel space)",
        "",
        "Each image's nearest training image by normalized (Pearson) correlation of the pixels"
        + (", mirror images included (the generator trained with horizontal flips)" if s["mirror"] else "")
        + f". Copy threshold of a class: the {s['copy_quantile']} quantile of the nearest-training-image correlation of that "
        f"class's real {_calibration(s)} images (the threshold `generate --reject-copies` uses), so a real image of a new patient "
        f"exceeds it about {percent(1 - s['copy_quantile'])} of the time (real {_baseline(s)} images, not used to set it, show the "
        "out-of-sample rate). A synthetic set flagged far more often than "
        "that is copying training images. Feature distance: Euclidean distance to the nearest training image in feature space; "
        "'feature-close' is the share of synthetic images nearer to a training image than all but "
        f"{percent(1 - s['copy_quantile'])} of real {_calibration(s)} images are.",
        "",
        "| class | synthetic | threshold r | flagged | real test / val over | median r synthetic / real test | median feature distance synthetic / real test | feature-close |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in list(mem["per_class"].items()) + [("all", mem["overall"])]:
        lines.append(
            f"| {name} | {row['n_synthetic']} | {fixed(row['threshold'])} | {row['flagged']} ({percent(row['flagged_fraction'])}) | "
            f"{percent(row['real_test_over_threshold'])} / {percent(row['real_val_over_threshold'])} | "
            f"{fixed(row['median_correlation_synthetic'])} / {fixed(row['median_correlation_real_test'])} | "
            f"{fixed(row['median_feature_distance_synthetic'])} / {fixed(row['median_feature_distance_real_test'])} | "
            f"{percent(row['feature_close_fraction'])} |"
        )
    lines += ["", *_per_class_lines(report)]
    lines += [
        f"![closest pairs]({report['figures']['closest_pairs']})",
        "",
        f"![nearest-neighbour similarity]({report['figures']['similarity']})",
        "",
        *_variation_lines(mem.get("variations")),
        *_pool_lines(mem.get("pool")),
        *_membership_lines(report.get("membership")),
        f"## Flagged files ({len(mem['flagged'])})",
        "",
    ]
    if mem["flagged"]:
        lines += ["| file | class | r | threshold | nearest training image (index in the train split) |", "|---|---|---|---|---|"]
        lines += [
            f"| `{f['file']}` | {f['class_name']} | {f['correlation']:.4f} | {f['threshold']:.4f} | {f['nearest_train_index']}{_symmetry(f)} |"
            for f in mem["flagged"]
        ]
    else:
        lines.append("None.")
    timing = report["timing_s"]
    lines += [
        "",
        "## Timing",
        "",
        f"{report['pixel_pairs_compared']:,} image pairs compared in pixel space in {timing['pixel_nearest_neighbours']:.2f} s on "
        f"{report['device']}.",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {name.replace('_', ' ')} | {seconds:.2f} |" for name, seconds in timing.items()],
        "",
    ]
    return "\n".join(lines)


def _calibration(settings: dict) -> str:
    """The real split that set the copy thresholds (audits made before it was recorded calibrated on test)."""
    return settings.get("calibration_split", "test")


def _baseline(settings: dict) -> str:
    return "test" if _calibration(settings) == "val" else "val"


def _per_class_lines(report: dict) -> list[str]:
    """audit.md's per-class tables: the copy rate and the label fidelity of each class (rare classes first to break)."""
    mem, labels = report["memorization"], report.get("label_fidelity")
    calibration = _calibration(report["settings"])
    lines = [
        "## Per class: copy rate and label fidelity",
        "",
        "A class with few real training images is where a generator starts to copy and to drift into other classes; the "
        "overall figures hide it. **Copy rate**: the share of the class's synthetic images flagged as near-copies of a "
        f"training image, beside the share of that class's real {calibration} images over the same threshold (which they set: "
        f"about {percent(1 - report['settings']['copy_quantile'])} where {calibration} holds many images of the class, one image where "
        f"it holds few) and of its real {_baseline(report['settings'])} images (out of sample).",
        "",
        "| class | real training images | synthetic | copy rate synthetic | real val | real test |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in list(mem["per_class"].items()) + [("all", mem["overall"])]:
        lines.append(
            f"| {name} | {row.get('train_images', 'n/a')} | {row['n_synthetic']} | {row['flagged']} ({percent(row['flagged_fraction'])}) | "
            f"{percent(row['real_val_over_threshold'])} | {percent(row['real_test_over_threshold'])} |"
        )
    if not labels:
        return lines + [""]
    judge = labels["judge"]
    lines += [
        "",
        "**Label fidelity**: the share of the class's synthetic images that the judge assigns to their own class. The judge "
        f"is the feature classifier above: trained on the run's {judge['train_images']} real labelled training images (the "
        f"images the generator saw), its step selected on real {judge['selected_on']} (step {judge['selected_step']} of "
        f"{judge['steps']}); its real val accuracy is {fixed(judge['val_acc'])}"
        + (f" (AUC {fixed(judge['val_auc'])})" if judge.get("val_auc") is not None else "")
        + ". Its own-class share of real val (optimistic: val chose its step) and real test images of each class shows how "
        "far it can be trusted there; a synthetic share far below it means images that look like another class. "
        "A copied training image is judged right trivially: read this beside the copy rate.",
        "",
        "| class | synthetic | own class synthetic | real val | real test | synthetic assigned to |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in list(labels["per_class"].items()) + [("all", labels["overall"])]:
        assigned = ", ".join(f"{other} {n}" for other, n in row["assigned_to"].items() if n)
        lines.append(
            f"| {name} | {row['n_synthetic']} | {row['own_class']} ({percent(row['own_class_fraction'])}) | "
            f"{percent(row['real_val_own_class_fraction'])} | {percent(row['real_test_own_class_fraction'])} | {assigned or '—'} |"
        )
    return lines + [""]


def _symmetry(flagged: dict) -> str:
    """How a flagged image matched its training image: mirrored, turned, or as it is."""
    turns = flagged.get("quarter_turns") or 0
    return (" (mirrored)" if flagged["mirrored"] else "") + (f" ({turns} quarter turns)" if turns else "")


def _pool_lines(pool: dict | None) -> list[str]:
    """audit.md's copy check against the unlabeled pool the generator also learned from."""
    if not pool:
        return []
    return ["## Copies of unlabeled pool images", "",
            f"The generator also learned from {pool['pool_images']:,} unlabeled images (`data.unlabeled`). The same check against "
            f"them, each class's threshold calibrated on the real {pool.get('calibration_split', 'test')} images' nearest pool image:", "",
            "| flagged | flagged fraction | real val / test over threshold | median r synthetic / real test |", "|---|---|---|---|",
            f"| {pool['flagged']} | {percent(pool['flagged_fraction'])} | {percent(pool['real_val_over_threshold'])} / "
            f"{percent(pool.get('real_test_over_threshold'))} | "
            f"{fixed(pool['median_correlation_synthetic'])} / {fixed(pool['median_correlation_real_test'])} |", ""]


def _variation_lines(variations: dict | None) -> list[str]:
    """audit.md's section on variations of real images: how close each stays to its own source."""
    if not variations:
        return []
    lines = ["## Variations of real images", "",
             "This set varies the run's real training images (`generate --from-real`). A variation resembles its own source "
             "by design, so the copy check above compares it with the *other* training images; here is how close each "
             "stays to its own source (pixel correlation, 10th percentile / median / 90th percentile). **Variations are "
             "not anonymous data**: each carries the patient image it was made from.", "",
             "| class | variations | source correlation p10 / median / p90 |", "|---|---|---|"]
    for name, row in list(variations["per_class"].items()) + [("all", variations["overall"])]:
        cells = " / ".join(fixed(row.get(f"{q}_source_correlation")) for q in ("p10", "median", "p90"))
        lines.append(f"| {name} | {row['n']} | {cells} |")
    return lines + [""]


def _membership_lines(membership: dict | None) -> list[str]:
    """audit.md's membership inference: each attack's AUC and TPR at 1 % FPR beside the fair coin's range."""
    if not membership:
        return []
    m, n, model = membership["members"], membership["non_members"], membership.get("model")
    rows = []
    if model:
        t = ", ".join(str(step) for step in model["timesteps"])
        rows += [(f"model: denoising loss (t = {t}, {model['noise_draws']} noise draws)", model["loss"]),
                 (f"model: loss calibrated by {model['reference']}", model["calibrated"])]
    rows += [(f"released set ({membership['released']['images']} images): nearest, pixels", membership["released"]["pixel"]),
             ("released set: nearest, features", membership["released"]["feature"]),
             ("baseline, real test images released: pixels", membership["baseline"]["pixel"]),
             ("baseline, real test images released: features", membership["baseline"]["feature"])]

    def interval(values: list[float]) -> str:
        return f"[{fixed(values[0])}, {fixed(values[1])}]"

    lines = ["## Membership inference", "",
             f"Members: {m['n']} of {m['of']} ({m['source']}); non-members: {n['n']} of {n['of']} ({n['source']}), drawn with "
             "`audit.membership.seed`. Each attack scores every image (higher: member); AUC and the true-positive rate at 1 % "
             "false positives with 95 % bootstrap intervals, beside the fair coin's 95 % range (member labels permuted). "
             + ("" if model else "The model attack needs the run's finished models (not found). "), "",
             "| attack | AUC [95 %] | fair coin AUC | TPR at 1 % FPR [95 %] | fair coin TPR |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {fixed(f['auc'])} {interval(f['auc_interval'])} | {interval(f['coin']['auc_interval'])} | "
              f"{percent(f['tpr_at_1pct_fpr'])} [{percent(f['tpr_interval'][0])}, {percent(f['tpr_interval'][1])}] | "
              f"[{percent(f['coin']['tpr_interval'][0])}, {percent(f['coin']['tpr_interval'][1])}] |" for name, f in rows]
    return lines + [""]
