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

import torch
from torch import nn

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import check_same_columns
from mtvae.device import resolve_device, seed_everything
from mtvae.errors import MTVAEError, TrainingDivergedError, check_positive
from mtvae.guard import DivergenceGuard, parameter_norm
from mtvae.moo import Combiner, ConflictLog, get_combiner
from mtvae.progress import EpochProgress


@dataclass
class FitResult:
    """What a training run did: per-epoch history and the selected (best) epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    stopped_early: bool = False
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
    total, n = 0.0, 0
    for batch in split.batches(batch_size):
        m = len(batch["x"])
        total += float(model.loss_terms(batch).total()) * m
        n += m
    model.train(was_training)
    return total / n


def _atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        monitor_every: record gradient-conflict statistics every this many steps into
            ``FitResult.diagnostics`` (see :mod:`mtvae.moo.diagnostics`).

    Returns:
        A :class:`FitResult`; ``model`` holds the best weights, on ``device``.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise MTVAEError(f"epochs must be a positive integer, got {epochs!r}")
    check_positive("lr", lr)
    if patience is not None and patience < 1:
        raise MTVAEError(f"patience must be ≥ 1 or None, got {patience!r}")
    if monitor_every is not None and (not isinstance(monitor_every, int) or monitor_every < 1):
        raise MTVAEError(f"monitor_every must be a positive integer or None, got {monitor_every!r}")
    check_same_columns(getattr(model, "schema", None), data.info.get("schema"), "data")
    dev = resolve_device(device)
    comb = get_combiner(combiner)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience,
                "seed": seed, "combiner": comb.name, "grad_clip": grad_clip}

    seed_everything(seed)
    model.to(dev)
    data = data.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle_gen = torch.Generator().manual_seed(seed)
    result = FitResult(device=str(dev))
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs, start_epoch = 0, 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    log: ConflictLog | None = None
    last_save = time.perf_counter()

    if ckpt_path is not None and ckpt_path.exists():
        state = _read_checkpoint(ckpt_path, dev)
        if state["settings"] != settings:
            raise MTVAEError(
                f"checkpoint {ckpt_path} was written with other settings "
                f"{state['settings']} (now {settings}); delete it or use another path"
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:  # size mismatch, other layers
            what = " ".join(str(err).split())[:300] or type(err).__name__
            raise _checkpoint_error(ckpt_path, f"holds another architecture ({what})") from None
        best_state = state["best_state"]
        result = FitResult(**state["result"])
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"]
        shuffle_gen.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        result.resumed_from = start_epoch
        comb.load_state_dict(state.get("combiner", {}))
        log = state.get("conflict_log")
        if state["done"]:
            model.load_state_dict(best_state)
            return result

    guard = DivergenceGuard(lr=lr)  # the rule: see mtvae.guard
    guard.start(model)
    bar = EpochProgress(epochs, desc, progress, initial=start_epoch)
    started = time.perf_counter() - result.seconds
    done = False
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            sums: dict[str, float] = {}
            n_seen = 0
            for step, batch in enumerate(
                data.train.batches(batch_size, shuffle=True, generator=shuffle_gen, train=True)
            ):
                optimizer.zero_grad(set_to_none=True)
                terms = model.loss_terms(batch)
                loss = float(terms.total().detach())
                guard.check(loss, epoch, step, terms=terms.scalars())
                observe = monitor_every is not None and step % monitor_every == 0
                stats = comb.backward(terms, model, observe=observe)
                if stats is not None:
                    if log is None:
                        log = ConflictLog(list(terms.tasks), comb.space)
                    log.add(stats)
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                m = len(batch["x"])
                n_seen += m
                for k, v in {"loss": loss, **terms.scalars()}.items():
                    sums[k] = sums.get(k, 0.0) + v * m
            row = {"epoch": float(epoch), **{k: v / n_seen for k, v in sums.items()}}
            row["val_loss"] = evaluate_loss(model, data.val)
            if not math.isfinite(row["val_loss"]):
                raise TrainingDivergedError(
                    f"training stopped: the validation loss became {row['val_loss']} at epoch "
                    f"{epoch}. Lower the learning rate (now {lr}) or set grad_clip."
                )
            guard.check(row["loss"], epoch, step, param_norm=parameter_norm(model))
            row["seconds"] = time.perf_counter() - t0
            if log is not None:
                log.end_epoch(epoch)
                result.diagnostics = log.summary()
            result.history.append(row)
            if row["val_loss"] < result.best_val:
                result.best_val, result.best_epoch, bad_epochs = row["val_loss"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            bar.update(epoch, {"loss": row["loss"], "val": row["val_loss"]})
            if patience is not None and bad_epochs >= patience:
                result.stopped_early = True
            done = result.stopped_early or epoch == epochs
            result.seconds = time.perf_counter() - started
            if ckpt_path is not None and (
                done or time.perf_counter() - last_save >= checkpoint_every
            ):
                last_save = time.perf_counter()
                _atomic_save(
                    {"settings": settings, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "best_state": best_state,
                     "result": asdict(result), "bad_epochs": bad_epochs, "epoch": epoch,
                     "shuffle_rng": shuffle_gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                     "combiner": comb.state_dict(), "conflict_log": log, "done": done},
                    ckpt_path,
                )
            if done:
                break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return result
