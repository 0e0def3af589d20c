"""Glue computed numbers into the book's prose (myst-nb ``glue``).

Only plain Python floats, ints and strings are glued (numpy scalars break myst-nb's
formatting of ``{glue:text}`` roles). Importing myst-nb lazily keeps the library usable
without the book toolchain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtvae.metrics import mean_std


def glue(name: str, value: object) -> object:
    """Glue ``value`` (converted to a plain float/int/str) without displaying it."""
    from myst_nb import glue as _glue

    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, (np.floating, float)):
        value = float(value)
    elif not isinstance(value, str):
        raise TypeError(f"glue only plain numbers and strings, got {type(value).__name__}")
    _glue(name, value, display=False)
    return value


def pm(values: Sequence[float] | np.ndarray, fmt: str = ".1f") -> str:
    """``"mean ± std"`` over seeds (sample std), or just the value for one seed."""
    mean, std = mean_std(values)
    if len(np.atleast_1d(values)) < 2:
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {std:{fmt}}"


def glue_pm(name: str, values: Sequence[float] | np.ndarray, fmt: str = ".1f") -> str:
    """Glue ``"mean ± std"`` as text and the mean alone as ``<name>_mean``."""
    glue(f"{name}_mean", mean_std(values)[0])
    return str(glue(name, pm(values, fmt)))


def glue_sentence(name: str, text: str) -> str:
    """Glue a computed sentence as Markdown, for ``{glue:md}`name``` in running prose.

    Numbers and short phrases use ``{glue:text}`` (rendered emphasised by the theme);
    whole sentences whose wording depends on results read better as plain Markdown.
    """
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    _glue(name, Markdown(text), display=False)
    return text


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 learning rate"`` / ``"3 learning rates"``: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
