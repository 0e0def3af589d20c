"""The abstract's computed sentences follow the findings they are given (no records needed)."""

import pandas as pd

from mtvae.studies import findings as FD


def _findings(**over) -> FD.Findings:
    base = dict(
        n_records=100, n_tables=6, n_planned=8, n_moo=8, n_rates=3, n_seeds=10,
        sum_error=0.15, best_method="imtl-g", best_gain=0.017, best_low=-0.011,
        best_high=0.046, better=(), worse=("mgda",), bayes_better=(), bayes_equivalent=(),
        bayes_worse=("mgda",), holm_rejected=(), rope=0.01, best_reference="missForest",
        reference_gain=0.105, reference_low=0.005, reference_high=0.194,
        settings=pd.DataFrame({"setting": ["aux"], "verdict": [FD.BETTER],
                               "cost_gain": [-0.1], "cost_metric": ["test −ELBO"]}),
        conditions=pd.DataFrame())
    return FD.Findings(**(base | over))


def test_the_scope_says_whether_every_planned_table_is_in():
    assert FD.tables_scope(_findings()) == "the 6 of the grid's 8 tables complete so far"
    assert FD.tables_scope(_findings(n_tables=8)) == "all 8 tables of the grid"
    assert FD.conclusion_sentence(_findings(n_tables=8)).endswith(
        "none of them helps (on all 8 tables of the grid).")


def test_no_winner_and_one_loser():
    text = FD.tables_sentence(_findings(), lead="")
    assert text.startswith("no MOO method beats a plain sum")
    assert "`mgda` is worse than it" in text and "over the 6 tables" in text


def test_a_bayesian_winner_is_named_in_both_sentences():
    f = _findings(bayes_better=("imtl-g",), worse=())
    assert FD.tables_sentence(f, lead="").startswith("`imtl-g` beat a plain sum")
    assert FD.conclusion_sentence(f).endswith("`imtl-g` still help against a sum given the "
                                              "same tuning budget.")


def test_reference_sentence_signs():
    assert "lower error" in FD.reference_sentence(_findings())
    worse = FD.reference_sentence(_findings(reference_gain=-0.02))
    assert "higher error" in worse and "−2.0 %" in worse


def test_settings_sentence_counts_and_prices():
    text = FD.settings_sentence(_findings())
    assert "1 are better on every seed, 0 worse on every seed and 0 mixed" in text
    assert "the consistent gains are in the settings “aux”" in text
    assert "1 of the 1 consistent gains came with a worse second metric (test −ELBO)." in text


def test_the_equivalence_sentence_names_only_readable_matching_positions():
    eq = pd.DataFrame({"method": ["imtl-g", "imtl-g", "pcgrad", "pcgrad"],
                       "lambda_like": [100.0, 1.0, 1.0, 1000.0],
                       "readable": [True, False, True, True],
                       "matches": [True, True, True, False]})
    text = FD.aux_equivalence_sentence(_findings(aux_equivalent=eq))
    assert "`imtl-g` where the sum does at λ = 100 (1 of 2 settings)" in text
    assert "`pcgrad` where the sum does at λ = 1 (1 of 2 settings)" in text
    assert "1000" not in text and "larger λ than any of the others" in text
    assert FD.aux_equivalence_sentence(_findings()) == ""
    flat = eq.assign(readable=False)
    assert FD.aux_equivalence_sentence(_findings(aux_equivalent=flat)) == ""


def test_the_plain_vae_sentence_gives_gain_and_price_per_setting():
    from mtvae.studies import evidence as EV
    from mtvae.studies import settings as S

    def rows(gain, low, high):
        return pd.DataFrame({"where": ["A", "B"], "arm": [S.TUNED_SUM] * 2,
                             "reference": [S.PLAIN_PROBE] * 2, "gain": gain, "low": low,
                             "high": high})

    ev = EV.Evidence(status=pd.DataFrame(), arms=pd.DataFrame({"where": ["A", "B"]}),
                    task=rows([0.1, 0.04], [0.09, 0.02], [0.11, 0.06]),
                    cost=rows([-4.6, 0.2], [-5.4, -0.2], [-3.8, 0.8]), holm=None, moo=(),
                    task_metric="test_head_acc", cost_metric="test_nelbo")
    text = FD.aux_vs_plain_sentence(_findings(aux=ev))
    assert "A: +10.0 points [+9.0, +11.0] at a −ELBO cost of 4.6 nats [3.8, 5.4]" in text
    assert "B: +4.0 points [+2.0, +6.0] at no measurable −ELBO cost" in text
    assert FD.aux_vs_plain_sentence(_findings()) == ""
