"""The tables grid: equal tuning budgets, selection on validation only, staged blocks."""

import math

import pandas as pd
import pytest

from mtvae.errors import MTVAEError
from mtvae.experiments import get_grid, get_kind
from mtvae.experiments.grids import tables_families
from mtvae.experiments.runner import parse_where, select
from mtvae.experiments.spec import Run
from mtvae.experiments.tuning import choose, configs, default, family_of, variants
from mtvae.profiles import get_profile
from mtvae.results import new_record, write_record
from mtvae.studies import tables as tables_study


def test_every_family_gets_the_same_tuning_budget():
    t = get_profile("full").tables
    sizes = {fam: len(configs(fam, t.lrs)) for ds in t.datasets
             for fam in tables_families(t, ds)}
    assert len(set(sizes.values())) == 1 and next(iter(sizes.values())) == 6
    assert variants("sum") == ("sum", "sum:initial-loss", "sum:type")
    assert variants("nsgd+imtl-g") == ("nsgd+imtl-g", "nsgd+imtl-g[crmogm=0.5]",
                                       "nsgd+imtl-g[crmogm=0.9]")
    assert variants("pcgrad@parameter-rescaled")[2] == "pcgrad[crmogm=0.9]@parameter-rescaled"
    assert default("upgrad", t.lrs).method == "upgrad" and default("upgrad", t.lrs).lr == 1e-3
    assert {family_of(v) for v in variants("gradnorm+pcgrad")} == {"gradnorm+pcgrad"}
    assert family_of("sum:type") == "sum"
    with pytest.raises(MTVAEError, match="crmogm"):
        variants("graddrop")


def _tuning_frame(val, test):
    """Tuning records of one table: ``val[i]`` / ``test[i]`` for config i, two seeds."""
    rows = []
    for i, cfg in enumerate(configs("sum", (1e-3, 3e-3))):
        for seed in (100, 101):
            rows.append({"method": cfg.method, "lr": cfg.lr, "seed": seed, "status": "ok",
                         "val": {"mean_error": val[i]}, "test": {"mean_error": test[i]}})
    return pd.DataFrame(rows)


def test_the_choice_reads_validation_only():
    val = [0.5, 0.4, 0.3, 0.6, 0.2, 0.7]
    honest = choose(_tuning_frame(val, [0.1] * 6), "sum", (1e-3, 3e-3), (100, 101))
    adversarial = choose(_tuning_frame(val, [9, 9, 9, 9, 0.0, 9][::-1]), "sum",
                         (1e-3, 3e-3), (100, 101))
    assert honest is not None and adversarial is not None
    assert honest[0] == adversarial[0]
    assert (honest[0].method, honest[0].lr) == ("sum:initial-loss", 3e-3)  # val 0.2
    frame = _tuning_frame(val, [0.1] * 6).drop(columns="test")  # no test column at all
    assert choose(frame, "sum", (1e-3, 3e-3), (100, 101))[0] == honest[0]


def test_incomplete_tuning_chooses_nothing_and_a_diverged_config_is_never_chosen():
    frame = _tuning_frame([0.5, 0.4, 0.3, 0.6, 0.2, 0.7], [0.1] * 6)
    assert choose(frame.iloc[:-1], "sum", (1e-3, 3e-3), (100, 101)) is None
    best = (frame.method == "sum:initial-loss") & (frame.lr == 3e-3)
    frame.loc[best & (frame.seed == 101), "status"] = "failed"
    picked, table = choose(frame, "sum", (1e-3, 3e-3), (100, 101))
    assert (picked.method, picked.lr) == ("sum:type", 1e-3)  # the next best, val 0.3
    failed = table[(table.method == "sum:initial-loss") & (table.lr == 3e-3)].val_error
    assert math.isinf(float(failed.iloc[0]))


def _write_tuning(root, profile, val_of):
    """Fake ok records for every tuning run of the smoke grid, val error from ``val_of``."""
    spec = get_grid("tables", profile, root)
    t = get_profile(profile).tables
    n = 0
    for run in spec.runs():
        c = dict(run.config)
        if run.kind != "tables" or c["seed"] not in t.tuning_seeds:
            continue
        metrics = {"val": {"mean_error": val_of(c)}, "test": {"mean_error": 0.0}}
        rec = new_record(spec.name, run.kind, c, {"status": "ok", "metrics": metrics},
                         seconds=0.0, device="cpu")
        write_record(root / spec.name / f"{run.id}.json", rec)
        n += 1
    return n


def test_the_evaluation_blocks_appear_once_the_tuning_is_recorded(tmp_path):
    before = get_grid("tables", "smoke", tmp_path)
    t = get_profile("smoke").tables
    assert not [r for r in before.runs() if r.kind == "tables"
                and r.config["missing_rate"] != t.tuning_rate]
    # the sum's best validation error is sum:type; every MOO family keeps its default
    n = _write_tuning(tmp_path, "smoke",
                      lambda c: 0.1 if c["method"] == "sum:type" else 0.5)
    assert n == sum(len(configs(f, t.lrs)) * len(t.tuning_seeds)
                    for ds in t.datasets for f in tables_families(t, ds))
    after = get_grid("tables", "smoke", tmp_path)
    chosen = {(r.config["dataset"], r.config["method"]) for r in after.runs()
              if r.kind == "tables" and r.config["missing_rate"] != t.tuning_rate}
    assert ("wine", "sum:type") in chosen and ("wine", "sum") not in chosen
    assert ("wine", "pcgrad") in chosen
    assert len(after) > len(before)
    # parameter space: evaluated at the tuning rate only, on the first parameter_seeds seeds
    param = [r.config for r in after.runs() if r.kind == "tables"
             and "@parameter" in r.config["method"] and r.config["seed"] not in t.tuning_seeds]
    assert param and {c["missing_rate"] for c in param} == {t.tuning_rate}
    assert {c["seed"] for c in param} == set(t.seeds[:t.parameter_seeds])


def test_where_selects_runs_and_names_unknown_keys():
    runs = [Run("tables", {"dataset": "wine", "seed": 0}), Run("tables", {"dataset": "hi",
                                                                       "seed": 0})]
    assert select(runs, parse_where(["dataset=wine"])) == runs[:1]
    assert select(runs, parse_where(["kind=tables", "seed=0"])) == runs
    with pytest.raises(MTVAEError, match="datset"):
        select(runs, {"datset": "wine"})
    with pytest.raises(MTVAEError, match="KEY=VALUE"):
        parse_where(["wine"])


@pytest.mark.slow
def test_a_tables_run_is_scored_under_both_protocols_and_reports_convergence():
    spec = get_grid("tables", "smoke")
    run = next(r for r in spec.runs() if r.kind == "tables" and r.config["method"] == "sum")
    m = get_kind("tables")(dict(run.config), "cpu")
    for key in ("test", "val", "test_mode", "anchor"):
        assert 0 <= m[key]["mean_error"] < 10 and m[key]["n_scored"] > 0
    assert m["anchor"]["n_scored"] != m["val"]["n_scored"]  # observed vs missing cells
    assert {"stopped_early", "best_step", "step_cap", "epoch_cap"} <= set(m)
    assert m["best_step"] <= m["step_cap"]
    ref = get_kind("reference")(dict(next(r for r in spec.runs() if r.kind == "reference"
                                          and r.config["imputer"] == "knn").config), "cpu")
    assert set(ref) == {"test", "val"}


def test_the_chapter_frames_from_records(tmp_path):
    """scores() names the tuned sum and the references; convergence() counts patience."""
    profile = get_profile("smoke")
    _write_tuning(tmp_path, "smoke", lambda c: 0.1 if c["method"] == "sum" else 0.5)
    spec = get_grid("tables", "smoke", tmp_path)
    for run in spec.runs():
        c = dict(run.config)
        metrics = ({"test": {"mean_error": 0.2}, "val": {"mean_error": 0.2}}
                   if run.kind == "reference" else
                   {"test": {"mean_error": 0.3 if c["method"] == "sum" else 0.4},
                    "val": {"mean_error": 0.1 if c["method"] == "sum" else 0.5},
                    "test_mode": {"mean_error": 0.5}, "anchor": {"mean_error": 0.05},
                    "stopped_early": c["seed"] != 0, "best_step": 10, "step_cap": 40})
        path = tmp_path / spec.name / f"{run.id}.json"
        if not path.exists() or run.kind == "reference" or c["seed"] not in (100,):
            write_record(path, new_record(spec.name, run.kind, c,
                                          {"status": "ok", "metrics": metrics},
                                          seconds=0.0, device="cpu"))
    runs = tables_study.records(profile, tmp_path)
    sc = tables_study.scores(runs, profile, root=tmp_path)
    assert tables_study.TUNED_SUM in set(sc.method) and "k-NN" in set(sc.method)
    assert sc[sc.method == tables_study.TUNED_SUM].mean_error.eq(0.3).all()
    conv = tables_study.convergence(runs)
    assert ((conv.stopped_by_patience > 0) & (conv.stopped_by_patience < 1)).any()
    prot = tables_study.protocols(runs, profile)
    assert set(prot.columns) == {"dataset", "seed", "method", "anchor", "corrected"}
    est = tables_study.estimators(runs, profile, tmp_path)
    assert (est["mode"] > est["predictive mean"]).all()


def test_the_variants_of_a_family_train_as_one_stack(tmp_path):
    from mtvae.experiments.runner import make_jobs

    spec = get_grid("tables", "smoke")
    t = get_profile("smoke").tables
    tuning = [r for r in spec.runs() if r.kind == "tables" and r.config["seed"] in t.tuning_seeds]
    jobs = make_jobs(tuning, stack=10)
    by_family = {family_of(j[0].config["method"]): {r.config["method"] for r in j} for j in jobs
                 if j[0].config["dataset"] == "wine"}
    assert by_family["sum"] == set(variants("sum"))
    assert all(len({family_of(r.config["method"]) for r in j}) == 1 for j in jobs)
    # the evaluation's missing rates and seeds share a stack too (each member its own mask)
    _write_tuning(tmp_path, "smoke", lambda c: 0.1 if c["method"] == "sum" else 0.5)
    spec = get_grid("tables", "smoke", tmp_path)
    evaluation = [r for r in spec.runs() if r.kind == "tables" and r.config["method"] == "sum"
                  and r.config["dataset"] == "wine" and r.config["seed"] not in t.tuning_seeds]
    rates = {r.config["missing_rate"] for r in evaluation}
    assert len(rates) > 1
    assert [{r.config["missing_rate"] for r in j} for j in make_jobs(evaluation, stack=30)] \
        == [rates]


def _write_all(root, profile, skip=lambda run: False):
    """Fake ok records for every run of the (rebuilt) smoke grid but those ``skip`` names."""
    spec = get_grid("tables", profile, root)
    for run in spec.runs():
        path = root / spec.name / f"{run.id}.json"
        if path.exists() or skip(run):
            continue
        metrics = {"test": {"mean_error": 0.3}, "val": {"mean_error": 0.3}}
        write_record(path, new_record(spec.name, run.kind, dict(run.config),
                                      {"status": "ok", "metrics": metrics},
                                      seconds=0.0, device="cpu"))


def test_complete_tables_names_only_tables_with_every_run_recorded(tmp_path):
    profile = get_profile("smoke")
    assert tables_study.complete_tables(tables_study.records(profile, tmp_path), profile,
                                        tmp_path) == ()  # nothing recorded: empty, no error
    _write_tuning(tmp_path, "smoke", lambda c: 0.1 if c["method"] == "sum" else 0.5)
    runs = tables_study.records(profile, tmp_path)
    assert tables_study.complete_tables(runs, profile, tmp_path) == ()  # no evaluation yet
    # one reference of labour is missing: wine is complete, labour pending
    _write_all(tmp_path, "smoke", skip=lambda r: r.kind == "reference"
               and r.config["dataset"] == "labour" and r.config["imputer"] == "mice"
               and r.config["seed"] == 1)
    runs = tables_study.records(profile, tmp_path)
    assert tables_study.complete_tables(runs, profile, tmp_path) == ("wine",)
    _write_all(tmp_path, "smoke")
    runs = tables_study.records(profile, tmp_path)
    assert tables_study.complete_tables(runs, profile, tmp_path) == ("wine", "labour")


def test_common_pairs_keeps_the_cells_every_method_finished():
    rows = [("wine", 0.1, s, m, e) for s in (0, 1) for m, e in (("a", 0.2), ("b", 0.3))]
    rows[3] = ("wine", 0.1, 1, "b", float("nan"))  # b diverged on seed 1
    rows.append(("wine", 0.1, 2, "a", 0.2))  # b never ran seed 2
    sc = pd.DataFrame(rows, columns=["dataset", "missing_rate", "seed", "method", "mean_error"])
    kept = tables_study.common_pairs(sc, ["a", "b"])
    assert set(kept.seed) == {0} and len(kept) == 2
    assert len(tables_study.common_pairs(sc, ["a"])) == 3
    with pytest.raises(MTVAEError, match="at least one"):
        tables_study.common_pairs(sc, [])


def test_selection_noise_is_the_paired_gap_to_the_default_in_standard_errors():
    import dataclasses

    full = get_profile("full")
    t = dataclasses.replace(full.tables, families=("sum",), parameter_datasets=(),
                            tuning_seeds=(100, 101, 102), lrs=(1e-3, 3e-3))
    profile = dataclasses.replace(full, tables=t)
    base = [0.30, 0.32, 0.31]  # the default (uniform sum, first rate) on the three seeds
    gaps = {"clear": [0.10, 0.11, 0.09], "noisy": [0.05, -0.03, 0.04], "none": [-0.01] * 3}
    rows = []
    for ds, gap in gaps.items():
        for i, cfg in enumerate(configs("sum", t.lrs)):
            for k, seed in enumerate(t.tuning_seeds):
                err = base[k] - gap[k] if i == 4 else base[k] + (0.0 if i == 0 else 0.2)
                rows.append({"kind": "tables", "dataset": ds, "missing_rate": t.tuning_rate,
                             "method": cfg.method, "lr": cfg.lr, "seed": seed, "status": "ok",
                             "val": {"mean_error": err}})
    rows.append({**rows[0], "missing_rate": 0.5, "val": {"mean_error": 0.0}})  # other rate
    noise = tables_study.selection_noise(pd.DataFrame(rows), profile, list(gaps)).set_index(
        "dataset")
    assert noise.loc["clear", "gap"] == pytest.approx(0.10)
    assert noise.loc["clear", "se"] == pytest.approx(0.01 / math.sqrt(3))
    assert noise.loc["clear", "resolved"] and not noise.loc["clear", "is_default"]
    assert noise.loc["noisy", "gap"] == pytest.approx(0.02)
    assert not noise.loc["noisy", "resolved"]  # 0.02 < 2 x 0.0252
    assert noise.loc["none", "is_default"] and noise.loc["none", "gap"] == 0.0
    assert not noise.loc["none", "resolved"]
