"""What Chapters 3.2 and 5 read from the ``aux`` and ``cvae`` grids: which settings are
complete, the arms of a setting, and paired gains with intervals, signed-rank p-values and
Holm over the declared primary comparisons."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from mtvae.errors import MTVAEError
from mtvae.experiments import get_grid, load_results
from mtvae.experiments.runner import run_grid
from mtvae.profiles import get_profile
from mtvae.results import new_record, write_record
from mtvae.studies import evidence as EV
from mtvae.studies import settings as S

SMOKE = get_profile("smoke")


def _fill(root, metrics_of, *, kinds=("aux", "aux-plain"), points=None):
    """Fake ok records for every run of the smoke ``aux`` grid (rebuilt until no new run
    appears, as the staged runner does) whose kind is in ``kinds`` and whose point (dataset,
    label fraction) is in ``points`` (all when None)."""
    while True:
        spec = get_grid("aux", "smoke", root)
        new = 0
        for run in spec.runs():
            c = dict(run.config)
            if run.kind not in kinds:
                continue
            if points is not None and run.kind == "aux" and (
                    (c["dataset"], c["label_fraction"]) not in points):
                continue
            path = root / spec.name / f"{run.id}.json"
            if path.exists():
                continue
            m = {"stopped_early": True, "best_epoch": 3, "epoch_cap": 10, "test_nelbo": 100.0}
            m |= metrics_of(run.kind, c)
            write_record(path, new_record(spec.name, run.kind, c, {"status": "ok", "metrics": m},
                                          seconds=0.0, device="cpu"))
            new += 1
        if not new:
            return


def _metrics(kind, c):
    if kind == "aux-plain":
        return {"probe_acc": {str(float(f)): {"y": 0.5 + 0.01 * c["seed"]}
                              for f in c["probe_fractions"]}}
    tuned_sum = c["method"] == "sum" and c["label_weight"] == 100.0
    val = 0.9 if tuned_sum else 0.5
    test = 0.8 + 0.01 * c["seed"] if tuned_sum else 0.7 + 0.02 * c["seed"]
    return {"val_head_acc": val, "test_head_acc": test}


def test_a_grid_without_records_reads_as_nothing_complete_not_an_error(tmp_path):
    assert S.records("aux", SMOKE, tmp_path).empty
    e = EV.aux_evidence(SMOKE, tmp_path)
    assert e.holm is None and e.arms.empty and e.task.empty and e.primary.empty
    assert not e.status.complete.any()


def test_a_setting_is_complete_once_tuning_evaluation_and_plain_vae_are_recorded(tmp_path):
    status = S.point_status("aux", SMOKE, tmp_path)
    assert len(status) == 3 and not status.complete.any() and (status.done == 0).all()
    _fill(tmp_path, _metrics, points={("mnist5k", 1.0)}, kinds=("aux",))
    status = S.point_status("aux", SMOKE, tmp_path).set_index(["dataset", "label_fraction"])
    # the heads are recorded but the plain VAE (shared by both MNIST points) is not
    assert not status.loc[("mnist5k", 1.0), "complete"]
    assert status.loc[("mnist5k", 1.0), "tuned"]
    assert status.loc[("mnist5k", 1.0), "pending"] == len(SMOKE.aux_grid.seeds)
    _fill(tmp_path, _metrics, points={("mnist5k", 1.0)})
    status = S.point_status("aux", SMOKE, tmp_path).set_index(["dataset", "label_fraction"])
    assert status.loc[("mnist5k", 1.0), "complete"]
    assert not status.loc[("mnist5k", 0.1), "complete"]  # its heads are not trained
    assert not status.loc[("shapes", 1.0), "complete"]


def test_the_probe_arm_reads_the_probe_of_the_requested_label_fraction(tmp_path):
    _fill(tmp_path, _metrics)
    runs = S.records("aux", SMOKE, tmp_path)
    arm = S.probe_arm(runs, "mnist5k", 0.1)
    assert list(arm.arm.unique()) == [S.PLAIN_PROBE]
    assert np.allclose(arm.sort_values("seed").test_head_acc,
                       [0.5 + 0.01 * s for s in sorted(SMOKE.aux_grid.seeds)])
    with pytest.raises(MTVAEError, match=r"no probe at label fraction 0\.5"):
        S.probe_arm(runs, "mnist5k", 0.5)


def test_paired_gains_carry_interval_wins_and_the_signed_rank_p_value():
    rng = np.random.default_rng(0)
    ref = rng.normal(0.8, 0.01, 8)
    diff = np.array([0.03, 0.01, 0.02, -0.005, 0.04, 0.015, 0.025, 0.01])
    frame = pd.concat([pd.DataFrame({"arm": "a", "seed": range(8), "acc": ref + diff}),
                       pd.DataFrame({"arm": "b", "seed": range(8), "acc": ref})])
    g = EV.tested_gains(frame, "acc", higher_is_better=True,
                       pairs=[("a", "b")]).iloc[0]
    assert g.gain == pytest.approx(diff.mean()) and g.low <= g.gain <= g.high
    assert g.wins == 7 and g.n == 8
    assert g.p_value == pytest.approx(st.wilcoxon(diff, zero_method="zsplit").pvalue)
    lower = EV.tested_gains(frame, "acc", higher_is_better=False, pairs=[("a", "b")]).iloc[0]
    assert lower.gain == pytest.approx(-diff.mean()) and lower.wins == 1
    with pytest.raises(MTVAEError, match="test metric"):
        EV.tested_gains(frame.rename(columns={"acc": "val_acc"}), "val_acc",
                       higher_is_better=True, pairs=[("a", "b")])


def test_the_evidence_holm_corrects_exactly_the_primary_comparisons(tmp_path):
    _fill(tmp_path, _metrics)
    e = EV.aux_evidence(SMOKE, tmp_path)
    assert e.status.complete.all()
    n_moo = len(SMOKE.aux_grid.families) - 1
    assert e.holm is not None and len(e.holm) == n_moo * len(e.status)
    assert set(e.primary.reference) == {S.TUNED_SUM}
    assert set(e.primary.arm) == {S.tuned(f) for f in e.moo}
    assert e.task[e.task.reference != S.TUNED_SUM].p_holm.isna().all()
    assert (e.primary.p_holm >= e.primary.p_value - 1e-12).all()
    # the tuned sum chose lambda = 100 on validation; its test accuracy leads the MOO method
    tuned = e.arms[e.arms.arm == S.TUNED_SUM]
    assert set(tuned.setting) == {"λ = 100"}
    assert (e.primary.gain < 0).all()
    # the default arms are the untuned runs: the sum at lambda = 1 and the unsmoothed method
    default = e.arms[e.arms.role == "default"]
    assert set(default.arm) == {S.DEFAULT_SUM, *e.moo}
    assert set(default[default.arm == S.DEFAULT_SUM].setting) == {"λ = 1"}


@pytest.mark.parametrize("stack", [1, 2])
def test_the_cvae_grid_scores_both_generators_and_the_real_images(tmp_path, monkeypatch, stack):
    monkeypatch.setenv("MTVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTVAE_RESULTS", str(tmp_path))  # Chapter 2's classifier record too
    spec = get_grid("cvae", "smoke")
    summary = run_grid(spec, root=tmp_path, device="cpu", progress="none", stack=stack)
    assert summary.failed == 0 and summary.done == len(spec.runs())
    runs = load_results(spec, tmp_path)
    assert set(runs.kind) == {"cvae", "heads-gen"}
    for m in ("cond_accuracy", "diversity", "test_nelbo"):
        assert runs[m].map(math.isfinite).all(), m
    assert runs.cond_accuracy.between(0, 1).all() and (runs.diversity > 0).all()
    assert (runs.epoch_cap == SMOKE.aux_grid.epochs).all() and runs.stopped_early.notna().all()
    cvae = runs[runs.kind == "cvae"]
    # log p(x) ≥ log (1/10) sum_y exp ELBO(x, y) ≥ ELBO(x, y_true) − log 10 (up to MC noise)
    gap = cvae.test_nelbo - cvae.test_nelbo_given_y
    assert (gap < math.log(10) + 1.0).all()
    real = pd.DataFrame(list(cvae.real))
    assert real.cond_accuracy.between(0, 1).all()
    heads = runs[runs.kind == "heads-gen"]
    assert set(heads.label_weight) == set(SMOKE.cvae_grid.head_weights)
    assert heads.test_head_acc.between(0, 1).all()
    assert set(runs.engine) == {"stacked" if stack > 1 else "single"}


def _fill_vq(root, *, skip_last=False):
    """Fake ok records for the smoke ``vqhead`` grid (rebuilt until no new run appears); the
    sum at lambda = 1000 is best on validation, its test accuracy leads every MOO run's."""
    written = 0
    while True:
        spec = get_grid("vqhead", "smoke", root)
        todo = [r for r in spec.runs() if not (root / spec.name / f"{r.id}.json").exists()]
        if skip_last and todo and len(todo) == 1:
            return written
        for run in todo[: len(todo) - 1] if skip_last else todo:
            c = dict(run.config)
            best = c["method"] == "sum" and c["label_weight"] == max(SMOKE.vq_grid.label_weights)
            m = {"stopped_early": True, "best_epoch": 3, "epoch_cap": 10,
                 "val_accuracy": 0.9 if best else 0.6, "test_accuracy":
                 (0.85 if best else 0.7) + 0.01 * c["seed"],
                 "test_distortion": 40.0 + (2.0 if best else 0.0) + 0.1 * c["seed"]}
            write_record(root / spec.name / f"{run.id}.json",
                         new_record(spec.name, run.kind, c, {"status": "ok", "metrics": m},
                                    seconds=0.0, device="cpu"))
            written += 1
        if not todo:
            return written


def test_the_vq_head_evidence_waits_for_a_complete_grid_then_tests_the_tuned_sum(tmp_path):
    e = EV.vq_evidence(SMOKE, tmp_path)
    assert e.arms.empty and e.holm is None and not e.status.complete.any()
    _fill_vq(tmp_path, skip_last=True)
    e = EV.vq_evidence(SMOKE, tmp_path)
    assert not e.status.complete.any() and e.arms.empty  # one run missing: nothing reported
    _fill_vq(tmp_path)
    e = EV.vq_evidence(SMOKE, tmp_path)
    assert e.status.complete.all() and set(e.arms["where"]) == {EV.VQ_WHERE}
    tuned = e.arms[e.arms.arm == S.TUNED_SUM]
    assert set(tuned.setting) == {f"λ = {max(SMOKE.vq_grid.label_weights):g}"}
    assert e.task_metric == "test_accuracy" and e.cost_metric == "test_distortion"
    # the tuned sum leads in accuracy (MOO gains < 0) and pays 2 nats of distortion for it
    assert (e.primary.gain < 0).all() and len(e.holm) == len(e.moo)
    cost = e.cost[e.cost.reference == S.TUNED_SUM]
    assert np.allclose(cost.gain, 2.0)


def _fill_mm(root, metrics_of):
    """Fake ok records (``metrics_of(config)`` plus convergence) for the smoke
    ``multimodal`` grid, until the staged grid plans nothing new."""
    while True:
        spec = get_grid("multimodal", "smoke", root)
        todo = [r for r in spec.runs() if not (root / spec.name / f"{r.id}.json").exists()]
        if not todo:
            return
        for run in todo:
            c = dict(run.config)
            m = {"stopped_early": True, "best_epoch": 3, "epoch_cap": 10} | metrics_of(c)
            write_record(root / spec.name / f"{run.id}.json",
                         new_record(spec.name, run.kind, c, {"status": "ok", "metrics": m},
                                    seconds=0.0, device="cpu"))


def test_the_multimodal_evidence_reports_each_complete_fusion_on_coherence(tmp_path):
    assert EV.mm_evidence(SMOKE, tmp_path).arms.empty
    best_w = max(SMOKE.mm_grid.label_weights)
    def metrics(c):
        best = c["method"] == "sum" and c["label_weight"] == best_w
        return {"val_cross_mean": 0.8 if best else 0.4,
                "test_cross_mean": (0.75 if best else 0.45) + 0.01 * c["seed"],
                "test_nelbo": 200.0 + (5.0 if best else 0.0)}

    _fill_mm(tmp_path, metrics)
    e = EV.mm_evidence(SMOKE, tmp_path)
    assert e.status.complete.all()
    assert set(e.arms["where"]) == {EV.FUSION_NAMES[f] for f in SMOKE.mm_grid.fusions}
    assert set(e.arms[e.arms.arm == S.TUNED_SUM].setting) == {f"λ = {best_w:g}"}
    # the tuned sum's coherence leads (negative MOO gains); it costs 5 nats of -ELBO
    assert (e.primary.gain < 0).all()
    assert np.allclose(e.cost[e.cost.reference == S.TUNED_SUM].gain, 5.0)


def test_equivalent_weights_match_a_default_method_to_the_nearest_sum_weight():
    rows = []
    for seed in (100, 101):
        for w, nelbo in ((0.1, 100.0), (1.0, 101.0), (100.0, 110.0)):
            rows.append({"seed": seed, "family": "sum", "method": "sum", "label_weight": w,
                         "val_head_acc": 0.5 + w / 1000, "val_nelbo": nelbo})
        rows += [{"seed": seed, "family": "imtl-g", "method": "imtl-g", "label_weight": 1.0,
                  "val_head_acc": 0.6, "val_nelbo": 109.0},
                 {"seed": seed, "family": "imtl-g", "method": "imtl-g[crmogm=0.5]",
                  "label_weight": 1.0, "val_head_acc": 0.1, "val_nelbo": 100.0},
                 {"seed": seed, "family": "pcgrad", "method": "pcgrad", "label_weight": 1.0,
                  "val_head_acc": 0.5, "val_nelbo": 100.8}]
    runs = pd.DataFrame(rows).assign(dataset="mnist5k", label_fraction=1.0, tuning=True,
                                     status="ok", kind="aux")
    runs = pd.concat([runs, runs.assign(tuning=False, val_nelbo=0.0)])  # evaluation: ignored
    eq = S.equivalent_weights(runs).set_index("method")
    assert eq.loc["imtl-g", "lambda_like"] == 100.0  # only the default (c = 0) is placed
    assert eq.loc["imtl-g", "sum_val_nelbo"] == pytest.approx(110.0)
    assert eq.loc["pcgrad", "lambda_like"] == 1.0
    assert eq.loc["pcgrad", "sum_val_head_acc"] == pytest.approx(0.501)


def test_the_books_primary_comparisons_keep_one_holm_family_per_grid(tmp_path):
    _fill_vq(tmp_path)
    _fill(tmp_path, _metrics)
    ev = {"aux": EV.aux_evidence(SMOKE, tmp_path), "vqhead": EV.vq_evidence(SMOKE, tmp_path)}
    book = EV.book_primary({g: EV.primary_rows(e) for g, e in ev.items()})
    n_aux, n_vq = len(ev["aux"].primary), len(ev["vqhead"].primary)
    assert n_aux and n_vq and len(book) == n_aux + n_vq
    for g, e in ev.items():  # each grid's own adjustment, and its family's size
        mine = book[book.grid == g]
        assert np.allclose(mine.p_holm, e.primary.p_holm) and (mine.family_size == len(mine)).all()
    assert (book.reject == (book.p_holm < 0.05)).all()
    assert set(book.metric) == {"test_head_acc", "test_accuracy"}
    none = EV.aux_evidence(SMOKE, tmp_path / "none")
    assert EV.book_primary({"aux": EV.primary_rows(none)}).empty


def test_the_largest_holm_family_that_can_still_reject_with_few_seeds():
    # 10 seeds: smallest p = 2/1024, so 25 comparisons (0.05/25 = 0.002 > 0.00195) but not 26
    assert EV.largest_family(10) == 25
    assert EV.largest_family(5) == 0  # p >= 0.0625 > 0.05: not even one comparison
    p_min = 2 / 2**10
    assert p_min < 0.05 / EV.largest_family(10) and not p_min < 0.05 / (EV.largest_family(10) + 1)


def test_the_overview_reads_the_vq_head_defaults_only_from_a_complete_grid(tmp_path):
    from mtvae.studies.overview import vq_default_arms

    assert vq_default_arms(EV.vq_evidence(SMOKE, tmp_path)).empty
    _fill_vq(tmp_path)
    arms = vq_default_arms(EV.vq_evidence(SMOKE, tmp_path))
    assert set(arms.method) == set(SMOKE.vq_grid.families)  # "sum" is the lambda = 1 sum
    assert set(arms.seed) == set(SMOKE.vq_grid.seeds) and set(arms.condition) == {"MNIST-5k"}
    recs = S.records("vqhead", SMOKE, tmp_path)
    default_sum = recs[(recs.family == "sum") & recs.default & ~recs.tuning]
    assert (default_sum.label_weight == SMOKE.vq_grid.default_label_weight).all()
    got = arms[arms.method == "sum"].set_index("seed").test_accuracy.sort_index()
    assert np.allclose(got, default_sum.set_index("seed").test_accuracy.sort_index())


def test_chapter_readers_refuse_a_partial_grid_and_name_the_command(tmp_path):
    from mtvae.studies.multimodal import grid_evidence
    from mtvae.studies.vq_compare import label_head

    with pytest.raises(MTVAEError, match=r"multimodal-smoke grid is not complete \(0 of .*"
                                          r"mtvae grid multimodal --profile smoke"):
        grid_evidence(SMOKE, tmp_path)
    _fill_vq(tmp_path, skip_last=True)
    with pytest.raises(MTVAEError, match=r"vqhead-smoke grid is not complete"):
        label_head(SMOKE, tmp_path)
    _fill_vq(tmp_path)
    assert label_head(SMOKE, tmp_path).status.complete.all()


def test_the_overview_reads_the_multimodal_defaults_only_from_a_complete_grid(tmp_path):
    from mtvae.models.multimodal import MODALITIES
    from mtvae.studies.overview import mm_default_arms

    assert mm_default_arms(EV.mm_evidence(SMOKE, tmp_path)).empty
    def metrics(c):
        coh = 0.4 + 0.01 * c["seed"] + (0.1 if c["method"] != "sum" else 0.0)
        return {"val_cross_mean": coh, "test_cross_mean": coh, "cross_mean": coh,
                "cross": {f"{a}->{b}": coh for a in MODALITIES for b in MODALITIES if a != b},
                "loglik": {"digit": -50.0 - c["seed"]}, "test_nelbo": 200.0, "conflict": None}

    _fill_mm(tmp_path, metrics)
    arms = mm_default_arms(EV.mm_evidence(SMOKE, tmp_path))
    assert set(arms.method) == set(SMOKE.mm_grid.families)
    assert set(arms.fusion) == set(SMOKE.mm_grid.fusions)
    assert set(arms.seed) == set(SMOKE.mm_grid.seeds)
    moo = arms[arms.method != "sum"].set_index("seed").cross_mean
    sums = arms[arms.method == "sum"].set_index("seed").cross_mean
    assert np.allclose(moo - sums.loc[moo.index], 0.1)  # the defaults, paired by seed


def test_grid_evidence_reads_each_grid_once_and_lists_only_complete_grids_primaries(tmp_path):
    from mtvae.studies.overview import GridEvidence, hier_default_arms

    empty = GridEvidence.read(SMOKE, tmp_path)
    assert empty.hier is None and hier_default_arms(empty.hier).empty
    assert empty.primary().empty
    _fill_vq(tmp_path)
    grids = GridEvidence.read(SMOKE, tmp_path)
    ledger = grids.primary()
    assert set(ledger.grid) == {"vqhead"}
    expected = EV.primary_rows(EV.vq_evidence(SMOKE, tmp_path))
    assert len(ledger) == len(expected) == len(SMOKE.vq_grid.families) - 1
    assert np.allclose(ledger.p_holm.sort_values(), expected.p_holm.sort_values())
    assert (ledger.family_size == len(expected)).all()
    counts = grids.counts().set_index("grid")
    vq = EV.vq_evidence(SMOKE, tmp_path)
    assert counts.loc["vqhead", "comparisons"] == len(vq.task) + len(vq.cost) > len(expected)
    assert counts.loc["vqhead", "primary"] == len(expected)
    assert (counts.drop(index="vqhead")[["comparisons", "primary"]] == 0).all().all()
    assert grids.hier_gains is None
