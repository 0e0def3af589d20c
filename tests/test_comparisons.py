"""Bootstrap CIs and table-as-unit comparisons, on inputs with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mtvae.bootstrap import clustered_bootstrap_ci, paired_bootstrap_ci
from mtvae.comparisons import (
    RELATIVE_ROPE,
    Layout,
    across_tables,
    bayes_by_method,
    bayes_signed_rank,
    conditions_by_method,
    critical_difference,
    friedman_nemenyi,
    paired_gains,
    seed_tests,
    spearman_exact,
    table_gains,
    wilcoxon_tables,
)
from mtvae.errors import MTVAEError
from mtvae.stats import nemenyi_cd

FAST = {"n_resamples": 999}  # enough for the checks below, and quick
REF = "sum (tuned)"


def scores(offsets, tables=("t0", "t1"), rates=(0.1, 0.5), seeds=(0, 1, 2), noise=0.0,
           base=None, rng_seed=0):
    """Long score frame: method m scores base + offsets[m] (+ noise) on every run."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for i, t in enumerate(tables):
        for r in rates:
            for s in seeds:
                b = (1.0 + i) if base is None else base(i, r, s)
                for m, off in offsets.items():
                    o = off(i, r, s) if callable(off) else off
                    rows.append({"dataset": t, "missing_rate": r, "seed": s, "method": m,
                                 "mean_error": b + o + noise * rng.normal()})
    return pd.DataFrame(rows)


# -- bootstrap -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["percentile", "basic", "BCa"])
def test_constant_differences_give_a_zero_width_interval(method):
    ci = paired_bootstrap_ci([0.3] * 6, method=method, **FAST)
    assert (ci.estimate, ci.low, ci.high, ci.n) == (pytest.approx(0.3), 0.3, 0.3, 6)
    cl = clustered_bootstrap_ci([0.1, 0.5, 0.3, 0.3], ["a", "a", "b", "b"], method=method)
    assert cl.low == cl.high == pytest.approx(0.3) and cl.n == 2  # equal cluster means


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_a_shift_of_one_is_found_and_zero_excluded(method):
    d = 1.0 + np.random.default_rng(0).normal(0, 0.1, size=20)
    ci = paired_bootstrap_ci(d, method=method, **FAST)
    assert ci.estimate == pytest.approx(d.mean())
    assert ci.low < 1.0 < ci.high and ci.excludes(0.0) and not ci.excludes(1.0)
    assert ci.high - ci.low < 0.2  # about 4 standard errors (0.1 / sqrt(20) each)
    assert paired_bootstrap_ci(d, seed=3, **FAST) == paired_bootstrap_ci(d, seed=3, **FAST)


def test_clustered_bootstrap_is_the_bootstrap_of_cluster_means_for_equal_sizes():
    v = np.random.default_rng(1).normal(size=12)
    c = np.repeat(np.arange(4), 3)
    for method in ("percentile", "BCa"):
        cl = clustered_bootstrap_ci(v, c, method=method, **FAST)
        plain = paired_bootstrap_ci(v.reshape(4, 3).mean(axis=1), method=method, **FAST)
        assert (cl.estimate, cl.low, cl.high) == pytest.approx(
            (plain.estimate, plain.low, plain.high))
        assert cl.n == 4


def test_clustered_interval_is_wider_when_the_cluster_shares_its_error():
    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(6), 5)
    v = 1.0 + np.repeat(rng.normal(0, 0.5, 6), 5) + rng.normal(0, 0.01, 30)
    naive = paired_bootstrap_ci(v, **FAST)
    clustered = clustered_bootstrap_ci(v, clusters, **FAST)
    assert clustered.estimate == pytest.approx(naive.estimate)
    assert clustered.high - clustered.low > 1.5 * (naive.high - naive.low)


def test_weighted_clustered_bootstrap_is_a_ratio_of_sums():
    v, w = np.array([1.0, 1.0, 3.0, 1.0]), np.array([2.0, 2.0, 4.0, 4.0])
    ci = clustered_bootstrap_ci(v, [0, 0, 1, 1], weights=w, **FAST)
    assert ci.estimate == pytest.approx(6 / 12)
    # resamples: both of cluster 0 (2/4), both of 1 (4/8), one each (6/12): all 0.5
    assert ci.low == ci.high == pytest.approx(0.5)
    uneven = clustered_bootstrap_ci(v, [0, 0, 1, 1], weights=[1.0, 1.0, 1.0, 1.0], **FAST)
    assert (uneven.low, uneven.high) == pytest.approx((1.0, 2.0))  # cluster means 1 and 2
    with pytest.raises(MTVAEError, match="weights must be positive"):
        clustered_bootstrap_ci(v, [0, 0, 1, 1], weights=[1.0, 0.0, 1.0, 1.0])


def test_bootstrap_rejects_bad_input():
    with pytest.raises(MTVAEError, match="at least 2 differences"):
        paired_bootstrap_ci([1.0])
    with pytest.raises(MTVAEError, match="missing or infinite"):
        paired_bootstrap_ci([1.0, np.nan, 2.0])
    with pytest.raises(MTVAEError, match="unknown bootstrap method 'bca'"):
        paired_bootstrap_ci([1.0, 2.0], method="bca")
    with pytest.raises(MTVAEError, match="confidence must be in"):
        paired_bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(MTVAEError, match="at least 2 clusters"):
        clustered_bootstrap_ci([1.0, 2.0], [0, 0])
    with pytest.raises(MTVAEError, match="same length"):
        clustered_bootstrap_ci([1.0, 2.0], [0])


# -- paired gains and the table as the unit --------------------------------------------------
def test_paired_gains_by_hand_absolute_relative_and_higher_is_better():
    df = pd.DataFrame({"dataset": "w", "missing_rate": 0.1, "seed": [0, 1, 0, 1],
                       "method": [REF, REF, "pc", "pc"], "mean_error": [2.0, 4.0, 1.5, 5.0]})
    g = paired_gains(df).set_index("seed")
    assert g.gain.to_dict() == {0: 0.5, 1: -1.0}  # reference − method
    assert list(g.method.unique()) == ["pc"]
    assert g.ref_score.tolist() == [2.0, 4.0] and g.method_score.tolist() == [1.5, 5.0]
    # relative: pooled (2 + 4 − 1.5 − 5) / (2 + 4), not the mean of 0.25 and −0.25
    rel = table_gains(g.reset_index(), relative=True, **FAST).iloc[0]
    assert rel.gain == pytest.approx(-0.5 / 6) and bool(rel.relative)
    assert rel.ci_low == pytest.approx(-0.25) and rel.ci_high == pytest.approx(0.25)
    acc = df.rename(columns={"mean_error": "acc", "dataset": "table", "missing_rate": "rate"})
    hib = paired_gains(acc, layout=Layout(table="table", rate="rate", score="acc",
                                          higher_is_better=True)).set_index("seed")
    assert hib.gain.to_dict() == {0: -0.5, 1: 1.0}  # method − reference


def test_pairing_errors_name_the_missing_pairs():
    df = scores({REF: 0.0, "pc": -0.1, "mgda": 0.1})
    gap = df[~((df.method == "pc") & (df.seed == 2) & (df.dataset == "t1"))]
    with pytest.raises(MTVAEError, match=r"'pc' lacks \(t1, 0.1, 2\), \(t1, 0.5, 2\)\. "):
        paired_gains(gap)
    no_ref = df[~((df.method == REF) & (df.seed == 0) & (df.dataset == "t0")
                  & (df.missing_rate == 0.5))]
    with pytest.raises(MTVAEError, match=r"'sum \(tuned\)' lacks \(t0, 0.5, 0\) \(run by 'pc'\)"):
        paired_gains(no_ref, methods=["pc"])
    with pytest.raises(MTVAEError, match="repeat a"):
        paired_gains(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(MTVAEError, match="missing or infinite 'mean_error'"):
        paired_gains(df.assign(mean_error=df.mean_error.where(df.index != 3)))
    with pytest.raises(MTVAEError, match="no 'sum' runs"):
        paired_gains(df, reference="sum")
    with pytest.raises(MTVAEError, match=r"methods \['knn'\] are not in the scores"):
        paired_gains(df, methods=["knn"])
    with pytest.raises(MTVAEError, match=r"columns \['table'\] are not in the scores"):
        paired_gains(df, layout=Layout(table="table"))
    zero = df.assign(mean_error=df.mean_error.where(df.method != REF, 0.0))
    with pytest.raises(MTVAEError, match="reference scores 0"):
        table_gains(paired_gains(zero), relative=True)


def test_table_gains_average_rates_and_seeds_by_hand():
    # pc's gain on t0 is seed/10 + rate; on t1 a constant 0.2
    def off(i, r, s):
        return -(s / 10 + r) if i == 0 else -0.2

    df = scores({REF: 0.0, "pc": off}, seeds=(0, 1, 2, 3))
    per = table_gains(paired_gains(df), **FAST).set_index("dataset")
    # t0: mean over seeds 0..3 of s/10 (0.15) + mean over rates 0.1, 0.5 (0.3)
    assert per.loc["t0", "gain"] == pytest.approx(0.45)
    assert per.loc["t1", "gain"] == pytest.approx(0.2)
    assert per.loc["t1", "ci_low"] == per.loc["t1", "ci_high"] == pytest.approx(0.2)
    assert per.loc["t0", "ci_low"] < 0.45 < per.loc["t0", "ci_high"]
    # the seeds are the clusters: the t0 CI is the bootstrap of the 4 per-seed means
    seed_means = np.array([0.0, 0.1, 0.2, 0.3]) + 0.3
    ref_ci = paired_bootstrap_ci(seed_means, **FAST)
    assert (per.loc["t0", "ci_low"], per.loc["t0", "ci_high"]) == pytest.approx(
        (ref_ci.low, ref_ci.high))
    assert per.loc["t0", ["n_seeds", "n_rates", "n_pairs"]].tolist() == [4, 2, 8]
    assert per.loc["t1", "ref_score"] == pytest.approx(2.0)
    assert per.loc["t1", "method_score"] == pytest.approx(1.8)
    over = across_tables(per.reset_index(), **FAST).set_index("method")
    assert over.loc["pc", "gain"] == pytest.approx((0.45 + 0.2) / 2)
    assert over.loc["pc", ["n_tables", "tables_better", "tables_worse"]].tolist() == [2, 2, 0]


def test_across_tables_finds_a_consistent_shift():
    tables = [f"t{i}" for i in range(8)]
    df = scores({REF: 0.0, "good": -0.1, "same": 0.0}, tables=tables, noise=0.005)
    per = table_gains(paired_gains(df), **FAST)
    over = across_tables(per, **FAST).set_index("method")
    good = per[per.method == "good"].gain
    ci = paired_bootstrap_ci(good, **FAST)  # the tables are the resampled units
    assert over.loc["good", ["gain", "ci_low", "ci_high"]].tolist() == pytest.approx(
        [ci.estimate, ci.low, ci.high])
    assert over.loc["good", "gain"] == pytest.approx(0.1, abs=0.003)
    assert over.loc["good", "ci_low"] > 0 and over.loc["good", "tables_better"] == 8
    assert over.loc["same", "ci_low"] < 0.003 and over.loc["same", "ci_high"] > -0.003
    assert over.loc["same", "ci_high"] - over.loc["same", "ci_low"] < 0.01


# -- p-values and the Bayesian test ----------------------------------------------------------
def test_wilcoxon_over_tables_and_t_test_over_seeds():
    tables = [f"t{i}" for i in range(8)]
    df = scores({REF: 0.0, "good": -0.1, "same": 0.0}, tables=tables, seeds=(0, 1, 2, 3, 4),
                noise=0.01)
    gains = paired_gains(df)
    wx = wilcoxon_tables(table_gains(gains, **FAST)).set_index("method")
    assert wx.loc["good", "p_value"] == pytest.approx(2 / 2 ** 8)  # all 8 tables positive
    assert wx.loc["good", "n_tables"] == 8
    seeds = seed_tests(gains).set_index(["method", "dataset"])
    g = gains[(gains.method == "good") & (gains.dataset == "t3")]
    per_seed = g.groupby("seed").gain.mean().to_numpy()
    assert seeds.loc[("good", "t3"), "p_value"] == pytest.approx(
        st.ttest_1samp(per_seed, 0.0).pvalue)
    assert seeds.loc[("good", "t3"), "n_seeds"] == 5
    wil = seed_tests(gains, test="wilcoxon").set_index(["method", "dataset"])
    assert wil.loc[("good", "t3"), "p_value"] == pytest.approx(2 / 2 ** 5)
    exact = paired_gains(scores({REF: 0.0, "same": 0.0, "up": -0.3}))
    flat = seed_tests(exact).set_index("method")
    assert set(flat.loc["same", "p_value"]) == {1.0} and set(flat.loc["up", "p_value"]) == {0.0}
    assert set(wilcoxon_tables(table_gains(exact, **FAST)).p_value) <= {1.0, 0.5}
    with pytest.raises(MTVAEError, match="unknown test"):
        seed_tests(gains, test="z")


def test_bayes_signed_rank_equivalence_and_clear_wins():
    rng = np.random.default_rng(0)
    tiny = rng.uniform(-0.002, 0.002, size=8)  # well inside the ±1 % rope
    eq = bayes_signed_rank(tiny, nsamples=2000)
    assert eq.p_equivalent > 0.9 and eq.rope == RELATIVE_ROPE and eq.n == 8
    assert eq.p_better + eq.p_equivalent + eq.p_worse == pytest.approx(1.0)
    big = bayes_signed_rank(0.1 + rng.uniform(0, 0.02, size=8), nsamples=2000)
    assert big.p_better > 0.9
    worse = bayes_signed_rank(-0.1 - rng.uniform(0, 0.02, size=8), nsamples=2000)
    assert worse.p_worse > 0.9
    assert bayes_signed_rank(tiny, nsamples=500, seed=1) == bayes_signed_rank(
        tiny, nsamples=500, seed=1)
    with pytest.raises(MTVAEError, match="at least 2 finite gains"):
        bayes_signed_rank([0.1])


def test_bayes_by_method_needs_a_rope_for_absolute_gains():
    tables = [f"t{i}" for i in range(8)]
    df = scores({REF: 0.0, "good": -0.2, "same": 0.0}, tables=tables, noise=0.001)
    rel = table_gains(paired_gains(df), relative=True, **FAST)
    out = bayes_by_method(rel, nsamples=1000).set_index("method")
    assert out.loc["good", "p_better"] > 0.9 and out.loc["same", "p_equivalent"] > 0.9
    assert bool(out.relative.all()) and set(out.rope) == {RELATIVE_ROPE}
    absolute = table_gains(paired_gains(df), **FAST)
    with pytest.raises(MTVAEError, match="explicit rope"):
        bayes_by_method(absolute)
    assert bayes_by_method(absolute, rope=0.5, nsamples=500).p_equivalent.min() > 0.9


# -- ranks, conditions -----------------------------------------------------------------------
def test_friedman_nemenyi_ranks_a_designed_order_and_excludes_references():
    tables = [f"t{i}" for i in range(6)]
    df = scores({"A": -0.3, "B": -0.2, REF: 0.0, "knn": -1.0}, tables=tables, noise=0.01)
    res = friedman_nemenyi(df, exclude=["knn"])
    assert res.ranks.to_dict() == {"A": 1.0, "B": 2.0, REF: 3.0}
    assert list(res.table.columns) == ["A", "B", REF] and len(res.table) == 6
    assert res.friedman.statistic == pytest.approx(12.0)  # N (k − 1): every block agrees
    assert res.cd == pytest.approx(nemenyi_cd(3, 6), abs=2e-3)
    n = res.nemenyi
    assert np.allclose(n.to_numpy(), n.to_numpy().T) and np.allclose(np.diag(n), 1.0)
    assert n.loc["A", REF] < 0.05 < n.loc["A", "B"]
    with_ref = friedman_nemenyi(df)
    assert with_ref.ranks.index[0] == "knn"
    hib = friedman_nemenyi(df, methods=["A", "B", REF], layout=Layout(higher_is_better=True))
    assert hib.ranks.to_dict() == {REF: 1.0, "B": 2.0, "A": 3.0}
    with pytest.raises(MTVAEError, match=r"\['mice'\] are not in the scores"):
        friedman_nemenyi(df, exclude=["mice"])


def test_critical_difference_beyond_ten_methods():
    assert critical_difference(4, 14) == pytest.approx(nemenyi_cd(4, 14), abs=2e-3)
    q12 = st.studentized_range.ppf(0.95, 12, np.inf) / math.sqrt(2)
    assert critical_difference(12, 8) == pytest.approx(q12 * math.sqrt(12 * 13 / 48))
    with pytest.raises(MTVAEError, match="k >= 2"):
        critical_difference(1, 8)


def test_conditions_are_per_method_not_averaged():
    tables = [f"t{i}" for i in range(5)]
    # 'up' gains more on bigger tables, 'down' less: averaged over methods they would cancel
    df = scores({REF: 0.0, "up": lambda i, r, s: -0.1 * i, "down": lambda i, r, s: 0.1 * i},
                tables=tables)
    per = table_gains(paired_gains(df), **FAST)
    props = pd.DataFrame({"n_rows": [100.0, 200, 300, 400, 500], "same": 1.0},
                         index=pd.Index(tables, name="dataset"))
    out = conditions_by_method(per, props).set_index(["method", "property"])
    assert out.loc[("up", "n_rows"), "rho"] == pytest.approx(1.0)
    assert out.loc[("down", "n_rows"), "rho"] == pytest.approx(-1.0)
    assert math.isnan(out.loc[("up", "same"), "rho"]) and out.n_tables.eq(5).all()
    with pytest.raises(MTVAEError, match=r"tables \['t4'\] have no properties"):
        conditions_by_method(per, props.iloc[:4])


def test_spearman_p_value_is_exact_on_few_tables():
    # n tables in the same order: rho = 1, and exactly 2 of the n! pairings are as extreme
    for n in (3, 5, 8):
        rho, p = spearman_exact(range(n), range(n))
        assert rho == pytest.approx(1.0) and p == pytest.approx(2 / math.factorial(n))
    # scipy's t approximation claims p = 0 for three tables in order: the defect it replaces
    assert st.spearmanr([1, 2, 3], [1, 2, 3]).pvalue == 0.0
    rho, p = spearman_exact([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(0.8) and p == pytest.approx(16 / 120)  # 16 of 120 |rho| >= .8
    assert spearman_exact([3, 1, 2, 5, 4], [1, 2, 3, 4, 5]) == spearman_exact(
        [3, 1, 2, 5, 4], [1, 2, 3, 4, 5])  # deterministic
    with pytest.raises(MTVAEError, match="length >= 3"):
        spearman_exact([1, 2], [1, 2])
