"""Chapter 5's readers of the tables grid (mtvae.studies.results): overlooked features
against mean/mode imputation on the same masks, and the job-level compute of stacked runs."""

import pandas as pd
import pytest

from mtvae.errors import MTVAEError
from mtvae.studies import results as R
from mtvae.studies import tables as TS


def _fe(rows):
    return pd.DataFrame(rows, columns=["dataset", "missing_rate", "seed", "method", "feature",
                                       "error"])


def test_overlooked_is_the_seed_averaged_ratio_to_mean_imputation():
    m = R.MEAN_IMPUTATION
    fe = _fe([
        # feature a: the sum is no better than the mean (ratio 1.0, 0.9 -> 0.95): overlooked
        ("t", 0.1, 0, m, "a", 1.0), ("t", 0.1, 0, TS.TUNED_SUM, "a", 1.0),
        ("t", 0.1, 1, m, "a", 2.0), ("t", 0.1, 1, TS.TUNED_SUM, "a", 1.8),
        # feature b: the sum halves the mean's error; pcgrad overlooks it
        ("t", 0.1, 0, m, "b", 1.0), ("t", 0.1, 0, TS.TUNED_SUM, "b", 0.5),
        ("t", 0.1, 1, m, "b", 1.0), ("t", 0.1, 1, TS.TUNED_SUM, "b", 0.5),
        ("t", 0.1, 0, "pcgrad", "b", 1.0), ("t", 0.1, 1, "pcgrad", "b", 0.96),
        ("t", 0.1, 0, "pcgrad", "a", 0.5), ("t", 0.1, 1, "pcgrad", "a", 1.0),
        # feature c: mean/mode is exact (error 0): no ratio, dropped
        ("t", 0.1, 0, m, "c", 0.0), ("t", 0.1, 0, TS.TUNED_SUM, "c", 0.1),
    ])
    ov = R.overlooked(fe).set_index(["method", "feature"])
    assert ov.loc[(TS.TUNED_SUM, "a"), "ratio"] == pytest.approx(0.95)
    assert ov.loc[(TS.TUNED_SUM, "a"), "overlooked"]
    assert not ov.loc[(TS.TUNED_SUM, "b"), "overlooked"]
    assert ov.loc[("pcgrad", "b"), "overlooked"] and not ov.loc[("pcgrad", "a"), "overlooked"]
    assert ("sum (tuned)", "c") not in ov.index and m not in ov.index.get_level_values(0)
    s = R.overlooked_summary(ov.reset_index()).set_index("method")
    assert s.loc[TS.TUNED_SUM, ["overlooked", "repaired", "added"]].tolist() == [1, 0, 0]
    assert s.loc["pcgrad", ["overlooked", "repaired", "added"]].tolist() == [1, 1, 1]
    assert s.features.eq(2).all()
    with pytest.raises(MTVAEError, match="no 'mean/mode' errors"):
        R.overlooked(fe[fe.method != m])


def test_core_hours_counts_each_stacked_job_once():
    # one stacked job of three, two single runs as long as it, and a record without a time
    runs = pd.DataFrame({"seconds": [3600.0, 3600.0, 3600.0, 3600.0, 3600.0, None],
                         "engine": ["stacked"] * 3 + ["single"] * 2 + [None],
                         "stack": [3, 3, 3, 1, 1, None]})
    assert TS.core_hours(runs) == pytest.approx(3.0)
    assert TS.core_hours(runs.drop(columns=["engine", "stack"])) == pytest.approx(5.0)
    assert TS.core_hours(pd.DataFrame({"id": []})) == 0.0


def test_compute_seconds_counts_a_stacked_job_once():
    from mtvae.results import compute_seconds

    stacked = {"engine": {"name": "stacked", "stack": 3}, "timings": {"seconds": 600.0}}
    single = {"engine": {"name": "single"}, "timings": {"seconds": 600.0}}
    # three members of one stacked job, two single runs that happen to take as long, and a
    # second stacked job of another size with the same wall time
    records = [stacked, stacked, stacked, single, single,
               {"engine": {"name": "stacked", "stack": 2}, "timings": {"seconds": 600.0}},
               {"timings": {}}]
    assert compute_seconds(records) == 600.0 * 4
    assert compute_seconds([]) == 0.0


def test_exceeding_flags_runs_far_above_mean_imputation_on_the_same_mask():
    m = R.MEAN_IMPUTATION
    scores = pd.DataFrame(
        [("t", 0.1, 0, m, 0.04), ("t", 0.1, 0, "a", 0.05), ("t", 0.1, 0, "b", 227.0),
         ("t", 0.1, 1, m, 0.10), ("t", 0.1, 1, "a", 0.21), ("t", 0.1, 1, "b", 0.19)],
        columns=["dataset", "missing_rate", "seed", "method", "mean_error"])
    out = R.exceeding(scores, ["a", "b"])
    assert list(zip(out.method, out.seed, strict=True)) == [("b", 0), ("a", 1)]
    assert out["mean/mode"].tolist() == [0.04, 0.10]
    assert R.exceeding(scores, ["a", "b"], factor=3).method.tolist() == ["b"]
    with pytest.raises(MTVAEError, match="factor must be > 1"):
        R.exceeding(scores, ["a"], factor=1)
