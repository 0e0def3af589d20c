"""``fit``: the one training loop, free of model-specific code.

It seeds everything, moves model and data to the device (``"auto"`` = CUDA when present),
runs Adam over mini-batches, turns each batch's :class:`~mtvae.terms.Terms` into gradients
with a combiner (``"sum"`` = the plain objective), evaluates the validation loss every
epoch, stops early when it no longer improves, and restores the best weights. With a
``checkpoint`` path it saves its complete state atomically after every epoch and resumes
from it; a finished checkpoint is simply loaded (train-or-load). A non-finite or exploding
loss, or exploding weights, stop training at once with
:class:`~mtvae.errors.TrainingDivergedError` (the rule: :mod:`mtvae.guard`).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import check_same_columns
from mtvae.device import resolve_device, seed_everything
from mtvae.errors import MTVAEError, TrainingDivergedError, check_positive
from mtvae.guard import DivergenceGuard, parameter_norm
from mtvae.moo import Combiner, ConflictLog, get_combiner
from mtvae.progress import EpochProgress
from mtvae.terms import Terms


@dataclass
class FitResult:
    """What a training run did: per-epoch history and the selected (best) epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    stopped_early: bool = False
    epoch_cap: int = 0  # the ``epochs`` it was allowed (0: not recorded, an old checkpoint)
    seconds: float = 0.0
    device: str = "cpu"
    resumed_from: int = 0
    diagnostics: dict[str, object] | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@torch.no_grad()
def evaluate_loss(model: nn.Module, split: Split, batch_size: int = 500) -> float:
    """Mean of ``loss_terms(batch).total()`` over a split (model in eval mode)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=split.x.device)
    n = 0
    for batch in split.batches(batch_size):
        m = len(batch["x"])
        total += model.loss_terms(batch).total().double() * m
        n += m
    model.train(was_training)
    return float(total) / n


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a checkpoint is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # an interrupted save (Ctrl-C) leaves no temporary file behind
        tmp.unlink(missing_ok=True)
        raise


def _checkpoint_error(path: Path, problem: str) -> MTVAEError:
    return MTVAEError(
        f"checkpoint {path} {problem}; delete it (the run then trains from scratch) or pass "
        "another checkpoint path"
    )


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, object]:
    """``torch.load`` of a fit checkpoint; garbage, truncated or foreign files are one error."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # UnpicklingError, EOFError, RuntimeError (zip), ...
        raise _checkpoint_error(path, f"cannot be read ({type(err).__name__}: {err})") from None
    keys = ("settings", "model", "optimizer", "best_state", "result", "epoch", "done")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise _checkpoint_error(path, "is not a checkpoint written by mtvae.train.fit")
    return state


def load_checkpoint(path: Path, device: torch.device, settings: dict[str, Any]
                    ) -> dict[str, Any]:
    """A checkpoint written with exactly these ``settings`` (else one clear error)."""
    state = _read_checkpoint(path, device)
    if state["settings"] != settings:
        raise MTVAEError(
            f"checkpoint {path} was written with other settings "
            f"{state['settings']} (now {settings}); delete it or use another path"
        )
    return state


def check_fit_args(epochs: int, lr: float, patience: int | None, monitor_every: int | None,
                   val_every: int) -> None:
    """The argument checks shared by :func:`fit` and the stacked engine."""
    if not isinstance(epochs, int) or epochs < 1:
        raise MTVAEError(f"epochs must be a positive integer, got {epochs!r}")
    check_positive("lr", lr)
    if patience is not None and patience < 1:
        raise MTVAEError(f"patience must be ≥ 1 or None, got {patience!r}")
    if monitor_every is not None and (not isinstance(monitor_every, int) or monitor_every < 1):
        raise MTVAEError(f"monitor_every must be a positive integer or None, got {monitor_every!r}")
    if not isinstance(val_every, int) or val_every < 1:
        raise MTVAEError(f"val_every must be a positive integer (epochs), got {val_every!r}")


def make_optimizer(params: list[torch.Tensor] | Any, lr: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """Adam; fused on CUDA (one kernel for all parameters), PyTorch's default on the CPU
    (which keeps CPU runs bit-identical to the records made before)."""
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def stopping_rule(val: float, best: float, bad_epochs: int, val_every: int,
                  patience: int | None) -> tuple[bool, int, bool]:
    """Early stopping on a validation every ``val_every`` epochs.

    Returns ``(improved, bad_epochs, stop)``: a validation that does not improve on the
    best adds ``val_every`` epochs without improvement; the run stops once they reach
    ``patience`` epochs.
    """
    if val < best:
        return True, 0, False
    bad_epochs += val_every
    return False, bad_epochs, patience is not None and bad_epochs >= patience


@dataclass
class _FitState:
    """What :func:`fit` carries from one epoch to the next, and through a checkpoint."""

    result: FitResult
    best_state: dict[str, Any]  # the weights of the best validation so far
    bad_epochs: int = 0  # epochs since the best validation (see :func:`stopping_rule`)
    epoch: int = 0  # the last finished epoch
    log: ConflictLog | None = None  # gradient-conflict statistics (``monitor_every``)


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    combiner: str | Combiner = "sum",
    checkpoint: str | os.PathLike[str] | None = None,
    grad_clip: float | None = None,
    progress: str = "auto",
    desc: str = "fit",
    monitor_every: int | None = None,
    checkpoint_every: float = 0.0,
    val_every: int = 1,
    check_every: int = 25,
) -> FitResult:
    """Train ``model`` on ``data.train`` with early stopping on ``data.val``.

    Args:
        epochs: maximum number of passes over the training split.
        patience: stop after this many epochs without a better validation loss
            (``None``: never stop early; the best epoch is still restored).
        seed: seeds shuffling, dropout and sampling. The model's initial weights were
            drawn when it was built: call ``mtvae.seed(n)`` before building it to make the
            whole run reproducible.
        checkpoint: file to save to / resume from (see module docstring).
        grad_clip: clip the global gradient norm to this value.
        progress: ``auto`` (bar interactively, log lines in batch mode), ``bar``,
            ``log`` or ``none``.
        combiner: ``"sum"`` or a MOO spec (see :func:`mtvae.moo.get_combiner`).
        checkpoint_every: save the checkpoint at most every this many seconds (and always
            at the end); 0 saves after every epoch. Tiny tables run thousands of short
            epochs, where saving every epoch would dominate the run time.
        monitor_every: record gradient-conflict statistics every this many optimiser steps
            (counted over the whole run, so a table with one step per epoch is not observed
            at every step) into ``FitResult.diagnostics`` (see :mod:`mtvae.moo.diagnostics`).
        val_every: validate (and decide early stopping) every this many epochs and at the
            last one; tables with one step per epoch need not validate every step.
        check_every: per-step losses stay on the device; every this many steps (and at the
            end of each epoch) one read checks that they are finite.

    Returns:
        A :class:`FitResult`; ``model`` holds the best weights, on ``device``.
    """
    check_fit_args(epochs, lr, patience, monitor_every, val_every)
    check_same_columns(getattr(model, "schema", None), data.info.get("schema"), "data")
    dev = resolve_device(device)
    comb = get_combiner(combiner)
    settings = _fit_settings(epochs, batch_size, lr, patience, seed, comb, grad_clip, val_every)

    seed_everything(seed)
    model.to(dev)
    data = data.to(dev)
    optimizer = make_optimizer(model.parameters(), lr, dev)
    shuffle_gen = torch.Generator().manual_seed(seed)
    run = _FitState(FitResult(device=str(dev), epoch_cap=epochs),
                    copy.deepcopy(model.state_dict()))
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    last_save = time.perf_counter()
    if ckpt_path is not None and ckpt_path.exists():
        run, finished = _resume(ckpt_path, dev, settings, model, optimizer, shuffle_gen, comb)
        run.result.epoch_cap = epochs  # a resumed checkpoint was written with the same cap
        if finished:  # train-or-load: a finished run is only loaded
            model.load_state_dict(run.best_state)
            return run.result

    guard = DivergenceGuard(lr=lr)  # the rule: see mtvae.guard
    guard.start(model)
    bar = EpochProgress(epochs, desc, progress, initial=run.epoch)
    started = time.perf_counter() - run.result.seconds
    try:
        for epoch in range(run.epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            row, run.log = _train_epoch(model, data, comb, optimizer, shuffle_gen, epoch,
                                        batch_size, lr, grad_clip, monitor_every, check_every,
                                        run.log, guard)
            _check_epoch(guard, model, row, epoch, math.ceil(len(data.train) / batch_size))
            if epoch % val_every == 0 or epoch == epochs:
                _validate(model, data.val, row, epoch, lr, val_every, patience, run)
            _record_epoch(run, row, epoch, t0, bar)
            done = run.result.stopped_early or epoch == epochs
            run.result.seconds = time.perf_counter() - started
            if ckpt_path is not None and (
                done or time.perf_counter() - last_save >= checkpoint_every
            ):
                last_save = time.perf_counter()
                _save_checkpoint(ckpt_path, settings, model, optimizer, shuffle_gen, comb, dev,
                                 run, done)
            if done:
                break
    finally:
        bar.close()
    model.load_state_dict(run.best_state)
    model.eval()
    return run.result


def _fit_settings(epochs: int, batch_size: int, lr: float, patience: int | None, seed: int,
                  comb: Combiner, grad_clip: float | None, val_every: int) -> dict[str, Any]:
    """The arguments a checkpoint must have been written with to be resumed."""
    settings: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                "patience": patience, "seed": seed, "combiner": comb.name,
                                "grad_clip": grad_clip}
    if val_every != 1:  # absent for the default, so checkpoints from before stay valid
        settings["val_every"] = val_every
    return settings


def _resume(path: Path, device: torch.device, settings: dict[str, Any], model: nn.Module,
            optimizer: torch.optim.Optimizer, shuffle_gen: torch.Generator, comb: Combiner
            ) -> tuple[_FitState, bool]:
    """Restore model, optimiser, RNGs and combiner from the checkpoint at ``path``.

    Returns the run's state and whether the checkpointed run had finished.
    """
    state = load_checkpoint(path, device, settings)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:  # size mismatch, other layers
        what = " ".join(str(err).split())[:300] or type(err).__name__
        raise _checkpoint_error(path, f"holds another architecture ({what})") from None
    result = FitResult(**state["result"])
    run = _FitState(result, state["best_state"], state["bad_epochs"], state["epoch"])
    shuffle_gen.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    result.resumed_from = run.epoch
    comb.load_state_dict(state.get("combiner", {}))
    run.log = state.get("conflict_log")
    return run, bool(state["done"])


def _check_epoch(guard: DivergenceGuard, model: nn.Module, row: dict[str, float], epoch: int,
                 steps: int) -> None:
    """The divergence guard on the epoch's mean loss, task terms and the weights' norm."""
    guard.check(row["loss"], epoch, steps - 1, param_norm=parameter_norm(model),
                terms={k: v for k, v in row.items() if k.startswith("task/")})


def _validate(model: nn.Module, val: Split, row: dict[str, float], epoch: int, lr: float,
              val_every: int, patience: int | None, run: _FitState) -> None:
    """One validation: record ``val_loss`` in ``row``, keep the best weights, and decide
    early stopping (``run.result.stopped_early``); a non-finite loss stops training."""
    row["val_loss"] = evaluate_loss(model, val)
    if not math.isfinite(row["val_loss"]):
        raise TrainingDivergedError(
            f"training stopped: the validation loss became {row['val_loss']} at "
            f"epoch {epoch}. Lower the learning rate (now {lr}) or set grad_clip."
        )
    improved, run.bad_epochs, run.result.stopped_early = stopping_rule(
        row["val_loss"], run.result.best_val, run.bad_epochs, val_every, patience)
    if improved:
        run.result.best_val, run.result.best_epoch = row["val_loss"], epoch
        run.best_state = copy.deepcopy(model.state_dict())


def _record_epoch(run: _FitState, row: dict[str, float], epoch: int, t0: float,
                  bar: EpochProgress) -> None:
    """Add the finished epoch to the history (and diagnostics) and report it."""
    row["seconds"] = time.perf_counter() - t0
    if run.log is not None:
        run.log.end_epoch(epoch)
        run.result.diagnostics = run.log.summary()
    run.result.history.append(row)
    run.epoch = epoch
    bar.update(epoch, {"loss": row["loss"], "val": row.get("val_loss", math.nan)})


def _save_checkpoint(path: Path, settings: dict[str, Any], model: nn.Module,
                     optimizer: torch.optim.Optimizer, shuffle_gen: torch.Generator,
                     comb: Combiner, device: torch.device, run: _FitState, done: bool) -> None:
    """The run's complete state after epoch ``run.epoch``, saved atomically (read back by
    :func:`_resume`)."""
    atomic_save(
        {"settings": settings, "model": model.state_dict(),
         "optimizer": optimizer.state_dict(), "best_state": run.best_state,
         "result": asdict(run.result), "bad_epochs": run.bad_epochs, "epoch": run.epoch,
         "shuffle_rng": shuffle_gen.get_state(), "torch_rng": torch.get_rng_state(),
         "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
         "combiner": comb.state_dict(), "conflict_log": run.log, "done": done},
        path,
    )


def _train_epoch(model: nn.Module, data: Dataset, comb: Combiner,
                 optimizer: torch.optim.Optimizer, shuffle_gen: torch.Generator, epoch: int,
                 batch_size: int, lr: float, grad_clip: float | None,
                 monitor_every: int | None, check_every: int, log: ConflictLog | None,
                 guard: DivergenceGuard) -> tuple[dict[str, float], ConflictLog | None]:
    """One pass over the training split; per-step scalars accumulate on the device."""
    sums: torch.Tensor | None = None
    names: list[str] = []
    since: torch.Tensor | None = None
    peak: torch.Tensor | None = None  # largest |loss| since the last check (NaN-propagating)
    n_seen = n_since = 0
    first = (epoch - 1) * math.ceil(len(data.train) / batch_size)  # steps before this epoch
    for step, batch in enumerate(
        data.train.batches(batch_size, shuffle=True, generator=shuffle_gen, train=True)
    ):
        optimizer.zero_grad(set_to_none=True)
        terms = model.loss_terms(batch)
        observe = monitor_every is not None and (first + step) % monitor_every == 0
        stats = comb.backward(terms, model, observe=observe)
        if stats is not None:
            if log is None:
                log = ConflictLog(list(terms.tasks), comb.space)
            log.add(stats)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        m = len(batch["x"])
        values = _term_vector(terms)
        if sums is None:
            names = ["loss", *[f"task/{k}" for k in terms.tasks],
                     *[f"reg/{k}" for k in terms.regularizers], *terms.stats]
        row = values * m
        sums = row if sums is None else sums + row
        since = row if since is None else since + row
        peak = values[0].abs() if peak is None else torch.maximum(peak, values[0].abs())
        n_since += m
        if (step + 1) % check_every == 0:
            _check_finite(since, names, epoch, step, lr)
            guard.check(peak, epoch, step, terms=_means(names, since, n_since))
            since = peak = None
            n_since = 0
        optimizer.step()
        n_seen += m
    assert sums is not None
    if since is not None:
        _check_finite(since, names, epoch, step, lr)
        guard.check(peak, epoch, step, terms=_means(names, since, n_since))  # type: ignore[arg-type]
    return {"epoch": float(epoch), **dict(zip(names, (sums / n_seen).tolist(),
                                              strict=True))}, log


def _means(names: list[str], since: torch.Tensor, n: int) -> dict[str, float]:
    """The per-example terms since the last check, for the guard's message (one read)."""
    return {k: v for k, v in zip(names, (since / max(n, 1)).tolist(), strict=True)
            if k.startswith("task/")}


def _term_vector(terms: Terms) -> torch.Tensor:
    """Total, tasks, regularisers and stats of one batch as one float64 vector (no sync)."""
    parts = [terms.total().detach(), *(v.detach() for v in terms.tasks.values()),
             *(v.detach() for v in terms.regularizers.values()),
             *(v.detach() for v in terms.stats.values())]
    return torch.stack([p.reshape(()).double() for p in parts])


def _check_finite(since: torch.Tensor, names: list[str], epoch: int, step: int,
                  lr: float) -> None:
    """One host read: the losses summed since the last check must be finite."""
    values = since.tolist()
    if math.isfinite(values[0]):
        return
    bad = [n for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    raise TrainingDivergedError(
        f"training stopped: the loss became non-finite at epoch {epoch} by step {step} "
        f"(non-finite: {', '.join(bad)}). Lower the learning rate (now {lr}), "
        "set grad_clip, or check the data for extreme values."
    )
