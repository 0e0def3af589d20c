"""How the multitask settings' kinds train and score one run, or several as one stack.

A kind of these grids is a *builder* (config -> model, its data, its combiner) and a
*scorer* (config, trained model, data, :class:`~mtvae.train.FitResult` -> metrics);
:func:`single` trains one run with ``fit`` and :func:`stacked` trains runs that differ only
in ``seed`` as one stacked job (:func:`mtvae.stack.fit_stacked`), each scored as
:func:`single` scores it. Every run early-stops on validation and records how it stopped
(:func:`convergence`); its checkpoint lets a killed run resume and is deleted once the
record, the durable state, is about to be written.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from mtvae.data import Dataset, load
from mtvae.experiments.kinds.registry import require
from mtvae.results import cache_dir, run_id
from mtvae.stack import fit_stacked
from mtvae.train import FitResult, fit


def convergence(result: FitResult, epochs: int) -> dict[str, Any]:
    """How the run stopped: epochs run, best epoch, whether patience stopped it, the cap."""
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "epoch_cap": int(epochs),
            "best_val": result.best_val, "train_seconds": result.seconds}


def checkpoint_path(kind: str, cfg: dict[str, Any]) -> Path:
    """Where a run's training checkpoint lives while it trains (under the cache)."""
    return cache_dir() / "grid" / f"{run_id(kind, cfg)}.pt"


def fit_settings(cfg: dict[str, Any], combiner: str) -> dict[str, Any]:
    """The keyword arguments of ``fit`` (and ``fit_stacked``) a run's config sets."""
    return {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "lr": cfg["lr"],
            "patience": cfg["patience"], "combiner": combiner, "checkpoint_every": 30.0,
            "progress": "none"}


def train(kind: str, cfg: dict[str, Any], model: nn.Module, data: Dataset, device: str,
          combiner: str = "sum", monitor_every: int | None = None) -> FitResult:
    """``fit`` with the run's checkpoint (a killed run resumes), deleted once it finished:
    the record written next is the durable state. ``monitor_every``: log the tasks'
    gradient statistics every this many steps (:class:`mtvae.moo.diagnostics.ConflictLog`)."""
    ckpt = checkpoint_path(kind, cfg)
    result = fit(model, data, seed=cfg["seed"], device=device, checkpoint=ckpt,
                 desc=f"{kind} {cfg.get('method', '')} seed={cfg['seed']}",
                 monitor_every=monitor_every, **fit_settings(cfg, combiner))
    model.eval()
    ckpt.unlink(missing_ok=True)
    return result


Built = tuple[nn.Module, Dataset, str]  # model, its data, its combiner
Builder = Callable[[dict[str, Any]], Built]
Scorer = Callable[[dict[str, Any], nn.Module, Dataset, FitResult], dict[str, Any]]


def single(kind: str, keys: tuple[str, ...], build: Builder, score: Scorer,
           config: dict[str, Any], device: str, monitor_every: int | None = None
           ) -> dict[str, Any]:
    """One run of ``kind``: its config checked for ``keys``, built, trained, scored."""
    require(config, keys, kind)
    model, data, combiner = build(config)
    return score(config, model, data, train(kind, config, model, data, device, combiner,
                                             monitor_every))


def stacked(kind: str, keys: tuple[str, ...], build: Builder, score: Scorer,
            configs: list[dict[str, Any]], device: str, monitor_every: int | None = None
            ) -> list[dict[str, Any] | BaseException]:
    """Runs that differ only in ``seed`` trained as one stacked job (:func:`fit_stacked`),
    then scored one by one as the single kind scores them."""
    for c in configs:
        require(c, keys, kind)
    built = [build(c) for c in configs]
    combiner = built[0][2]
    ckpts: list[Path | None] = [checkpoint_path(kind, c) for c in configs]
    settings = fit_settings(configs[0], combiner) | {"monitor_every": monitor_every}
    results = fit_stacked([b[0] for b in built], [b[1] for b in built],
                          seeds=[int(c["seed"]) for c in configs], device=device,
                          checkpoints=ckpts, desc=f"{kind} {configs[0].get('method', '')}",
                          **settings)
    out: list[dict[str, Any] | BaseException] = []
    for c, (model, data, _), r, path in zip(configs, built, results, ckpts, strict=True):
        if isinstance(r, BaseException):
            out.append(r)
            continue
        model.eval()
        try:
            out.append(score(c, model, data, r))
        except Exception as err:  # one member's scoring failing leaves the others
            out.append(err)
        if path is not None:
            path.unlink(missing_ok=True)
    return out


@lru_cache(maxsize=4)
def image_data(dataset: str, train_size: int | None, shapes_n: int) -> Dataset:
    """Dynamically binarised MNIST-5k or shapes, reused by a worker's later runs."""
    from mtvae.studies.base import binarized_images

    return binarized_images(dataset, train_size, shapes_n)


@lru_cache(maxsize=2)
def mnist(train_size: int | None) -> Dataset:
    """MNIST-5k, dynamically binarised, as Chapters 1 and 2 load it."""
    return load("mnist5k", binarize="dynamic", train_size=train_size)


def on_model(model: nn.Module, data: Dataset) -> Dataset:
    """``data`` on the device that ``fit`` left the model on (scores run there)."""
    return data.to(next(model.parameters()).device)
