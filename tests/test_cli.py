"""The `synthaug` command's shape: one table of subcommands, the same flags wherever they apply, and the commands
that run on one process refused at once under a several-process `accelerate launch`."""

from __future__ import annotations

import argparse

import pytest
from conftest import TINY_EVAL

from synthaug.cli import COMMANDS, _command_line, build_parser, main
from synthaug.recipe.recipe import recipe_to_yaml


def flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


def test_the_parser_is_built_from_the_table_of_commands():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(COMMANDS) == ["fit", "generate", "evaluate", "audit", "release", "experiment", "sweep", "report"]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "report"])  # report reads JSON files only: --wait alone
def test_every_command_takes_the_common_flags(command):
    # every command takes a folder lock (--wait), draws bars (--no-progress) and may read the real data (--data-root)
    assert {"--wait", "--no-progress", "--data-root"} <= flags(command)
    # --set wherever a recipe is opened and changed; generate has a flag for each generate.* field, the rest made the run
    assert ("--set" in flags(command)) == (command != "generate")
    # a run is always named by --run
    assert ("--run" in flags(command)) == (command in ("generate", "evaluate", "audit"))
    if command in ("evaluate", "experiment", "sweep"):
        assert {"--out", "--cache", "--force"} <= flags(command)


def test_the_command_line_of_a_report_names_each_run_with_run():
    parser = build_parser()
    old = parser.parse_args(["evaluate", "runs/a", "runs/b", "--set", "evaluate.seeds=[0]", "--synthetic", "s/a", "--synthetic", "s/b"])
    old.run = old.run or old.runs  # as cmd_evaluate does
    new = parser.parse_args(["evaluate", "--run", "runs/a", "--run", "runs/b", "--set", "evaluate.seeds=[0]", "--synthetic", "s/a",
                             "--synthetic", "s/b"])
    expected = "synthaug evaluate --run runs/a --run runs/b --set 'evaluate.seeds=[0]' --synthetic s/a --synthetic s/b"
    assert _command_line(old) == _command_line(new) == expected
    audit = parser.parse_args(["audit", "--run", "runs/a", "--set", "audit.k=3", "--wait"])
    assert _command_line(audit) == "synthaug audit --run runs/a --set audit.k=3"
    sweep = parser.parse_args(["sweep", "r.yaml", "--out", "o", "--force", "--no-progress"])
    assert _command_line(sweep) == "synthaug sweep r.yaml --out o --force"


@pytest.mark.parametrize("command", ["evaluate", "experiment", "sweep"])
def test_several_processes_are_refused_at_once_in_one_line(command, eval_run, tiny_recipe, tmp_path, monkeypatch, capsys):
    if command == "evaluate":
        argv = ["--run", str(eval_run("tiny", 4))]
    else:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(recipe_to_yaml(tiny_recipe("exp", evaluate={**TINY_EVAL, "seeds": [0], "ratios": [1]})))
        argv = [str(recipe)]
    before = sorted(p for p in tmp_path.rglob("*"))
    monkeypatch.setenv("WORLD_SIZE", "2")  # as `accelerate launch --num_processes 2` sets it in each process
    assert main([command, *argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"synthaug {command}: error: {command} runs on one process, not the 2 of `accelerate launch`; run `synthaug {command}` "
        "without accelerate launch (fit and generate scale out with accelerate launch)"]
    assert captured.out == ""
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing fitted, drawn or written


def test_one_process_is_not_refused(monkeypatch, eval_run, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    run = eval_run("tiny", 4)
    argv = ["evaluate", "--run", str(run), "--out", str(tmp_path / "out"), "--no-progress", "--set", "evaluate.seeds=[0]",
            "--set", "evaluate.arms=[real]"]
    assert main(argv) == 0 and (tmp_path / "out" / "report.md").is_file()


def test_evaluate_writes_under_the_run_by_default_and_says_where(eval_run, tmp_path, monkeypatch, capsys):
    """Without --out, the report goes to <first run>/report, never into a reports/ of the current folder."""
    monkeypatch.chdir(tmp_path)
    run = eval_run("tiny", 4)
    assert main(["evaluate", "--run", str(run), "--no-progress", "--set", "evaluate.seeds=[0]", "--set", "evaluate.arms=[real]"]) == 0
    assert (run / "report" / "report.md").is_file() and not (tmp_path / "reports").exists()
    assert f"report: {run / 'report' / 'report.md'}" in capsys.readouterr().out


def test_report_makes_an_evaluate_report_again_from_its_results(eval_run, tmp_path, capsys):
    """`synthaug report DIR` recomputes the statistics from results.json, trains nothing, and prints the verdict."""
    from synthaug.cli import main

    run = eval_run("tiny", 4)
    out = tmp_path / "rep"
    assert main(["evaluate", "--run", str(run), "--out", str(out), "--no-progress", "--set", "evaluate.seeds=[0, 1]"]) == 0
    (out / "report.md").write_text("stale")
    cache = sorted((out / "cache").iterdir())
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"report: {out}") and "too few independent subsets to tell" in printed
    assert "## Verdict" in (out / "report.md").read_text() and sorted((out / "cache").iterdir()) == cache
    assert main(["report", str(tmp_path)]) == 2  # neither results.json nor sweep.json: one line, exit 2


@pytest.mark.parametrize("conditioning", ["per_class", "class_conditional"])
def test_every_command_works_on_a_subset_of_a_folder_datasets_classes(tmp_path, conditioning):
    """data.classes picks 2 of a folder's 3 classes (not the first, and not in folder order): fit, generate (from noise,
    variations, top-ups with both filters), audit, evaluate (the default, re-balancing, top-up and replace arms) and
    experiment all run, and the sets hold only those two classes."""
    import json

    import pandas as pd
    import yaml
    from conftest import tiny_recipe_dict, write_class_folders

    data = write_class_folders(tmp_path / "images", ["benign", "cyst", "tumour"], n=8, size=12, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": 12, "classes": ["tumour", "cyst"]}, tmp_path / "runs", "two",
                           model={"conditioning": conditioning}, train={"steps": 2}, generate={"steps": 3},
                           evaluate={**TINY_EVAL, "seeds": [0], "ratios": [1]})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "runs" / "two"
    assert main(["fit", str(tmp_path / "recipe.yaml"), "--no-progress"]) == 0
    assert json.loads((run / "classes.json").read_text())["classes"] == [1, 2]
    assert main(["generate", "--run", str(run), "--ratio", "1", "--no-progress"]) == 0
    assert sorted(pd.read_csv(run / "synthetic" / "metadata.csv")["label"].unique()) == [1, 2]
    assert main(["audit", "--run", str(run), "--no-progress"]) == 0
    assert (run / "synthetic" / "audit.json").is_file()
    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    if conditioning == "class_conditional":
        return  # the other ways to draw and use a set, and experiment, once (per_class) is enough
    for extra in (["--from-real", "--per-real", "1"], ["--balance", "10", "--reject-copies", "--filter-confidence", "0.1"]):
        out = run / extra[0].strip("-")
        assert main(["generate", "--run", str(run), *extra, "--out", str(out), "--no-progress"]) == 0
        assert set(pd.read_csv(out / "metadata.csv")["label"]) == {1, 2}
        assert main(["audit", "--run", str(run), "--synthetic", str(out), "--no-progress"]) == 0
    for folder, arms in (("balance", "[real, real+balanced, real+logit_adjusted, real+reweight_inverse, real+reweight_effective, real+topup]"),
                         ("from-real", "[real, real+replace]")):
        assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / folder), "--synthetic", str(run / folder), "--no-progress",
                     "--set", f"evaluate.arms={arms}", "--set", "evaluate.top_up=10", "--set", "evaluate.replace_variations=1"]) == 0
    assert main(["experiment", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "experiment"), "--no-progress"]) == 0
    assert (tmp_path / "experiment" / "report.md").is_file()
