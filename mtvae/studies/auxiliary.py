"""Chapter 3, "Auxiliary tasks": does a VAE with supervised heads beat a VAE plus a probe?

Two ways to get a classifier out of a VAE when only a fraction of the training labels may
be used (Kingma et al. 2014): (a) train a plain VAE without labels and fit a linear probe on
the posterior means of the labelled training images; (b) train a multitask VAE whose linear
heads on z learn from the labelled rows during training (:class:`~mtvae.models.MultitaskVAE`),
with the plain sum of tasks or with an MOO method balancing reconstruction against the
heads. Data: MNIST-5k with a digit head at several label fractions, and procedural shapes
(Matthey et al. 2017) with one head per generative factor at 100 % labels. Every run goes
through :func:`mtvae.results.cached_run`; records hold final metrics only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtvae.data import Dataset, Split
from mtvae.data.semisup import with_label_fraction
from mtvae.data.shapes import FACTOR_NAMES
from mtvae.models import VAE, MultitaskVAE
from mtvae.models.multitask import Target, factor_targets
from mtvae.probes import linear_probe
from mtvae.profiles import AuxStudy
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.studies.base import ChapterStudy, binarized_images
from mtvae.train import FitResult, fit

DATASETS = ("mnist5k", "shapes")
PLAIN = "plain + probe"


class Study(ChapterStudy):
    """Shared context of the section's runs."""

    chapter = "03"

    @property
    def s(self) -> AuxStudy:
        return self.profile.aux

    def data(self, name: str) -> Dataset:
        """MNIST-5k or shapes, dynamically binarised (Bernoulli likelihood)."""
        if name not in self._data:
            self._data[name] = binarized_images(name, self.s.train_size, self.s.shapes_n)
        return self._data[name]

    def fractions(self, dataset: str) -> tuple[float, ...]:
        """Label fractions studied: all of the profile's on MNIST, 100 % on shapes."""
        return tuple(self.s.label_fractions) if dataset == "mnist5k" else (1.0,)

    def heads(self, dataset: str) -> tuple[dict[str, int], dict[str, Target]]:
        """Head sizes and targets: the digit, or every generative factor of the shapes."""
        return heads_of(self.data(dataset), dataset)

    def config(self, dataset: str, method: str, seed: int, fraction: float | None
               ) -> dict[str, Any]:
        s = self.s
        cfg = {"dataset": dataset, "method": method, "seed": seed, "latent_dim": s.latent_dim,
               "hidden": list(s.hidden), "batch_size": s.batch_size, "lr": s.lr,
               "epochs": s.epochs, "patience": s.patience, "likelihood": "bernoulli",
               "binarize": "dynamic", "eval_samples": s.eval_samples, "device": self.device}
        cfg |= ({"train_size": s.train_size} if dataset == "mnist5k"
                else {"shapes_n": s.shapes_n})
        if method != PLAIN:
            cfg |= {"label_fraction": fraction, "label_weight": s.label_weight}
        return cfg

    def run(self, dataset: str, method: str, seed: int, fraction: float = 1.0
            ) -> dict[str, Any]:
        """Train (or load) one model and score it; the plain VAE is probed at every fraction."""
        cfg = self.config(dataset, method, seed, None if method == PLAIN else fraction)
        record_cfg = cfg | ({"probe_fractions": list(self.fractions(dataset))}
                            if method == PLAIN else {})
        return cached_run(self.grid, "aux", record_cfg, lambda: self._compute(cfg),
                          device=self.device)

    def model(self, dataset: str, method: str, seed: int, fraction: float = 1.0
              ) -> tuple[VAE, FitResult]:
        """The trained model of a run (loaded from its checkpoint when it exists)."""
        return self._trained(self.config(dataset, method, seed,
                                         None if method == PLAIN else fraction))

    def _trained(self, cfg: dict[str, Any]) -> tuple[VAE, FitResult]:
        base = self.data(cfg["dataset"])
        heads, targets = self.heads(cfg["dataset"])
        plain = cfg["method"] == PLAIN
        data = with_label_fraction(base, cfg.get("label_fraction") or 1.0, seed=cfg["seed"])
        torch.manual_seed(cfg["seed"])
        opts = {"hidden": tuple(cfg["hidden"]), "likelihood": "bernoulli"}
        model: VAE = (VAE(base.x_shape, cfg["latent_dim"], **opts) if plain else  # type: ignore[arg-type]
                      MultitaskVAE(base.x_shape, cfg["latent_dim"], heads=heads, targets=targets,
                                   label_weight=cfg["label_weight"], **opts))  # type: ignore[arg-type]
        ckpt = cache_dir() / self.grid / f"{run_id('aux', cfg)}.pt"
        result = fit(model, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                     lr=cfg["lr"], patience=cfg["patience"], seed=cfg["seed"],
                     device=self.device, combiner="sum" if plain else cfg["method"],
                     checkpoint=ckpt, progress=self.progress,
                     desc=f"{cfg['dataset']} {cfg['method']} seed={cfg['seed']}")
        return model, result

    def _compute(self, cfg: dict[str, Any]) -> dict[str, Any]:
        base = self.data(cfg["dataset"])
        _, targets = self.heads(cfg["dataset"])
        plain = cfg["method"] == PLAIN
        cpu0 = time.process_time()
        model, result = self._trained(cfg)
        out: dict[str, Any] = {
            **test_elbo(model, base, cfg["eval_samples"], cfg["seed"]),
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_seconds": result.seconds, "cpu_seconds": time.process_time() - cpu0,
        }
        z_train, z_test = codes(model, base.train.x), codes(model, base.test.x)
        probes = {}
        for frac in self.fractions(cfg["dataset"]) if plain else (cfg["label_fraction"],):
            lab = with_label_fraction(base, frac, seed=cfg["seed"]).train.tensors["labelled"] > 0
            probes[str(frac)] = {h: linear_probe(z_train[lab], label(base.train, t)[lab],
                                                 z_test, label(base.test, t))
                                 for h, t in targets.items()}
        out["probe_acc"] = probes
        if not plain:
            assert isinstance(model, MultitaskVAE)
            out["head_acc"] = head_accuracy(model, base)
        return out

    def all_runs(self) -> pd.DataFrame:
        """Long table: one row per (dataset, method, fraction, seed, head)."""
        rows = []
        for ds in DATASETS:
            for seed in self.s.seeds:
                rows += _rows(self.run(ds, PLAIN, seed))
                for frac in self.fractions(ds):
                    for method in self.s.methods:
                        rows += _rows(self.run(ds, method, seed, frac))
        return pd.DataFrame(rows)


def heads_of(data: Dataset, dataset: str) -> tuple[dict[str, int], dict[str, Target]]:
    """Head sizes and targets of ``data``: the digit (MNIST-5k) or every generative factor
    (shapes)."""
    if dataset == "mnist5k":
        return {"y_digit": int(data.n_classes or 10)}, {"y_digit": "y"}
    names = list(data.info["factor_names"])  # type: ignore[call-overload]
    targets = factor_targets(names, names)
    sizes = dict(zip(names, data.info["factor_sizes"], strict=True))  # type: ignore[call-overload]
    return {k: int(sizes[k[2:]]) for k in targets}, targets


def label(split: Any, target: Target) -> torch.Tensor:
    """The labels a target names, from a split's tensors (on the CPU)."""
    key, col = (target, None) if isinstance(target, str) else target
    y = split.tensors[key]
    return (y if col is None else y[:, col]).cpu()


@torch.no_grad()
def codes(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means of ``x`` (on the CPU)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model.encode(x[i : i + batch_size].to(dev))[0].cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def head_accuracy(model: MultitaskVAE, data: Dataset) -> dict[str, float]:
    """Test accuracy of every head at the posterior mean."""
    return split_head_accuracy(model, data.test)


@torch.no_grad()
def split_head_accuracy(model: MultitaskVAE, split: Split, labelled_only: bool = False
                        ) -> dict[str, float]:
    """Accuracy of every head at the posterior mean on ``split`` (with ``labelled_only``,
    on its rows whose ``labelled`` mask is set: the labels a semi-supervised run may use)."""
    model.eval()
    dev = next(model.parameters()).device
    probs = model.predict(split.x.to(dev))
    keep = (split.tensors["labelled"].cpu() > 0 if labelled_only
            else torch.ones(len(split), dtype=torch.bool))
    if not bool(keep.any()):
        return {h: float("nan") for h in probs}
    return {h: float((p.argmax(-1).cpu() == label(split, model.targets[h]))[keep]
                     .float().mean()) for h, p in probs.items()}


@torch.no_grad()
def test_elbo(model: nn.Module, data: Dataset, samples: int, seed: int) -> dict[str, float]:
    """Negative ELBO and KL per test image, averaged over ``samples`` posterior draws."""
    parts = split_elbo(model, data.test, samples, seed)
    return {"test_nelbo": parts["nelbo"], "test_kl": parts["kl"]}


@torch.no_grad()
def split_elbo(model: nn.Module, split: Split, samples: int, seed: int) -> dict[str, float]:
    """Negative ELBO and KL per image of ``split``, averaged over ``samples`` draws."""
    model.eval()
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    x = split.x.to(dev)
    vae_terms = VAE.loss_terms  # the ELBO alone, whatever heads the model has
    stats = [vae_terms(model, {"x": x}).stats for _ in range(samples)]  # type: ignore[arg-type]
    return {"nelbo": float(np.mean([float(t["nelbo"]) for t in stats])),
            "kl": float(np.mean([float(t["kl"]) for t in stats]))}


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    cfg, m = record["config"], record["metrics"]
    plain = cfg["method"] == PLAIN
    rows = []
    for frac, accs in m["probe_acc"].items():
        for head, acc in accs.items():
            rows.append({"dataset": cfg["dataset"], "method": cfg["method"],
                         "fraction": float(frac), "seed": cfg["seed"], "head": head[2:],
                         "probe_acc": acc,
                         "head_acc": np.nan if plain else m["head_acc"][head],
                         "test_nelbo": m["test_nelbo"], "test_kl": m["test_kl"],
                         "train_seconds": m["train_seconds"], "cpu_seconds": m["cpu_seconds"],
                         "epochs_run": m["epochs_run"]})
    return rows


def summary(runs: pd.DataFrame, dataset: str, metrics: tuple[str, ...] = (
        "test_nelbo", "head_acc", "probe_acc")) -> pd.DataFrame:
    """Mean and sd over seeds per (fraction, method, head) of each metric."""
    g = runs[runs.dataset == dataset].groupby(["fraction", "method", "head"])
    parts = {(k, stat): getattr(g[k], stat)() for k in metrics for stat in ("mean", "std")}
    return pd.DataFrame(parts).reset_index()


def gains(runs: pd.DataFrame, dataset: str = "mnist5k") -> pd.DataFrame:
    """Head accuracy of each MT-VAE minus the plain VAE's probe accuracy, paired by seed.

    One row per (fraction, method, head, seed); positive = the supervised head is better.
    """
    d = runs[runs.dataset == dataset]
    base = d[d.method == PLAIN].set_index(["fraction", "head", "seed"]).probe_acc
    mt = d[d.method != PLAIN].copy()
    ref = base.reindex(pd.MultiIndex.from_frame(mt[["fraction", "head", "seed"]])).to_numpy()
    mt["gain"] = mt.head_acc.to_numpy() - ref
    return mt[["fraction", "method", "head", "seed", "gain"]].reset_index(drop=True)


def _pm_text(values: pd.Series, scale: float, fmt: str) -> str:
    v = values.dropna().to_numpy(dtype=float) * scale
    if not len(v):
        return "–"
    return f"{v.mean():{fmt}}" if len(v) < 2 else f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}"


def results_table(runs: pd.DataFrame, dataset: str = "mnist5k") -> pd.DataFrame:
    """Rows (label fraction, method): test −ELBO, head and probe accuracy (%), mean ± sd."""
    d = runs[runs.dataset == dataset]
    order = [PLAIN, *[m for m in d.method.unique() if m != PLAIN]]
    rows = []
    for frac in sorted(d.fraction.unique(), reverse=True):
        for method in order:
            r = d[(d.fraction == frac) & (d.method == method)]
            rows.append({"labels": f"{100 * frac:g} %", "method": method,
                         "test −ELBO (nats)": _pm_text(r.test_nelbo, 1, ".2f"),
                         "head accuracy (%)": _pm_text(r.head_acc, 100, ".1f"),
                         "probe on z (%)": _pm_text(r.probe_acc, 100, ".1f")})
    return pd.DataFrame(rows).set_index(["labels", "method"])


def factor_table(runs: pd.DataFrame, dataset: str = "shapes",
                 order: Sequence[str] = FACTOR_NAMES) -> pd.DataFrame:
    """Rows = factors (in ``order``), columns = the plain VAE's probe and each head (%)."""
    d = runs[runs.dataset == dataset]
    heads = sorted(set(d["head"]), key=lambda h: (list(order).index(h) if h in order
                                                  else len(order), h))
    cols = {PLAIN: ("probe_acc", d[d.method == PLAIN])}
    cols |= {f"{m} (head)": ("head_acc", d[d.method == m]) for m in d.method.unique()
             if m != PLAIN}
    table = pd.DataFrame({name: [_pm_text(r[r["head"] == h][key], 100, ".1f") for h in heads]
                          for name, (key, r) in cols.items()}, index=heads)
    table.index.name = "factor"
    return table
