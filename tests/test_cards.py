"""Cards for the Hub: the model card `fit` writes into a finished run, the dataset card `generate` writes into a finished
set, the audit's figures in both, the license that follows the data, and the generate command a card shows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import untrained_run

from synthaug import SynthDataset
from synthaug.diffusion.training import fit
from synthaug.generation.generate import generate
from synthaug.storage.cards import generate_command, source_of, write_dataset_card, write_model_card
from synthaug.storage.synthset import check_foreign_files

pytestmark = pytest.mark.filterwarnings("ignore:.*MD5 differs")


def card(path: Path) -> tuple[dict, str]:
    """A card's front matter (parsed) and body."""
    text = path.read_text()
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def fake_audit(folder: Path, flagged: int, n: int) -> None:
    """An audit.json as `audit` writes it (the parts the cards read), for the set as it is now."""
    metadata = hashlib.sha256((folder / "metadata.csv").read_bytes()).hexdigest()
    row = {"n_synthetic": n, "flagged": flagged, "flagged_fraction": flagged / n, "real_test_over_threshold": 0.01}
    report = {
        "synthetic_metadata_sha256": metadata, "settings": {"copy_quantile": 0.99}, "command": "synthaug audit",
        "fidelity": {"overall": {"n": n, "fd_synthetic": 12.5, "fd_test": 1.25, "fd_val": 0.5, "precision_synthetic": 0.4}},
        "memorization": {"overall": row, "per_class": {"normal": row}},
    }
    (folder / "audit.json").write_text(json.dumps(report))


def test_a_finished_run_has_a_model_card(tiny_recipe):
    run = fit(tiny_recipe("carded", data={"subset": {"per_class": 5, "seed": 1}}, model={"conditioning": "class_conditional"}),
              show_progress=False)
    meta, body = card(run.root / "README.md")
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "unconditional-image-generation"
    assert meta["license"] == "cc-by-4.0"  # medmnist.INFO["breastmnist"]["license"]: CC BY 4.0
    assert meta["tags"] == ["synthaug", "diffusion", "medical-imaging", "breastmnist"] and meta["datasets"] == ["breastmnist"]
    assert "| 0 | malignant | 5 | 12 | all |" in body and "| 1 | normal, benign | 5 | 12 | all |" in body
    assert "train indices in classes.json: 10" in body and "Steps: 4" in body and "Seed: 0" in body
    assert "Hardware: cpu, 1 process(es)" in body and "must credit MedMNIST" in body
    assert 'SynthaugPipeline.from_pretrained("carded/models/all")' in body
    assert "Not audited yet" in body

    # audited: the card is written again with the audit's figures (audit calls write_model_card)
    out = generate(run.root, per_class=2, show_progress=False)
    assert (out / "README.md").is_file()
    fake_audit(out, flagged=1, n=4)
    write_model_card(run.root)
    _, body = card(run.root / "README.md")
    assert "### `synthetic/`" in body and "1 of 4 (25.00 %)" in body and "| Frechet distance (features) | 12.5 | 1.25 | 0.5 |" in body
    assert "changed after this audit" not in body


def test_a_generated_folder_has_a_dataset_card_with_its_counts(tmp_path):
    run = untrained_run(tmp_path)  # a folder dataset: classes "normal" (10 real images) and "../odd/.name" (4)
    out = generate(run.root, ratio=0.5, out=tmp_path / "syn", show_progress=False)
    meta, body = card(out / "README.md")
    assert meta["task_categories"] == ["image-classification"] and meta["size_categories"] == ["n<1K"]
    assert meta["license"] == "unknown" and "set `license:` above" in body  # a folder of images: no known license
    assert meta["tags"][:2] == ["synthaug", "synthetic"]
    assert "| 0 | normal | 5 | 10 | 0 | - |" in body and "| 1 | ../odd/.name | 2 | 4 | 0 | - |" in body
    assert f"synthaug generate --run {run.root.resolve()} --ratio 0.5 --seed 0 --sampler dpm-solver++ --steps 3" in body
    assert "Not audited yet" in body
    # the card is one of the folder's own files: the folder is still generate's, and readers skip it
    check_foreign_files(out)
    assert len(SynthDataset(out)) == 7
    generate(run.root, ratio=0.5, out=tmp_path / "syn", show_progress=False)

    fake_audit(out, flagged=1, n=7)
    write_dataset_card(out)
    _, body = card(out / "README.md")
    assert "## Copy rate (audit)" in body and "| all | 7 | 1 | 14.29 % | 1.00 % |" in body
    (out / "metadata.csv").write_text((out / "metadata.csv").read_text() + "\n")  # the set changed since the audit
    write_dataset_card(out)
    assert "changed after this audit" in card(out / "README.md")[1]
    assert write_dataset_card(tmp_path / "nothing") is None  # no finished set, no card


def test_the_same_set_has_the_same_card_however_it_was_drawn(tmp_path):
    run = untrained_run(tmp_path)
    once = generate(run.root, per_class=3, out=tmp_path / "a", batch_size=1, show_progress=False)
    generate(run.root, per_class=1, out=tmp_path / "b", batch_size=64, show_progress=False)
    grown = generate(run.root, per_class=3, out=tmp_path / "b", batch_size=64, show_progress=False)
    assert (once / "README.md").read_bytes() == (grown / "README.md").read_bytes()


def test_license_follows_the_medmnist_flag():
    assert source_of({"medmnist": "pathmnist"})["license_id"] == "cc-by-4.0"
    derma = source_of({"medmnist": "dermamnist"})
    assert derma["license_id"] == "cc-by-nc-4.0" and "non-commercial" in derma["attribution"]


def test_the_command_names_the_amount_that_made_the_set():
    def manifest(counts, reals, **prov):
        classes = {str(c): {"name": f"c{c}", "count": n, "real_count": r} for c, (n, r) in enumerate(zip(counts, reals))}
        return {"run": "/nowhere/run", "class_names": [f"c{c}" for c in range(len(counts))], "classes": classes, "format": "png",
                "provenance": {"seed": 1, "sampler": "ddim", "steps": 7, "guidance_scale": 2.0, "device": "cpu", "block_size": 16, **prov},
                "recipe": {"generate": {"reject_copies": False, "filter_confidence": 0.9}}}

    assert "--per-class 4 " in generate_command(manifest([4, 4], [10, 3]))
    assert "--ratio 1.5 " in generate_command(manifest([15, 5], [10, 3]))  # 1.5 x 3 = 4.5, rounded half up
    assert "--per-real 2 " in generate_command(manifest([20, 6], [10, 3], mode="from_real", strength=[0.2, 0.5]))
    command = generate_command(manifest([20, 6], [10, 3], mode="from_real", strength=[0.2, 0.5]))
    assert command.endswith("--seed 1 --sampler ddim --steps 7 --guidance-scale 2.0 --from-real --strength 0.2,0.5 --filter-confidence 0.9")
