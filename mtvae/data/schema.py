"""Feature types of heterogeneous (mixed-type) tables and the schema that declares them.

Every column of a table gets one type, and the type picks its likelihood, as in HI-VAE
(Nazabal, Olmos, Ghahramani & Valera, Pattern Recognition 2020) and the heterogeneous
experiments of Javaloy, Meghdadi & Valera, ICML 2022:

* ``real``  — any real number, Normal likelihood;
* ``pos``   — strictly positive continuous, LogNormal (a Normal on ``log x``);
* ``count`` — non-negative integers, Poisson;
* ``bin``   — two categories, Bernoulli;
* ``cat(k)``— ``k ≥ 2`` unordered categories, Categorical.

A schema is written as a mapping ``{"carat": "pos", "cut": "cat(5)"}`` (or a sequence of
``(name, type)`` pairs) and parsed with :meth:`Schema.parse`, which rejects unknown types,
``cat(k)`` with ``k < 2`` and duplicate names with a message that says how to fix them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from mtvae.errors import MTVAEError

FEATURE_TYPES: tuple[str, ...] = ("real", "pos", "count", "bin", "cat")
NUMERICAL_TYPES: tuple[str, ...] = ("real", "pos", "count")
_VALID = "real, pos, count, bin, cat(k) with k ≥ 2"
_CAT = re.compile(r"^cat\s*\(\s*([+-]?\d+)\s*\)$")


@dataclass(frozen=True)
class Feature:
    """One column: its name, type and number of categories ``k`` (1 for numerical types)."""

    name: str
    type: str
    k: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise MTVAEError(f"a feature name must be a non-empty string, got {self.name!r}")
        if self.type not in FEATURE_TYPES:
            raise MTVAEError(
                f"column {self.name!r}: unknown feature type {self.type!r}; "
                f"valid types are {_VALID}"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise MTVAEError(f"column {self.name!r}: k must be an integer, got {self.k!r}")
        if self.type == "bin":
            if self.k not in (1, 2):
                raise MTVAEError(
                    f"column {self.name!r}: 'bin' has exactly 2 categories, got k={self.k}; "
                    f"declare it as cat({self.k}) instead"
                )
            object.__setattr__(self, "k", 2)  # the default k=1 means "as the type says"
        elif self.type == "cat" and self.k < 2:
            raise MTVAEError(
                f"column {self.name!r}: cat(k) needs k ≥ 2 categories, got k={self.k}; "
                "a single category carries no information, drop the column instead"
            )
        elif self.type in NUMERICAL_TYPES and self.k != 1:
            raise MTVAEError(
                f"column {self.name!r}: a {self.type!r} feature has k=1, got k={self.k}"
            )

    @property
    def numerical(self) -> bool:
        """True for real/pos/count, whose cells are numbers rather than category codes."""
        return self.type in NUMERICAL_TYPES

    @property
    def spec(self) -> str:
        """The type as written in a schema: ``"real"``, ``"bin"``, ``"cat(5)"`` ..."""
        return f"cat({self.k})" if self.type == "cat" else self.type

    @classmethod
    def parse(cls, name: str, spec: str) -> Feature:
        """A feature from a type string such as ``"pos"`` or ``"cat(7)"``."""
        if not isinstance(spec, str):
            raise MTVAEError(
                f"column {name!r}: the type must be a string, got {spec!r}; "
                f"valid types are {_VALID}"
            )
        text = spec.strip().lower()
        match = _CAT.match(text)
        if match:
            return cls(name, "cat", int(match.group(1)))
        if text == "cat":
            raise MTVAEError(
                f"column {name!r}: declare the number of categories, e.g. 'cat(3)', "
                f"not {spec!r}"
            )
        if text not in FEATURE_TYPES:
            raise MTVAEError(
                f"column {name!r}: unknown feature type {spec!r}; valid types are {_VALID}"
            )
        return cls(name, text)


def _check_unique(names: Sequence[object]) -> None:
    dup = sorted({str(n) for n, c in Counter(names).items() if c > 1})
    if dup:
        raise MTVAEError(
            f"the schema names columns more than once: {dup}; give every column a unique name"
        )


SchemaSpec = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Schema:
    """The ordered features of a table; the column order of every tensor built from it."""

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        features = tuple(self.features)
        if not features:
            raise MTVAEError("a schema needs at least one column")
        if not all(isinstance(f, Feature) for f in features):
            raise MTVAEError("a Schema holds Feature objects; use Schema.parse for type strings")
        _check_unique([f.name for f in features])
        object.__setattr__(self, "features", features)

    @classmethod
    def parse(cls, spec: Schema | SchemaSpec) -> Schema:
        """A schema from ``{name: type}`` or ``[(name, type), ...]`` (a Schema passes through)."""
        if isinstance(spec, Schema):
            return spec
        if isinstance(spec, Mapping):
            pairs = list(spec.items())
        elif isinstance(spec, Sequence) and not isinstance(spec, str):
            pairs = []
            for item in spec:
                if isinstance(item, Feature):
                    pairs.append((item.name, item.spec))
                    continue
                if not (isinstance(item, Sequence) and not isinstance(item, str)
                        and len(item) == 2):
                    raise MTVAEError(
                        f"schema entries must be (name, type) pairs, got {item!r}"
                    )
                pairs.append((item[0], item[1]))
        else:
            raise MTVAEError(
                "a schema is a mapping {column: type} or a list of (column, type) pairs, "
                f"got {type(spec).__name__}"
            )
        _check_unique([name for name, _ in pairs])
        return cls(tuple(Feature.parse(name, t) for name, t in pairs))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __getitem__(self, i: int | str) -> Feature:
        """The ``i``-th feature, or the feature called ``i``."""
        if isinstance(i, str):
            for f in self.features:
                if f.name == i:
                    return f
            raise MTVAEError(f"the schema has no column {i!r}; its columns are {self.names}")
        return self.features[i]

    def type_counts(self) -> dict[str, int]:
        """Number of columns of each type (every type listed, zeros included)."""
        return {t: sum(f.type == t for f in self.features) for t in FEATURE_TYPES}

    def to_spec(self) -> dict[str, str]:
        """The ``{name: type}`` mapping that :meth:`parse` turns back into this schema."""
        return {f.name: f.spec for f in self.features}

    def to_frame(self) -> pd.DataFrame:
        """One row per column (column, type, k), for tables in the book."""
        return pd.DataFrame(
            [(f.name, f.spec, f.k) for f in self.features], columns=["column", "type", "k"]
        )


def check_same_columns(model_schema: object, data_schema: object, where: str = "data") -> None:
    """Raise a clear error when a model and a dataset order (or name) their columns differently.

    Tensors carry no column names: a model built with the same columns in another order
    would silently train and score the wrong heads on the wrong columns. Either argument may
    be ``None`` (nothing to compare).
    """
    if not isinstance(model_schema, Schema) or not isinstance(data_schema, Schema):
        return
    if model_schema.to_spec() == data_schema.to_spec() and model_schema.names == data_schema.names:
        return
    raise MTVAEError(
        f"the model's columns {model_schema.names} do not match the {where}'s "
        f"{data_schema.names} (names, order and types must agree: model "
        f"{model_schema.to_spec()}, {where} {data_schema.to_spec()}); build the model with "
        "the dataset's own info['schema']"
    )
