"""Selection on validation reads validation only; test metrics are reported, never used."""

import math

import numpy as np
import pandas as pd
import pytest

from mtvae.errors import MTVAEError
from mtvae.studies.selection import select_on_validation

WEIGHTS = (0.1, 1.0, 10.0)
BEST_VAL = {"mnist5k": 1.0, "shapes": 10.0}


def _runs():
    """Validation accuracy peaks at BEST_VAL; test accuracy is adversarial: it peaks at the
    setting with the *worst* validation score, so peeking at test would change the pick."""
    rows = []
    for ds, best in BEST_VAL.items():
        for w in WEIGHTS:
            for seed in range(3):
                val = 0.9 - 0.1 * abs(math.log10(w) - math.log10(best)) + 0.001 * seed
                rows.append({"dataset": ds, "label_weight": w, "seed": seed, "val_acc": val,
                             "test_acc": 1.5 - val, "test_nelbo": 100 * val})
    return pd.DataFrame(rows)


class _Poison:
    """A value that fails on any use: comparisons, arithmetic, conversion, hashing."""

    def _fail(self, *args):
        raise AssertionError("a test metric was read")

    __eq__ = __lt__ = __gt__ = __le__ = __ge__ = __add__ = __radd__ = __float__ = _fail
    __hash__ = __bool__ = __neg__ = __mul__ = __rmul__ = _fail


def test_picks_the_best_validation_mean_and_reports_its_test_metrics():
    sel = select_on_validation(_runs(), by=["dataset"], val_metric="val_acc",
                               higher_is_better=True)
    chosen = sel.chosen.set_index("dataset")
    assert chosen.label_weight.to_dict() == BEST_VAL
    assert (chosen.n == 3).all() and (chosen.n_settings == 3).all()
    assert chosen.val_mean.to_dict() == pytest.approx({"mnist5k": 0.901, "shapes": 0.901})
    summary = sel.test_summary(["test_acc"]).set_index("dataset")
    # the chosen settings have the *worst* test accuracy by construction, and that is reported
    assert summary.test_acc.to_dict() == pytest.approx({"mnist5k": 0.599, "shapes": 0.599})
    assert len(sel.runs) == 6 and set(sel.runs.seed) == {0, 1, 2}


def test_the_choice_never_reads_test_columns():
    runs = _runs()
    ref = select_on_validation(runs, by=["dataset"], val_metric="val_acc",
                               higher_is_better=True).chosen
    poisoned = runs.astype({"test_acc": object, "test_nelbo": object})
    poisoned["test_acc"] = [_Poison() for _ in range(len(runs))]
    poisoned["test_nelbo"] = [_Poison() for _ in range(len(runs))]
    sel = select_on_validation(poisoned, by=["dataset"], val_metric="val_acc",
                               higher_is_better=True)
    pd.testing.assert_frame_equal(sel.chosen, ref)
    assert all(isinstance(v, _Poison) for v in sel.runs.test_acc)  # carried along, untouched
    # any rewrite of the test columns leaves the choice alone; so does dropping them
    rng = np.random.default_rng(0)
    for test in (rng.permutation(runs.test_acc.to_numpy()), np.full(len(runs), np.nan)):
        pd.testing.assert_frame_equal(select_on_validation(
            runs.assign(test_acc=test), by=["dataset"], val_metric="val_acc",
            higher_is_better=True).chosen, ref)
    pd.testing.assert_frame_equal(select_on_validation(
        runs.drop(columns=["test_acc", "test_nelbo"]), by=["dataset"], val_metric="val_acc",
        higher_is_better=True).chosen, ref)


def test_lower_is_better_ties_and_diverged_runs():
    runs = pd.DataFrame({"label_weight": [1.0, 1.0, 3.0, 3.0, 10.0, 10.0],
                         "val_nll": [5.0, 5.0, 5.0, 5.0, 1.0, np.nan],
                         "test_nll": [0.0] * 6})
    sel = select_on_validation(runs, val_metric="val_nll", higher_is_better=False)
    # 10 has the lowest mean of its finite runs but one run diverged: never chosen; 1 and 3
    # tie and the smaller setting wins
    assert sel.chosen.label_weight.tolist() == [1.0] and sel.chosen.n.tolist() == [2]
    assert select_on_validation(runs, val_metric="val_nll",
                                higher_is_better=True).chosen.label_weight.tolist() == [1.0]


def test_accepts_run_records():
    records = [{"config": {"method": "sum", "label_weight": w, "seed": s},
                "metrics": {"val_acc": v, "test_acc": 1 - v}}
               for w, v in ((1.0, 0.7), (100.0, 0.8)) for s in (0, 1)]
    sel = select_on_validation(records, by=["method"], val_metric="val_acc",
                               higher_is_better=True)
    assert sel.chosen.label_weight.tolist() == [100.0]
    assert sel.test_summary(["test_acc"]).test_acc.tolist() == pytest.approx([0.2])


def test_refuses_test_metrics_and_names_missing_columns():
    runs = _runs()
    with pytest.raises(MTVAEError, match="is a test metric"):
        select_on_validation(runs, by=["dataset"], val_metric="test_acc",
                             higher_is_better=True)
    with pytest.raises(MTVAEError, match=r"no columns \['fraction'\]"):
        select_on_validation(runs, by=["fraction"], val_metric="val_acc",
                             higher_is_better=True)
    with pytest.raises(MTVAEError, match="no setting with a validation"):
        select_on_validation(runs.assign(val_acc=np.nan), by=["dataset"], val_metric="val_acc",
                             higher_is_better=True)
