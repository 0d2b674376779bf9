"""`synthaug generate`: layout, byte-identical output across batch sizes, resumes and processes, filters, npz, bad input.

Runs are conftest's `untrained_run`: untrained tiny UNets (8x8 images), since generation only needs finished model
folders, and random weights make rounding differences show up at least as readily as trained ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files, generate_error, interrupted_generate, make_run, untrained_run
from PIL import Image

from synthaug import SynthDataset
from synthaug.cli import main
from synthaug.data.images import load_split
from synthaug.storage.files import FolderLock
from synthaug.reference.metrics import paired_correlation
from synthaug.core.errors import UserError
from synthaug.generation.generate import BLOCK_SIZE, GenerateOptions, class_targets, generate
from synthaug.storage.rundir import RunDir, default_run, open_run


@pytest.fixture
def run(tmp_path) -> RunDir:
    return untrained_run(tmp_path)


def test_layout_metadata_and_manifest(run, tmp_path):
    out = generate(run.root, per_class=5, out=tmp_path / "syn", show_progress=False)
    table = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    assert list(table.columns[:3]) == ["file_name", "label", "class_name"]
    assert {"seed", "sampler", "steps", "guidance_scale", "model_sha256", "run"} <= set(table.columns)
    assert table["file_name"].tolist()[:2] == ["normal/0_000000.png", "normal/0_000001.png"]
    assert table["file_name"].tolist()[5] == "_odd_.name/1_000000.png"  # no separators, no '..', no leading dot
    assert table["class_name"].tolist()[5] == "../odd/.name"  # the original name stays in the metadata
    assert (table["sampler"] == "dpm-solver++").all() and (table["steps"] == 3).all()
    for name in table["file_name"]:
        with Image.open(out / name) as img:
            assert img.mode == "L" and img.size == (8, 8)
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert on_disk == sorted(table["file_name"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["total"] == 10
    assert manifest["classes"]["1"]["count"] == 5 and manifest["classes"]["1"]["name"] == "../odd/.name"
    assert manifest["recipe"]["generate"]["steps"] == 3 and "torch" in manifest["versions"]
    assert set(manifest["provenance"]["model_sha256"]) == {"00_normal", "01__odd_.name"}


def test_options_or_keywords_make_the_same_call(run, tmp_path):
    options = GenerateOptions(per_class=3, classes=["1"], out=tmp_path / "options", show_progress=False)
    by_options = files(generate(run.root, options), manifest=False)
    assert by_options == files(generate(run.root, per_class=3, classes=[1], out=tmp_path / "keywords", show_progress=False), manifest=False)
    assert sum(name.endswith(".png") for name in by_options) == 3  # class 1 only
    with pytest.raises(TypeError, match="not both"):
        generate(run.root, options, per_class=3)
    with pytest.raises(TypeError, match="per_clas"):
        generate(run.root, per_clas=3)


def test_same_bytes_whatever_batch_size_growth_or_interruption(run, tmp_path, monkeypatch):
    reference = files(generate(run.root, per_class=20, out=tmp_path / "a", batch_size=1, show_progress=False), manifest=False)
    # grown in two steps with another batch size: the first 7 are a prefix, the rest is added
    generate(run.root, per_class=7, out=tmp_path / "b", batch_size=64, show_progress=False)
    assert len(list((tmp_path / "b").rglob("*.png"))) == 14
    generate(run.root, per_class=20, out=tmp_path / "b", batch_size=64, show_progress=False)
    assert files(tmp_path / "b", manifest=False) == reference

    # interrupted after the first block: no metadata.csv that lies, no temp file, finished images kept
    interrupted_generate(monkeypatch, run.root, per_class=20, out=tmp_path / "c", show_progress=False)
    assert not (tmp_path / "c/metadata.csv").exists()
    assert not json.loads((tmp_path / "c/manifest.json").read_text())["complete"]
    assert len(list((tmp_path / "c").rglob("*.png"))) == BLOCK_SIZE
    (tmp_path / "c/normal/.0_000003.png.x1.tmp").write_bytes(b"half a file")  # what kill -9 mid-write leaves
    (tmp_path / "c/normal/0_000005.png").unlink()
    generate(run.root, per_class=20, out=tmp_path / "c", batch_size=1, show_progress=False)
    assert files(tmp_path / "c", manifest=False) == reference


@pytest.mark.slow
def test_kill_9_then_rerun_gives_exactly_the_uninterrupted_set(run, tmp_path):
    flags = {"per_class": 48, "sampler": "ddpm"}  # 6 blocks of 50 steps: killed well before the end
    command = [sys.executable, "-m", "synthaug", "generate", "--run", str(run.root), "--per-class", "48", "--sampler", "ddpm",
               "--out", str(tmp_path / "k"), "--no-progress"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "k").rglob("*.png")) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL: no cleanup of any kind
        child.wait()
    assert child.returncode == -9 and not (tmp_path / "k/metadata.csv").exists()
    assert 0 < len(list((tmp_path / "k").rglob("*.png"))) < 96
    generate(run.root, out=tmp_path / "k", show_progress=False, **flags)
    reference = generate(run.root, out=tmp_path / "ref", show_progress=False, **flags)
    assert files(tmp_path / "k") == files(reference)
    assert len(pd.read_csv(tmp_path / "k/metadata.csv")) == 96


@pytest.mark.slow
def test_two_processes_write_what_one_does(run, tmp_path):
    reference = files(generate(run.root, per_class=20, out=tmp_path / "one", format="both", show_progress=False))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "synthaug", "generate", "--run", str(run.root),
               "--per-class", "20", "--format", "both", "--out", str(tmp_path / "two"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert files(tmp_path / "two") == reference


def test_candidate_filter_redraws_rejected_images_deterministically(run, tmp_path):
    def odd_sum(images, class_idx):  # keeps images whose pixel sum is odd: about half, decided per image
        return images.reshape(len(images), -1).sum(axis=1) % 2 == 1

    out = generate(run.root, per_class=6, out=tmp_path / "f", candidate_filters=[odd_sum], show_progress=False)
    table = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    assert len(table) == 12
    for name in table["file_name"]:
        assert np.asarray(Image.open(out / name)).sum() % 2 == 1
    assert table["attempt"].sum() > 0  # some first candidates were rejected and redrawn
    assert all(r.split(";") == ["odd_sum"] * a for r, a in zip(table["rejected_by"], table["attempt"]) if a)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(e["rejected"].get("odd_sum", 0) for e in manifest["classes"].values()) == table["attempt"].sum()
    assert manifest["provenance"]["filters"] == [{"name": "odd_sum"}]
    # the same bytes again, grown from a smaller set
    generate(run.root, per_class=2, out=tmp_path / "g", candidate_filters=[odd_sum], show_progress=False)
    generate(run.root, per_class=6, out=tmp_path / "g", candidate_filters=[odd_sum], show_progress=False)
    assert files(tmp_path / "g") == files(out)
    # adding a filter to a folder made without it is refused
    with pytest.raises(UserError, match="other settings"):
        generate(run.root, per_class=6, out=tmp_path / "f", show_progress=False)

    def reject_all(images, class_idx):
        return np.zeros(len(images), dtype=bool)

    with pytest.raises(UserError, match="candidates rejected by reject_all"):
        generate(run.root, per_class=1, out=tmp_path / "h", candidate_filters=[reject_all], show_progress=False)


def test_npz_conditional_rgb_and_ddpm(tmp_path):
    run = untrained_run(tmp_path, names=["a", "b", "c"], conditioning="class_conditional", channels=3, counts=(3, 5, 4))
    out = generate(run.root, ratio=1.0, out=tmp_path / "n", format="npz", sampler="ddpm", guidance_scale=2.0, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".synthaug.lock", "README.md", "manifest.json", "synthetic_gen.npz"]  # working PNGs removed
    assert (out / ".synthaug.lock").read_text() == ""  # released
    with np.load(out / "synthetic_gen.npz") as npz:
        assert sorted(npz.files) == ["train_images", "train_labels"]
        images, labels = npz["train_images"], npz["train_labels"]
    assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8
    assert labels.shape == (12, 1) and labels[:, 0].tolist() == [0] * 3 + [1] * 5 + [2] * 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["steps"] == 50 and manifest["provenance"]["guidance_scale"] == 2.0  # ddpm: every training step
    before = (out / "synthetic_gen.npz").read_bytes()
    generate(run.root, ratio=1.0, out=tmp_path / "n", format="npz", sampler="ddpm", guidance_scale=2.0, show_progress=False)
    assert (out / "synthetic_gen.npz").read_bytes() == before  # up to date: nothing redrawn, same bytes


def test_amounts(run, tmp_path):
    run = open_run(run.root)
    assert [t.count for t in class_targets(run, None, 0.5, False)] == [5, 2]
    assert [t.count for t in class_targets(run, None, None, True)] == [0, 6]
    assert [t.count for t in class_targets(run, None, None, 7)] == [0, 3]  # --balance N: up to N, none past it
    assert [t.count for t in class_targets(run, None, None, 12)] == [2, 8]
    assert [t.class_idx for t in class_targets(run, 3, None, False, ["../odd/.name"])] == [1]
    assert [t.class_idx for t in class_targets(run, 3, None, False, ["0"])] == [0]
    # None is "not given", like the other amounts (the Python API's natural default), never a TypeError
    assert [t.count for t in class_targets(run, 3, None, None)] == [3, 3]
    assert [t.count for t in class_targets(run, None, 0.5, None)] == [5, 2]
    with pytest.raises(UserError, match="give exactly one"):
        class_targets(run, None, None, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--per-class", "-3"], "--per-class: expected a whole number >= 0"),
        ([], "give exactly one"),
        (["--per-class", "3", "--balance"], "give exactly one"),
        (["--balance", "0"], "--balance: expected no value (up to the largest class) or a whole number N >= 1, got 0"),
        (["--per-class", "3", "--classes", "pneumonia"], "--classes: the run has no class 'pneumonia'; expected one of 0 (normal)"),
        (["--per-class", "3", "--sampler", "euler"], "--sampler: Input should be"),
        (["--per-class", "3", "--guidance-scale", "3"], "--guidance-scale: applies to class_conditional runs only"),
        (["--per-class", "3", "--steps", "0"], "--steps:"),
        (["--per-class", "3", "--steps", "51"], "--steps: at most the run's diffusion.num_train_timesteps (50)"),
        (["--ratio", "inf"], "--ratio: expected a finite number >= 0"),
        (["--per-class", str(10**13)], "--per-class/--ratio: 20,000,000,000,000 images need about"),
        (["--per-real", "2"], "--per-real: counts variations of real images; add --from-real"),
        (["--per-real", "2", "--from-real", "--strength", "0.7,0.2"], "--strength: one number or LO,HI with 0 < LO <= HI < 1"),
        (["--per-real", "2", "--from-real", "--strength", "strong"], "--strength strong: expected one number or LO,HI"),
        (["--per-real", "2", "--from-real", "--reject-copies"], "--reject-copies: not with from_real"),
    ],
)
def test_bad_flags(run, capsys, argv, message):
    assert message in generate_error(capsys, ["--run", str(run.root), *argv])


def test_bad_run_and_out(run, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "--out" in generate_error(capsys, ["--run", str(run.root), "--per-class", "1", "--out", str(blocker / "sub")])
    unfinished = untrained_run(tmp_path / "u", finished=False)
    assert "no finished model" in generate_error(capsys, ["--run", str(unfinished.root), "--per-class", "1"])
    assert "no such directory" in generate_error(capsys, ["--run", str(tmp_path / "nope"), "--per-class", "1"])
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert "no run under runs/" in generate_error(capsys, ["--per-class", "1"])
    generate(run.root, per_class=1, out=tmp_path / "s", show_progress=False)
    assert "--seed: 0 there, 5 now" in generate_error(capsys, ["--run", str(run.root), "--per-class", "1", "--seed", "5", "--out", str(tmp_path / "s")])


def test_the_default_run_is_the_only_finished_one_and_it_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)

    def run_named(name: str, finished: bool = True) -> RunDir:
        return RunDir(untrained_run(tmp_path / "made" / name, finished=finished).root.rename(tmp_path / "runs" / name))

    run_named("done")
    time.sleep(0.02)
    run_named("throwaway", finished=False)  # newer, but a one-step try that never finished
    assert default_run().root == Path("runs/done")
    out = generate(per_class=1, show_progress=False)
    assert out.resolve() == (tmp_path / "runs/done/synthetic").resolve() and (out / "metadata.csv").is_file()
    assert "runs/done: the only finished run under runs/, used as --run" in capsys.readouterr().out
    assert main(["generate", "--per-class", "1", "--no-progress"]) == 0
    assert "runs/done: the only finished run under runs/" in capsys.readouterr().out

    run_named("second")
    assert "--run: 2 finished runs under runs/ (runs/second, runs/done); give one with --run DIR" in generate_error(capsys, ["--per-class", "1"])
    for name in ("second", "done"):
        shutil.rmtree(tmp_path / "runs" / name)
    assert ("--run: no finished run under runs/ (runs/throwaway not finished); finish `synthaug fit` on one, or give --run DIR"
            in generate_error(capsys, ["--per-class", "1"]))


# ---------------------------------------------------------------------------------------------
# Variations of real images (--from-real)


@pytest.fixture
def real_run(tiny_recipe):
    """A run over the 28 px grayscale npz (12 real training images per class) with untrained models: variations need real images."""

    def make(conditioning: str = "per_class"):
        return make_run(tiny_recipe(f"real-{conditioning}", model={"conditioning": conditioning}, generate={"steps": 10}), models=True)

    return make


@pytest.mark.parametrize("conditioning", ["per_class", "class_conditional"])
def test_from_real_varies_every_real_image_deterministically(real_run, tmp_path, monkeypatch, conditioning):
    run = real_run(conditioning)
    flags = {"from_real": True, "strength": [0.2, 0.5], "show_progress": False}
    reference = generate(run.root, per_real=5, out=tmp_path / "a", batch_size=1, **flags)
    info = run.read_classes()
    recipe = open_run(run.root).recipe
    real_labels = dict(zip(info.train_indices, load_split(recipe.data, "train").labels[info.train_indices].tolist()))
    table = pd.read_csv(reference / "metadata.csv")
    assert table.groupby("label").size().tolist() == [5 * info.counts[c] for c in info.classes]
    assert sorted(set(table["source_index"])) == sorted(info.train_indices)  # every real image the generator saw, no other
    assert all(real_labels[s] == label for s, label in zip(table["source_index"], table["label"]))  # varied by its own class
    assert table.groupby("source_index").size().eq(5).all()
    assert table["strength"].between(0.2, 0.5).all() and table["strength"].nunique() > 50
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["provenance"]["mode"] == "from_real" and manifest["provenance"]["strength"] == [0.2, 0.5]
    assert (SynthDataset(reference).source_index == table["source_index"].to_numpy()).all()
    # grown from 2 to 5 per image with another batch size, and interrupted on the way: the same bytes
    generate(run.root, per_real=2, out=tmp_path / "b", batch_size=64, **flags)
    interrupted_generate(monkeypatch, run.root, per_real=5, out=tmp_path / "b", **flags)
    generate(run.root, per_real=5, out=tmp_path / "b", **flags)
    assert files(tmp_path / "b", manifest=False) == files(reference, manifest=False)


def test_low_strength_variations_stay_close_to_their_source(real_run, tmp_path):
    run = real_run()
    info = run.read_classes()
    real = load_split(open_run(run.root).recipe.data, "train").images
    closeness = {}
    for strength in (0.05, 0.95):
        out = generate(run.root, per_real=1, out=tmp_path / str(strength), from_real=True, strength=[strength], show_progress=False)
        data = SynthDataset(out)
        images, _ = data.to_numpy()
        closeness[strength] = float(np.median(paired_correlation(images, real[data.source_index])))
    assert closeness[0.05] > 0.9 and closeness[0.05] > closeness[0.95] + 0.2, closeness
    assert info.train_indices  # the sources are the run's own


# ---------------------------------------------------------------------------------------------
# Folders that never lie: one writer, no foreign files, damaged images drawn again


def test_a_second_writer_is_refused_naming_the_first(run, tmp_path, capsys):
    out = tmp_path / "syn"
    with FolderLock(out, "generate"):
        message = generate_error(capsys, ["--run", str(run.root), "--per-class", "2", "--out", str(out)])
    assert f"PID {os.getpid()}" in message and "--wait" in message
    assert not list(out.rglob("*.png"))
    generate(run.root, per_class=2, out=out, show_progress=False)  # free again once the holder is gone
    assert len(SynthDataset(out)) == 4


def test_generate_refuses_a_folder_of_files_it_did_not_make(run, tmp_path, capsys):
    real = tmp_path / "real"
    (real / "normal").mkdir(parents=True)
    Image.new("L", (8, 8)).save(real / "normal" / "patient_001.png")
    message = generate_error(capsys, ["--run", str(run.root), "--per-class", "2", "--out", str(real)])
    assert "holds files synthaug generate did not make" in message and "patient_001.png" in message
    assert sorted(p.name for p in real.rglob("*") if p.is_file()) == ["patient_001.png"]


def test_a_damaged_image_is_drawn_again_on_rerun(run, tmp_path, capsys):
    out = generate(run.root, per_class=5, out=tmp_path / "syn", show_progress=False)
    before = files(out, manifest=False)
    (out / "normal" / "0_000003.png").write_bytes(b"half a png")
    capsys.readouterr()
    generate(run.root, per_class=5, out=out, show_progress=False)
    assert "1 damaged image(s) on disk will be drawn again" in capsys.readouterr().out
    assert files(out, manifest=False) == before


@pytest.mark.slow
def test_two_generates_started_together_never_leave_a_lying_folder(run, tmp_path):
    """Different settings into one folder at the same moment, again and again: one wins, the other is refused, and the
    folder agrees with its metadata."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(4):
        out = tmp_path / f"race{attempt}"
        seeds = (attempt, attempt + 10)
        procs = [subprocess.Popen([sys.executable, "-m", "synthaug", "generate", "--run", str(run.root), "--per-class", "20", "--seed", str(seed),
                                   "--out", str(out), "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in seeds]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        refused = next(err for code, err in results if code == 2)
        assert "in use by another synthaug process" in refused or "holds images made with other settings" in refused, refused
        winner = seeds[[code for code, _ in results].index(0)]
        data = SynthDataset(out)
        assert data.verify() == 40
        assert set(pd.read_csv(out / "metadata.csv")["seed"]) == {winner}


def test_a_full_disk_is_one_line_and_the_rerun_finishes(run, tmp_path, capsys, monkeypatch):
    import errno

    import synthaug.storage.synthset as synthset

    real_write = synthset.atomic_write_bytes
    written = []

    def fills_up(path, data):
        if len(written) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real_write(path, data)

    monkeypatch.setattr(synthset, "atomic_write_bytes", fills_up)
    out = tmp_path / "syn"
    message = generate_error(capsys, ["--run", str(run.root), "--per-class", "10", "--out", str(out)])
    assert "No space left on device" in message and "run the same command again" in message
    assert not (out / "metadata.csv").exists() and len(list(out.rglob("*.png"))) == 5  # finished images kept, no lying metadata
    monkeypatch.setattr(synthset, "atomic_write_bytes", real_write)
    generate(run.root, per_class=10, out=out, show_progress=False)
    assert SynthDataset(out).verify() == 20


def test_a_damaged_manifest_is_named_before_any_work(run, tmp_path, capsys):
    out = generate(run.root, per_class=2, out=tmp_path / "syn", show_progress=False)
    (out / "manifest.json").write_text('{"complete": tr')
    message = generate_error(capsys, ["--run", str(run.root), "--per-class", "4", "--out", str(out)])
    assert "manifest.json: damaged manifest.json" in message
    assert len(list(out.rglob("*.png"))) == 4  # nothing drawn, nothing lost


def test_a_folder_of_other_settings_is_refused_in_words(tmp_path, capsys):
    """The refusal names each setting as the user sets it, not as the manifest stores it (`mode None -> 'from_real'`)."""
    run = untrained_run(tmp_path, conditioning="class_conditional")
    generate(run.root, per_class=2, out=tmp_path / "s", show_progress=False)
    assert main(["generate", "--run", str(run.root), "--per-class", "2", "--out", str(tmp_path / "s"), "--seed", "1",
                 "--sampler", "ddim", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed: 0 there, 1 now" in err and "--sampler: 'dpm-solver++' there, 'ddim' now" in err
    assert "give another --out" in err
