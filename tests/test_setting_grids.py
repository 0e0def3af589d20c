"""The multitask settings' grids (issue 13): equal budgets, validation-only choice, staged
blocks, and every run kind recording validation, test and convergence metrics."""

import math

import pandas as pd
import pytest
import torch

from mtvae.errors import MTVAEError
from mtvae.experiments import get_grid, get_kind
from mtvae.experiments.grids import STAGED
from mtvae.experiments.setting_grids import (
    _tuning,
    aux_choices,
    beta_choice,
    mm_choices,
    vq_choices,
)
from mtvae.experiments.staged import Tuning, options
from mtvae.experiments.tuning import family_of
from mtvae.models.vqvae import VQVAE
from mtvae.profiles import get_profile
from mtvae.results import new_record, write_record

STUDIES = {"aux": "aux_grid", "multimodal": "mm_grid", "vqhead": "vq_grid"}
KIND = {"aux": "aux", "multimodal": "mm", "vqhead": "vqhead"}
CHOICES = {"aux": aux_choices, "multimodal": mm_choices, "vqhead": vq_choices}


@pytest.mark.parametrize("profile", ["smoke", "full"])
@pytest.mark.parametrize("grid", sorted(STUDIES))
def test_every_family_gets_the_same_tuning_budget(grid, profile):
    t = _tuning(getattr(get_profile(profile), STUDIES[grid]))
    sizes = {fam: len(options(t, fam)) for fam in t.families}
    assert len(set(sizes.values())) == 1, sizes
    assert "sum" in sizes and len(sizes) >= (4 if profile == "full" else 2)
    sum_opts = options(t, "sum")
    assert sum_opts[0][t.weight_key] == t.default_weight  # the untuned sum first
    assert {o["method"] for o in sum_opts} == {"sum"}
    for fam in t.families:
        assert {family_of(o["method"]) for o in options(t, fam)} == {fam}
    # the grid runs exactly that budget on the tuning seeds of every point and family
    spec = get_grid(grid, profile, "/nonexistent")
    tuning = [r for r in spec.runs() if r.config["seed"] in t.tuning_seeds]
    per_family = pd.Series([family_of(r.config["method"]) for r in tuning]).value_counts()
    assert per_family.nunique() == 1


def test_full_profiles_are_converging_and_seeded_enough():
    p = get_profile("full")
    for s in (p.aux_grid, p.mm_grid, p.hier_grid, p.vq_grid, p.beta_grid):
        assert len(s.seeds) >= 5 and s.epochs >= 100 and s.patience <= s.epochs // 10
    assert len(p.hier_grid.betas1) == len(p.hier_grid.betas2) == 5
    assert len(p.hier_grid.moo_methods) >= 2
    assert p.beta_grid.epochs == p.vae.epochs and p.beta_grid.patience == p.vae.patience
    assert (p.aux_grid.label_weights[0], p.aux_grid.label_weights[-1]) == (0.1, 1000.0)
    assert set(STUDIES) <= set(STAGED)


def test_tuning_refuses_unequal_budgets_test_metrics_and_shared_seeds():
    ok = dict(families=("sum", "pcgrad"), weight_key="label_weight", weights=(1.0, 10.0),
              default_weight=1.0, crmogm=(0.0, 0.5), select_on="val_head_acc",
              tuning_seeds=(100,), seeds=(0,))
    Tuning(**ok)
    with pytest.raises(MTVAEError, match="equal budgets"):
        Tuning(**ok | {"crmogm": (0.0, 0.5, 0.9)})
    with pytest.raises(MTVAEError, match="test metric"):
        Tuning(**ok | {"select_on": "test_head_acc"})
    with pytest.raises(MTVAEError, match="overlap"):
        Tuning(**ok | {"seeds": (100,)})
    with pytest.raises(MTVAEError, match="crmogm"):
        Tuning(**ok | {"families": ("sum", "graddrop")})
    with pytest.raises(MTVAEError, match="default weight"):
        Tuning(**ok | {"default_weight": 3.0})


def _write_tuning(root, grid, val_of, test_of, failed=lambda c: False):
    """Fake records of every tuning run of the smoke grid: the selection metric from
    ``val_of(config)``, every test-looking metric from ``test_of(config)``."""
    spec = get_grid(grid, "smoke", root)
    t = _tuning(getattr(get_profile("smoke"), STUDIES[grid]))
    n = 0
    for run in spec.runs():
        c = dict(run.config)
        if c["seed"] not in t.tuning_seeds:
            continue
        bad = failed(c)
        metrics = {t.select_on: val_of(c), "test_head_acc": test_of(c),
                   "test_accuracy": test_of(c), "test_cross_mean": test_of(c),
                   "cross_mean": test_of(c)}
        body = ({"status": "failed", "error": {"type": "X", "message": "diverged"}} if bad
                else {"status": "ok", "metrics": metrics})
        write_record(root / spec.name / f"{run.id}.json",
                     new_record(spec.name, run.kind, c, body, seconds=0.0, device="cpu"))
        n += 1
    return n


def _evaluated(root, grid):
    """(point, method, weight) of the runs on the evaluation seeds."""
    spec = get_grid(grid, "smoke", root)
    seeds = _tuning(getattr(get_profile("smoke"), STUDIES[grid])).seeds
    return {(r.config.get("dataset"), r.config.get("label_fraction"), r.config.get("fusion"),
             r.config["method"], r.config["label_weight"])
            for r in spec.runs() if r.config["seed"] in seeds and r.kind == KIND[grid]}


@pytest.mark.parametrize("grid", sorted(STUDIES))
def test_the_chosen_blocks_appear_once_the_tuning_is_recorded_and_read_validation_only(
        grid, tmp_path):
    before = get_grid(grid, "smoke", tmp_path)
    t = _tuning(getattr(get_profile("smoke"), STUDIES[grid]))
    assert not CHOICES[grid](get_profile("smoke"), tmp_path).chosen.any()
    # adversarial: the sum's best validation score is lambda = 100 (or 25), whose test score
    # is the worst; every other configuration has the best test score
    best_w = t.weights[-1]

    def val_of(c):
        return 0.9 if (c["method"] == "sum" and c["label_weight"] == best_w) else 0.5

    def test_of(c):
        return 0.0 if (c["method"] == "sum" and c["label_weight"] == best_w) else 1.0

    n = _write_tuning(tmp_path, grid, val_of, test_of)
    assert n == len([r for r in before.runs() if r.config["seed"] in t.tuning_seeds])
    after = get_grid(grid, "smoke", tmp_path)
    assert len(after) > len(before)
    evaluated = _evaluated(tmp_path, grid)
    assert any(m == "sum" and w == best_w for *_, m, w in evaluated)
    table = CHOICES[grid](get_profile("smoke"), tmp_path)
    assert table.chosen.all()
    sums = table[table.family == "sum"]
    assert (sums.label_weight == best_w).all() and not sums.is_default.any()
    moo = table[table.family != "sum"]
    assert moo.is_default.all()  # a tie goes to the default (no smoothing)
    # the same validation scores with any test scores give the same choice
    other = tmp_path / "other"
    _write_tuning(other, grid, val_of, lambda c: 1.0 - test_of(c))
    assert _evaluated(other, grid) == evaluated


def test_a_failed_or_missing_tuning_run_is_never_chosen(tmp_path):
    t = _tuning(get_profile("smoke").aux_grid)
    best_w = t.weights[-1]

    def is_best(c):
        return c["method"] == "sum" and c["label_weight"] == best_w

    _write_tuning(tmp_path, "aux", lambda c: 0.9 if is_best(c) else 0.5, lambda c: 0.5,
                  failed=lambda c: is_best(c) and c["dataset"] == "mnist5k"
                  and c["label_fraction"] == 1.0)
    table = aux_choices(get_profile("smoke"), tmp_path)
    s = table[table.family == "sum"].set_index(["dataset", "label_fraction"])
    assert s.loc[("mnist5k", 1.0), "label_weight"] == t.default_weight  # best one failed
    assert s.loc[("mnist5k", 0.1), "label_weight"] == best_w
    # a missing record: that point's choice waits
    spec = get_grid("aux", "smoke", tmp_path)
    victim = next(r for r in spec.runs() if r.config["seed"] in t.tuning_seeds
                  and r.config["dataset"] == "shapes")
    (tmp_path / spec.name / f"{victim.id}.json").unlink()
    table = aux_choices(get_profile("smoke"), tmp_path)
    waiting = (table.dataset == "shapes") & (table.family == family_of(victim.config["method"]))
    assert not table[waiting].chosen.any() and table[~waiting].chosen.all()


def test_beta_is_chosen_on_validation_and_reported_on_test():
    runs = pd.DataFrame([{"beta": b, "seed": s, "val_nelbo": v, "test_nelbo": -v}
                         for s in (0, 1) for b, v in ((0.5, 101.0), (1.0, 100.0), (2.0, 103.0))])
    sel = beta_choice(runs)
    assert float(sel.chosen.beta.iloc[0]) == 1.0
    assert (sel.runs.test_nelbo == -100.0).all()


def test_the_vq_label_weight_scales_the_label_task():
    torch.manual_seed(0)
    a = VQVAE((1, 28, 28), "plain", 16, code_dim=4, channels=4, n_classes=10)
    torch.manual_seed(0)
    b = VQVAE((1, 28, 28), "plain", 16, code_dim=4, channels=4, n_classes=10, label_weight=10.0)
    batch = {"x": torch.rand(4, 1, 28, 28).bernoulli(), "y": torch.arange(4)}
    ta, tb = a.loss_terms(batch).tasks, b.loss_terms(batch).tasks
    assert torch.allclose(tb["y"], 10 * ta["y"]) and torch.allclose(tb["x"], ta["x"])
    with pytest.raises(MTVAEError, match="label_weight"):
        VQVAE((1, 28, 28), "plain", 16, n_classes=10, label_weight=0.0)


CONVERGENCE = {"stopped_early", "best_epoch", "epoch_cap", "epochs_run"}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MTVAE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MTVAE_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _first(grid, kind, **match):
    spec = get_grid(grid, "smoke", "/nonexistent")
    return next(dict(r.config) for r in spec.runs()
                if r.kind == kind and all(r.config.get(k) == v for k, v in match.items()))


@pytest.mark.parametrize("grid,kind,match,expected", [
    ("aux", "aux", {"method": "pcgrad", "label_fraction": 0.1},
     {"val_nelbo", "val_head_acc", "val_head_acc_all", "test_nelbo", "head_acc",
      "test_head_acc"}),
    ("aux", "aux-plain", {"dataset": "shapes"},
     {"val_nelbo", "test_nelbo", "probe_acc", "val_probe_acc"}),
    ("hier", "hier", {"method": "pcgrad"},
     {"val_nelbo", "val_kl1", "test_nelbo", "test_kl2", "probe"}),
    ("vqhead", "vqhead", {"method": "sum"},
     {"val_accuracy", "val_distortion", "test_accuracy", "test_distortion", "conflict"}),
    ("beta", "beta", {}, {"val_nelbo", "val_rate", "test_nelbo", "test_rate", "active_units"}),
])
def test_each_kind_records_validation_test_and_convergence(isolated, grid, kind, match,
                                                           expected):
    cfg = _first(grid, kind, **match)
    m = get_kind(kind)(cfg, "cpu")
    assert expected | CONVERGENCE <= set(m)
    assert m["epoch_cap"] == cfg["epochs"] and 1 <= m["best_epoch"] <= m["epochs_run"]
    for key in expected:
        if isinstance(m[key], float):
            assert math.isfinite(m[key]), key
    if kind == "aux":
        assert 0 < m["n_val_labelled"] < 1000 and 0 <= m["val_head_acc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("stacked", [False, True])
def test_a_multimodal_run_records_coherence_and_likelihood_on_both_splits(isolated, stacked):
    from mtvae.experiments.kinds import STACKED

    cfg = _first("multimodal", "mm", method="pcgrad")
    if stacked:
        out = STACKED["mm"]([cfg, cfg | {"seed": 101}], "cpu")
        assert not [m for m in out if isinstance(m, BaseException)], out
        assert out[0]["val_nelbo"] != out[1]["val_nelbo"]
        m = out[0]
    else:
        m = get_kind("mm")(cfg, "cpu")
    for prefix in ("val_", ""):
        assert 0 <= m[f"{prefix}cross_mean"] <= 1 and 0 <= m[f"{prefix}joint_coherence"] <= 1
        assert set(m[f"{prefix}loglik"]) == {"mnist", "digit", "label"}
        assert math.isfinite(m[f"{prefix}nelbo" if prefix else "test_nelbo"])
    assert set(m) >= CONVERGENCE
    # the modalities' gradient sizes at z, the diagnostic the chapter's story rests on
    assert set(m["conflict"]["norm"]) == {"mnist", "digit", "label"}
    assert all(v > 0 for v in m["conflict"]["norm"].values())


def test_stacked_aux_runs_get_one_record_each_like_single_runs(isolated, tmp_path):
    from mtvae.experiments import run_grid
    from mtvae.experiments.kinds import STACKED, stackable
    from mtvae.experiments.spec import Block, GridSpec

    cfg = _first("aux", "aux", method="sum", label_fraction=1.0, dataset="mnist5k")
    assert {"aux", "aux-plain", "hier", "beta", "mm"} <= set(STACKED) and stackable("aux", cfg)
    assert "vqhead" not in STACKED  # EMA codebooks update buffers in place
    fixed = {k: v for k, v in cfg.items() if k != "seed"}
    spec = GridSpec("stacked", (Block("aux", {"seed": (0, 1)}, fixed),))
    summary = run_grid(spec, root=tmp_path, stack=2, progress="none", device="cpu")
    assert summary.done == 2
    from mtvae.experiments import load_results

    runs = load_results("stacked", tmp_path)
    assert set(runs.engine) == {"stacked"} and sorted(runs.seed) == [0, 1]
    assert runs.val_head_acc.between(0, 1).all() and runs.stopped_early.notna().all()
    assert runs.val_nelbo.nunique() == 2  # the members are different runs


def test_the_chapter_reader_pairs_the_tuned_sum_with_each_moo_method(tmp_path):
    from mtvae.studies import evidence as EV
    from mtvae.studies import settings as S

    profile = get_profile("smoke")
    best_w = profile.aux_grid.label_weights[-1]
    _write_tuning(tmp_path, "aux", lambda c: 0.9 if c["label_weight"] == best_w else 0.5,
                  lambda c: 0.0)
    spec = get_grid("aux", "smoke", tmp_path)
    for run in spec.runs():
        c = dict(run.config)
        if c["seed"] in profile.aux_grid.tuning_seeds:
            continue
        tuned = c.get("method") == "sum" and c.get("label_weight") == best_w
        m = {"test_head_acc": 0.8 if tuned else 0.7 + 0.01 * c["seed"],
             "stopped_early": True, "best_epoch": 3, "epoch_cap": 10}
        write_record(tmp_path / spec.name / f"{run.id}.json", new_record(
            spec.name, run.kind, c, {"status": "ok", "metrics": m}, seconds=0.0, device="cpu"))
    runs = S.records("aux", profile, tmp_path)
    assert runs.tuning.sum() == len([r for r in spec.runs()
                                     if r.config["seed"] in profile.aux_grid.tuning_seeds])
    arms = S.arms(runs[runs.kind == "aux"])
    chosen = arms[arms.role == "chosen"]
    assert set(chosen.arm) == {S.TUNED_SUM, S.tuned("pcgrad")}
    assert (chosen[chosen.arm == S.TUNED_SUM].label_weight == best_w).all()
    assert set(chosen[chosen.arm == S.TUNED_SUM].setting) == {f"λ = {best_w:g}"}
    gains = EV.tested_gains(arms, "test_head_acc", higher_is_better=True,
                           pairs=[(S.tuned("pcgrad"), S.TUNED_SUM)],
                           by=("dataset", "label_fraction"))
    assert len(gains) == 3  # MNIST at 100 % and 10 %, shapes
    assert (gains.gain < 0).all() and (gains.wins == 0).all()
    assert (gains.low <= gains.gain).all() and (gains.gain <= gains.high).all()
    with pytest.raises(MTVAEError, match="test metric"):
        EV.tested_gains(arms, "val_head_acc", higher_is_better=True,
                       pairs=[(S.tuned("pcgrad"), S.TUNED_SUM)])
    conv = S.convergence(runs[~runs.tuning], by=("dataset",))
    assert (conv.stopped_by_patience == 1.0).all()


def test_chapter_1_reads_complete_betas_and_chooses_on_validation(tmp_path):
    from dataclasses import replace

    from mtvae.experiments.setting_grids import beta_grid
    from mtvae.studies.vaes import beta_sweep

    smoke = get_profile("smoke")
    profile = replace(smoke, beta_grid=replace(smoke.beta_grid, betas=(0.5, 1.0, 2.0),
                                               seeds=(0, 1, 2)))
    with pytest.raises(MTVAEError, match=r"no β with every seed recorded \(0 of 9 runs\)"):
        beta_sweep(profile, tmp_path)  # nothing recorded: one error naming the command
    spec = beta_grid(profile)
    val = {0.5: 101.0, 1.0: 100.0, 2.0: 99.0}  # 2.0 would win, but one of its seeds is missing
    test = {0.5: 98.0, 1.0: 103.0, 2.0: 90.0}  # the test set would pick 0.5
    for run in spec.runs():
        c = run.config
        if c["beta"] == 2.0 and c["seed"] == 2:
            continue
        m = {"val_nelbo": val[c["beta"]] + 0.1 * c["seed"],
             "test_nelbo": test[c["beta"]] + 0.5 * c["seed"] * (c["beta"] == 1.0),
             "stopped_early": True, "best_epoch": 3, "epoch_cap": 10}
        write_record(tmp_path / spec.name / f"{run.id}.json", new_record(
            spec.name, run.kind, c, {"status": "ok", "metrics": m}, seconds=0.0, device="cpu"))
    bs = beta_sweep(profile, tmp_path)
    assert (bs.n_recorded, bs.n_planned, bs.complete) == (8, 9, False)
    assert sorted(bs.runs.beta.unique()) == [0.5, 1.0]
    assert bs.chosen_beta == 1.0 and bs.vs_one is None  # validation, not test, decides
    assert bs.runner_up == 0.5  # its test −ELBO is lower: the chosen beta "loses" on test
    assert bs.vs_runner_up is not None and bs.vs_runner_up.estimate == pytest.approx(-5.5)
    val[1.0] = 102.0
    for run in spec.runs():
        c = run.config
        if c["beta"] == 1.0:
            m = {"val_nelbo": 102.0, "test_nelbo": 103.0 + c["seed"], "stopped_early": True,
                 "best_epoch": 3, "epoch_cap": 10}
            write_record(tmp_path / spec.name / f"{run.id}.json", new_record(
                spec.name, run.kind, c, {"status": "ok", "metrics": m}, seconds=0.0,
                device="cpu"))
    bs = beta_sweep(profile, tmp_path)
    assert bs.chosen_beta == 0.5
    assert bs.vs_one is not None and bs.vs_one.estimate == pytest.approx(103.0 + 1.0 - 98.0)
