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
        f"generator saw; baseline: {total('test')} real test images; {total('val')} real val images check the copy threshold. "
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
        f"class's real test images, so a real image of a new patient exceeds it about {percent(1 - s['copy_quantile'])} of the "
        "time (real val images, not used to set it, show the out-of-sample rate). A synthetic set flagged far more often than "
        "that is copying training images. Feature distance: Euclidean distance to the nearest training image in feature space; "
        "'feature-close' is the share of synthetic images nearer to a training image than all but "
        f"{percent(1 - s['copy_quantile'])} of real test images are.",
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
    lines += [
        "",
        f"![closest pairs]({report['figures']['closest_pairs']})",
        "",
        f"![nearest-neighbour similarity]({report['figures']['similarity']})",
        "",
        *_variation_lines(mem.get("variations")),
        *_pool_lines(mem.get("pool")),
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
            "them, each class's threshold calibrated on the real test images' nearest pool image:", "",
            "| flagged | flagged fraction | real val over threshold | median r synthetic / real test |", "|---|---|---|---|",
            f"| {pool['flagged']} | {percent(pool['flagged_fraction'])} | {percent(pool['real_val_over_threshold'])} | "
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
