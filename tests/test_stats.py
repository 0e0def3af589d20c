"""Statistics for comparing methods over blocks, on inputs with known answers."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mtvae.errors import MTVAEError
from mtvae.plots import _cliques, cd_diagram
from mtvae.stats import (
    Q_ALPHA,
    average_ranks,
    block_table,
    friedman,
    friedman_from_ranks,
    holm,
    holm_adjust,
    iman_davenport,
    nemenyi_cd,
    rank_table,
    wilcoxon_holm,
)

# Demšar (2006), Sec. 3.2.4: four C4.5 variants on 14 data sets (AUC, higher is better)
DEMSAR_RANKS = {"C4.5": 3.143, "C4.5+m": 2.000, "C4.5+cf": 2.893, "C4.5+m+cf": 1.964}


def table(rows, columns=("a", "b", "c")):
    return pd.DataFrame(rows, columns=list(columns),
                        index=pd.Index([f"d{i}" for i in range(len(rows))], name="block"))


def test_ranks_by_hand_with_ties():
    t = table([[0.1, 0.2, 0.3],  # a best
               [0.5, 0.5, 0.1],  # c best, a and b tie for 2nd and 3rd -> 2.5 each
               [0.4, 0.4, 0.4]])  # all tie -> 2 each
    assert rank_table(t).to_numpy().tolist() == [[1, 2, 3], [2.5, 2.5, 1], [2, 2, 2]]
    ranks = average_ranks(t)
    assert ranks.to_dict() == pytest.approx({"a": 5.5 / 3, "b": 6.5 / 3, "c": 2.0})
    assert list(ranks.index) == ["a", "c", "b"]  # best first
    assert average_ranks(t, lower_is_better=False)["c"] == pytest.approx(2.0)
    assert average_ranks(t, lower_is_better=False)["a"] == pytest.approx((3 + 1.5 + 2) / 3)


def test_demsar_worked_example():
    chi2, f = friedman_from_ranks(list(DEMSAR_RANKS.values()), n_blocks=14)
    assert chi2 == pytest.approx(9.28, abs=0.01)
    assert f == pytest.approx(3.69, abs=0.01)
    assert st.f.ppf(0.95, 3, 39) == pytest.approx(2.85, abs=0.01)  # F(3, 39) critical value
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=0.005)
    assert nemenyi_cd(4, 14, alpha=0.10) == pytest.approx(2.291 * math.sqrt(20 / 84))


def test_q_table_matches_the_studentized_range():
    for alpha, qs in Q_ALPHA.items():
        for k, q in enumerate(qs, start=2):
            exact = st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
            assert q == pytest.approx(exact, abs=2e-3)


def test_friedman_equals_scipy_and_iman_davenport_follows():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(12, 4)).astype(float)  # many ties
    t = table(values.tolist(), columns=("a", "b", "c", "d"))
    res = friedman(t)
    ref = st.friedmanchisquare(*values.T)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    n, k = 12, 4
    f = (n - 1) * res.statistic / (n * (k - 1) - res.statistic)
    assert res.f_statistic == pytest.approx(f)
    assert res.f_p_value == pytest.approx(st.f.sf(f, k - 1, (k - 1) * (n - 1)))
    assert (res.df1, res.df2, res.n_blocks, res.k) == (3, 33, 12, 4)
    assert res.ranks.sum() == pytest.approx(k * (k + 1) / 2)


def test_friedman_degenerate_inputs():
    same = friedman(table([[1.0, 1.0, 1.0]] * 5))
    assert (same.statistic, same.p_value, same.f_statistic, same.f_p_value) == (0, 1, 0, 1)
    perfect = friedman(table([[1.0, 2.0, 3.0]] * 5))  # every block agrees: F infinite
    assert perfect.statistic == pytest.approx(10.0)  # = N (k - 1)
    assert perfect.f_statistic == math.inf and perfect.f_p_value == 0.0
    assert iman_davenport(0.0, 5, 3)[:2] == (0.0, 1.0)
    with pytest.raises(MTVAEError, match="at least 3 methods"):
        friedman(table([[1.0, 2.0]] * 5, columns=("a", "b")))
    with pytest.raises(MTVAEError, match="at least 2 blocks"):
        friedman(table([[1.0, 2.0, 3.0]]))
    with pytest.raises(MTVAEError, match="missing or infinite"):
        friedman(table([[1.0, np.nan, 3.0]] * 3))
    with pytest.raises(MTVAEError, match="2 to 10 methods"):
        nemenyi_cd(11, 20)
    with pytest.raises(MTVAEError, match="alpha must be one of"):
        nemenyi_cd(3, 20, alpha=0.01)


def test_holm_on_known_p_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.04, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # clipped at 1
    assert holm([0.02]) == pytest.approx([0.02])
    with pytest.raises(MTVAEError, match=r"in \[0, 1\]"):
        holm([0.1, 1.5])


def test_wilcoxon_holm_against_scipy_and_degenerate_cases():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, size=10)
    t = pd.DataFrame({"sum": base, "good": base - 0.02 - rng.uniform(0, 0.01, 10),
                      "same": base, "noise": base + rng.normal(0, 0.01, 10)})
    res = wilcoxon_holm(t, "sum").set_index("method")
    assert list(res.index) == ["good", "same", "noise"]
    ref = st.wilcoxon(base - t["good"].to_numpy(), zero_method="zsplit")
    assert res.loc["good", "p_value"] == pytest.approx(ref.pvalue)
    assert res.loc["good", "wins"] == 10 and res.loc["good", "gain"] > 0
    assert res.loc["same", "p_value"] == 1.0 and math.isnan(res.loc["same", "statistic"])
    assert res.loc["same", "ties"] == 10
    assert res.p_holm.to_numpy() == pytest.approx(holm(res.p_value.to_numpy()))
    assert bool(res.loc["good", "significant"]) and not bool(res.loc["same", "significant"])
    one_sided = wilcoxon_holm(t, "sum", alternative="greater").set_index("method")
    assert one_sided.loc["good", "p_value"] < res.loc["good", "p_value"]
    with pytest.raises(MTVAEError, match="reference 'vanilla' is not a column"):
        wilcoxon_holm(t, "vanilla")
    with pytest.raises(MTVAEError, match="at least 2 blocks"):
        wilcoxon_holm(t.iloc[:1], "sum")


def test_block_table_averages_seeds_and_rejects_incomplete_blocks():
    df = pd.DataFrame({"dataset": ["w"] * 4 + ["h"] * 3, "missing_rate": 0.1,
                       "method": ["sum", "sum", "pc", "pc", "sum", "sum", "pc"],
                       "seed": [0, 1, 0, 1, 0, 1, 0],
                       "mean_error": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0, 4.0]})
    t = block_table(df)
    assert t.loc[("w", 0.1)].to_dict() == {"pc": 2.0, "sum": 2.0}
    assert t.loc[("h", 0.1)].to_dict() == {"pc": 4.0, "sum": 6.0}
    with pytest.raises(MTVAEError, match="lack results"):
        block_table(df[~((df.dataset == "h") & (df.method == "pc"))])
    with pytest.raises(MTVAEError, match=r"columns \['error'\] are not in the table"):
        block_table(df, value="error")


def test_cd_diagram_groups_methods_closer_than_cd():
    r = np.array([1.0, 1.5, 2.2, 3.4, 3.6])
    assert _cliques(r, 1.0) == [(0, 1), (1, 2), (3, 4)]
    assert _cliques(r, 0.1) == []
    assert _cliques(r, 10.0) == [(0, 4)]
    fig = cd_diagram(pd.Series(DEMSAR_RANKS), nemenyi_cd(4, 14), title="Demšar 2006")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "CD = 1.25" in texts and "C4.5+m+cf (1.96)" in texts
    assert len(fig.axes[0].collections) >= 3


def test_holm_adjust_on_a_declared_family():
    family = {"imtl-g vs tuned sum": 0.01, "mgda vs tuned sum": 0.04,
              "pcgrad vs tuned sum": 0.03, "nash vs tuned sum": 0.005}
    out = holm_adjust(family)
    assert list(out.index) == list(family)  # the declared order is kept
    # by hand: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert out.p_holm.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert out.p_holm.tolist() == pytest.approx(holm(list(family.values())).tolist())
    assert out.reject.tolist() == [True, False, False, True]
    assert holm_adjust(family, alpha=0.01).reject.tolist() == [False] * 4
    with pytest.raises(MTVAEError, match=r"\['b'\] are not"):
        holm_adjust({"a": 0.1, "b": 1.5})
    with pytest.raises(MTVAEError, match="no comparisons"):
        holm_adjust({})
