"""``fit_stacked``: train S runs of one architecture as one stacked model.

Each member behaves like a separate :func:`mtvae.train.fit` run: its own data (mask, batch
order from its own generator), its own initialisation (the model it was given), its own
noise stream (:mod:`mtvae.rng`), its own combiner state, early stopping, best weights,
divergence check, checkpoint and :class:`~mtvae.train.FitResult`. Members never influence
each other; one that stops (patience, cap or divergence) leaves the stack. Per-step
scalars stay on the device and are read every ``check_every`` steps (the divergence
check) and at validation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtvae.data.base import Dataset, Split
from mtvae.device import resolve_device
from mtvae.errors import MTVAEError, TrainingDivergedError
from mtvae.guard import DivergenceGuard
from mtvae.moo import Combiner, ConflictLog, get_combiner
from mtvae.progress import EpochProgress
from mtvae.stack.combine import backward, stackable
from mtvae.stack.forward import Layout, StackedForward
from mtvae.stack.members import Stack
from mtvae.train import (
    FitResult,
    atomic_save,
    check_fit_args,
    load_checkpoint,
    make_optimizer,
    stopping_rule,
)

ENGINE = "stacked"


@dataclass
class _Member:
    """Everything a separate run would keep for itself."""

    index: int
    seed: int
    data: Dataset
    combiner: Combiner
    checkpoint: Path | None
    shuffle: torch.Generator
    noise: torch.Generator
    result: FitResult
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    epoch: int = 0
    log: ConflictLog | None = None
    error: BaseException | None = None
    done: bool = False
    sums: Tensor | None = None
    peak: Tensor | None = None  # largest |loss| since the last check (NaN-propagating)
    guard: DivergenceGuard | None = None
    optimizer_state: dict[str, Any] | None = field(default=None, repr=False)


def _stacked_split(splits: list[Split]) -> dict[str, Tensor]:
    sizes = {len(s) for s in splits}
    if len(sizes) != 1:
        raise MTVAEError(f"stacked members need splits of one size, got sizes {sorted(sizes)}; "
                         "use one split seed for all members or train them unstacked")
    return {k: torch.stack([s.tensors[k] for s in splits]) for k in splits[0].tensors}


def _noise(members: list[_Member], n_normal: int, n_uniform: int,
           dev: torch.device) -> tuple[Tensor, Tensor]:
    normals = torch.stack([torch.randn(n_normal, generator=m.noise, device=dev)
                           for m in members])
    uniforms = torch.stack([torch.rand(n_uniform, generator=m.noise, device=dev)
                            for m in members])
    return normals, uniforms


def _gather(tensors: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    rows = torch.arange(len(idx), device=idx.device)[:, None]
    return {k: v[rows, idx] for k, v in tensors.items()}


def _transformed(batch: dict[str, Tensor], members: list[_Member], split: str
                 ) -> dict[str, Tensor]:
    transform = getattr(members[0].data, split).transform
    if transform is None:
        return batch
    outs = [transform({k: v[s] for k, v in batch.items()}, m.shuffle)
            for s, m in enumerate(members)]
    return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}


@torch.no_grad()
def _evaluate(fwd: StackedForward, members: list[_Member], tensors: dict[str, Tensor],
              batch_size: int = 500) -> Tensor:
    """Mean plain objective per member over a split (eval mode): ``[S]``."""
    n = next(iter(tensors.values())).shape[1]
    total = torch.zeros(len(members), dtype=torch.float64, device=tensors["x"].device)
    for start in range(0, n, batch_size):
        batch = {k: v[:, start:start + batch_size] for k, v in tensors.items()}
        lay = fwd.layout(batch, training=False)
        normals, uniforms = _noise(members, lay.n_normal, lay.n_uniform, batch["x"].device)
        packed = fwd(batch, normals, uniforms, training=False)
        total += packed.totals().double() * batch["x"].shape[1]
    return total / n


def _checkpoint(m: _Member, stack: Stack, pos: int, opt: torch.optim.Optimizer,
                settings: dict[str, Any]) -> None:
    if m.checkpoint is None:
        return
    model = m.best_state if m.done else stack.state(pos)
    atomic_save({
        "settings": settings, "model": model,
        "optimizer": None if m.done else stack.optimizer_slice(opt, pos),
        "best_state": m.best_state, "result": asdict(m.result), "bad_epochs": m.bad_epochs,
        "epoch": m.epoch, "shuffle_rng": m.shuffle.get_state(),
        "noise_rng": m.noise.get_state(), "combiner": m.combiner.state_dict(),
        "conflict_log": m.log, "done": m.done, "engine": ENGINE}, m.checkpoint)


def _own(settings: dict[str, Any], m: _Member) -> dict[str, Any]:
    """A member's settings as its checkpoint records them (its seed and its combiner)."""
    own = {k: v for k, v in settings.items() if k != "combiners"}
    return own | {"seed": m.seed, "combiner": m.combiner.name}


def _resume(m: _Member, settings: dict[str, Any], dev: torch.device) -> dict[str, Tensor] | None:
    """Load a member's checkpoint; returns its current weights (or None when fresh)."""
    if m.checkpoint is None or not m.checkpoint.exists():
        return None
    state = load_checkpoint(m.checkpoint, dev, settings)
    m.result = FitResult(**state["result"])
    m.result.resumed_from = state["epoch"]
    m.best_state, m.bad_epochs, m.epoch = state["best_state"], state["bad_epochs"], state["epoch"]
    m.shuffle.set_state(state["shuffle_rng"])
    m.noise.set_state(state["noise_rng"])
    m.combiner.load_state_dict(state.get("combiner", {}))
    m.log, m.done = state.get("conflict_log"), state["done"]
    m.optimizer_state = state["optimizer"]
    return state["model"]


def fit_stacked(
    models: list[nn.Module],
    datas: list[Dataset],
    *,
    seeds: list[int],
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    patience: int | None = None,
    device: str | torch.device = "auto",
    combiner: str | Sequence[str] = "sum",
    checkpoints: list[Path | None] | None = None,
    grad_clip: float | None = None,
    progress: str = "auto",
    desc: str = "stack",
    monitor_every: int | None = None,
    checkpoint_every: float = 0.0,
    val_every: int = 1,
    check_every: int = 25,
) -> list[FitResult | BaseException]:
    """Train ``models[i]`` on ``datas[i]`` with seed ``seeds[i]``, all as one stacked model.

    Arguments are those of :func:`mtvae.train.fit`, one per member where they are lists;
    ``combiner`` may also be one spec per member (e.g. the variants of one method family),
    all plain sums or all activation-space methods.
    Returns one entry per member: its :class:`FitResult` (the model then holds its best
    weights, in eval mode) or the exception that stopped it (e.g.
    :class:`TrainingDivergedError` naming the member); the other members are unaffected.
    """
    S = len(models)
    if not (len(datas) == len(seeds) == S) or S == 0:
        raise MTVAEError(f"fit_stacked needs one dataset and one seed per model; got {S} "
                         f"models, {len(datas)} datasets, {len(seeds)} seeds")
    checkpoints = checkpoints or [None] * S
    check_fit_args(epochs, lr, patience, monitor_every, val_every)
    dev = resolve_device(device)
    specs = [combiner] * S if isinstance(combiner, str) else list(combiner)
    if len(specs) != S:
        raise MTVAEError(f"fit_stacked got {len(specs)} combiners for {S} models; give one "
                         "spec for all or one per model")
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience,
                "grad_clip": grad_clip, "val_every": val_every, "engine": ENGINE}
    members = []
    for i in range(S):
        comb = get_combiner(specs[i])
        if not stackable(comb):
            raise MTVAEError(f"{comb.name!r} cannot train inside a stack; train it unstacked "
                             "(--no-stack)")
        members.append(_Member(
            i, seeds[i], datas[i].to(dev), comb,
            None if checkpoints[i] is None else Path(checkpoints[i]),  # type: ignore[arg-type]
            torch.Generator().manual_seed(seeds[i]),
            torch.Generator(device=dev).manual_seed(seeds[i] * 7919 + 104729),
            FitResult(device=str(dev))))
    settings = settings | {"combiners": [m.combiner.name for m in members]}
    weights = {i: _resume(m, _own(settings, m), dev) for i, m in enumerate(members)}
    todo = [m for m in members if not m.done]
    for epoch0 in sorted({m.epoch for m in todo}):  # normally one group: all at one epoch
        group = [m for m in todo if m.epoch == epoch0]
        _train(group, [models[m.index] for m in group], [weights[m.index] for m in group],
               dev, settings, epochs, batch_size, patience, grad_clip, progress, desc,
               monitor_every, checkpoint_every, val_every, check_every)
    out: list[FitResult | BaseException] = []
    for m, model in zip(members, models, strict=True):
        if m.error is not None:
            out.append(m.error)
            continue
        assert m.best_state is not None
        model.to(dev).load_state_dict(m.best_state)
        model.eval()
        out.append(m.result)
    return out


class _StackRun:
    """The live state of one stacked job: the stack, its optimiser and the members' data."""

    def __init__(self, members: list[_Member], models: list[nn.Module],
                 weights: list[dict[str, Tensor] | None], dev: torch.device,
                 settings: dict[str, Any]) -> None:
        self.members, self.dev, self.settings = members, dev, settings
        self.stack = Stack(models, dev)
        for pos, w in enumerate(weights):
            if w is not None:
                self.stack.load(pos, w)
        self.opt = make_optimizer(list(self.stack.params.values()), settings["lr"], dev)
        norms = self.param_norms().tolist()
        for pos, m in enumerate(members):
            m.guard = DivergenceGuard(lr=settings["lr"])
            m.guard.param_scale = max(norms[pos], 1.0)
            if m.optimizer_state is not None:
                self.stack.load_optimizer_slice(self.opt, pos, m.optimizer_state)
            if m.best_state is None:
                m.best_state = self.stack.state(pos)
        self.fwd = StackedForward(self.stack)
        self.train = _stacked_split([m.data.train for m in members])
        self.val = _stacked_split([m.data.val for m in members])
        self.order: Tensor | None = None
        self.layout: Layout | None = None  # of the last training batch

    def param_norms(self) -> Tensor:
        """Each member's global parameter norm ``[S]``."""
        return torch.stack([p.detach().reshape(len(p), -1).square().sum(1)
                            for p in self.stack.params.values()]).sum(0).sqrt()

    def keep(self, positions: list[int]) -> None:
        """Continue with the members at ``positions`` only (the others have stopped)."""
        if len(positions) == len(self.members):
            return
        self.members = [self.members[s] for s in positions]
        if not positions:
            return
        self.opt = self.stack.keep(positions, self.opt)
        index = torch.tensor(positions, device=self.dev)
        self.train = {k: v[index] for k, v in self.train.items()}
        self.val = {k: v[index] for k, v in self.val.items()}
        if self.order is not None:
            self.order = self.order[index]

    def check(self, epoch: int, step: int, tasks: tuple[str, ...],
              with_params: bool = False) -> None:
        """The divergence check: members with a non-finite or exploding loss (or, with
        ``with_params``, exploding weights; :mod:`mtvae.guard`) leave the stack."""
        sums = torch.stack([m.sums for m in self.members])  # type: ignore[misc]
        finite = torch.isfinite(sums).all(dim=1).tolist()
        norms = self.param_norms().tolist() if with_params else [None] * len(self.members)
        for s, m in enumerate(self.members):
            if not finite[s]:
                continue
            assert m.guard is not None
            peak = m.peak if m.peak is not None else torch.zeros(())  # nothing since the last
            try:
                m.guard.check(peak, epoch, max(step, 0), param_norm=norms[s])
            except TrainingDivergedError as err:
                m.error = TrainingDivergedError(
                    f"member {m.index} (seed {m.seed}) of the stack: {err}")
                finite[s] = False
            m.peak = None
        if all(finite):
            return
        where = f"by step {step}" if step >= 0 else "by the end of the epoch"
        for m, ok in zip(self.members, finite, strict=True):
            if not ok and m.error is None:
                assert m.sums is not None
                bad = [t for t, v in zip(tasks, m.sums[1:1 + len(tasks)].tolist(), strict=True)
                       if not math.isfinite(v)]
                m.error = TrainingDivergedError(
                    f"training stopped: member {m.index} (seed {m.seed}) of the stack: the loss "
                    f"became non-finite at epoch {epoch} {where} (tasks: "
                    f"{', '.join(bad) or 'the regularisers'}). Lower the learning rate (now "
                    f"{self.settings['lr']}), set grad_clip, or check the data for extreme "
                    "values.")
        self.keep([s for s, ok in enumerate(finite) if ok])

    def step(self, idx: Tensor, observe: bool, grad_clip: float | None) -> tuple[str, ...]:
        """One optimiser step of every active member on its own batch ``idx[s]``."""
        batch = _transformed(_gather(self.train, idx), self.members, "train")
        lay = self.fwd.layout(batch, training=True)
        normals, uniforms = _noise(self.members, lay.n_normal, lay.n_uniform, self.dev)
        self.opt.zero_grad(set_to_none=True)
        packed = self.fwd(batch, normals, uniforms, training=True)
        stats = backward(packed, [m.combiner for m in self.members], observe, lay.tasks,
                         self.stack.template, list(self.stack.params.values()))
        if grad_clip is not None:
            _clip_per_member(self.stack, grad_clip)
        self.opt.step()
        rows = torch.cat([packed.totals()[:, None], packed.tasks, packed.regularizers,
                          packed.stats], 1).detach().double() * idx.shape[1]
        peak = packed.totals().detach().abs()
        for s, m in enumerate(self.members):
            m.sums = rows[s] if m.sums is None else m.sums + rows[s]
            m.peak = peak[s] if m.peak is None else torch.maximum(m.peak, peak[s])
            if stats[s] is not None:
                if m.log is None:
                    m.log = ConflictLog(list(lay.tasks), m.combiner.space)
                m.log.add(stats[s])  # type: ignore[arg-type]
        self.layout = lay
        return lay.tasks


def _train(members: list[_Member], models: list[nn.Module],
           weights: list[dict[str, Tensor] | None], dev: torch.device,
           settings: dict[str, Any], epochs: int, batch_size: int, patience: int | None,
           grad_clip: float | None, progress: str, desc: str, monitor_every: int | None,
           checkpoint_every: float, val_every: int, check_every: int) -> None:
    run = _StackRun(members, models, weights, dev, settings)
    n = next(iter(run.train.values())).shape[1]
    start_epoch = members[0].epoch
    bar = EpochProgress(epochs, f"{desc} (stack of {len(members)})", progress,
                        initial=start_epoch)
    started = time.perf_counter() - max(m.result.seconds for m in members)
    last_save = time.perf_counter()
    per_epoch = math.ceil(n / batch_size)  # monitor_every counts steps over the whole run
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            run.order = torch.stack([torch.randperm(n, generator=m.shuffle)
                                     for m in run.members]).to(dev)
            for m in run.members:
                m.sums = None
            seen = 0
            for step, start in enumerate(range(0, n, batch_size)):
                assert run.order is not None
                idx = run.order[:, start:start + batch_size]
                observe = (monitor_every is not None
                           and ((epoch - 1) * per_epoch + step) % monitor_every == 0)
                tasks = run.step(idx, observe, grad_clip)
                seen += idx.shape[1]
                if (step + 1) % check_every == 0:
                    run.check(epoch, step, tasks)
                    if not run.members:
                        return
            run.check(epoch, -1, tasks, with_params=True)
            if not run.members:
                return
            validate = epoch % val_every == 0 or epoch == epochs
            val_loss = _evaluate(run.fwd, run.members, run.val).tolist() if validate else None
            lay = run.layout
            assert lay is not None
            names = ["loss", *[f"task/{t}" for t in lay.tasks],
                     *[f"reg/{r}" for r in lay.regularizers], *lay.stats]
            seconds = time.perf_counter() - t0
            for s, m in enumerate(run.members):
                assert m.sums is not None
                row = {"epoch": float(epoch),
                       **dict(zip(names, (m.sums / seen).tolist(), strict=True))}
                m.epoch = epoch
                if m.log is not None:
                    m.log.end_epoch(epoch)
                    m.result.diagnostics = m.log.summary()
                if val_loss is not None:
                    row["val_loss"] = val_loss[s]
                    if not math.isfinite(val_loss[s]):
                        m.error = TrainingDivergedError(
                            f"training stopped: member {m.index} (seed {m.seed}) of the stack: "
                            f"the validation loss became {val_loss[s]} at epoch {epoch}. "
                            f"Lower the learning rate (now {settings['lr']}) or set grad_clip.")
                        continue
                    improved, m.bad_epochs, stop = stopping_rule(
                        val_loss[s], m.result.best_val, m.bad_epochs, val_every, patience)
                    if improved:
                        m.result.best_val, m.result.best_epoch = val_loss[s], epoch
                        m.best_state = run.stack.state(s)
                    m.result.stopped_early = stop
                row["seconds"] = seconds
                m.result.history.append(row)
                m.done = m.result.stopped_early or epoch == epochs
                m.result.seconds = time.perf_counter() - started
            bar.update(epoch, {"active": len(run.members),
                               "val": min(val_loss) if val_loss else math.nan})
            save = time.perf_counter() - last_save >= checkpoint_every
            for s, m in enumerate(run.members):
                if m.error is None and (save or m.done):
                    _checkpoint(m, run.stack, s, run.opt, _own(settings, m))
            if save:
                last_save = time.perf_counter()
            run.keep([s for s, m in enumerate(run.members) if not m.done and m.error is None])
            if not run.members:
                break
    finally:
        bar.close()


def _clip_per_member(stack: Stack, max_norm: float) -> None:
    grads = [p.grad for p in stack.params.values() if p.grad is not None]
    norms = torch.stack([g.reshape(len(g), -1).square().sum(1) for g in grads]).sum(0).sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *[1] * (g.dim() - 1)))
