"""Classes as users name them: by name, by index or by an index written as text ("3", as the command line and YAML
strings give it). One resolver for the recipe's data.classes, generate's --classes and SynthDataset's classes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from synthaug.core.errors import UserError


def class_indices(requested: Sequence[int | str], names: Sequence[str], field: str, known: Iterable[int] | None = None,
                  holder: str | None = None) -> list[int]:
    """The sorted, distinct indices of the `requested` classes, each a name in `names`, an index or a digit string.

    A name wins over an index (a folder dataset may name its classes "0", "1", ...). `known`: the indices that may be
    asked for (default every class). Anything else is a one-line UserError naming `field` (and `holder`, what lacks
    the class) with the classes that may be asked for.
    """
    allowed = sorted(range(len(names)) if known is None else {int(c) for c in known})
    chosen = set()
    for item in requested:
        if isinstance(item, str) and item in names:
            index = names.index(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item)
        elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit():
            index = int(item)
        else:
            index = None
        if index not in allowed:
            choices = ", ".join(f"{c} ({_one_line(names[c])})" for c in allowed)
            lacks = f"{holder} has no class" if holder else "no class"
            raise UserError(f"{field}: {lacks} {item!r}; expected one of {choices}")
        chosen.add(index)
    return sorted(chosen)


def _one_line(name: str) -> str:
    """A class name as it reads in an error: quoted when it holds a line break or other unprintable character."""
    return name if name.isprintable() else repr(name)
