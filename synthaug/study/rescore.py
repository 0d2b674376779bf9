"""`synthaug report`: the reports of evaluate, experiment and sweep made again from their own JSON files with the
current statistics, no arm trained. An evaluate folder is re-summarised from results.json; a sweep folder's lever
tries and final choice are rewritten val only (as a sweep now writes them), its choices recomputed from their rows,
and its confirmation, if it ran one, re-read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import write_report
from synthaug.evaluation.report import verdicts
from synthaug.evaluation.summary import summarise, val_only_rows
from synthaug.recipe.sections import EvaluateConfig
from synthaug.storage.files import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from synthaug.study.levers import confirm, recommend, score
from synthaug.study.sweepreport import render_sweep_markdown, val_by_lever_png

REMOVED_FIELDS = ("bootstrap",)  # evaluate settings of older reports that no longer exist


def rescore(folder: str | Path, wait: bool = False) -> list[str]:
    """Make the report in `folder` again (evaluate/experiment: results.json; sweep: sweep.json); returns the report's
    verdict lines. One-line errors for a folder that holds neither."""
    folder = Path(folder)
    with FolderLock(folder, "report", wait):
        if (folder / "sweep.json").is_file():
            return rescore_sweep(folder)
        if (folder / "results.json").is_file():
            return rescore_evaluate(folder)
    raise UserError(f"{folder}: neither results.json (evaluate, experiment) nor sweep.json (sweep) is here")


def rescore_evaluate(folder: Path, val_only: bool = False) -> list[str]:
    """results.json summarised again; with `val_only` its test numbers are dropped (a sweep's lever try)."""
    results = read_json(folder / "results.json", "results.json")
    config = {k: v for k, v in results["config"].items() if k not in REMOVED_FIELDS}
    cfg = EvaluateConfig(**config)
    rows = results["rows"]
    if val_only:
        rows = val_only_rows(rows)
    labels = results["data"].get("test_labels")
    results.update(summarise(rows, cfg, None if val_only or labels is None else np.asarray(labels), "val" if val_only else "test"))
    results["config"] = cfg.model_dump(mode="json")
    write_report(folder, results)  # the sample grids stay as they are: their runs may be gone
    return verdicts(results)


def rescore_sweep(folder: Path) -> list[str]:
    summary = read_json(folder / "sweep.json", "sweep.json")
    metric = summary["metric"]
    for lever in summary["levers"]:
        for entry in lever["entries"]:
            if "report" not in entry:
                continue
            try_folder = folder / Path(entry["report"]).parent
            rescore_evaluate(try_folder, val_only=True)
            entry.update(score(read_json(try_folder / "results.json", "results.json")["rows"], metric, lever["lever"]))
    answer = summary.get("recommendation")
    if answer is not None:
        final = folder / Path(answer["report"]).parent
        rescore_evaluate(final, val_only=True)
        answer.update(recommend(read_json(final / "results.json", "results.json")["rows"], metric))
        answer.pop("test", None)
        checked = folder / "confirm" / "results.json"
        answer["confirm"] = None
        if checked.is_file():
            rescore_evaluate(checked.parent)
            answer.update(confirm=confirm(read_json(checked, "results.json"), answer["synthetic_arm"], answer["baseline_arm"]),
                          confirm_report="confirm/report.md")
        answer["helps"] = bool(answer["confirm"] and answer["confirm"]["helps"])
    recipe_yaml = (folder / "recommended.yaml").read_text() if (folder / "recommended.yaml").is_file() else None
    body = None if recipe_yaml is None else "".join(line for line in recipe_yaml.splitlines(keepends=True) if not line.startswith("#"))
    atomic_write_json(folder / "sweep.json", summary)
    atomic_write_bytes(folder / "val_by_lever.png", val_by_lever_png(summary["levers"], metric))
    atomic_write_text(folder / "sweep.md", render_sweep_markdown(summary, body))
    return [] if answer is None else [f"sweep: {'helps' if answer['helps'] else 'not shown to help'}"
                                       + ("" if answer["confirm"] else " (not confirmed on subsets no choice saw)")]
