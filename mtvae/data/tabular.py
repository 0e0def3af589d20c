"""Heterogeneous tables with missing cells, ready for imputation with a (multitask) VAE.

The protocol follows HI-VAE (Nazabal, Olmos, Ghahramani & Valera, Pattern Recognition
2020) as used by Javaloy, Meghdadi & Valera, ICML 2022 ("Mitigating modality collapse in
multimodal VAEs via impartial optimization"), where every column is one task:

1. every column has a type (:mod:`mtvae.data.schema`); a frame is checked against the
   schema and rejected with a message that names the column and the fix;
2. ``max_rows`` keeps a seeded subsample of the rows (large tables stay fast);
3. a fraction ``missing_rate`` of the known cells of *each* column is hidden completely
   at random (MCAR, :func:`mcar_mask`); those cells are the imputation targets (``score``);
4. rows are shuffled (``split_seed``) into train/validation/test = 70/10/20 %;
5. real and pos columns are standardised (pos on the log scale) with statistics of the
   *observed training* cells only (:class:`TabularScaler`), so nothing leaks from
   validation, test or hidden cells;
6. each column's training marginal is stored (``info["marginals"]``, where a HeteroVAE's
   heads start) and columns whose declared type fits poorly are reported before any
   training (``info["fit_report"]``, a :class:`~mtvae.errors.SchemaFitWarning`); zeros
   replaced in a pos column give a :class:`~mtvae.errors.ZerosReplacedWarning`
   (:mod:`mtvae.data.marginals`).

Every split holds float32 tensors ``x`` (model space, 0.0 where the source had no value),
``mask`` (1 = observed) and ``score`` (1 = hidden cell with a known value to impute).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtvae.data.base import Dataset, Split
from mtvae.data.marginals import Marginal, fit_marginals, fit_report, warn_poor_fits
from mtvae.data.schema import Feature, Schema, SchemaSpec
from mtvae.errors import MTVAEError, ZerosReplacedWarning

# pos cells <= 0 are clamped to this before the log: a safety net for out-of-support input.
# Zeros in the data itself are replaced earlier, by half the smallest positive value of the
# column (see ``_numeric_column``), which stays close to the rest of the column on the log
# scale instead of becoming a far outlier at log(1e-8).
POS_TINY = 1e-8
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
MIN_ROWS = 3  # one row for each of train, validation and test


class TabularScaler:
    """Per-column affine map to model space: ``model = (t(x) - shift) / scale``.

    ``t`` is ``log`` for pos columns (a Normal on ``log x`` is a LogNormal on ``x``) and
    the identity otherwise; count/bin/cat columns keep shift 0 and scale 1.
    """

    def __init__(self, types: Sequence[str], shift: Tensor, scale: Tensor) -> None:
        self.types = tuple(types)
        self.shift = torch.as_tensor(shift, dtype=torch.float32).flatten()
        self.scale = torch.as_tensor(scale, dtype=torch.float32).flatten()
        if not len(self.types) == len(self.shift) == len(self.scale):
            raise MTVAEError("a TabularScaler needs one type, shift and scale per column")
        self.log = torch.tensor([t == "pos" for t in self.types], dtype=torch.bool)
        # each column's training marginal (set by from_frame): where a HeteroVAE's heads start
        self.marginals: tuple[Marginal, ...] | None = None

    @classmethod
    def identity(cls, schema: Schema) -> TabularScaler:
        """A scaler that only takes logs of pos columns (shift 0, scale 1)."""
        d = len(schema)
        return cls([f.type for f in schema], torch.zeros(d), torch.ones(d))

    @classmethod
    def fit(cls, x: Tensor, mask: Tensor, schema: Schema) -> TabularScaler:
        """Mean/std per real column and of ``log x`` per pos column, over cells with mask 1.

        A column with no such cell gets shift 0 and scale 1; a constant one gets scale 1.
        """
        base = cls.identity(schema)
        t = base._forward(x.double())
        observed = mask.bool()
        shift, scale = torch.zeros(len(schema)), torch.ones(len(schema))
        for j, feature in enumerate(schema):
            values = t[observed[:, j], j]
            if feature.type not in ("real", "pos") or len(values) == 0:
                continue
            mean, std = values.mean(), values.std(unbiased=False)
            shift[j] = float(mean)
            scale[j] = float(std) if std > 0 and torch.isfinite(std) else 1.0
        return cls(base.types, shift, scale)

    def _forward(self, x: Tensor) -> Tensor:
        log = self.log.to(x.device)
        return torch.where(log, torch.log(x.clamp_min(POS_TINY)), x)

    def transform(self, x: Tensor) -> Tensor:
        """Original units -> model space (``x`` is ``[..., D]``)."""
        shift, scale = self.shift.to(x), self.scale.to(x)
        return (self._forward(x) - shift) / scale

    def inverse(self, x: Tensor) -> Tensor:
        """Model space -> original units (``exp`` undoes the log of pos columns)."""
        y = x * self.scale.to(x) + self.shift.to(x)
        return torch.where(self.log.to(x.device), torch.exp(y), y)

    def __repr__(self) -> str:
        return f"TabularScaler({len(self.types)} columns, {int(self.log.sum())} on log scale)"


def check_missing_rate(rate: object) -> float:
    """``rate`` as a float if it is a number in [0, 1); otherwise a clear error."""
    ok = isinstance(rate, (int, float)) and not isinstance(rate, bool)
    if not ok or not math.isfinite(rate) or not 0 <= rate < 1:
        raise MTVAEError(
            f"missing_rate must be a number in [0, 1), got {rate!r}: it is the fraction of "
            "the known cells of each column hidden for imputation (e.g. 0.2)"
        )
    return float(rate)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MTVAEError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def mcar_mask(
    n_rows: int, n_cols: int, rate: float, seed: int, available: Tensor | None = None
) -> Tensor:
    """Cells hidden completely at random: bool ``[n_rows, n_cols]``, True = masked.

    In every column exactly ``round(rate * n)`` cells are masked (Python's round, halves to
    even), where ``n`` is the number of available (known) cells of that column, chosen
    uniformly among them with a ``torch.Generator`` seeded by ``seed``.
    """
    rate = check_missing_rate(rate)
    n_rows, n_cols = _check_int("n_rows", n_rows, 0), _check_int("n_cols", n_cols, 0)
    if available is None:
        available = torch.ones(n_rows, n_cols, dtype=torch.bool)
    available = torch.as_tensor(available).bool().cpu()
    if available.shape != (n_rows, n_cols):
        raise MTVAEError(
            f"available must have shape ({n_rows}, {n_cols}), got {tuple(available.shape)}"
        )
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    u = torch.rand(n_rows, n_cols, generator=gen, dtype=torch.float64)
    u[~available] = 2.0  # unavailable cells sort last, so they are never chosen
    ranks = u.argsort(dim=0).argsort(dim=0)
    n_masked = torch.tensor([round(rate * int(n)) for n in available.sum(dim=0)])
    return ranks < n_masked


# ---------------------------------------------------------------------------- validation


@dataclass
class _Encoded:
    """A validated table: float64 values in original units (NaN = unknown) and metadata."""

    values: np.ndarray
    categories: dict[str, list[object]]
    pos_zeros: dict[str, int]


def _example(values: pd.Series) -> str:
    """The first offending value, its row label and how many cells offend."""
    first, row = values.iloc[0], values.index[0]
    first = first.item() if isinstance(first, np.generic) else first
    row = row.item() if isinstance(row, np.generic) else row
    cells = "1 such cell" if len(values) == 1 else f"{len(values)} such cells"
    return f"{first!r} (row {row!r}; {cells})"


def _numeric_column(col: pd.Series, feature: Feature) -> tuple[np.ndarray, int]:
    """Float64 values of a real/pos/count column; pos zeros replaced (their count returned)."""
    name, spec = feature.name, feature.spec
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        conv = pd.Series(col.to_numpy(dtype=np.float64, na_value=np.nan), index=col.index)
    else:
        conv = pd.to_numeric(col, errors="coerce").astype(np.float64)
        bad = col[col.notna() & conv.isna()]
        if len(bad):
            raise MTVAEError(
                f"column {name!r} is declared {spec} but holds non-numeric values such as "
                f"{_example(bad)}; clean those cells (leave them empty for missing) or "
                "declare the column as bin/cat(k)"
            )
    bad = conv[np.isinf(conv)]
    if len(bad):
        raise MTVAEError(
            f"column {name!r} holds infinite values such as {_example(bad)}; replace them "
            "with finite numbers or leave them empty for missing"
        )
    if feature.type == "count":
        bad = conv[conv.notna() & ((conv < 0) | (conv % 1 != 0))]
        if len(bad):
            raise MTVAEError(
                f"column {name!r} is declared count (non-negative integers, Poisson) but has "
                f"non-integer or negative values such as {_example(bad)}; declare it 'real' "
                "(or 'pos' if strictly positive) or fix the values"
            )
    zeros = 0
    if feature.type == "pos":
        bad = conv[conv < 0]
        if len(bad):
            raise MTVAEError(
                f"column {name!r} is declared pos (strictly positive, LogNormal) but has "
                f"negative values such as {_example(bad)}; declare it 'real' or fix the values"
            )
        is_zero = conv == 0
        zeros = int(is_zero.sum())
        if zeros:
            positive = conv[conv > 0]
            floor = max(float(positive.min()) / 2 if len(positive) else 1.0, POS_TINY)
            conv = conv.mask(is_zero, floor)
            warnings.warn(ZerosReplacedWarning(
                f"column {name!r} is declared pos (strictly positive, LogNormal) but has "
                f"{zeros} zero(s) of {int(conv.notna().sum())} values; they were replaced by "
                f"{floor:.4g} (half its smallest positive value). If zeros mean something, "
                "declare it 'real' (or 'count' for integers) instead"), stacklevel=2)
    return conv.to_numpy(dtype=np.float64), zeros


def _category_column(col: pd.Series, feature: Feature) -> tuple[np.ndarray, list[object]]:
    """Codes 0..k-1 (NaN kept) and the label of each code.

    Numeric values that already are integer codes in 0..k-1 are kept as they are;
    anything else (strings, other numbers) is coded in sorted order of its distinct values.
    """
    known = col.dropna()
    numeric = pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col)
    known = known.astype(np.float64) if numeric else known.astype(str)
    levels = sorted(known.unique().tolist())
    if len(levels) > feature.k:
        shown = ", ".join(repr(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
        raise MTVAEError(
            f"column {feature.name!r} is declared {feature.spec} (k={feature.k}) but has "
            f"{len(levels)} distinct values ({shown}); declare it as cat({len(levels)}) or "
            "merge categories"
        )
    codes = np.full(len(col), np.nan)
    where = col.notna().to_numpy()
    if numeric and all(float(v).is_integer() and 0 <= v < feature.k for v in levels):
        codes[where] = known.to_numpy()
        return codes, list(range(feature.k))
    lookup = {v: i for i, v in enumerate(levels)}
    codes[where] = known.map(lookup).to_numpy(dtype=np.float64)
    if numeric:
        levels = [int(v) if float(v).is_integer() else float(v) for v in levels]
    return codes, levels


def _encode(df: object, schema: Schema) -> _Encoded:
    """Check a frame against the schema and turn it into a float64 table in schema order."""
    if not isinstance(df, pd.DataFrame):
        raise MTVAEError(f"expected a pandas DataFrame, got {type(df).__name__}")
    columns = [str(c) for c in df.columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise MTVAEError(f"the data has repeated column names {repeated}; rename them")
    missing = [n for n in schema.names if n not in columns]
    unexpected = [c for c in columns if c not in schema.names]
    if missing or unexpected:
        raise MTVAEError(
            f"the data's {len(columns)} columns do not match the schema's {len(schema)}: "
            f"missing {missing}, unexpected {unexpected}; rename or drop columns, or fix "
            "the schema (for a CSV whose first column is a row index pass index_col=0)"
        )
    if len(df) == 0:
        raise MTVAEError("the data has no rows (0 rows); pass a table with data in it")
    df = df.set_axis(columns, axis=1)
    values = np.empty((len(df), len(schema)))
    categories: dict[str, list[object]] = {}
    pos_zeros: dict[str, int] = {}
    for j, feature in enumerate(schema):
        col = df[feature.name]
        if col.isna().all():
            raise MTVAEError(
                f"column {feature.name!r} has no values at all (every cell is missing); "
                "drop it from the data and from the schema"
            )
        if feature.numerical:
            values[:, j], zeros = _numeric_column(col, feature)
            if zeros:
                pos_zeros[feature.name] = zeros
        else:
            values[:, j], categories[feature.name] = _category_column(col, feature)
    return _Encoded(values, categories, pos_zeros)


# -------------------------------------------------------------------------------- build


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train/validation/test sizes 70/10/20 % of ``n`` rows (each at least one row)."""
    if n < MIN_ROWS:
        raise MTVAEError(f"need at least {MIN_ROWS} rows for train/val/test splits, got {n}")
    n_val = max(1, round(SPLIT_FRACTIONS[1] * n))
    n_test = max(1, round(SPLIT_FRACTIONS[2] * n))
    return n - n_val - n_test, n_val, n_test


def _ranges(values: np.ndarray, schema: Schema) -> Tensor:
    """max - min of every numerical column over its known cells (1.0 for bin/cat/constant)."""
    out = torch.ones(len(schema))
    for j, feature in enumerate(schema):
        known = values[~np.isnan(values[:, j]), j]
        if feature.numerical and len(known) and known.max() > known.min():
            out[j] = float(known.max() - known.min())
    return out


def from_frame(
    df: pd.DataFrame,
    schema: Schema | SchemaSpec,
    name: str = "custom",
    missing_rate: float = 0.2,
    mask_seed: int = 0,
    split_seed: int = 0,
    max_rows: int | None = None,
    source: str = "pandas DataFrame",
) -> Dataset:
    """A :class:`Dataset` from a frame whose columns are those of ``schema``.

    Empty cells (NaN) are allowed anywhere and are never observed nor scored; string or
    numeric categories are coded 0..k-1 (labels in ``info["categories"]``). Rows are
    checked and coded on the whole frame, then ``max_rows`` subsamples them (seeded by
    ``split_seed``), then masks, splits and the scaler follow (see the module docstring).
    """
    schema = Schema.parse(schema)
    rate = check_missing_rate(missing_rate)
    mask_seed = _check_int("mask_seed", mask_seed, 0)
    split_seed = _check_int("split_seed", split_seed, 0)
    encoded = _encode(df, schema)
    values, n_source = encoded.values, len(encoded.values)
    rows = torch.arange(n_source)
    if max_rows is not None and _check_int("max_rows", max_rows, MIN_ROWS) < n_source:
        gen = torch.Generator().manual_seed(split_seed)
        rows = torch.randperm(n_source, generator=gen)[:max_rows].sort().values
        values = values[rows.numpy()]
    n, d = values.shape
    sizes = split_sizes(n)

    available = torch.from_numpy(~np.isnan(values))
    hidden = mcar_mask(n, d, rate, mask_seed, available)
    mask = (available & ~hidden).float()
    score = hidden.float()
    original = torch.from_numpy(np.where(np.isnan(values), 1.0, values))

    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    parts = torch.split(order, list(sizes))
    train = parts[0].sort().values
    scaler = TabularScaler.fit(original[train], mask[train], schema)
    x = scaler.transform(original).float()
    x[~available] = 0.0

    known = {f.name: int(available[:, j].sum()) for j, f in enumerate(schema)}
    scaler.marginals = fit_marginals(x[train], mask[train], schema, encoded.pos_zeros, known)
    report = fit_report(scaler.marginals)
    warn_poor_fits(report, f"table {name!r}")

    splits = {}
    for key, index in zip(("train", "val", "test"), parts, strict=True):
        index = index.sort().values
        splits[key] = Split({"x": x[index], "mask": mask[index], "score": score[index]})
    info: dict[str, object] = {
        "schema": schema,
        "scaler": scaler,
        "ranges": _ranges(values, schema),
        "missing_rate": rate,
        "mask_seed": mask_seed,
        "split_seed": split_seed,
        "source": source,
        "n_rows": n,
        "n_rows_source": n_source,
        "categories": encoded.categories,
        "pos_zeros_replaced": encoded.pos_zeros,
        "marginals": scaler.marginals,
        "fit_report": report,
        "n_missing_source": int((~available).sum()),
        "rows": {key: rows[p.sort().values] for key, p in zip(splits, parts, strict=True)},
    }
    return Dataset(name=name, **splits, x_shape=(d,), n_classes=None, info=info)


def from_csv(
    path: str | Path,
    schema: Schema | SchemaSpec,
    name: str | None = None,
    index_col: int | str | None = None,
    **options: object,
) -> Dataset:
    """:func:`from_frame` on a CSV file (header row = column names; empty cells = missing).

    ``index_col`` names a row-index column to drop (e.g. 0 for files written by
    ``DataFrame.to_csv`` with its index); ``options`` go to :func:`from_frame`.
    """
    path = Path(path)
    if not path.is_file():
        raise MTVAEError(f"no CSV file at {str(path)!r}; check the path")
    try:
        df = pd.read_csv(path, index_col=index_col)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MTVAEError(
            f"could not read {str(path)!r} as CSV ({err}); save it as comma-separated text "
            "with one header row"
        ) from None
    return from_frame(df, schema, name=name or path.stem, source=str(path), **options)

