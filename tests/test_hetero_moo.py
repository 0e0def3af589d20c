"""Every MOO method trains a heterogeneous VAE on every shipped table without NaN."""

import math

import pytest
import torch

from mtvae.data import load
from mtvae.data.tables import available_tables
from mtvae.models import HeteroVAE
from mtvae.moo import available
from mtvae.train import fit

TABLES = available_tables()


@pytest.fixture(scope="module")
def tables():
    return {name: load(name, max_rows=150, mask_seed=0) for name in TABLES}


@pytest.mark.parametrize("table", TABLES)
def test_every_method_trains_on_every_table(tables, table):
    data = tables[table]
    for method in available():
        torch.manual_seed(0)
        model = HeteroVAE(data.info["schema"], hidden=16, depth=2, scaler=data.info["scaler"])
        res = fit(model, data, epochs=1, batch_size=50, seed=0, device="cpu", progress="none",
                  combiner=method, monitor_every=1)
        assert math.isfinite(res.history[0]["loss"]), (table, method)
        assert math.isfinite(res.history[0]["val_loss"]), (table, method)
        if method != "sum":
            assert res.diagnostics["tasks"] == data.info["schema"].names


def test_parameter_space_trains_on_a_table(tables):
    data = tables["hi"]
    for method in ["upgrad@parameter", "gradnorm+pcgrad@parameter", "mgda@parameter"]:
        torch.manual_seed(0)
        model = HeteroVAE(data.info["schema"], hidden=16, depth=2, scaler=data.info["scaler"])
        res = fit(model, data, epochs=2, batch_size=50, seed=0, device="cpu", progress="none",
                  combiner=method)
        assert all(math.isfinite(h["loss"]) for h in res.history)
