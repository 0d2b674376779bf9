"""Recipes: one YAML file, validated once into a typed `Recipe` that every stage receives.

Nothing else in synthaug reads YAML or environment settings for a run; `load_recipe` is the only
entry point, and every problem it finds is a `UserError` naming the field path.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from synthaug.recipe.sections import AuditConfig, DataConfig, DiffusionConfig, EvaluateConfig, GenerateConfig, ModelConfig, SweepConfig, TrainConfig, _Strict
from synthaug.core.errors import UserError


class Recipe(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    output_dir: Path = Path("runs")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    train: TrainConfig
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    sweep: SweepConfig | None = None  # `synthaug sweep` only

    @model_validator(mode="after")
    def _consistent(self):
        size = self.data.size
        if self.model.sample_size is None:
            self.model.__dict__["sample_size"] = size
        elif self.model.sample_size != size:
            raise ValueError(f"model.sample_size ({self.model.sample_size}) must equal data.size ({size})")
        if self.data.unlabeled is not None and self.model.conditioning == "per_class" and not self.train.pretrain_steps:
            raise ValueError("train.pretrain_steps: per-class models learn from data.unlabeled only by starting from a model "
                             "pretrained on it; set train.pretrain_steps > 0 (or model.conditioning: class_conditional)")
        factor = 2 ** (len(self.model.block_out_channels) - 1)
        if size % factor:
            raise ValueError(
                f"model.block_out_channels: {len(self.model.block_out_channels)} levels halve the image "
                f"{len(self.model.block_out_channels) - 1} times, so data.size must be divisible by {factor}; got {size}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"][:-1]), n=1)
        return f"{loc}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return f"{loc}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    field = re.match(r"^([\w.]+): (.*)$", msg) if kind == "value_error" else None
    if field:  # validators name their field first: "size: must be ..."
        loc, msg = ".".join(p for p in (loc, field.group(1)) if p), field.group(2)
    got = err.get("input")
    shown = "" if kind.startswith("value_error") or isinstance(got, dict) else f" (got {got!r})"
    return f"{loc + ': ' if loc else ''}{msg}{shown}"


def _known_keys(loc: tuple) -> list[str]:
    """The field names of the recipe section at `loc` (e.g. ("data", "subset")); none where `loc` is no section."""
    section: type[BaseModel] | None = Recipe
    for part in loc:
        field = section.model_fields.get(str(part)) if section else None
        section = _section_type(field.annotation) if field else None
    return list(section.model_fields) if section else []


def _section_type(annotation) -> type[BaseModel] | None:
    """The recipe section a field holds (`SubsetConfig | None` -> SubsetConfig), None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((t for t in map(_section_type, typing.get_args(annotation)) if t), None)


def parse_overrides(pairs: list[str]) -> list[tuple[list[str], object]]:
    """Turn `["train.steps=200", "model.block_out_channels=[8,16]"]` into (field path, value) pairs, values parsed as YAML."""
    parsed = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {pair!r}: expected FIELD.PATH=VALUE, e.g. train.steps=200")
        try:
            parsed.append((key.split("."), yaml.safe_load(raw) if raw != "" else None))
        except yaml.YAMLError:
            raise UserError(f"--set {pair!r}: the value is not valid YAML (quote it, e.g. {key}='[1, 2]')") from None
    return parsed


def apply_overrides(raw: dict, pairs: list[str]) -> dict:
    """`raw` with each `--set FIELD.PATH=VALUE` applied in order. The value replaces what was at the path, a mapping
    included: `data.subset={counts: ...}` drops the recipe's `data.subset.per_class`; `data.subset.seed=1` keeps it."""
    out = copy.deepcopy(raw)
    for path, value in parse_overrides(pairs):
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def recipe_from_dict(raw: dict, source: str = "recipe") -> Recipe:
    """Validate a plain dict into a Recipe; the first problem becomes a one-line UserError."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a YAML mapping at the top level")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {_describe(exc.errors()[0])}") from None
    if recipe.data.root is None and os.environ.get("SYNTHAUG_DATA_ROOT"):
        recipe.data.root = Path(os.environ["SYNTHAUG_DATA_ROOT"])
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file, apply `--set` overrides, and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read recipe ({exc})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"{path}: not valid YAML{line}") from None
    if raw is None:
        raw = {}
    if overrides:
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a YAML mapping at the top level")
        raw = apply_overrides(raw, overrides)
    return recipe_from_dict(raw, str(path))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
