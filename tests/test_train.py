"""The trainer: determinism, checkpoint/resume, early stopping and the NaN guard."""

import pytest
import torch
from torch import nn

from mtvae import metrics as M
from mtvae.data import load
from mtvae.errors import MTVAEError, TrainingDivergedError
from mtvae.models import VAE
from mtvae.terms import Terms
from mtvae.train import fit


@pytest.fixture(scope="module")
def digits():
    return load("digits", binarize="dynamic", train_size=300)


def _model(seed=0):
    torch.manual_seed(seed)
    return VAE((1, 8, 8), 4, hidden=(32,))


def _metrics(model, ds):
    torch.manual_seed(123)
    nelbo = float(M.negative_elbo(model, ds.test).mean())
    return nelbo, float(M.iwae_nll(model, ds.test, 5).mean())


def test_same_seed_gives_same_metrics_on_cpu(digits):
    runs = []
    for _ in range(2):
        model = _model()
        res = fit(model, digits, epochs=3, seed=7, device="cpu", progress="none")
        runs.append((res.history[-1]["loss"], *_metrics(model, digits)))
    assert runs[0] == runs[1]
    other = _model()
    fit(other, digits, epochs=3, seed=8, device="cpu", progress="none")
    assert _metrics(other, digits) != runs[0][1:]


def test_resume_from_checkpoint_equals_uninterrupted_training(digits, tmp_path):
    kw = {"epochs": 4, "seed": 1, "device": "cpu", "progress": "none", "batch_size": 100}
    straight = _model()
    reference = fit(straight, digits, **kw)

    class Interrupt(Exception):
        pass

    ckpt = tmp_path / "run.pt"
    interrupted = _model()
    original = interrupted.loss_terms
    steps = {"n": 0}

    def flaky(batch):
        if torch.is_grad_enabled():  # training steps only (validation runs without grad)
            steps["n"] += 1
            if steps["n"] > 2 * 3 + 1:  # 3 batches per epoch: dies inside epoch 3
                raise Interrupt
        return original(batch)

    interrupted.loss_terms = flaky
    with pytest.raises(Interrupt):
        fit(interrupted, digits, checkpoint=ckpt, **kw)
    assert ckpt.exists()

    resumed = _model(seed=42)  # different init: everything must come from the checkpoint
    res = fit(resumed, digits, checkpoint=ckpt, **kw)
    assert res.resumed_from == 2
    assert res.epoch_cap == reference.epoch_cap == 4  # the cap travels with the result
    assert [h["loss"] for h in res.history] == [h["loss"] for h in reference.history]
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # A finished checkpoint is loaded, not retrained.
    again = _model(seed=99)
    res2 = fit(again, digits, checkpoint=ckpt, **kw)
    assert res2.history == res.history and res2.epoch_cap == 4
    for a, b in zip(again.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_with_other_settings_is_refused(digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(_model(), digits, epochs=1, seed=0, device="cpu", progress="none", checkpoint=ckpt)
    with pytest.raises(MTVAEError, match="other settings"):
        fit(_model(), digits, epochs=2, seed=0, device="cpu", progress="none", checkpoint=ckpt)


def test_early_stopping_restores_best_epoch(digits):
    model = _model()
    res = fit(model, digits, epochs=200, patience=2, lr=0.05, seed=0, device="cpu",
              progress="none")
    assert res.stopped_early and res.epoch_cap == 200
    assert res.epochs_run == res.best_epoch + 2
    from mtvae.studies.base import fit_info  # what a chapter's run records of it

    info = fit_info(res)
    assert (info["stopped_early"], info["epoch_cap"], info["best_epoch"]) == (
        True, 200, res.best_epoch)
    val = min(h["val_loss"] for h in res.history)
    assert res.best_val == val


class _Exploding(nn.Module):
    """Returns a finite loss for two steps, then NaN."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def loss_terms(self, batch):
        self.calls += 1
        value = self.w.sum() * (float("nan") if self.calls > 2 else 1.0)
        return Terms(tasks={"x": value}, regularizers={"kl": self.w.sum() * 0})


def test_nan_loss_stops_with_a_clear_message(digits):
    # checked at the end of the epoch (3 steps) although the NaN appears at step 2 (0-based)
    with pytest.raises(TrainingDivergedError, match=r"loss became non-finite at epoch 1 by "
                                                    r"step 2 .*task/x.*Lower the learning rate"):
        fit(_Exploding(), digits, epochs=3, device="cpu", progress="none")


def test_nan_guard_fires_within_check_every_steps(digits):
    model = _Exploding()
    with pytest.raises(TrainingDivergedError, match=r"epoch 1 by step 3 "):
        fit(model, load("digits", train_size=800), epochs=3, device="cpu", progress="none",
            check_every=2)  # 8 steps per epoch: NaN from the 3rd step, seen after the 4th
    assert model.calls == 4


def test_validation_every_k_epochs_counts_patience_in_epochs(digits):
    res = fit(_model(), digits, epochs=9, val_every=3, patience=3, device="cpu",
              progress="none")
    validated = [int(r["epoch"]) for r in res.history if "val_loss" in r]
    assert validated[:3] == [3, 6, 9][:len(validated)] and res.best_epoch % 3 == 0
    with pytest.raises(MTVAEError, match="val_every must be"):
        fit(_model(), digits, epochs=2, val_every=0, progress="none")


def test_bad_training_arguments(digits):
    with pytest.raises(MTVAEError, match="epochs must be"):
        fit(_model(), digits, epochs=0, progress="none")
    with pytest.raises(MTVAEError, match="valid methods are: sum, "):
        fit(_model(), digits, epochs=1, combiner="pcgrad-typo", progress="none")
    with pytest.raises(MTVAEError, match="valid devices are"):
        fit(_model(), digits, epochs=1, device="tpu", progress="none")
    if not torch.cuda.is_available():
        with pytest.raises(MTVAEError, match="no CUDA GPU"):
            fit(_model(), digits, epochs=1, device="cuda", progress="none")


def test_progress_modes(digits, monkeypatch, tmp_path, capsys):
    log = tmp_path / "train.log"
    monkeypatch.setenv("MTVAE_BATCH", "1")
    monkeypatch.setenv("MTVAE_LOG", str(log))
    import logging

    logging.getLogger("mtvae").handlers.clear()
    fit(_model(), digits, epochs=2, device="cpu", desc="demo")
    logging.getLogger("mtvae").handlers.clear()
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "demo epoch 2/2" in lines[-1]
    assert "it/s" not in capsys.readouterr().err


# ------------------------------------------------------------- issue 15: divergence guard


def test_exploding_loss_stops_with_epoch_step_and_terms(digits):
    # before: lr=1e6 reached a loss of ~1e35 and fit returned normally
    with pytest.raises(TrainingDivergedError,
                       match=r"(loss|parameter norm) exploded to .* at epoch 1, step \d+ "
                             r"\(task/x=.*\)\. "
                             r"Lower the learning rate \(now 1000000\.0\)") as info:
        fit(_model(), digits, epochs=3, lr=1e6, device="cpu", progress="none")
    assert isinstance(info.value, MTVAEError)  # before: a bare RuntimeError


def test_divergence_guard_rule():
    from mtvae.guard import DivergenceGuard, parameter_norm

    guard = DivergenceGuard(loss_factor=100, param_factor=10)
    guard.start([torch.ones(4)])  # initial norm 2
    guard.check(torch.tensor(5.0), 1, 0, param_norm=torch.tensor(19.0))  # sets scale 5
    guard.check(-499.0, 1, 1)  # 99.8 x the first loss: allowed
    with pytest.raises(TrainingDivergedError, match=r"loss exploded to -501, .* epoch 1, step 2"):
        guard.check(-501.0, 1, 2)
    with pytest.raises(TrainingDivergedError,
                       match=r"parameter norm exploded to 21, .* epoch 2, step 3"):
        guard.check(1.0, 2, 3, param_norm=21.0)
    # accumulated on the device: a running max of |loss| keeps a NaN from any step
    running = torch.zeros(())
    for value in (1.0, float("nan"), 2.0):
        running = torch.maximum(running, torch.tensor(value).abs())
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 3, step 9 "
                                                     r"\(a=1\)"):
        guard.check(running, 3, 9, terms={"a": torch.tensor(1.0)})
    with pytest.raises(TrainingDivergedError, match="a loss term became non-finite"):
        DivergenceGuard().check(1.0, 1, 0, terms={"a": float("inf")})
    assert float(parameter_norm(nn.Linear(2, 2))) > 0
    with pytest.raises(MTVAEError, match="loss_factor must be a finite number > 1"):
        DivergenceGuard(loss_factor=0.5)


# ------------------------------------------------------- issue 15: broken checkpoints


def test_garbage_truncated_or_foreign_checkpoints_are_one_clear_error(digits, tmp_path):
    kw = {"epochs": 1, "device": "cpu", "progress": "none"}
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(MTVAEError, match=rf"checkpoint {garbage} cannot be read .*delete it"):
        fit(_model(), digits, checkpoint=garbage, **kw)  # before: UnpicklingError

    good = tmp_path / "good.pt"
    fit(_model(), digits, checkpoint=good, **kw)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MTVAEError, match=rf"checkpoint {truncated} cannot be read"):
        fit(_model(), digits, checkpoint=truncated, **kw)

    other = VAE((1, 8, 8), 3, hidden=(32,))  # same settings, another architecture
    with pytest.raises(MTVAEError, match=rf"checkpoint {good} holds another architecture "
                                         r"\(.*size mismatch.*delete it"):
        fit(other, digits, checkpoint=good, **kw)  # before: RuntimeError, file not named

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(MTVAEError, match=r"is not a checkpoint written by mtvae\.train\.fit"):
        fit(_model(), digits, checkpoint=foreign, **kw)
