"""`synthaug experiment`: fit -> generate -> evaluate over every regime of a recipe."""

from __future__ import annotations

import math
from pathlib import Path

from synthaug.errors import UserError
from synthaug.evaluate import evaluate
from synthaug.generate import generate
from synthaug.config import SubsetConfig
from synthaug.recipe import Recipe, recipe_from_dict
from synthaug.regimes import expand_arms, top_ratio
from synthaug.train import fit

REPLACE_VARIATIONS = 5  # variations per real image that `experiment` makes for real+replace arms (DA-Fusion used 10)


def regime_recipe(recipe: Recipe, subset: SubsetConfig | None) -> Recipe:
    """The recipe of one regime: the same settings on that training subset, named `<name>-<regime>`."""
    if subset is None or (subset.fraction == 1.0):
        slug = "full"
    else:
        slug = (f"{subset.per_class}pc" if subset.per_class is not None else f"f{subset.fraction:g}") + f"-s{subset.seed}"
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-{slug}"
    raw["data"]["subset"] = subset.model_dump() if subset is not None else None
    return recipe_from_dict(raw, f"{recipe.name} regime {slug}")


def regime_recipes(recipe: Recipe) -> list[Recipe]:
    """The recipe of every regime in `evaluate.regimes` (default: the recipe's own data.subset)."""
    return [regime_recipe(recipe, subset) for subset in recipe.evaluate.regimes or [recipe.data.subset]]


def synthetic_amount(recipe: Recipe) -> dict:
    """What `generate` must draw for the recipe's arms: {"per_real": K}, {"ratio": R}, or {} when no arm uses synthetic images."""
    arms = expand_arms(recipe.evaluate)
    ratio = top_ratio(arms)
    if any(a.replace_p is not None for a in arms):
        if not recipe.generate.from_real:
            raise UserError("evaluate.arms: the real+replace arms need variations of the real images; set generate.from_real: true")
        return {"per_real": max(REPLACE_VARIATIONS, math.ceil(ratio))}  # every variation serves the replace arms, the add arms the first of each
    return {"ratio": ratio} if ratio else {}  # R x each class's real count


def experiment(recipe: Recipe, out_dir: Path | None = None, force: bool = False, show_progress: bool = True,
               command: str | None = None, cache_dir: Path | None = None, synthetic_folder: str = "synthetic") -> dict:
    """For every regime in `evaluate.regimes` (default: the recipe's own data.subset): fit its diffusion
    models on that subset only, generate as many synthetic images as the arms need into `<run>/<synthetic_folder>`,
    then evaluate all regimes together into `out_dir` (default reports/<name>; finished arms cached in `cache_dir`)."""
    amount = synthetic_amount(recipe)
    runs = []
    for sub in regime_recipes(recipe):
        run = fit(sub, show_progress=show_progress)
        if amount:
            generate(sub, out=run.root / synthetic_folder, **amount, show_progress=show_progress)
        runs.append(run.root)
    return evaluate(runs, Path(out_dir or f"reports/{recipe.name}"), [run / synthetic_folder for run in runs], force=force,
                    show_progress=show_progress, command=command, cache_dir=cache_dir)
