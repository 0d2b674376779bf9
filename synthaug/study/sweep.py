"""`synthaug sweep`: should synthetic images be added to this data set, and how? Levers chosen one at a time on val.

Each lever in `sweep.order` is tried at every value, with the levers before it at their chosen values and the others
at the recipe's; each try is an `experiment` into `<out>/levers/<lever>-<value>/`, and the chosen settings are
evaluated once more into `<out>/final/`. What each try needs is made once and reused: generators are named by the fit
levers that differ from the recipe (`runs/<name>[-conditioning-per_class]-<regime>`), synthetic sets by their generate
settings (`<run>/synthetic-<hash>`), and classifier arms share one cache (`<out>/cache`, or `--cache`). So a lever that
only changes sampling never refits, one that only changes usage never redraws an image (nor one the user drew by hand
with the same settings: see `experiment`). A try whose results.json records the same
runs, synthetic sets and evaluate settings is finished; the choices are recomputed from those files, so a rerun after
Ctrl-C or kill -9 goes on where the sweep stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from synthaug.core.errors import UserError
from synthaug.core.formatting import gain_points
from synthaug.evaluation.evaluate import check_one_process
from synthaug.study.experiment import experiment, regime_recipes
from synthaug.storage.files import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from synthaug.study.levers import Value, base_dict, candidate, choose, confirm, lever_skip_reason, lever_values, recommend, score
from synthaug.recipe.recipe import Recipe, recipe_from_dict
from synthaug.recipe.sections import SubsetConfig
from synthaug.evaluation.intervals import MIN_UNITS
from synthaug.evaluation.summary import HEADLINE_NAMES
from synthaug.evaluation.report import grid_name
from synthaug.storage.rundir import checkpoint_step, safe_name
from synthaug.study.sweepreport import render_sweep_markdown, val_by_lever_png

RECOMMENDED = "recommended.yaml"


def sweep(recipe: Recipe, out_dir: Path | None = None, force: bool = False, show_progress: bool = True,
          command: str | None = None, cache_dir: Path | None = None, wait: bool = False) -> dict:
    """Sweep the recipe's `sweep:` levers in order, each chosen on val, then evaluate the chosen settings and write
    sweep.md, sweep.json, recommended.yaml and val_by_lever.png into `out_dir` (default reports/<name>-sweep).
    `force`: retrain every classifier arm (fitted generators and drawn images are still reused).
    `cache_dir`: finished classifier arms (default `<out_dir>/cache`), which `evaluate --cache` may share.
    One sweep per `out_dir` at a time: a second is refused naming the first's PID, or queues with `wait` (as do its
    fits, generates and evaluates). One process: refused under a several-process `accelerate launch`, before any work."""
    check_one_process("sweep")
    if recipe.sweep is None:
        raise UserError(f"{recipe.name}: the recipe has no sweep: section (its levers and their values; see docs/evaluate.md, synthaug sweep)")
    out = Path(out_dir or f"reports/{recipe.name}-sweep")
    with FolderLock(out, "sweep", wait):
        return _Sweep(recipe, out, force, show_progress, command, Path(cache_dir or out / "cache"), wait).run()


def synthetic_folder(recipe: Recipe) -> str:
    """The synthetic set of a candidate's generators, named by everything that decides its images (the translation
    settings only when it translates, so that the sets named before translations existed keep their names)."""
    unused = set() if recipe.generate.translate else {"translate", "translate_from", "gamma"}
    settings = json.dumps(recipe.generate.model_dump(mode="json", exclude=unused), sort_keys=True)
    return f"synthetic-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def finished_results(folder: Path, recipe: Recipe, split: str = "val", arm_names: list[str] | None = None) -> dict | None:
    """The results.json of an earlier try of this very candidate (same runs, synthetic sets, evaluate settings, split
    and arms), else None."""
    try:
        results = read_json(folder / "results.json", "results.json")
    except (FileNotFoundError, UserError):  # not finished, or damaged: evaluate writes it again
        return None
    runs = [sub.run_dir for sub in regime_recipes(recipe)]
    recorded = [(r.get("run"), r.get("synthetic_dir")) for r in results.get("data", {}).get("regimes", [])]
    if results.get("config") != recipe.evaluate.model_dump(mode="json") or results.get("split", "test") != split:
        return None
    if arm_names is not None and sorted({r["arm"] for r in results.get("rows", [])}) != sorted(arm_names):
        return None
    return results if recorded == [(str(run), str(run / synthetic_folder(recipe))) for run in runs] else None


def confirm_subsets(recipe: Recipe) -> list[SubsetConfig]:
    """The real subsets of the one test comparison: `sweep.confirm`, or else MIN_UNITS new subset seeds after the
    largest seed of evaluate.regimes, at each of their sizes; none for full-data regimes (there is no other data)."""
    if recipe.sweep.confirm:
        return list(recipe.sweep.confirm)
    selection = [s for s in (recipe.evaluate.regimes or [recipe.data.subset]) if s is not None and s.fraction != 1.0]
    first = max((s.seed for s in selection), default=-1) + 1
    sizes: dict[str, SubsetConfig] = {}
    for subset in selection:
        sizes.setdefault(subset.model_copy(update={"seed": 0}).slug(), subset)
    return [s.model_copy(update={"seed": first + k}) for s in sizes.values() for k in range(MIN_UNITS)]


def confirm_recipe(final: Recipe) -> Recipe:
    """The chosen settings on the confirmation subsets (the same generator recipe, new subsets: new generators), with
    the classifier seeds of `sweep.confirm_seeds` where given."""
    raw = final.model_dump(mode="json")
    raw["evaluate"]["regimes"] = [s.model_dump(mode="json") for s in confirm_subsets(final)]
    if final.sweep.confirm_seeds:
        raw["evaluate"]["seeds"] = list(final.sweep.confirm_seeds)
    return recipe_from_dict(raw, f"{final.name} confirmation")


def sample_grids(run: Path) -> list[Path]:
    """The last sample grid `fit` drew of each model of a run (`samples/<model>/step_N.png`)."""
    grids = []
    for model in sorted(p for p in (run / "samples").glob("*") if p.is_dir()):
        drawn = sorted((checkpoint_step(Path(p.stem)) or -1, p) for p in model.glob("step_*.png"))
        grids += [drawn[-1][1]] if drawn else []
    return grids


class _Sweep:
    def __init__(self, recipe: Recipe, out: Path, force: bool, show_progress: bool, command: str | None, cache: Path,
                 wait: bool = False):
        self.recipe, self.out, self.force, self.show_progress, self.command = recipe, out, force, show_progress, command
        self.cache, self.wait = cache, wait
        self.cfg, self.base, self.metric = recipe.sweep, base_dict(recipe), recipe.evaluate.select_on
        self.runs: dict[str, list[str]] = {}  # generator run -> its last sample grids, as links from sweep.md

    def link(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def check(self) -> None:
        """Every lever value makes a valid recipe, no two share a report folder, and no confirmation subset shares a seed
        with a selection subset (subsets of one seed are nested: 10 per class inside 25 per class), before any work."""
        _, why = candidate(self.base, [])
        if why:
            raise UserError(f"evaluate.arms: {why}")
        seen = {s.seed for s in (self.recipe.evaluate.regimes or [self.recipe.data.subset]) if s is not None}
        for subset in self.recipe.sweep.confirm or []:
            if subset.seed in seen:
                raise UserError(f"sweep.confirm: subset seed {subset.seed} is also a seed of evaluate.regimes, whose subsets made "
                                "the choices (subsets of one seed share images); use seeds no choice saw")
        for lever in self.cfg.order:
            folders = {}
            for value in lever_values(self.cfg, lever):
                candidate(self.base, [value], lever == "classic")
                folder = self.folder(value).name
                if folder in folders:
                    raise UserError(f"sweep.{lever}: the values {folders[folder]!r} and {value.name!r} share the report folder {folder}; rename one")
                folders[folder] = value.name

    def folder(self, value: Value) -> Path:
        return self.out / "levers" / f"{value.lever}-{safe_name(value.name)}"

    def evaluate(self, recipe: Recipe, folder: Path, arm_names: list[str] | None = None) -> dict:
        """The results of one candidate: read when this very try finished before, else fit, generate and evaluate what
        is missing. Val only, but for the confirmation (`arm_names`: the two chosen arms), which alone is scored on test."""
        split = "val" if arm_names is None else "test"
        results = None if self.force else finished_results(folder, recipe, split, arm_names)
        if results is None:
            results = experiment(recipe, folder, self.force, self.show_progress, self.command, self.cache, synthetic_folder(recipe),
                                 wait=self.wait, arm_names=arm_names, val_only=arm_names is None)
        for sub in regime_recipes(recipe):
            self.runs[self.link(sub.run_dir)] = [self.link(p) for p in sample_grids(sub.run_dir)]
        return results

    def run(self) -> dict:
        self.check()
        (self.out / RECOMMENDED).unlink(missing_ok=True)  # until this sweep's own answer is written
        chosen: list[Value] = []
        levers = []
        for lever in self.cfg.order:
            current, _ = candidate(self.base, chosen)
            skipped = lever_skip_reason(lever, current)
            entries = [] if skipped else [self.try_value(chosen, value) for value in lever_values(self.cfg, lever)]
            failures = [e["error"] for e in entries if "error" in e]
            if entries and len(failures) == len(entries):  # not one value's problem: the recipe's, the data's or the disk's
                raise failures[0]
            pick = choose(entries)
            if pick is not None:
                chosen.append(next(v for v in lever_values(self.cfg, lever) if v.name == pick["value"]))
                pick["chosen"] = True
            entries = [{k: v for k, v in e.items() if k != "error"} for e in entries]
            levers.append({"lever": lever, "entries": entries, "chosen": pick["value"] if pick else None,
                           "skipped": skipped or (None if pick else "no value applies at the settings chosen so far")})
            self.write(levers, None)
        final, _ = candidate(self.base, chosen)
        results = self.evaluate(final, self.out / "final")
        answer = recommend(results["rows"], self.metric)
        answer.update(report=self.link(self.out / "final" / "report.md"), classic=final.evaluate.classic.model_dump(mode="json"),
                      classic_name=next((v.name for v in chosen if v.lever == "classic"), None),
                      sets=[{"run": self.link(Path(r["run"])), "synthetic": Path(r["synthetic_dir"]).name,
                             "grid": self.link(self.out / "final" / grid_name(r["run"]))} for r in results["data"]["regimes"]])
        # The one look at test: the two arms chosen on val, on real subsets that no choice saw
        answer.update(confirm=None, helps=False)
        if confirm_subsets(final):
            checked = self.evaluate(confirm_recipe(final), self.out / "confirm", [answer["baseline_arm"], answer["synthetic_arm"]])
            answer.update(confirm=confirm(checked, answer["synthetic_arm"], answer["baseline_arm"]),
                          confirm_report=self.link(self.out / "confirm" / "report.md"))
            answer["helps"] = answer["confirm"]["helps"]
        recipe_yaml = self.recommended_yaml(final, chosen, answer)
        self.write(levers, answer, recipe_yaml)
        atomic_write_text(self.out / RECOMMENDED, recipe_yaml)
        return read_json(self.out / "sweep.json", "sweep.json")

    def try_value(self, chosen: list[Value], value: Value) -> dict:
        recipe, why = candidate(self.base, chosen + [value], value.lever == "classic")
        if why:
            return {"value": value.name, "skipped": why}
        folder = self.folder(value)
        try:
            results = self.evaluate(recipe, folder)
        except UserError as exc:  # e.g. a filter that rejects every candidate: the other values still get their night
            print(f"sweep.{value.lever} {value.name!r}: not tried: {exc}", flush=True)
            return {"value": value.name, "skipped": f"failed: {exc}", "error": exc}
        return {"value": value.name, **score(results["rows"], self.metric, value.lever), "report": self.link(folder / "report.md"),
                "generators": recipe.name, "synthetic": None if value.lever == "classic" else synthetic_folder(recipe), "chosen": False}

    def write(self, levers: list[dict], answer: dict | None, recipe_yaml: str | None = None) -> None:
        summary = {"recipe": self.recipe.name, "commands": [self.command] if self.command else [], "metric": self.metric,
                   "order": self.cfg.order, "levers": levers, "generators": self.runs, "recommendation": answer,
                   "recommended_recipe": RECOMMENDED if answer else None}
        atomic_write_json(self.out / "sweep.json", summary)
        atomic_write_bytes(self.out / "val_by_lever.png", val_by_lever_png(levers, self.metric))
        atomic_write_text(self.out / "sweep.md", render_sweep_markdown(summary, recipe_yaml))

    def recommended_yaml(self, final: Recipe, chosen: list[Value], answer: dict) -> str:
        """The chosen settings as a recipe (fields at their defaults left out), the answer in its header."""
        check = answer["confirm"]
        if check is None:
            verdict = "Not confirmed on subsets that no choice saw (full-data regimes have none): no recommendation to use it."
        else:
            metric = check.get("metric", "acc")  # the verdict's metric: balanced ACC when the choices were made on it
            g = check[f"gain_{metric}"]
            numbers = (f"test {HEADLINE_NAMES[metric]} {gain_points(g['mean'], g['lo'], g['hi'])} (95 % CI) over {g['units']} subsets no choice saw "
                       f"({answer['synthetic_arm']} vs {answer['baseline_arm']}" + (f", {check['regime']}, the weakest of {len(check['regimes'])} regimes"
                                                                   if len(check.get("regimes", [])) > 1 else "") + ")")
            verdict = {"higher": f"Use {answer['synthetic_arm']}: {numbers}.",
                       "too few units": f"Too few independent subsets to tell: {numbers}; use {answer['baseline_arm']} until more are run.",
                       "not scored": f"Not scored (the confirmation's runs lack this score): use {answer['baseline_arm']}."
                       }.get(check["verdict"], f"Synthetic data does not help this set at this scale: use {answer['baseline_arm']}; {numbers}.")
        header = [f"Chosen on val by `{self.command or 'synthaug sweep'}`: "
                  + (", ".join(f"{v.lever} {v.name}" for v in chosen) or "the recipe's own settings") + f"; see {self.out / 'sweep.md'}.",
                  verdict, "`synthaug experiment` on this file repeats the final comparison with the sweep's generators "
                  f"({final.output_dir}/{final.name}-<regime>)."]
        body = yaml.safe_dump(final.model_dump(mode="json", exclude={"sweep"}, exclude_defaults=True), sort_keys=False)
        return "".join(f"# {line}\n" for line in header) + body
