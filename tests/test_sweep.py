"""`synthaug sweep`: levers chosen one at a time on val, generators and images made once, the answer, and resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_EVAL, tiny_recipe_dict

import synthaug.study.experiment
from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.generation.generate import generate
from synthaug.diffusion.training import fit
from synthaug.recipe.recipe import load_recipe
from synthaug.study.sweep import synthetic_folder

SWEEP = {"order": ["strength", "usage"], "strength": [0.3, 0.5],
         "usage": {"add": {"arms": ["real+synthetic+classic"]}, "replace": {"arms": ["real+replace+classic"]}},
         # two unseen subsets, for time (the default is MIN_UNITS = 5 new seeds): the verdict is then "too few units"
         "confirm": [{"per_class": 4, "seed": 1}, {"per_class": 4, "seed": 2}]}


def write_recipe(tmp_path: Path, data_root: Path, runs: str = "runs", **sweep) -> Path:
    """A tiny class-conditional recipe of variations (8 real images) whose arms both add and replace, with SWEEP."""
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(data_root), "subset": {"per_class": 4}}, tmp_path / runs, "sw",
                           model={"conditioning": "class_conditional"}, train={"steps": 2},
                           generate={"steps": 4, "sampler": "ddim", "from_real": True, "strength": [0.3]},
                           evaluate={**TINY_EVAL, "seeds": [0, 1], "ratios": [1], "replace_p": [0.5], "select_on": "acc",
                                     "arms": ["real", "real+classic", "real+synthetic+classic", "real+replace+classic"]},
                           sweep={**SWEEP, **sweep})
    path = tmp_path / f"{runs}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def counted(monkeypatch):
    """Counts what the sweep's experiments really do: models newly trained by each fit, images newly drawn by each generate."""
    work = {"trained": [], "drawn": []}
    fit, generate = synthaug.study.experiment.fit, synthaug.study.experiment.generate

    def counting_fit(recipe, **kwargs):
        before = set((recipe.run_dir / "models").glob("*/model_index.json"))
        run = fit(recipe, **kwargs)
        work["trained"] += sorted(set((run.root / "models").glob("*/model_index.json")) - before)
        return run

    def counting_generate(recipe, out, **kwargs):
        before = len(list(Path(out).rglob("*.png")))
        folder = generate(recipe, out=out, **kwargs)
        work["drawn"].append((folder.name, len(list(folder.rglob("*.png"))) - before))
        return folder

    monkeypatch.setattr(synthaug.study.experiment, "fit", counting_fit)
    monkeypatch.setattr(synthaug.study.experiment, "generate", counting_generate)
    return work


def sweep_cli(recipe: Path, out: Path) -> int:
    return main(["sweep", str(recipe), "--out", str(out), "--no-progress"])


def edit_final_val(out: Path, val: dict[str, float]) -> None:
    """Set the val accuracy of the final comparison's arms (by kind), as if the classifiers had scored so."""
    path = out / "final" / "results.json"
    results = json.loads(path.read_text())
    for row in results["rows"]:
        row["val_acc"] = val[row["kind"]]
    path.write_text(json.dumps(results))


def test_sweep_chooses_on_val_reuses_generators_images_and_arms_and_recommends(tmp_path, breast_root, counted):
    recipe = write_recipe(tmp_path, breast_root)
    out = tmp_path / "sweep"
    assert sweep_cli(recipe, out) == 0
    # One generator for every lever value, and one per confirmation subset; one set of 5 variations per real image for
    # each strength, drawn once, and the chosen strength's on each confirmation subset.
    assert [p.parents[2].name for p in counted["trained"]] == ["sw-4pc-s0", "sw-4pc-s1", "sw-4pc-s2"]
    drawn = [d for d in counted["drawn"] if d[1]]
    assert [n for _, n in drawn[:2]] == [40, 40] and len(drawn) == 4 and len({folder for folder, _ in drawn}) == 2
    summary = json.loads((out / "sweep.json").read_text())
    strength, usage = summary["levers"]
    assert [e["value"] for e in strength["entries"]] == ["0.3", "0.5"] and [e["value"] for e in usage["entries"]] == ["add", "replace"]
    for lever in (strength, usage):  # each choice is the best mean val of its value's best synthetic arm (ties: the first)
        best = max(lever["entries"], key=lambda e: e["val"])
        assert lever["chosen"] == best["value"] and [e["chosen"] for e in lever["entries"]] == [e is best for e in lever["entries"]]
        for e in lever["entries"]:
            rows = pd.read_csv(out / Path(e["report"]).parent / "results.csv")
            assert e["val"] == pytest.approx(rows.loc[rows["arm"] == e["arm"], "val_acc"].mean()) and e["pairs"] == 2
    chosen_set = next(e["synthetic"] for e in strength["entries"] if e["chosen"])
    assert {e["synthetic"] for e in usage["entries"]} == {chosen_set}  # usage reuses the chosen strength's images
    # Every arm is trained once: the usage lever and the final comparison read all of theirs from the one cache; the
    # confirmation trains the two chosen arms on the two new subsets.
    assert len(list((out / "cache").glob("*.json"))) == 8 + 4 + 2 * 2 * 2
    final = json.loads((out / "final" / "results.json").read_text())
    assert final["arms_from_cache"] == len(final["rows"]) == 3 * 2 and final["split"] == "val"
    assert all("test_acc" not in row for row in final["rows"])  # lever tries and the final choice report val only
    assert "Test accuracy" not in (out / "final" / "report.md").read_text()
    checked = json.loads((out / "confirm" / "results.json").read_text())
    assert checked["split"] == "test" and {r["subset_seed"] for r in checked["rows"]} == {1, 2}
    assert {r["arm"] for r in checked["rows"]} == {summary["recommendation"]["baseline_arm"], summary["recommendation"]["synthetic_arm"]}
    # The recommendation: a recipe `experiment` can run, with the chosen values, and the answer in sweep.md.
    recommended = load_recipe(out / "recommended.yaml")
    assert recommended.generate.strength == [float(strength["chosen"])] and recommended.sweep is None
    assert recommended.evaluate.arms == ["real", "real+classic", f"real+{'synthetic' if usage['chosen'] == 'add' else 'replace'}+classic"]
    answer, text = summary["recommendation"], (out / "sweep.md").read_text()
    assert answer["confirm"]["verdict"] == "too few units" and not answer["helps"]  # 2 unseen subsets cannot say yes
    assert "**Too few independent subsets to tell whether synthetic data helps" in text
    assert "![val per lever value](val_by_lever.png)" in text and (out / "val_by_lever.png").is_file()
    assert "samples/all/step_0000002.png" in text and (out / "final" / "samples_sw-4pc-s0.png").is_file()

    # A rerun does nothing again and writes the same answer.
    before = {p: p.stat().st_mtime_ns for p in (out / "levers").glob("*/results.json")}
    sweep_json, recipe_text = (out / "sweep.json").read_text(), (out / "recommended.yaml").read_text()
    counted["trained"].clear(), counted["drawn"].clear()
    assert sweep_cli(recipe, out) == 0
    assert counted == {"trained": [], "drawn": []}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (out / "sweep.json").read_text() == sweep_json and (out / "recommended.yaml").read_text() == recipe_text

    # The choice follows the final comparison's val numbers alone; the confirmation then scores that choice.
    edit_final_val(out, {"real": 0.5, "real+classic": 0.9, "real+synthetic+classic": 0.6, "real+replace+classic": 0.6})
    assert sweep_cli(recipe, out) == 0
    answer = json.loads((out / "sweep.json").read_text())["recommendation"]
    assert answer["baseline_arm"] == "real+classic" and answer["val_gain"]["mean"] == pytest.approx(-0.3)
    assert answer["confirm"]["baseline_arm"] == "real+classic"
    assert (out / "recommended.yaml").read_text().splitlines()[1].startswith("# Too few independent subsets to tell: test ACC")
    edit_final_val(out, {"real": 0.5, "real+classic": 0.6, "real+synthetic+classic": 0.8, "real+replace+classic": 0.8})
    assert sweep_cli(recipe, out) == 0
    answer = json.loads((out / "sweep.json").read_text())["recommendation"]
    assert answer["val_gain"]["mean"] == pytest.approx(0.2) and not answer["helps"]  # a val gain alone never says "use it"


def test_synthetic_sets_keep_the_names_they_had_before_translations(tiny_recipe):
    # the names sweeps gave these settings before generate.translate existed: their sets and arms are found again
    assert synthetic_folder(tiny_recipe()) == "synthetic-d80a404abc"
    assert synthetic_folder(tiny_recipe(generate={"from_real": True, "strength": [0.2, 0.5], "steps": 10})) == "synthetic-115e809604"
    translating = {synthetic_folder(tiny_recipe(generate={"translate": True, **more})) for more in ({}, {"gamma": 1.0}, {"translate_from": "other"})}
    assert len(translating) == 3 and "synthetic-d80a404abc" not in translating


def test_confirmation_subsets_are_new_seeds_at_each_size_and_never_a_selection_seed(tmp_path, breast_root):
    from synthaug.study.sweep import confirm_subsets

    recipe = load_recipe(write_recipe(tmp_path, breast_root), ["sweep.confirm=null",
                         "evaluate.regimes=[{per_class: 4, seed: 0}, {per_class: 4, seed: 2}, {per_class: 2, seed: 0}]"])
    assert [(s.per_class, s.seed) for s in confirm_subsets(recipe)] == [(4, 3), (4, 4), (4, 5), (4, 6), (4, 7), (2, 3), (2, 4), (2, 5), (2, 6), (2, 7)]
    bad = write_recipe(tmp_path, breast_root, runs="bad", confirm=[{"per_class": 4, "seed": 0}])
    assert main(["sweep", str(bad), "--out", str(tmp_path / "bad-out"), "--no-progress"]) == 2
    assert not (tmp_path / "bad").exists()


def test_the_confirmation_takes_its_own_classifier_seeds(tmp_path, breast_root):
    from synthaug.study.sweep import confirm_recipe

    path = write_recipe(tmp_path, breast_root)
    assert confirm_recipe(load_recipe(path)).evaluate.seeds == load_recipe(path).evaluate.seeds  # default: evaluate.seeds
    recipe = load_recipe(path, ["sweep.confirm_seeds=[0, 1, 2]"])
    assert confirm_recipe(recipe).evaluate.seeds == [0, 1, 2] and recipe.evaluate.seeds != [0, 1, 2]
    assert main(["sweep", str(path), "--set", "sweep.confirm_seeds=[1, 1]", "--out", str(tmp_path / "o"), "--no-progress"]) == 2


def test_levers_that_only_sample_or_only_use_never_refit(tmp_path, breast_root, counted):
    """guidance (sampling) and classic (the baseline's augmentation) at two values each: one generator, classic draws nothing."""
    recipe = write_recipe(tmp_path, breast_root, order=["classic", "guidance_scale"], usage=None, strength=None,
                          classic={"flips": {"hflip": True, "vflip": True}, "none": {"hflip": False, "rotate_deg": 0, "shift": 0}},
                          guidance_scale=[1.0, 2.0])
    assert sweep_cli(recipe, tmp_path / "out") == 0
    assert len(counted["trained"]) == 1 + 2  # the levers' generator, and one per confirmation subset
    # classic draws nothing; each guidance draws its own set once (its two values, then the final comparison reuses one)
    guidance = json.loads((tmp_path / "out" / "sweep.json").read_text())["levers"][1]["entries"]
    assert [n for _, n in counted["drawn"]][:3] == [40, 40, 0]
    assert [folder for folder, _ in counted["drawn"]][:2] == [e["synthetic"] for e in guidance]
    rows = pd.read_csv(tmp_path / "out" / "levers" / "classic-none" / "results.csv")
    assert set(rows["arm"]) == {"real", "real+classic"}
    # Other classifier settings: every lever value is evaluated again (its earlier results no longer apply), nothing refitted or redrawn.
    before = len(list((tmp_path / "out" / "cache").glob("*.json")))
    counted["trained"].clear(), counted["drawn"].clear()
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "out"), "--no-progress", "--set", "evaluate.steps=4"]) == 0
    assert counted["trained"] == [] and all(n == 0 for _, n in counted["drawn"])
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 2 * before  # the confirmation's arms too
    assert json.loads((tmp_path / "out" / "final" / "results.json").read_text())["config"]["steps"] == 4


def test_a_set_drawn_by_hand_with_the_same_settings_is_linked_not_drawn_again(tmp_path, breast_root, counted, capsys):
    """The user drew 5 variations per image at strength 0.3 before sweeping: that set is reused; a set of 3 per image at
    0.5 is not (another amount). Arms go to the --cache folder."""
    recipe_path = write_recipe(tmp_path, breast_root, order=["strength"], usage=None)
    recipe = load_recipe(recipe_path)
    sub = synthaug.study.experiment.regime_recipes(recipe)[0]
    run = fit(sub, show_progress=False).root
    mine = generate(sub, out=run / "mine", per_real=5, from_real=True, strength=[0.3], show_progress=False)
    generate(sub, out=run / "fewer", per_real=3, from_real=True, strength=[0.5], show_progress=False)
    assert main(["sweep", str(recipe_path), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "arms"), "--no-progress"]) == 0
    assert "the images of mine (drawn with the same settings), linked" in capsys.readouterr().out
    strength = json.loads((tmp_path / "out" / "sweep.json").read_text())["levers"][0]["entries"]
    assert [p.parents[2].name for p in counted["trained"]] == ["sw-4pc-s1", "sw-4pc-s2"]  # the confirmation's only
    assert [n for _, n in counted["drawn"]][:2] == [0, 40]
    reused = run / strength[0]["synthetic"]
    assert sorted(p.name for p in reused.rglob("*.png")) == sorted(p.name for p in mine.rglob("*.png"))
    assert all(p.stat().st_ino == (mine / p.relative_to(reused)).stat().st_ino for p in reused.rglob("*.png"))
    assert len(list((tmp_path / "arms").glob("*.json"))) > 0 and not (tmp_path / "out" / "cache").exists()


def test_a_value_whose_images_cannot_be_made_is_marked_not_tried_and_the_sweep_goes_on(tmp_path, breast_root, monkeypatch, capsys):
    generate_images = synthaug.study.experiment.generate

    def failing_at(strengths):
        def generate_or_fail(recipe, **kwargs):
            if recipe.generate.strength in strengths:
                raise UserError("generate: the confidence filter rejected every candidate of class 0 (malignant)")
            return generate_images(recipe, **kwargs)
        return generate_or_fail

    monkeypatch.setattr(synthaug.study.experiment, "generate", failing_at([[0.5]]))
    recipe = write_recipe(tmp_path, breast_root, order=["strength"], usage=None)
    assert sweep_cli(recipe, tmp_path / "out") == 0
    entries = json.loads((tmp_path / "out" / "sweep.json").read_text())["levers"][0]["entries"]
    assert entries[0]["chosen"] and entries[1] == {"value": "0.5", "skipped": "failed: generate: the confidence filter rejected every "
                                                   "candidate of class 0 (malignant)"}
    assert "| strength | 0.5 | — | — | not tried: failed: generate: the confidence filter" in (tmp_path / "out" / "sweep.md").read_text()
    # When every value fails the problem is not one value's: the sweep stops with the error, one line, exit 2.
    monkeypatch.setattr(synthaug.study.experiment, "generate", failing_at([[0.3], [0.5]]))
    capsys.readouterr()
    assert sweep_cli(write_recipe(tmp_path, breast_root, runs="other", order=["strength"], usage=None), tmp_path / "out2") == 2
    assert capsys.readouterr().err.strip().endswith("the confidence filter rejected every candidate of class 0 (malignant)")


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"order": ["strength", "colour"]}, "sweep.order.1: Input should be 'conditioning', 'augment',"),
        ({"order": ["ratio"], "ratio": [1], "colour": [1]}, "sweep.colour: unknown key"),
        ({"order": ["ratio"], "ratio": []}, "sweep.ratio: List should have at least 1 item"),
        ({"order": ["guidance_scale"], "guidance_scale": ["high"]}, "sweep.guidance_scale.0: Input should be a valid number"),
        ({"order": ["steps"]}, "sweep.steps: listed in sweep.order but given no values"),
        ({"order": ["source"], "source": ["noise", "pixels"]}, "sweep.source: a list of the modes noise, variations and translations"),
        ({"order": ["strength"], "strength": [0.3, 1.5]}, "sweep.strength: each value one number or [LO, HI] with 0 < LO <= HI < 1"),
        ({"order": ["usage"], "usage": {"p2": {"arms": ["real+replace"], "replace_p": [2]}}},
         "sweep.usage 'p2': evaluate.replace_p: probabilities in (0, 1]"),
    ],
)
def test_a_bad_sweep_section_is_one_line_naming_the_field(tmp_path, breast_root, capsys, sweep, message):
    raw = yaml.safe_load(write_recipe(tmp_path, breast_root).read_text())
    raw["sweep"] = sweep
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert sweep_cli(path, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_a_recipe_without_a_sweep_section_is_refused(tmp_path, breast_root, capsys):
    raw = yaml.safe_load(write_recipe(tmp_path, breast_root).read_text())
    del raw["sweep"]
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(raw))
    assert sweep_cli(tmp_path / "plain.yaml", tmp_path / "out") == 2
    assert "sw: the recipe has no sweep: section" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_then_rerun_continues_and_ends_as_an_uninterrupted_sweep(tmp_path, breast_root, counted):
    recipe, out = write_recipe(tmp_path, breast_root), tmp_path / "killed"
    first = out / "levers" / "strength-0.3" / "results.json"
    command = [sys.executable, "-m", "synthaug", "sweep", str(recipe), "--out", str(out), "--no-progress"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not first.is_file() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup of any kind
        child.wait()
    assert child.returncode == -9 and first.is_file() and not (out / "final" / "results.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in [first, *(out / "cache").glob("*.json"), *(tmp_path / "runs").rglob("model_index.json")]}
    assert sweep_cli(recipe, out) == 0
    assert all(p.parents[2].name != "sw-4pc-s0" for p in counted["trained"])  # the levers' generator finished before the kill
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nor was a finished lever value or arm redone
    reference_recipe, reference = write_recipe(tmp_path, breast_root, runs="fresh"), tmp_path / "reference"
    assert sweep_cli(reference_recipe, reference) == 0

    def outcome(folder: Path) -> tuple:
        summary = json.loads((folder / "sweep.json").read_text())
        answer = {k: v for k, v in summary["recommendation"].items() if k != "sets"}
        recipe_lines = [line for line in (folder / "recommended.yaml").read_text().splitlines() if not line.startswith(("#", "output_dir"))]
        return summary["levers"], answer, recipe_lines

    assert outcome(out) == outcome(reference)


def test_the_recommended_recipe_quotes_the_metric_of_its_verdict(tmp_path, breast_root):
    """Choices made on balanced accuracy (long-tailed data) are confirmed on it: the header quotes that gain, not ACC's."""
    from synthaug.study.sweep import _Sweep
    recipe = load_recipe(write_recipe(tmp_path, breast_root))
    sweep = _Sweep(recipe, tmp_path / "out", False, False, None, tmp_path / "cache")
    gain = {"mean": -0.07, "lo": -0.09, "hi": -0.05, "units": 5}
    answer = {"synthetic_arm": "real+topup+balanced+classic", "baseline_arm": "real+balanced+classic",
              "confirm": {"metric": "bacc", "verdict": "lower", "gain_bacc": gain, "gain_acc": {**gain, "mean": 0.01}}}
    header = sweep.recommended_yaml(recipe, [], answer).splitlines()[1]
    assert "use real+balanced+classic; test balanced ACC -7.0 points [-9.0, -5.0] (95 % CI) over 5 subsets" in header
