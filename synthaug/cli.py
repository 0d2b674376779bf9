"""The `synthaug` command: a thin layer over the library functions of the same names.

Each command opens its recipe or run (with `--set` overrides) and calls the function of its name.
The stages are imported when their command runs, so that `synthaug --version` does not load torch.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthaug.core.errors import UserError


def _overrides(args) -> list[str]:
    """The `--set` pairs of a command, with `--data-root` as `data.root=`."""
    return list(getattr(args, "set", None) or []) + ([f"data.root={args.data_root}"] if getattr(args, "data_root", None) else [])


def _recipe_from_args(args):
    from synthaug.recipe.recipe import load_recipe

    return load_recipe(args.recipe, _overrides(args))


def _command_line(args) -> str:
    """The command as a user would retype it (for reports), rebuilt from the parsed flags: the recipe, or `--run`
    for each run, then the flags that decide the results."""
    words = ["synthaug", args.command] + ([args.recipe] if getattr(args, "recipe", None) else [])
    runs = getattr(args, "run", None) or []
    for run in [runs] if isinstance(runs, str) else runs:
        words += ["--run", run]
    for pair in args.set or []:
        words += ["--set", pair]
    for flag in ("data_root", "out", "cache"):
        if getattr(args, flag, None):
            words += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    synthetic = getattr(args, "synthetic", None) or []
    for folder in [synthetic] if isinstance(synthetic, str) else synthetic:
        words += ["--synthetic", folder]
    return shlex.join(words + (["--force"] if getattr(args, "force", False) else []))


# ---------------------------------------------------------------------------------------------
# Flags shared by several commands, worded alike everywhere


def _add_recipe(p: argparse.ArgumentParser, example: str = "recipes/quickstart.yaml") -> None:
    p.add_argument("recipe", help=f"recipe YAML file, e.g. {example}")


def _add_set(p: argparse.ArgumentParser, example: str = "--set train.steps=200", whose: str = "the recipe") -> None:
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help=f"override a field of {whose}, e.g. {example} (repeatable)")


def _add_data_root(p: argparse.ArgumentParser, why: str = "overrides data.root") -> None:
    p.add_argument("--data-root", metavar="DIR", help=f"folder holding the MedMNIST npz files ({why})")


def _add_no_progress(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    p.add_argument("--no-progress", action="store_true", help=what)


def _add_wait(p: argparse.ArgumentParser, behind: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"queue behind {behind} instead of refusing")


def _add_report(p: argparse.ArgumentParser, out_help: str) -> None:
    """--out, --cache, --force: the report folder and its classifier arms (evaluate, experiment, sweep)."""
    p.add_argument("--out", metavar="DIR", help=out_help)
    p.add_argument("--cache", metavar="DIR", help="folder of finished classifier arms (default <out>/cache); reports may share one")
    p.add_argument("--force", action="store_true", help="retrain classifier arms even when their cached result exists")


# ---------------------------------------------------------------------------------------------
# The commands: each one's flags and what it runs


def _fit_args(p: argparse.ArgumentParser) -> None:
    _add_recipe(p)
    _add_set(p)
    _add_data_root(p)
    _add_no_progress(p, "no progress bars (summary lines only)")
    _add_wait(p, "another fit of the same run directory")


def cmd_fit(args) -> None:
    from synthaug.diffusion.training import fit

    recipe = _recipe_from_args(args)
    fit(recipe, show_progress=not args.no_progress, wait=args.wait)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", metavar="DIR", help="run directory (default: the only finished run under runs/)")
    p.add_argument("--out", metavar="DIR", help="output folder (default <run>/synthetic)")
    p.add_argument("--per-class", type=int, metavar="N", help="N images per class")
    p.add_argument("--ratio", type=float, metavar="R", help="R times each class's real training count")
    p.add_argument("--balance", nargs="?", const=True, default=False, type=int, metavar="N",
                   help="top every class up to the largest class's real count, or up to N images (real + synthetic; none for a class already at N)")
    p.add_argument("--per-real", type=int, metavar="K", help="with --from-real: K variations of every real training image")
    p.add_argument("--from-real", action="store_true",
                   help="variations of the run's real training images (noised to --strength, denoised by the model of their class) "
                        "instead of images drawn from noise (recipe: generate.from_real)")
    p.add_argument("--strength", metavar="LO[,HI]", help="with --from-real: noise strength in (0, 1), fixed or drawn uniformly from LO..HI (default 0.5); "
                                                          "with --translate: in (0, 1], 1 drawing from noise")
    p.add_argument("--translate", action="store_true",
                   help="class_conditional runs: head-to-tail translations (Diff-Mix): each image starts from a real image of another class, "
                        "noised to --strength and denoised as its own class, labelled softly (recipe: generate.translate)")
    p.add_argument("--translate-from", metavar="RULE", help="with --translate: larger (default: the classes with more real images than "
                                                           "the image's own class, in proportion to their counts) | other (every other class)")
    p.add_argument("--gamma", type=float, metavar="G", help="with --translate: soft label s^G for the image's own class, 1 - s^G for the "
                                                           "source's (default 0.8)")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="class names or indices (default: every trained class)")
    p.add_argument("--sampler", metavar="NAME", help="dpm-solver++ | ddim | ddpm (default: the recipe's, else dpm-solver++)")
    p.add_argument("--steps", type=int, metavar="N", help="sampler steps (default: dpm-solver++ 20, ddim 50, ddpm every training step)")
    p.add_argument("--guidance-scale", type=float, metavar="W", help="classifier-free guidance of class_conditional runs (default 1: none)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per model call on a GPU (default 256); on CPU always 16, see README")
    p.add_argument("--seed", type=int, metavar="S", help="image i of class c comes from (seed, c, i) alone (default 0)")
    p.add_argument("--format", metavar="FMT", help="png | npz | both (default png)")
    p.add_argument("--reject-copies", action="store_true", help="redraw every candidate the audit's copy filter flags as a near-copy of a training image (recipe: generate.reject_copies)")
    p.add_argument("--filter-confidence", type=float, metavar="TAU",
                   help="redraw every candidate the audit's feature classifier (trained on the run's real training images) "
                        "does not assign to its own class with probability >= TAU, 0 < TAU < 1 (recipe: generate.filter_confidence)")
    _add_data_root(p, "--from-real and --translate read the real images")
    _add_no_progress(p, "no progress bar")
    _add_wait(p, "another generate into the same --out")


def cmd_generate(args) -> None:
    from synthaug.generation.generate import generate
    from synthaug.storage.rundir import open_run

    run = open_run(Path(args.run) if args.run else None, _overrides(args))
    generate(
        run, per_class=args.per_class, ratio=args.ratio, balance=args.balance, per_real=args.per_real, out=args.out, classes=args.classes,
        sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance_scale, batch_size=args.batch_size,
        seed=args.seed, format=args.format, reject_copies=args.reject_copies or None,
        filter_confidence=args.filter_confidence, from_real=args.from_real or None, strength=_strength(args.strength),
        translate=args.translate or None, translate_from=args.translate_from, gamma=args.gamma, show_progress=not args.no_progress, wait=args.wait,
    )


def _strength(text: str | None) -> list[float] | None:
    """--strength 0.3 or --strength 0.2,0.5."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2:
        raise UserError(f"--strength {text}: expected one number or LO,HI, e.g. 0.3 or 0.2,0.5")
    return values


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", action="append", metavar="DIR",
                   help="run directory, one per regime and subset (repeatable), e.g. --run runs/pneumo-50pc --run runs/pneumo-full")
    p.add_argument("runs", nargs="*", metavar="RUN", help=argparse.SUPPRESS)  # the older form, `evaluate RUN [RUN ...]`
    p.add_argument("--synthetic", action="append", metavar="DIR", help="synthetic set of each run, in the order of --run (default <run>/synthetic)")
    _add_report(p, "report folder (default <first run>/report)")
    _add_set(p, "--set evaluate.seeds=[0,1,2]", "the runs' recipes")
    _add_data_root(p)
    _add_no_progress(p)
    _add_wait(p, "another evaluate into the same --out")


def cmd_evaluate(args) -> None:
    from synthaug.evaluation.evaluate import evaluate
    from synthaug.storage.rundir import open_run

    if args.run and args.runs:
        raise UserError(f"give the runs as --run DIR (repeatable), not also as {' '.join(args.runs)} without --run")
    args.run = args.run or args.runs
    if not args.run:
        raise UserError("give at least one run directory: --run DIR (repeatable, one per regime)")
    runs = [open_run(Path(run), _overrides(args)) for run in args.run]
    out = Path(args.out) if args.out else Path(args.run[0]) / "report"  # beside the run, never in the current folder
    evaluate(runs, out, args.synthetic, args.force, not args.no_progress, _command_line(args),
             Path(args.cache) if args.cache else None, wait=args.wait)


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="run directory made by `synthaug fit`")
    p.add_argument("--synthetic", metavar="DIR", help="synthetic set to audit (default <run>/synthetic); audit.json and audit.md go there")
    p.add_argument("--device", metavar="DEVICE", help="torch device for the searches and features (default: cuda when available, else cpu)")
    _add_set(p, "--set audit.k=3", "the run's recipe: audit.* or evaluate.* only")
    _add_data_root(p)
    _add_no_progress(p)
    _add_wait(p, "another process writing into the synthetic folder")


def cmd_audit(args) -> None:
    from synthaug.auditing.audit import audit, check_audit_overrides
    from synthaug.core.runtime import pick_device
    from synthaug.storage.rundir import open_run

    device = pick_device(args.device)
    overrides = _overrides(args)
    check_audit_overrides(overrides)
    run = open_run(Path(args.run), overrides)
    audit(run, args.synthetic, device, not args.no_progress, _command_line(args), wait=args.wait)


def _release_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synthetic", required=True, metavar="DIR", help="the finished, audited synthetic set to release")
    p.add_argument("--out", required=True, metavar="DIR", help="the release folder to create (must not exist)")
    p.add_argument("--teacher", action="store_true", help="ship the soft labels of the run's own classifier (trained on its real images)")
    p.add_argument("--teacher-filter", type=float, metavar="P", help="keep only images that classifier gives >= P for their own class")
    p.add_argument("--with-weights", action="store_true", help="ship the generator's weights too")
    p.add_argument("--max-copy-rate", type=float, metavar="R", help="near-copy gate (default: the real val images' rate in the audit)")
    p.add_argument("--max-membership-auc", type=float, metavar="A", help="membership-inference gate on every attack's AUC (default 0.55)")
    p.add_argument("--override-gates", action="store_true", help="release even when a gate fails (the card and release.json say so)")
    _add_set(p, "--set evaluate.steps=1500", "the run's recipe (the teacher's settings)")
    _add_data_root(p, "where the run's real data is, for the teacher")
    _add_no_progress(p)
    _add_wait(p, "another process writing into the synthetic folder")


def cmd_release(args) -> None:
    from synthaug.sharing.release import DEFAULT_MAX_MEMBERSHIP_AUC, Gates, release

    gates = Gates(args.max_copy_rate, DEFAULT_MAX_MEMBERSHIP_AUC if args.max_membership_auc is None else args.max_membership_auc)
    release(args.synthetic, args.out, teacher=args.teacher, teacher_filter=args.teacher_filter, with_weights=args.with_weights,
            gates=gates, override=args.override_gates, show_progress=not args.no_progress, overrides=_overrides(args), wait=args.wait)


def _experiment_args(p: argparse.ArgumentParser) -> None:
    _add_recipe(p)
    _add_report(p, "report folder (default reports/<recipe name>)")
    _add_set(p)
    _add_data_root(p)
    _add_no_progress(p)
    _add_wait(p, "other processes holding its run directories, synthetic folders or --out")


def cmd_experiment(args) -> None:
    from synthaug.study.experiment import experiment

    _run_on_recipe(experiment, args)


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _add_recipe(p, "recipes/bloodmnist-study.yaml (a recipe with a sweep: section)")
    _add_report(p, "sweep folder: sweep.md, sweep.json, recommended.yaml, one report per lever value (default reports/<recipe name>-sweep)")
    _add_set(p)
    _add_data_root(p)
    _add_no_progress(p)
    _add_wait(p, "other processes holding the --out folder, or its run directories, synthetic folders or reports")


def cmd_sweep(args) -> None:
    from synthaug.study.sweep import sweep

    _run_on_recipe(sweep, args)


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="+", metavar="DIR", help="report folders of evaluate, experiment or sweep (results.json or sweep.json)")
    _add_wait(p, "another process writing into the folder")


def cmd_report(args) -> None:
    from synthaug.study.rescore import rescore

    for folder in args.folders:
        lines = rescore(folder, wait=args.wait)
        print("\n".join([f"report: {folder}", *lines]), flush=True)


def _run_on_recipe(stage, args) -> None:
    """experiment and sweep: a recipe in, a report folder out."""
    recipe = _recipe_from_args(args)
    stage(recipe, Path(args.out) if args.out else None, args.force, not args.no_progress, _command_line(args),
          cache_dir=Path(args.cache) if args.cache else None, wait=args.wait)


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


# Every subcommand, in the order of the pipeline (and of `synthaug --help`): name -> help, its flags, its handler.
COMMANDS: dict[str, Command] = {
    "fit": Command("train the diffusion models of a recipe (resumes where it stopped)", _fit_args, cmd_fit),
    "generate": Command("sample labelled synthetic images from a run's models (deterministic, resumable)", _generate_args, cmd_generate),
    "evaluate": Command("train classifiers on real vs real+synthetic data of one or more runs and report the gain", _evaluate_args, cmd_evaluate),
    "audit": Command("fidelity, diversity and near-copies of training images in a synthetic set", _audit_args, cmd_audit),
    "release": Command("pack a finished, audited synthetic set into a folder another site can use (gates, soft labels)",
                       _release_args, cmd_release),
    "experiment": Command("fit, generate and evaluate every regime of a recipe (evaluate.regimes)", _experiment_args, cmd_experiment),
    "sweep": Command("try the levers of a recipe's sweep: section one at a time, choose each on val, and recommend", _sweep_args, cmd_sweep),
    "report": Command("make reports again from their results.json / sweep.json with the current statistics (no training)",
                      _report_args, cmd_report),
}


def build_parser() -> argparse.ArgumentParser:
    from synthaug.core.version import __version__

    parser = argparse.ArgumentParser(prog="synthaug", description="Grow small labelled medical image sets with diffusion models, and measure whether it helps.")
    parser.add_argument("--version", action="version", version=f"synthaug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("default", category=UserWarning, module="synthaug")
    try:
        COMMANDS[args.command].run(args)
    except UserError as exc:
        print(f"synthaug {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"synthaug {args.command}: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"synthaug {args.command}: error: out of memory; ask for fewer images at once (finished work is kept on disk)", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, permissions: what was finished is on disk, the rest reruns
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"synthaug {args.command}: error: {where}{exc.strerror or exc}; fix that and run the same command again "
              "(finished work is kept)", file=sys.stderr)
        return 2
    return 0
