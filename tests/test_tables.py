"""The house table: formatting rules, bold best entries, and the MyST table it displays as."""

import math

import numpy as np
import pandas as pd
import pytest

from mtvae import tables as T
from mtvae.errors import MTVAEError


def test_numbers_are_never_raw_or_scientific() -> None:
    assert T.fmt_number(0.007856) == "0.00786"
    assert T.fmt_number(-2.884e-05) == "−0.000029"
    assert T.fmt_number(0.007856, sign=True) == "+0.00786"
    assert T.fmt_number(132.86455) == "133"
    assert T.fmt_number(np.int64(3)) == "3"
    assert T.fmt_number(True) == "yes" and T.fmt_number(np.bool_(False)) == "no"
    assert T.fmt_number(math.nan) == "–"
    assert T.fmt_number(0.1) == "0.1" and T.fmt_number(0.001) == "0.001"


def test_rates_p_values_and_mean_sd() -> None:
    assert T.fmt_rate(0.1) == "10 %"
    assert T.fmt_p(0.0001) == "< 0.001" and T.fmt_p(0.5226) == "0.52"
    assert T.fmt_pm(0.150114, 0.026375) == "0.150 ± 0.026"
    assert T.fmt_pm(0.15, math.nan) == "0.150"
    assert T.leading_number("−0.25 ± 0.01") == -0.25
    assert math.isnan(T.leading_number("–"))


def test_pm_table_bolds_the_best_of_each_row_among_compared_columns() -> None:
    idx = pd.MultiIndex.from_tuples([("wine", 0.1), ("hi", 0.5)],
                                    names=["dataset", "missing_rate"])
    mean = pd.DataFrame({"baseline": [0.05, 0.30], "sum": [0.20, 0.10], "mgda": [0.10, 0.20]},
                        index=idx)
    table = T.pm_table(mean, mean / 10, "Errors.", "tab-errors", compare=["sum", "mgda"],
                       index_formats={"missing_rate": T.fmt_rate})
    md = table.markdown()
    assert md.startswith(":::{table} Errors.\n:name: tab-errors\n")
    assert "| wine | 10 % | 0.050 ± 0.005 | 0.200 ± 0.020 | **0.100 ± 0.010** |" in md
    assert "| hi | 50 % | 0.300 ± 0.030 | **0.100 ± 0.010** | 0.200 ± 0.020 |" in md
    assert table._repr_markdown_() == md


def test_table_formats_columns_and_drops_a_row_number_index() -> None:
    df = pd.DataFrame({"method": ["a|b", "c"], "p": [0.2, 1e-5], "significant": [True, False]},
                      index=[7, 9])
    md = T.table(df, "Tests.", "tab-tests", formats={"p": T.fmt_p}).markdown()
    assert "| method | p | significant |" in md
    assert "| a\\|b | 0.2 | yes |" in md and "| c | < 0.001 | no |" in md


def test_long_tables_may_break_across_pages() -> None:
    df = pd.DataFrame({"x": range(T.LONG_TABLE_ROWS + 1)})
    assert ":class: mtvae-table longtable" in T.table(df, "Long.", "tab-long").markdown()


@pytest.mark.parametrize("label,caption", [("fig-x", "c"), ("tab_x", "c"), ("tab-x", " ")])
def test_bad_label_or_caption_is_one_clear_error(label: str, caption: str) -> None:
    with pytest.raises(MTVAEError):
        T.table(pd.DataFrame({"x": [1]}), caption, label)


def test_fmt_fixed_writes_huge_values_in_scientific_notation():
    from mtvae.tables import fmt_fixed

    assert fmt_fixed(1.88e49, 1, sign=True) == "+1.9e+49"
    assert fmt_fixed(-2.5e7, 1) == "−2.5e+07"
    assert fmt_fixed(999_999.0, 1) == "999999.0"  # below LARGE: fixed
    assert fmt_fixed(float("inf"), 1) == "inf"
    assert T.fmt_number(2.747e48) == "2.7e+48" and T.fmt_number(900_387.2) == "900\u2009387"
