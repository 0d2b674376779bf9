"""synthaug.rundir: classes.json round trip and its one-line errors, checkpoint names, opening a run."""

from __future__ import annotations

import json

import pytest
from conftest import untrained_run

from synthaug.core.errors import UserError
from synthaug.storage.rundir import ClassesInfo, RunDir, checkpoint_name, checkpoint_step, open_run

INFO = ClassesInfo(
    class_names=["normal", "pneumonia", "covid"], classes=[0, 2], conditioning="per_class",
    models={0: "00_normal", 2: "02_covid"}, channels=1, size=28, counts={0: 5, 2: 5}, split_counts={0: 40, 2: 17},
    subset={"per_class": 5, "seed": 3, "fraction": None}, train_indices=[4, 1, 30, 12, 0, 50, 51, 52, 53, 56],
)


def test_classes_info_round_trips_through_classes_json(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_classes(INFO)
    assert run.read_classes() == INFO  # int class keys again, the train indices in their order
    on_disk = json.loads(run.classes.read_text())
    assert on_disk["models"] == {"0": "00_normal", "2": "02_covid"} and on_disk["counts"] == {"0": 5, "2": 5}  # JSON keys are strings
    assert not [p.name for p in run.root.iterdir() if p.name != "classes.json"]  # written under a temporary name, renamed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{\"class_names\": [\"a\"", "damaged classes.json (JSONDecodeError)"),
        ("[1, 2]", "damaged classes.json (not a JSON object)"),
        (json.dumps({k: v for k, v in INFO.to_json().items() if k != "models"}), "incomplete classes.json (no 'models')"),
        (json.dumps({**INFO.to_json(), "counts": {"zero": 5}}), "damaged classes.json (ValueError)"),
    ],
    ids=["truncated", "not-an-object", "missing-key", "bad-value"],
)
def test_a_damaged_or_incomplete_classes_json_is_a_user_error_naming_it(tmp_path, content, message):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.classes.write_text(content)
    with pytest.raises(UserError) as err:
        run.read_classes()
    assert str(err.value).startswith(f"{run.classes}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_names_and_the_latest_checkpoint(tmp_path):
    assert checkpoint_name(40) == "step_0000040" and checkpoint_step(tmp_path / checkpoint_name(40)) == 40
    assert checkpoint_step(tmp_path / "00_x") is None and checkpoint_step(tmp_path / "step_4.tmp") is None
    run = RunDir(tmp_path / "run")
    assert run.latest_checkpoint("00_x") is None  # no checkpoints/ folder yet
    (run.checkpoints("00_x") / "notes").mkdir(parents=True)  # a stray folder is no checkpoint
    assert run.latest_checkpoint("00_x") is None
    for step in (9, 10, 12_345_678):
        run.checkpoint("00_x", step).mkdir()
    (run.checkpoints("00_x") / "step_99999999").write_text("a file, not a checkpoint folder")
    assert run.latest_checkpoint("00_x") == run.checkpoints("00_x") / "step_12345678"  # numbers compared, not names


def test_open_run_names_what_is_missing(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=r"plain: not a synthaug run \(no classes.json\); run `synthaug fit` first"):
        open_run(tmp_path / "plain")
    with pytest.raises(UserError, match="no such directory"):
        open_run(tmp_path / "nowhere")
    run = untrained_run(tmp_path, finished=False)
    opened = open_run(run.root, ["generate.steps=2"])
    assert opened.info.class_names == ["normal", "../odd/.name"] and opened.recipe.generate.steps == 2
    run.recipe.unlink()
    with pytest.raises(UserError, match=r"not a synthaug run \(no recipe.yaml\)"):
        open_run(run.root)



def test_the_output_folder_of_a_run_names_the_run(tmp_path):
    run = untrained_run(tmp_path)
    with pytest.raises(UserError, match=f"{run.root.parent} holds the run {run.root}; pass --run {run.root}"):
        open_run(run.root.parent)
