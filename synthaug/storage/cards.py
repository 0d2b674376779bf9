"""Cards for sharing on the Hugging Face Hub: `<run>/README.md` (a model card) and `<synthetic folder>/README.md` (a
dataset card), each Hub front matter (YAML between `---` lines) then Markdown, written atomically from the files the
stages leave (recipe.yaml, classes.json, summary.json, manifest.json, audit.json), never from memory.

`fit` writes the model card when a run's models are finished, `generate` the dataset card when a set is finished, and
`audit` should write both again once audit.json is written (`write_model_card(run)`, `write_dataset_card(folder)`).
A card depends only on what decides the files it describes (no folder paths of its own, batch size, process count or
clock), so the same set drawn twice has the same card.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from pathlib import Path

import yaml
from safetensors import safe_open

from synthaug.recipe.sections import medmnist_info
from synthaug.storage.files import atomic_write_text, read_json
from synthaug.storage.rundir import POOL_MODEL_DIR, Run, RunDir, SynthDir, open_run

CARD = "README.md"
MEDMNIST_CITATION = ("Jiancheng Yang, Rui Shi, Donglai Wei, Zequan Liu, Lin Zhao, Bilian Ke, Hanspeter Pfister, Bingbing Ni. "
                     "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification. "
                     "Scientific Data, 2023.")
NOT_CLINICAL = "For research on data augmentation only: not for clinical use, and no substitute for real patient data."


# ---------------------------------------------------------------------------------------------
# What the source data allows


def source_of(data: dict) -> dict:
    """The source data of a recipe's `data` section (as JSON): its name, Hub license id, license and attribution text."""
    flag = data.get("medmnist")
    if flag:
        info = medmnist_info().get(flag, {})
        license_text = info.get("license") or "unknown"
        return {
            "name": flag,
            "title": f"MedMNIST {info.get('python_class', flag)}",
            "license_id": "-".join(license_text.lower().split()) if license_text != "unknown" else "unknown",
            "license": license_text,
            "description": info.get("description", ""),
            "attribution": (f"Derived from MedMNIST {info.get('python_class', flag)} ({license_text}). Anything made from it "
                            f"(these weights, synthetic images) must credit MedMNIST ({MEDMNIST_CITATION}) and the source "
                            f"dataset {info.get('python_class', flag)} is built on (described under Source), and keep the "
                            f"{license_text} license{' (non-commercial use only)' if 'NC' in license_text else ''}."),
        }
    name = Path(str(data.get("folder") or "images")).name
    return {
        "name": name,
        "title": f"the image folder {name}",
        "license_id": "unknown",
        "license": "unknown",
        "description": "",
        "attribution": ("Trained on a folder of images whose license synthaug does not know: set `license:` above to the "
                        "source data's license, and credit its owners, before sharing."),
    }


# ---------------------------------------------------------------------------------------------
# Markdown pieces


def front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False) + "---\n"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket of `n` items."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if n < bound), "100M<n<1B")


# ---------------------------------------------------------------------------------------------
# Audit figures (audit.json, read as data: auditing is a higher layer)


def _metadata_sha256(folder: Path) -> str | None:
    path = SynthDir(folder).metadata
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def audit_figures(folder: Path) -> dict | None:
    """The headline numbers of a synthetic folder's audit.json, None when it has none (or an unreadable one)."""
    try:
        report = read_json(SynthDir(folder).audit_json, "audit.json")
        fid, mem = report["fidelity"]["overall"], report["memorization"]
    except FileNotFoundError:
        return None
    except Exception:  # a damaged or older audit.json: the card leaves the audit out rather than fail the stage
        return None
    return {
        "stale": _metadata_sha256(folder) != report.get("synthetic_metadata_sha256"),
        "fidelity": fid,
        "overall": mem.get("overall", {}),
        "per_class": mem.get("per_class", {}),
        "copy_quantile": report.get("settings", {}).get("copy_quantile"),
        "command": report.get("command"),
    }


def _stale_note(figures: dict) -> str:
    return ("\n\n*The set changed after this audit (metadata.csv differs): rerun `synthaug audit` for current figures.*"
            if figures["stale"] else "")


# ---------------------------------------------------------------------------------------------
# Model card: <run>/README.md


def model_card_path(run: RunDir) -> Path:
    return run.root / CARD


def _parameters(run: RunDir, model_dir: str) -> int | None:
    weights = sorted((run.model(model_dir) / "unet").glob("*.safetensors"))
    if not weights:
        return None
    with safe_open(str(weights[0]), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def write_model_card(run: Run | RunDir | str | Path) -> Path:
    """Write `<run>/README.md` from the run's files, the audit figures of its audited synthetic folders included; returns
    its path. Call it again whenever those files change (fit finishing, audit)."""
    run = open_run(run if isinstance(run, (Run, RunDir)) else Path(run))
    path = model_card_path(run.dir)
    atomic_write_text(path, render_model_card(run))
    return path


def render_model_card(run: Run) -> str:
    recipe, info, root = run.recipe, run.info, run.dir
    source = source_of(recipe.data.model_dump(mode="json"))
    meta = {
        "library_name": "diffusers",
        "pipeline_tag": "unconditional-image-generation",
        "license": source["license_id"],
        "tags": ["synthaug", "diffusion", "medical-imaging", source["name"]],
        "datasets": [source["name"]],
    }
    conditional = info.conditioning == "class_conditional"
    kind = "a class-conditional DDPM" if conditional else f"{len(set(info.models.values()))} DDPMs, one per class"
    parts = [
        front_matter(meta),
        f"# {recipe.name}: {kind} of {source['title']} (synthaug)\n",
        f"Pixel-space diffusion model{'' if conditional else 's'} trained by `synthaug fit` on {sum(info.counts.values())} "
        f"real {source['name']} images, to draw labelled synthetic images of its {len(info.classes)} class(es). {NOT_CLINICAL}\n",
        _training_data(run, source),
        _model_section(run),
        _training_section(run),
        _usage_section(run),
        _audit_section(root),
        f"## License and attribution\n\nLicense: {source['license']}. {source['attribution']}\n",
    ]
    return "\n".join(parts)


def _training_data(run: Run, source: dict) -> str:
    info = run.info
    subset = json.dumps(info.subset, sort_keys=True) if info.subset else "none (the whole training split)"
    lines = [
        "## Training data\n",
        f"- Dataset: {source['title']} (`{source['name']}`), {info.size}x{info.size} px, {info.channels} channel(s)",
        f"- Subset: {subset}",
        f"- Labelled real training images: {sum(info.counts.values())} (train indices in classes.json: {len(info.train_indices)}), "
        f"of {sum(info.split_counts.values())} in the training split",
    ]
    if info.unlabeled:
        lines.append(f"- Unlabeled pool (data.unlabeled): {info.unlabeled.get('count', '?')} images from {info.unlabeled.get('source', '?')}")
    rows = [[c, info.class_names[c], info.counts.get(c, 0), info.split_counts.get(c, 0), info.models.get(c, "-")] for c in info.classes]
    lines += ["", table(["class", "name", "training images", "training split", "model folder"], rows)]
    if source["description"]:
        lines += ["", f"Source: {source['description']}"]
    return "\n".join(lines) + "\n"


def _model_dirs(run: Run) -> list[str]:
    dirs = sorted(set(run.info.models.values()))
    return ([POOL_MODEL_DIR] if run.dir.is_finished(POOL_MODEL_DIR) else []) + dirs


def _model_section(run: Run) -> str:
    recipe, info = run.recipe, run.info
    m, d = recipe.model, recipe.diffusion
    conditional = info.conditioning == "class_conditional"
    rows = []
    for model_dir in _model_dirs(run):
        finished = run.dir.is_finished(model_dir)
        params = _parameters(run.dir, model_dir) if finished else None
        rows.append([f"models/{model_dir}", "finished" if finished else "not trained yet",
                     f"{params / 1e6:.2f} M" if params else "-"])
    lines = [
        "## Model\n",
        f"- Conditioning: {info.conditioning}" + (f" (one UNet over classes 0..{len(info.class_names) - 1}; class index "
                                                  f"{len(info.class_names)} is the null class used for guidance)" if conditional else
                                                  " (one unconditional UNet per class)"),
        f"- diffusers UNet2DModel: block_out_channels {list(m.block_out_channels)}, layers_per_block {m.layers_per_block}, "
        f"attention_levels {m.attention_levels}, norm_num_groups {m.norm_num_groups}, sample_size {info.size}",
        f"- Noise schedule: DDPMScheduler, {d.num_train_timesteps} timesteps, {d.beta_schedule}, {d.prediction_type}",
        "- Weights: the EMA weights, safetensors, in each model folder's `unet/` (diffusers pipeline layout)",
        "",
        table(["model folder", "state", "parameters"], rows),
    ]
    return "\n".join(lines) + "\n"


def _training_section(run: Run) -> str:
    t = run.recipe.train
    summary = run.dir.read_summary()
    models = summary.get("models", {})
    rows = [[model_dir, e.get("steps"), _num(e.get("final_loss"), 4), e.get("real_images"), _num(e.get("wall_s")), _num(e.get("images_per_s"))]
            for model_dir, e in sorted(models.items())]
    versions = summary.get("versions", {})
    lines = [
        "## Training\n",
        f"- Steps: {t.steps}" + (f" (after {t.pretrain_steps} on the unlabeled pool)" if t.pretrain_steps else "")
        + f", batch size {t.batch_size} x {t.gradient_accumulation_steps} accumulation, AdamW lr {t.lr} "
        f"(warmup {t.warmup_steps}, cosine), EMA decay {t.ema_decay}, min-SNR gamma {t.snr_gamma}, augment {list(t.augment)}, "
        f"mixed precision {t.mixed_precision}",
        f"- Seed: {t.seed} (every random draw of a step is seeded by (seed, class, step): a resumed run ends with the same weights)",
        f"- Hardware: {summary.get('device', 'unknown device')}, {summary.get('processes', '?')} process(es); "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if rows:
        lines += ["", table(["model", "steps", "final loss", "real images", "wall s (last session)", "images/s"], rows)]
    return "\n".join(lines + _privacy_lines(t.privacy, models)) + "\n"


def _privacy_lines(privacy, models: dict) -> list[str]:
    """The model card's privacy guarantee: the epsilon each model spent (summary.json), or that there is none."""
    if privacy is None:
        return ["", "- Differential privacy: none (`train.privacy` not set); see the audit's membership inference"]
    spent = {model_dir: e["privacy"] for model_dir, e in sorted(models.items()) if e.get("privacy")}
    rows = [[model_dir, _num(p["epsilon"]), f"{p['delta']:g}", _num(p["noise_multiplier"]), _num(p["sample_rate"]), p["steps"]]
            for model_dir, p in spent.items()]
    worst = max((p["epsilon"] for p in spent.values()), default=None)
    return ["", f"- Differential privacy: DP-SGD with Opacus (Poisson sampling, per-sample clipping at {privacy.max_grad_norm}, "
            f"Gaussian noise, RDP accountant), target epsilon {privacy.epsilon:g} at delta {privacy.delta:g} per model; "
            + (f"spent: epsilon {_num(worst)} at most (each training image is in one model only, so the run is "
               f"({_num(worst)}, {privacy.delta:g})-differentially private with respect to one image)" if spent else "no model finished yet"),
            *(["", table(["model", "epsilon spent", "delta", "noise multiplier", "sample rate", "steps"], rows)] if rows else [])]


def _usage_section(run: Run) -> str:
    conditional = run.info.conditioning == "class_conditional"
    model_dir = "all" if conditional else sorted(set(run.info.models.values()))[0]
    call = "pipe(class_labels=[0, 1], generator=torch.Generator().manual_seed(0)).images" if conditional else \
        "pipe(num_images=4, generator=torch.Generator().manual_seed(0)).images"
    return "\n".join([
        "## How to use\n",
        "```python",
        "import torch",
        "from synthaug import SynthaugPipeline",
        "",
        f'pipe = SynthaugPipeline.from_pretrained("{run.root.name}/models/{model_dir}")  # a local copy of this folder',
        f"images = {call}  # PIL images",
        "```",
        "",
        ("Class indices are those of the table above; `guidance_scale` > 1 applies classifier-free guidance. " if conditional else
         "Each `models/<class>` folder is one class's model. ")
        + "From the Hub: `huggingface_hub.snapshot_download(repo)`, then `from_pretrained(f\"{path}/models/...\")`. "
        "Plain diffusers loads the components too (`UNet2DModel.from_pretrained(folder, subfolder=\"unet\")`). "
        "`synthaug generate --run <this folder>` draws a whole synthetic set with provenance.",
        "",
        "Sharing: `hf upload <repo> <this folder> --include 'README.md' --include 'models/**' --include 'samples/**'` (older huggingface_hub: "
        "`huggingface-cli upload`); each synthetic set has its own dataset card (`hf upload <repo> <set> --repo-type dataset`).",
        "",
    ])


def audited_sets(run: RunDir) -> list[Path]:
    """The synthetic folders inside the run that have an audit.json (the default `synthetic/` first)."""
    if not run.root.is_dir():
        return []
    folders = sorted((d for d in run.root.iterdir() if d.is_dir() and SynthDir(d).audit_json.is_file()),
                     key=lambda d: (d != run.synthetic, d.name))
    return folders


def _audit_section(run: RunDir) -> str:
    blocks = ["## Audit\n"]
    for folder in audited_sets(run):
        figures = audit_figures(folder)
        if figures is None:
            continue
        fid, mem = figures["fidelity"], figures["overall"]
        rows = [
            ["images", fid.get("n"), "", ""],
            ["Frechet distance (features)", _num(fid.get("fd_synthetic")), _num(fid.get("fd_test")), _num(fid.get("fd_val"))],
            ["precision", _num(fid.get("precision_synthetic")), _num(fid.get("precision_test")), _num(fid.get("precision_val"))],
            ["recall", _num(fid.get("recall_synthetic")), _num(fid.get("recall_test")), _num(fid.get("recall_val"))],
            ["density", _num(fid.get("density_synthetic")), _num(fid.get("density_test")), _num(fid.get("density_val"))],
            ["coverage", _num(fid.get("coverage_synthetic")), _num(fid.get("coverage_test")), _num(fid.get("coverage_val"))],
        ]
        blocks.append(
            f"### `{folder.name}/`\n\n" + table(["", "synthetic", "real test", "real val"], rows) + "\n\n"
            f"Near-copies of training images: {mem.get('flagged', '-')} of {mem.get('n_synthetic', '-')} "
            f"({_percent(mem.get('flagged_fraction'))}); real test images over the same threshold (out of sample): "
            f"{_percent(mem.get('real_test_over_threshold'))} (threshold: the {figures['copy_quantile']} quantile of real val "
            f"images' correlation with their nearest training image). Details: `{folder.name}/audit.md`." + _stale_note(figures) + "\n"
        )
    if len(blocks) == 1:
        blocks.append("Not audited yet: `synthaug audit --run <this run>` measures fidelity and near-copies of a synthetic set.\n")
    return "\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# Dataset card: <synthetic folder>/README.md


def dataset_card_path(folder: Path) -> Path:
    return Path(folder) / CARD


def write_dataset_card(folder: str | Path) -> Path | None:
    """Write `<folder>/README.md` for a finished synthetic set (a complete manifest.json); returns its path, or None for
    a folder that holds no finished set (nothing is written)."""
    folder = Path(folder)
    manifest = SynthDir(folder).read_manifest()
    if not manifest or not manifest.get("complete"):
        return None
    path = dataset_card_path(folder)
    atomic_write_text(path, render_dataset_card(manifest, audit_figures(folder)))
    return path


def _run_classes(manifest: dict) -> dict | None:
    """The classes.json of the run that made the set, when it is still there."""
    try:
        return read_json(Path(manifest["run"]) / "classes.json", "classes.json")
    except Exception:
        return None


def _ratio_between(counts: list[int], reals: list[int]) -> str | None:
    """A ratio R with floor(R x real + 0.5) = count for every class (generate --ratio), in its shortest decimals."""
    lo, hi = 0.0, math.inf
    for count, real in zip(counts, reals):
        if real <= 0:
            if count:
                return None
            continue
        lo, hi = max(lo, (count - 0.5) / real), min(hi, (count + 0.5) / real)
    if not lo < hi:
        return None
    for digits in range(7):
        candidate = math.ceil(lo * 10**digits) / 10**digits
        if lo <= candidate < hi:
            return f"{candidate:.{digits}f}"
    return None


def generate_command(manifest: dict) -> str:
    """A `synthaug generate` command that draws this set (into the run's synthetic/ folder unless --out is added)."""
    prov, settings = manifest["provenance"], manifest.get("recipe", {}).get("generate", {})
    classes = manifest["classes"]
    counts = [entry["count"] for entry in classes.values()]
    reals = [entry.get("real_count", 0) for entry in classes.values()]
    words = ["synthaug", "generate", "--run", str(manifest["run"])]
    variations = prov.get("mode") == "from_real"
    run_info = _run_classes(manifest)
    trained = [int(c) for c in run_info["classes"]] if run_info else list(range(len(manifest.get("class_names", []))))
    largest = max(int(n) for n in run_info["counts"].values()) if run_info else None
    if variations and all(r > 0 for r in reals) and len({c / r for c, r in zip(counts, reals)}) == 1 and counts[0] % reals[0] == 0:
        words += ["--per-real", str(counts[0] // reals[0])]
    elif len(set(counts)) == 1:
        words += ["--per-class", str(counts[0])]
    elif largest is not None and all(c == largest - r for c, r in zip(counts, reals)):
        words += ["--balance"]
    elif (ratio := _ratio_between(counts, reals)) is not None:
        words += ["--ratio", ratio]
    else:
        words += ["--per-class", "N"]  # not reachable from generate's own amounts; listed per class above
    if sorted(int(c) for c in classes) != sorted(trained):
        words += ["--classes", *[str(c) for c in sorted(int(c) for c in classes)]]
    words += ["--seed", str(prov["seed"]), "--sampler", str(prov["sampler"]), "--steps", str(prov["steps"])]
    if prov.get("guidance_scale", 1.0) != 1.0:
        words += ["--guidance-scale", str(prov["guidance_scale"])]
    if manifest.get("format", "png") != "png":
        words += ["--format", str(manifest["format"])]
    if variations:
        words += ["--from-real", "--strength", ",".join(str(s) for s in prov.get("strength", []))]
    if prov.get("mode") == "translate":
        words += ["--translate", "--strength", ",".join(str(s) for s in prov.get("strength", [])), "--translate-from", str(prov["translate_from"]),
                  "--gamma", str(prov["gamma"])]
    if settings.get("reject_copies"):
        words += ["--reject-copies"]
    if settings.get("filter_confidence") is not None:
        words += ["--filter-confidence", str(settings["filter_confidence"])]
    if prov.get("device") == "cuda":
        words += ["--batch-size", str(prov["block_size"])]  # on a GPU the bytes depend on the block size
    return shlex.join(words)


def _mode_in_words(prov: dict) -> str:
    if prov.get("mode") == "from_real":
        return f"variations of the real training images (SDEdit), strength {prov.get('strength')}"
    if prov.get("mode") == "translate":
        return (f"translations of real training images of other classes ({prov.get('translate_from')} classes; Diff-Mix), strength "
                f"{prov.get('strength')}; soft labels in metadata.csv (soft_<k>): s^{prov.get('gamma')} the image's class, the rest "
                "the source's")
    return "drawn from noise"


def render_dataset_card(manifest: dict, figures: dict | None) -> str:
    recipe = manifest.get("recipe", {})
    source = source_of(recipe.get("data", {}))
    prov = manifest["provenance"]
    total = int(manifest["total"])
    classes = manifest["classes"]
    run_name = Path(str(manifest["run"])).name
    variations = prov.get("mode") == "from_real"
    meta = {
        "license": source["license_id"],
        "tags": ["synthaug", "synthetic", "diffusion", "medical-imaging", source["name"]],
        "task_categories": ["image-classification"],
        "size_categories": [size_category(total)],
        "pretty_name": f"Synthetic {source['name']} images ({run_name}, synthaug)",
    }
    custom = [f["name"] for f in prov.get("filters", []) if f.get("name") not in ("near_copy", "low_confidence")]
    rows = [[c, e["name"], e["count"], e.get("real_count", "-"), e.get("dropped", 0),
             ", ".join(f"{k} {v}" for k, v in sorted(e.get("rejected", {}).items())) or "-"] for c, e in classes.items()]
    filters = ", ".join(f["name"] for f in prov.get("filters", [])) or "none"
    settings = [
        f"- Mode: {_mode_in_words(prov)}",
        f"- Sampler: {prov['sampler']}, {prov['steps']} steps, guidance scale {prov['guidance_scale']}, seed {prov['seed']} "
        "(image i of class c comes from (seed, c, i) alone)",
        f"- Candidate filters: {filters}",
        f"- Precision: {prov.get('precision')} on {prov.get('device')}, blocks of {prov.get('block_size')}; {manifest.get('determinism', '')}",
        "- Models (sha256 of the UNet weights): " + ", ".join(f"`{m}` {sha[:16]}" for m, sha in sorted(prov["model_sha256"].items())),
        f"- Generation id: `{manifest['generation_id']}`; " + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()),
    ]
    if manifest.get("extra_files_on_disk"):
        settings.append(f"- {manifest['extra_files_on_disk']} older image(s) in the folder are not part of this set (not in metadata.csv)")
    command = generate_command(manifest)
    if custom:
        command += f"  # plus the candidate filter(s) {', '.join(custom)}, given in Python (generate(candidate_filters=...))"
    layout = (f"`{manifest['npz']}`: MedMNIST's layout (`train_images` uint8 (N, H, W[, C]), `train_labels` (N, 1))."
              if manifest.get("npz") else "")
    pngs = manifest.get("format", "png") != "npz"
    parts = [
        front_matter(meta),
        f"# Synthetic {source['name']} images ({run_name}, synthaug)\n",
        f"{total} synthetic images of {len(classes)} class(es), drawn by `synthaug generate` from the diffusion model(s) of the "
        f"run `{run_name}`, trained on real {source['title']} images. {NOT_CLINICAL}\n",
        "## Contents\n",
        table(["class", "name", "images", "real training images", "candidates rejected", "rejected by"], rows) + "\n",
        ("`<class folder>/<class>_<i:06d>.png`, 8-bit PNG with its provenance in the text chunk `synthaug`; `metadata.csv` "
         "(file_name, label, class_name, then provenance) lists the set (Hugging Face imagefolder layout); `manifest.json` "
         "the settings. " if pngs else "") + layout + "\n",
        "## Generation\n",
        "\n".join(settings) + "\n",
        "Made by (an equivalent command):\n",
        f"```\n{command}\n```\n",
        _copy_rate_section(figures),
        "## Source data\n",
        (source["description"] or f"Trained on {source['title']}.") + "\n",
        "## Loading\n",
        ("```python\nfrom datasets import load_dataset\nds = load_dataset(\"imagefolder\", data_dir=\"<this folder>\")  # or the Hub repo\n"
         "from synthaug import SynthDataset\nsynthetic = SynthDataset(\"<this folder>\")  # (image, label) like medmnist's datasets\n```\n"
         if pngs else "```python\nimport numpy as np\nnpz = np.load(\"<this folder>/" + str(manifest.get("npz")) + "\")\n```\n")
        + "\nSharing: `hf upload <repo> <this folder> --repo-type dataset` (older huggingface_hub: `huggingface-cli upload`).\n",
        f"## License and attribution\n\nLicense: {source['license']}. {source['attribution']}\n",
    ]
    return "\n".join(parts)


def _copy_rate_section(figures: dict | None) -> str:
    if figures is None:
        return "## Copy rate\n\nNot audited yet: `synthaug audit --run <run> --synthetic <this folder>` measures near-copies of training images.\n"
    mem = figures["overall"]
    rows = [[name, e.get("n_synthetic"), e.get("flagged"), _percent(e.get("flagged_fraction")), _percent(e.get("real_test_over_threshold"))]
            for name, e in sorted(figures["per_class"].items())]
    rows.append(["all", mem.get("n_synthetic"), mem.get("flagged"), _percent(mem.get("flagged_fraction")), _percent(mem.get("real_test_over_threshold"))])
    return ("## Copy rate (audit)\n\n"
            f"Near-copies of the run's training images, by `synthaug audit` (threshold: the {figures['copy_quantile']} quantile of "
            "real val images' correlation with their nearest training image, per class); real test images over the same "
            "threshold (out of sample) for comparison.\n\n"
            + table(["class", "images", "near-copies", "copy rate", "real test over threshold"], rows)
            + f"\n\nFrechet distance (features): synthetic {_num(figures['fidelity'].get('fd_synthetic'))}, real test "
            f"{_num(figures['fidelity'].get('fd_test'))}. Details: `audit.md`." + _stale_note(figures) + "\n")
