"""The book's house table: formatted cells, a numbered caption, and one source for HTML and PDF.

A chapter shows a DataFrame through :func:`table` (or :func:`pm_table` for mean ± sd over
seeds). The result displays as a MyST ``{table}`` directive (``text/markdown``), which
myst-nb parses into a real docutils table: Sphinx numbers its caption ("Table 3.2"), the
``label`` can be cross-referenced with ``{numref}`` from the prose, the HTML builder renders
it with the book's CSS (cells never wrap inside ``mean ± sd``) and the LaTeX builder turns
it into a ``tabulary``/``longtable`` with an entry in the list of tables. The same object
shows a plain-text version in a terminal.

Formatting rules (one place for every chapter): floats never appear raw (a fixed number of
significant digits or decimals), rates are percentages, booleans read "yes"/"no", the index
becomes ordinary columns with readable names, and the best entry of each row can be bold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtvae.errors import MTVAEError

LONG_TABLE_ROWS = 24  # more rows than this: a LaTeX longtable that may break across pages
LABEL_RE = re.compile(r"^tab-[a-z0-9-]+$")

Formatter = Callable[[object], str]


LARGE = 1e6  # fmt_number and fmt_fixed switch to scientific notation from here on


def fmt_number(value: object, digits: int = 3, sign: bool = False) -> str:
    """A number with ``digits`` significant digits (ints exactly); NaN becomes an en dash.

    Never more than six decimals: tiny values are written with six decimals (``0.000029``),
    large ones without decimals, with thin-space groups; a value that is exact at that
    precision (a setting such as ``0.1``) drops padding zeros. A float from ``LARGE`` on (what
    a diverged run produces) is written in scientific notation (``2.7e+48``).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    plus = "+" if sign else ""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):{plus},}".replace(",", "\u2009").replace("-", "−")
    v = float(value)  # type: ignore[arg-type]
    if v == 0:
        return "0"
    if math.isfinite(v) and abs(v) >= LARGE:
        return f"{v:{plus}.{max(digits - 2, 0)}e}".replace("-", "−")
    if abs(v) >= 10 ** digits:
        text = f"{v:{plus},.0f}".replace(",", "\u2009")
    else:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
        text = f"{v:{plus}.{min(decimals, 6)}f}"
        if "." in text and float(text) == v:  # an exact setting (0.1, 1e-3): no padding zeros
            text = text.rstrip("0").rstrip(".")
    return text.replace("-", "−")


def fmt_fixed(value: object, decimals: int = 3, sign: bool = False) -> str:
    """A number with a fixed number of decimals (``sign``: always show + or −); from
    ``LARGE`` on in scientific notation (``+2.7e+48``), which a diverged run can produce."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value)  # type: ignore[arg-type]
    if math.isfinite(v) and abs(v) >= LARGE:
        return fmt_number(v, sign=sign)  # one home for the scientific notation
    text = f"{v:{'+' if sign else ''}.{decimals}f}"
    return text.replace("-", "−")


def fmt_rate(value: object, decimals: int = 0) -> str:
    """A fraction in [0, 1] as a percentage: ``0.1`` → ``"10 %"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{decimals}f} %"  # type: ignore[arg-type]


def fmt_p(value: object) -> str:
    """A p-value: two significant digits, ``< 0.001`` below that."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value)  # type: ignore[arg-type]
    return "< 0.001" if v < 0.001 else f"{v:.2g}"


def fmt_pm(mean: float, sd: float, decimals: int = 3) -> str:
    """``"mean ± sd"`` with fixed decimals, or the mean alone when ``sd`` is NaN."""
    if math.isnan(sd):
        return fmt_fixed(mean, decimals)
    return f"{fmt_fixed(mean, decimals)} ± {fmt_fixed(sd, decimals)}"


def _auto(value: object) -> str:
    if isinstance(value, str):
        return value
    return fmt_number(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Table:
    """A formatted table with a caption and a label; displays as a numbered MyST table."""

    cells: pd.DataFrame  # every cell already a string
    caption: str
    label: str
    bold: frozenset[tuple[int, str]] = frozenset()  # (row position, column) shown in bold

    def markdown(self) -> str:
        cols = [str(c) for c in self.cells.columns]
        lines = ["| " + " | ".join(_escape(c) for c in cols) + " |",
                 "| " + " | ".join("---" for _ in cols) + " |"]
        for i, row in enumerate(self.cells.itertuples(index=False)):
            cells = []
            for col, value in zip(self.cells.columns, row, strict=True):
                text = _escape(str(value))
                cells.append(f"**{text}**" if (i, col) in self.bold and text != "–" else text)
            lines.append("| " + " | ".join(cells) + " |")
        classes = "mtvae-table" + (" longtable" if len(self.cells) > LONG_TABLE_ROWS else "")
        # a colon fence: a backtick fence's info string may not contain the backticks of
        # code spans in the caption (CommonMark), which would leave the directive unparsed
        return "\n".join([f":::{{table}} {self.caption}", f":name: {self.label}",
                          f":class: {classes}", "", *lines, ":::", ""])

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.cells.to_string(index=False)}"


def table(frame: pd.DataFrame, caption: str, label: str,
          formats: Mapping[str, Formatter] | None = None,
          rename: Mapping[str, str] | None = None,
          bold: Sequence[tuple[int, str]] = ()) -> Table:
    """Format ``frame`` (index kept as columns) into a captioned :class:`Table`.

    ``formats`` maps a column to a formatter (see the ``fmt_*`` helpers); other columns get
    :func:`fmt_number`, booleans "yes"/"no" and strings unchanged. ``rename`` gives columns
    readable headers. ``label`` (``tab-...``) is what ``{numref}`` refers to.
    """
    if not LABEL_RE.match(label):
        raise MTVAEError(f"table label {label!r} must look like 'tab-some-name' "
                         "(lower case, digits and hyphens)")
    if not caption.strip():
        raise MTVAEError("every table needs a caption; pass caption='...'")
    df = frame.copy()
    named = any(n is not None for n in df.index.names)
    df = df.reset_index(drop=not named)  # a named index becomes columns; a row number goes
    formats = dict(formats or {})
    out = pd.DataFrame(index=range(len(df)))
    for col in df.columns:
        fmt = formats.get(col, _auto)
        out[col] = [fmt(v) for v in df[col].tolist()]
    out = out.rename(columns={c: (rename or {}).get(c, str(c)) for c in out.columns})
    names = {c: (rename or {}).get(c, str(c)) for c in df.columns}
    return Table(out, caption, label, frozenset((i, names.get(c, c)) for i, c in bold))


NUMBER_RE = re.compile(r"^\s*([+\-−]?\d+(?:\.\d+)?)")


def leading_number(cell: object) -> float:
    """The number a cell starts with (``"0.150 ± 0.026"`` → 0.15); NaN when there is none."""
    if isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool):
        return float(cell)
    match = NUMBER_RE.match(str(cell))
    return float(match.group(1).replace("−", "-")) if match else math.nan


def best_per_row(values: pd.DataFrame, lower_is_better: bool = True) -> list[tuple[int, str]]:
    """``(row position, column)`` of the best value in every row (ties: all of them).

    Cells may be numbers or formatted text such as ``"0.150 ± 0.026"`` (the mean counts).
    """
    picks = []
    for i, (_, row) in enumerate(values.iterrows()):
        row = row.map(leading_number).astype(float)
        if row.isna().all():
            continue
        best = row.min() if lower_is_better else row.max()
        picks += [(i, str(c)) for c, v in row.items() if np.isclose(v, best)]
    return picks


def pm_table(mean: pd.DataFrame, sd: pd.DataFrame, caption: str, label: str,
             decimals: int = 3, lower_is_better: bool = True,
             compare: Sequence[str] | None = None,
             index_formats: Mapping[str, Formatter] | None = None,
             rename: Mapping[str, str] | None = None) -> Table:
    """A wide table of ``mean ± sd`` cells (rows × columns), the best mean per row in bold.

    ``compare`` restricts the bold pick to some columns (e.g. the VAEs, not a baseline).
    Index levels are shown as columns, formatted with ``index_formats``.
    """
    if mean.shape != sd.shape:
        raise MTVAEError("pm_table needs mean and sd frames of the same shape")
    cols = [str(c) for c in mean.columns]
    text = pd.DataFrame({c: [fmt_pm(m, s, decimals) for m, s in
                             zip(mean[col], sd[col], strict=True)]
                         for c, col in zip(cols, mean.columns, strict=True)}, index=mean.index)
    pick = mean.copy()
    pick.columns = cols
    if compare is not None:
        pick = pick[[str(c) for c in compare]]
    n_index = mean.index.nlevels
    frame = text.reset_index()
    index_names = [str(c) for c in frame.columns[:n_index]]
    frame.columns = [*index_names, *cols]
    formats = dict(index_formats or {})
    for c in cols:
        formats.setdefault(c, str)
    return table(frame, caption, label, formats=formats, rename=rename,
                 bold=best_per_row(pick, lower_is_better))
