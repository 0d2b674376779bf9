"""The `synthaug` command: a thin layer over the library functions of the same names."""

from __future__ import annotations

import argparse
import sys
import warnings

from synthaug.errors import UserError


def _recipe_from_args(args):
    from synthaug.recipe import load_recipe

    overrides = list(args.set or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    return load_recipe(args.recipe, overrides)


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a recipe field, e.g. --set train.steps=200 (repeatable)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the MedMNIST npz files (overrides data.root)")


def cmd_fit(args) -> None:
    from synthaug.train import fit

    recipe = _recipe_from_args(args)
    fit(recipe, show_progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    from synthaug import __version__

    parser = argparse.ArgumentParser(prog="synthaug", description="Grow small labelled medical image sets with diffusion models, and measure whether it helps.")
    parser.add_argument("--version", action="version", version=f"synthaug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train the diffusion models of a recipe (resumes where it stopped)")
    _add_recipe_args(fit)
    fit.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    fit.set_defaults(func=cmd_fit)

    # Further commands register themselves below, one function each.
    for register in _REGISTRARS:
        register(sub)
    return parser


_REGISTRARS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("default", category=UserWarning, module="synthaug")
    try:
        args.func(args)
    except UserError as exc:
        print(f"synthaug {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"synthaug {args.command}: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0
