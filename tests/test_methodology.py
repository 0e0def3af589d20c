"""mtvae.studies.methodology: the methodology chapter's tables agree with the data, profiles
and models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np
import pytest

from mtvae.data.tables import TABLES
from mtvae.data.tabular import split_sizes
from mtvae.models import VAE
from mtvae.profiles import Profile, get_profile
from mtvae.results import write_record
from mtvae.studies import methodology as D


@dataclass(frozen=True)
class ExtraStudy:
    """Settings of a study the library does not know (a test double)."""

    datasets: tuple[str, ...] = ("diamonds", "not-a-dataset")
    missing_rates: tuple[float, ...] = (0.3, 0.1)
    max_rows: int | None = 100
    seeds: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class NestedStudy:
    """Settings of a study whose datasets and rates sit in a nested spec."""

    spec: dict = field(default_factory=lambda: {"grid": {"datasets": ["boston"],
                                                         "missing_rates": [0.5]}})


@dataclass(frozen=True)
class ExtendedProfile(Profile):
    extra: ExtraStudy = field(default_factory=ExtraStudy)
    nested: NestedStudy = field(default_factory=NestedStudy)


@pytest.fixture(scope="module")
def extended() -> ExtendedProfile:
    return ExtendedProfile(name="extended", description="a profile with one more study")


@pytest.fixture(scope="module")
def summary(extended: ExtendedProfile):
    return D.table_summary(extended)


def test_studies_are_the_dataclass_fields_of_the_profile(extended):
    smoke = D.studies("smoke")
    profile = get_profile("smoke")
    expected = [f.name for f in fields(Profile) if is_dataclass(getattr(profile, f.name))]
    assert {"vae", "vq", "tables"} <= set(expected) and "hetero" not in expected
    assert list(smoke) == expected
    assert list(D.studies(extended)) == [*expected, "extra", "nested"]
    assert D.study_title(extended.extra) == "a study the library does not know (a test double)"


def test_dataset_usage_scans_settings_for_dataset_names_and_rates(extended):
    usage = D.dataset_usage(extended)
    # diamonds: the tables grid (rates 10/30/50 %, 10 000 rows) and the test double
    assert usage["diamonds"] == {"studies": ["tables", "extra"],
                                 "missing_rates": [0.1, 0.3, 0.5], "max_rows": [100, 10000],
                                 "uncapped": False}
    assert "not-a-dataset" not in usage
    tables = get_profile("full").tables
    for name in tables.datasets:
        assert "tables" in usage[name]["studies"]
        assert set(tables.missing_rates) <= set(usage[name]["missing_rates"])
    assert "vae" in usage["mnist5k"]["studies"]  # implicit: Chapter 1 reads MNIST-5k
    assert usage["boston"]["studies"][-1] == "nested"  # found in a nested spec
    assert 0.5 in usage["boston"]["missing_rates"]


def test_table_summary_matches_the_source_frames(summary):
    assert list(summary.index) == list(TABLES)
    for name, table in TABLES.items():
        df = table.read().drop(columns=list(table.drop))
        row = summary.loc[name]
        assert (row["rows"], row["columns"]) == df.shape
        assert sum(row[t] for t in ("real", "pos", "count", "bin", "cat")) == df.shape[1]
        assert row["missing in source (%)"] == pytest.approx(100 * df.isna().to_numpy().mean())
    assert summary.loc["movies", "missing in source (%)"] > 0


def test_table_summary_reports_the_studies_rates_and_caps(summary):
    # diamonds: the test double (10/30 %, 100 rows) and the tables grid (10/30/50 %, its
    # per-table cap of 10 000 rows)
    assert summary.loc["diamonds", "MCAR rates (%)"] == "10, 30, 50"
    assert summary.loc["diamonds", "rows used"] == "100, 10000"
    assert summary.loc["diamonds", "studies"] == "tables, extra"
    assert summary.loc["movies", "studies"] == "tables"
    assert summary.loc["movies", "rows used"] == "10000"
    # hi: capped by the hetero grid, all of its rows in the tables grid (no cap there)
    assert "hi" not in dict(get_profile("full").tables.row_caps)
    assert summary.loc["hi", "rows used"].split(", ")[-1] == str(summary.loc["hi", "rows"])


def test_source_missing_is_per_column():
    df = TABLES["movies"].read().drop(columns=["title"])
    got = D.source_missing("movies")
    np.testing.assert_allclose(got.to_numpy(), df.isna().mean().to_numpy(), atol=1e-6)


@pytest.mark.parametrize("name,rate", [("wine", 0.2), ("movies", 0.3)])
def test_mcar_counts_hide_an_exact_share_of_known_cells(name, rate):
    counts = D.mcar_counts(name, rate, seed=3)
    assert (counts["hidden"] == counts["round(rate × known)"]).all()
    assert len(counts) == len(TABLES[name].schema)


def test_schema_listing_holds_every_feature_once_under_its_type():
    listing = D.schema_listing()
    for name, table in TABLES.items():
        for t in ("real", "pos", "count", "bin", "cat"):
            cell = listing.loc[name, t]
            got = [] if cell == "–" else [c.split(" (")[0] for c in cell.split(", ")]
            assert got == [f.name for f in table.schema if f.type == t], (name, t)
    assert "cut (5)" in listing.loc["diamonds", "cat"]


def test_feature_types_name_one_head_per_type():
    types = D.feature_types()
    assert list(types.index) == ["real", "pos", "count", "bin", "cat(k)"]
    assert types.loc["pos", "head"] == "LogNormalHead"
    assert list(types["decoder outputs"]) == [2, 2, 1, 1, "k"]


def test_other_datasets_describe_every_non_table_dataset():
    others = D.other_datasets()
    assert not set(others.index) & set(TABLES)
    assert {"mnist5k", "digits"} <= set(others.index)
    mnist = others.loc["mnist5k"]
    assert (mnist["example"], mnist["train"], mnist["val"], mnist["test"]) == (
        "1×28×28", 4000, 500, 500)
    assert D.split_text("mnist5k") == "4000/500/500"
    assert D.split_text("wine") == "/".join(map(str, split_sizes(178)))


def test_a_dataset_added_to_the_registry_is_described(monkeypatch):
    import torch

    import mtvae.data as data
    from mtvae.data import Dataset, Split

    def toy(n: int = 12) -> Dataset:
        x = torch.rand(n, 1, 4, 4)
        tensors = {"x": x, "y": torch.arange(n) % 3, "factors": torch.zeros(n, 5)}
        split = Split(tensors)
        return Dataset("toy", split, split.subset(torch.arange(2)),
                       split.subset(torch.arange(3)), x_shape=(1, 4, 4), n_classes=3)

    monkeypatch.setitem(data._REGISTRY, "toy-images", toy)
    D._loaded.cache_clear()
    try:
        others = D.other_datasets("smoke")
    finally:
        D._loaded.cache_clear()
    row = others.loc["toy-images"]
    assert (row["example"], row["train"], row["val"], row["test"]) == ("1×4×4", 12, 2, 3)
    assert row["other tensors"] == "y (scalar), factors (5)"
    assert row["studies"] == "–"
    assert others.loc["mnist5k", "studies"].startswith("vae")


def test_model_summary_counts_parameters_of_the_profiles_models(extended):
    models = D.model_summary("full")
    s = get_profile("full").vae
    dims = [784, *s.hidden]
    encoder = sum(a * b + b for a, b in zip(dims, [*s.hidden, 2 * s.latent_dim], strict=True))
    assert models.loc[("vae", "MLP VAE"), "parameters"] == sum(
        p.numel() for p in VAE((1, 28, 28), s.latent_dim, hidden=s.hidden).parameters())
    assert f"encoder {encoder:,}" in models.loc[("vae", "MLP VAE"), "parts"]
    tables = models.xs("tables", level="study")
    assert len(tables) == len(get_profile("full").tables.datasets)
    assert all(name.startswith("HeteroVAE (") for name in tables.index)
    assert models.loc[("vae", "MLP VAE"), "latent"] == s.latent_dim
    without = D.studies_without_models(extended)
    assert {"extra", "nested"} <= set(without) and "tables" not in without
    assert not set(without) & set(D.MODEL_BUILDERS)


def test_compute_table_converts_the_manifest():
    manifest = {"chapters": {"01_vaes": {"profile": "full", "device": "cuda",
                                         "device_name": "H100", "wall_seconds": 90.0,
                                         "run_records": 3, "run_records_seconds": 600.0}}}
    table = D.compute_table(manifest)
    row = table.loc["01_vaes"]
    assert (row["device"], row["run records"]) == ("cuda", 3)
    assert math.isclose(row["wall (min)"], 1.5) and math.isclose(row["record compute (min)"], 10)
    empty = D.compute_table({"chapters": {}})  # no manifest yet: same columns, no rows
    assert empty.empty and list(empty.columns) == list(table.columns)
    assert empty["device name"].dropna().empty


def test_records_table_sums_records_of_one_profile(tmp_path):
    for i, (device, seconds, status) in enumerate([("cpu", 60.0, "ok"),
                                                   ("cuda", 120.0, "failed")]):
        write_record(tmp_path / "ch03-full" / f"r{i}.json",
                     {"device": device, "timings": {"seconds": seconds}, "status": status})
    write_record(tmp_path / "ch03-smoke" / "r.json", {"device": "cpu",
                                                      "timings": {"seconds": 1.0}})
    write_record(tmp_path / "ch03-full" / "superseded" / "old.json",  # compute spent
                 {"device": "cpu", "timings": {"seconds": 60.0}})
    table = D.records_table(tmp_path, "full")
    assert list(table.index) == ["ch03-full"]
    assert table.loc["ch03-full", "records"] == 3
    assert table.loc["ch03-full", "failed"] == 1
    assert table.loc["ch03-full", "superseded"] == 1
    assert math.isclose(table.loc["ch03-full", "compute (min)"], 4.0)
    assert table.loc["ch03-full", "devices"] == "cpu, cuda"
    assert D.records_table(tmp_path / "nothing", "full").empty


def test_grid_table_counts_the_runs_of_each_named_grid():
    from mtvae.experiments import available_grids, get_grid

    table = D.grid_table("smoke")
    for name in available_grids():
        spec = get_grid(name, "smoke")
        assert table.loc[spec.name, "runs"].sum() == len(spec.runs())
    g = get_profile("smoke").grid
    row = table.loc[("hetero-smoke", "hetero")]
    assert row["runs"] == len(g.seeds) * len(g.missing_rates) * len(g.datasets) * len(g.methods)
    assert f"missing_rate ({len(g.missing_rates)})" in row["varying settings (values)"]
    assert row["blocks"] == 1 and table.index.is_unique  # one row per grid and kind
