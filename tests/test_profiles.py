"""Named profiles."""

import dataclasses

import pytest

from mtvae.errors import MTVAEError
from mtvae.profiles import available, get_profile, settings_table


def test_profiles_exist_and_smoke_is_smaller():
    assert available() == ["full", "smoke"]
    smoke, full = get_profile("smoke").vae, get_profile("full").vae
    assert smoke.epochs < full.epochs and len(smoke.seeds) <= len(full.seeds)
    assert len(full.seeds) >= 5, "thesis numbers need at least five seeds"
    assert max(full.iwae_ks) == 5000
    assert dataclasses.asdict(smoke).keys() == dataclasses.asdict(full).keys()


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(MTVAEError, match="valid profiles are: full, smoke"):
        get_profile("fast")


def test_settings_table_renders_every_setting():
    table = settings_table("vae")
    assert list(table.columns) == ["full", "smoke"]
    assert table.loc["train_size", "full"] == "all"
    assert table.loc["seeds", "full"] == "0, 1, 2, 3, 4"
    with pytest.raises(MTVAEError, match="no study"):
        settings_table("nosuchstudy")


def test_tables_study_settings():
    smoke, full = get_profile("smoke").tables, get_profile("full").tables
    assert len(full.seeds) >= 5 and "sum" in full.families and "sum" in smoke.families
    assert smoke.steps < full.steps and len(full.datasets) >= 5
    assert set(smoke.datasets) <= set(full.datasets)
    for t in (smoke, full):  # tuning happens at a reported rate, on tables of the grid
        assert t.tuning_rate in t.missing_rates
        assert set(t.parameter_datasets) <= set(t.datasets)
        assert not set(t.tuning_seeds) & set(t.seeds), "tuning masks are never reported"
    table = settings_table("tables")
    assert table.loc["seeds", "full"] == ", ".join(map(str, range(10)))
