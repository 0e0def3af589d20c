"""Chapter 3 experiments: multimodal VAEs (PoE, MoE, MoPoE) on paired digits, with and
without MOO.

Each run is one (fusion, method, seed): a :class:`~mtvae.models.multimodal.MultimodalVAE`
trained on MNIST-5k images paired with 8x8 digits and labels, then scored on the test pairs
by *coherence* (Shi et al. 2019): a classifier reads a generated modality and we count how
often it names the class of the example it was generated from. The MNIST classifier is
chapter 2's (its record and checkpoint are reused, not retrained); the 8x8 classifier is
trained here once, as a cached run; the label modality's prediction is its argmax. Every
run goes through :func:`mtvae.results.cached_run` and :func:`mtvae.train.fit` with a
checkpoint, so re-executing the chapter loads instead of retraining.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtvae.data import Dataset, load
from mtvae.fusion import nonempty_subsets
from mtvae.models import Classifier
from mtvae.models.multimodal import MODALITIES, MultimodalVAE
from mtvae.profiles import MultimodalStudy, Profile
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.stats import Metric, paired_comparison
from mtvae.studies import vqvaes
from mtvae.studies.base import ChapterStudy
from mtvae.train import FitResult, fit

if TYPE_CHECKING:
    from mtvae.studies.evidence import Evidence

Classify = Callable[[Tensor], Tensor]  # generated data -> predicted class


class Study(ChapterStudy):
    """Shared context of the section's runs."""

    chapter = "03"

    @property
    def s(self) -> MultimodalStudy:
        return self.profile.multimodal

    def data(self) -> Dataset:
        """The paired digits: dynamically binarised MNIST, grey 8x8 digits, labels."""
        if "paired" not in self._data:
            self._data["paired"] = load("paired-digits", binarize="dynamic",
                                        train_size=self.s.train_size).to(self.device)
        return self._data["paired"]

    # -- classifiers that score generated modalities ----------------------------------------
    def mnist_classifier(self) -> tuple[Classifier, dict[str, Any]]:
        """Chapter 2's MNIST classifier (same profile), loaded from its record and checkpoint."""
        return vqvaes.classifier(vqvaes.Study(self.profile, device=self.device,
                                              progress=self.progress))

    def digit_classifier_config(self) -> dict[str, Any]:
        return {"model": "digit-classifier", "epochs": self.s.digit_classifier_epochs,
                "patience": 5, "batch_size": 50, "lr": 2e-3, "split_seed": 0, "seed": 0,
                "device": self.device}

    def digit_classifier(self) -> tuple[Classifier, dict[str, Any]]:
        """The same CNN, 8x8 version, trained on the grey scikit-learn digits (one seed)."""
        cfg = self.digit_classifier_config()
        if "digits" not in self._data:
            self._data["digits"] = load("digits").to(self.device)
        data = self._data["digits"]
        torch.manual_seed(0)
        model = Classifier((1, 8, 8))
        res = self._fit("digit-classifier", cfg, model, data)

        def compute() -> dict[str, Any]:
            probs = model.predict_proba(data.test.x)
            acc = float((probs.argmax(1) == data.test.y.cpu()).float().mean())
            return {"test_accuracy": acc, "best_epoch": res.best_epoch,
                    "epochs_run": res.epochs_run, "train_seconds": res.seconds}

        return model, cached_run(self.grid, "digit-classifier", cfg, compute, device=self.device)

    def classifier_configs(self) -> dict[str, Any]:
        """What identifies the two classifiers (part of every run's config, so that a change
        of either reruns the scores), known without loading them."""
        vq = self.profile.vq
        return {"mnist": {"grid": f"ch02-{self.profile.name}", "epochs": vq.classifier_epochs,
                          "train_size": vq.train_size},
                "digit": self.digit_classifier_config()}

    def classifiers(self) -> tuple[dict[str, Classify], dict[str, float]]:
        """Per modality, a function from generated data to predicted classes, and the
        classifiers' test accuracies on real data (the ceiling of coherence)."""
        if "classifiers" not in self._data:
            mnist, mrec = self.mnist_classifier()
            digit, drec = self.digit_classifier()
            classify: dict[str, Classify] = {
                "mnist": lambda x: mnist.predict_proba(x).argmax(1),
                "digit": lambda x: digit.predict_proba(x).argmax(1),
                "label": lambda p: p.argmax(-1).cpu(),
            }
            acc = {"mnist": mrec["metrics"]["test_accuracy"],
                   "digit": drec["metrics"]["test_accuracy"]}
            self._data["classifiers"] = (classify, acc)
        return self._data["classifiers"]  # type: ignore[return-value]

    # -- runs -------------------------------------------------------------------------------
    def _fit(self, name: str, cfg: dict[str, Any], model: torch.nn.Module, data: Dataset,
             **kw: Any) -> FitResult:
        ckpt = cache_dir() / self.grid / f"{run_id(name, cfg)}.pt"
        return fit(model, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                   lr=cfg["lr"], patience=cfg["patience"], seed=cfg["seed"],
                   device=self.device, checkpoint=ckpt, progress=self.progress,
                   desc=f"{name} seed={cfg['seed']}", **kw)

    def config(self, fusion: str, method: str, seed: int) -> dict[str, Any]:
        s = self.s
        return {"model": "multimodal", "fusion": fusion, "method": method, "seed": seed,
                "latent_dim": s.latent_dim, "hidden": s.hidden, "batch_size": s.batch_size,
                "lr": s.lr, "epochs": s.epochs, "patience": s.patience,
                "train_size": s.train_size, "binarize": "dynamic", "pair_seed": 0,
                "monitor_every": s.monitor_every, "n_samples": s.n_samples,
                "loglik_samples": s.loglik_samples, "device": self.device,
                "classifiers": self.classifier_configs()}

    def model(self, fusion: str, method: str = "sum", seed: int = 0
              ) -> tuple[MultimodalVAE, FitResult]:
        """A trained model (loaded from its checkpoint when it exists)."""
        cfg = self.config(fusion, method, seed)
        torch.manual_seed(seed)
        model = MultimodalVAE(cfg["latent_dim"], fusion, hidden=cfg["hidden"])
        res = self._fit("multimodal", cfg, model, self.data(), combiner=method,
                        monitor_every=cfg["monitor_every"])
        return model, res

    def run(self, fusion: str, method: str, seed: int) -> dict[str, Any]:
        """Train (or load) one model and score it: coherence, likelihoods, diagnostics."""
        cfg = self.config(fusion, method, seed)

        def compute() -> dict[str, Any]:
            model, res = self.model(fusion, method, seed)
            classify, accuracy = self.classifiers()
            gen = torch.Generator(device=self.data().test.x.device).manual_seed(seed)
            torch.manual_seed(seed)
            scores = evaluate(model, self.data().test.tensors, classify, cfg["n_samples"],
                              cfg["loglik_samples"], gen)
            steps = res.epochs_run * math.ceil(len(self.data().train) / cfg["batch_size"])
            return scores | {"classifier_accuracy": accuracy, "best_epoch": res.best_epoch,
                             "epochs_run": res.epochs_run, "train_seconds": res.seconds,
                             "ms_per_step": 1000 * res.seconds / max(steps, 1),
                             "diagnostics": _compact(res)}

        return cached_run(self.grid, "multimodal", cfg, compute, device=self.device)

    def all_runs(self) -> pd.DataFrame:
        """One row per (fusion, method, seed) of the profile: one column per coherence pair
        (``"mnist->digit"``, ...), directional coherences ``from_<m>`` / ``to_<m>`` (mean of
        the single-source pairs leaving / reaching m) and log-likelihoods ``ll_<m>``."""
        rows = []
        for fusion in self.s.fusions:
            for method in self.s.methods:
                for seed in self.s.seeds:
                    m = self.run(fusion, method, seed)["metrics"]
                    rows.append({"fusion": fusion, "method": method, "seed": seed, **m,
                                 **m["cross"], **directional(m["cross"]),
                                 **{f"ll_{k}": v for k, v in m["loglik"].items()}})
        return pd.DataFrame(rows)

    def from_label(self, fusion: str, method: str = "sum", seed: int = 0, per_class: int = 1
                   ) -> dict[str, Tensor]:
        """MNIST images and 8x8 digits generated from the labels 0..9 (``per_class`` each).

        The model is trained first when its checkpoint is missing (a cold cache), so only the
        generation runs without gradients.
        """
        model, _ = self.model(fusion, method, seed)
        y = torch.arange(10).repeat_interleave(per_class).to(self.data().test.x.device)
        gen = torch.Generator(device=y.device).manual_seed(seed)
        with torch.no_grad():
            return {m: model.cross_generate({"y": y}, ("label",), m, gen).cpu()
                    for m in ("mnist", "digit")}


def pair_name(source: tuple[str, ...], target: str) -> str:
    return f"{'+'.join(source)}->{target}"


def directional(cross: dict[str, float]) -> dict[str, float]:
    """Mean coherence of the single-source pairs leaving (``from_m``) and reaching (``to_m``)
    each modality m."""
    single = {tuple(k.split("->")): v for k, v in cross.items() if "+" not in k}
    out = {}
    for m in MODALITIES:
        out[f"from_{m}"] = float(np.mean([v for (a, _), v in single.items() if a == m]))
        out[f"to_{m}"] = float(np.mean([v for (_, b), v in single.items() if b == m]))
    return out


@torch.no_grad()
def evaluate(model: MultimodalVAE, test: dict[str, Tensor], classify: dict[str, Classify],
             n_samples: int, loglik_samples: int, generator: torch.Generator
             ) -> dict[str, Any]:
    """Coherence and per-modality likelihoods of a trained model on the test pairs.

    * ``cross[source->target]``: accuracy of ``target``'s classifier on ``target`` generated
      from ``source`` alone (one z ~ q(z | source) per example), for every proper subset;
    * ``joint_coherence``: the share of ``n_samples`` prior samples whose three generated
      modalities are given the same class;
    * ``loglik[m]``: mean E_q(z | all) log p(x_m | z) over the test pairs, in nats.
    """
    model.eval()
    y = test["y"].cpu()
    cross = {}
    for source in nonempty_subsets(MODALITIES)[:-1]:
        for target in (m for m in MODALITIES if m not in source):
            pred = classify[target](model.cross_generate(test, source, target, generator))
            cross[pair_name(source, target)] = float((pred == y).float().mean())
    samples = model.sample(n_samples, generator)
    preds = [classify[m](samples[m]) for m in MODALITIES]
    joint = (preds[0] == preds[1]) & (preds[1] == preds[2])
    singles = [v for k, v in cross.items() if "+" not in k]
    ll = model.modality_log_likelihood(test, loglik_samples)
    return {"cross": cross, "cross_mean": float(np.mean(singles)),
            "joint_coherence": float(joint.float().mean()),
            "sample_class_freq": np.bincount(preds[2].numpy(), minlength=10).tolist(),
            "loglik": {m: float(v.mean()) for m, v in ll.items()}}


def _compact(result: FitResult) -> dict[str, Any] | None:
    """Gradient diagnostics at z averaged over training (small enough for a record)."""
    diag = result.diagnostics
    if not diag or not diag["epochs"]:
        return None
    epochs = diag["epochs"]
    assert isinstance(epochs, list)
    w = np.array([e["steps"] for e in epochs], dtype=float)

    def avg(key: str) -> list[float]:
        return list((np.array([e[key] for e in epochs]) * w[:, None]).sum(0) / w.sum())

    return {"tasks": diag["tasks"], "norm": avg("norm"), "overlooked": avg("overlooked"),
            "cos_update": avg("cos_update"), "mean_cosine": diag["mean_cosine"],
            "first_epoch_norm": epochs[0]["norm"], "last_epoch_norm": epochs[-1]["norm"]}


def summary_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and sd over seeds of a scalar metric per fusion x method."""
    g = runs.groupby(["fusion", "method"])[metric]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()}).reset_index()


def long_coherence(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (fusion, method, seed, source->target) with its coherence."""
    return pd.DataFrame([{"fusion": r.fusion, "method": r.method, "seed": r.seed, "pair": k,
                          "source": k.split("->")[0], "target": k.split("->")[1],
                          "coherence": v}
                         for r in runs.itertuples() for k, v in r.cross.items()])


def long_loglik(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (fusion, method, seed, modality) with its test log-likelihood."""
    return pd.DataFrame([{"fusion": r.fusion, "method": r.method, "seed": r.seed,
                          "modality": m, "loglik": v}
                         for r in runs.itertuples() for m, v in r.loglik.items()])


def paired_gain(runs: pd.DataFrame, metric: str, method: str, reference: str = "sum"
                ) -> pd.DataFrame:
    """Per fusion: method minus reference, paired by seed (positive = method higher)."""
    pairs = runs[runs.method.isin([method, reference])]
    out = paired_comparison(pairs, Metric(metric, metric, higher_is_better=True),
                            by=("fusion",), reference=reference)
    return out.set_index("fusion")[["gain", "sd", "wins", "n"]]


def gains(runs: pd.DataFrame, metrics: list[str], reference: str = "sum") -> pd.DataFrame:
    """Paired gains (method - reference, by seed) of every other method, fusion and metric."""
    methods = [m for m in runs.method.unique() if m != reference]
    parts = {(metric, m): paired_gain(runs, metric, m, reference)
             for metric in metrics for m in methods}
    return pd.concat(parts, names=["metric", "method"]).reset_index()


def gradient_norms(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of each task's mean gradient norm at z over training (per run)."""
    return pd.DataFrame([{"fusion": r.fusion, "method": r.method, "seed": r.seed,
                          "modality": t, "norm": n}
                         for r in runs.itertuples() if r.diagnostics
                         for t, n in zip(r.diagnostics["tasks"], r.diagnostics["norm"],
                                         strict=True)])


def text_table(runs: pd.DataFrame, metrics: dict[str, str], fmt: str = ".3f") -> pd.DataFrame:
    """``mean ± sd`` over seeds per fusion x method (rows) and metric (columns, renamed)."""
    g = runs.groupby(["fusion", "method"], sort=False)
    cols = {}
    for metric, label in metrics.items():
        mean, sd = g[metric].mean(), g[metric].std(ddof=1)
        cols[label] = [f"{a:{fmt}}" if np.isnan(b) else f"{a:{fmt}} ± {b:{fmt}}"
                       for a, b in zip(mean, sd, strict=True)]
    return pd.DataFrame(cols, index=mean.index)


def consistent(gains_: pd.DataFrame, metric: str, sign: int,
               among: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of a :func:`gains` table for ``metric`` that moved the same way on every seed
    (``sign`` +1: higher on every seed, -1: lower), optionally only the (fusion, method)
    combinations listed in ``among``."""
    d = gains_[gains_.metric == metric]
    if among is not None:
        keys = set(zip(among.fusion, among.method, strict=True))
        d = d[[k in keys for k in zip(d.fusion, d.method, strict=True)]]
    return d[(d.wins == d.n) & (d.gain > 0)] if sign > 0 else d[(d.wins == 0) & (d.gain < 0)]


def combos(d: pd.DataFrame, fmt: str | None = None) -> str:
    """``"poe (imtl-g), moe (imtl-g)"``, with each gain when ``fmt`` is given."""
    return ", ".join(f"{r.fusion} ({r.method})" + (f": {r.gain:{fmt}}" if fmt else "")
                     for r in d.itertuples())


def grid_frame(arms: pd.DataFrame) -> pd.DataFrame:
    """The ``multimodal`` grid's arms (:func:`mtvae.studies.evidence.mm_evidence`) in the
    shape the section reads (:meth:`Study.all_runs`): one row per fusion x arm x seed with
    ``method`` the arm's name, one column per coherence pair, ``from_<m>`` / ``to_<m>``,
    ``ll_<m>`` and ``diagnostics`` (the modalities' mean gradient norms at z, from the
    record's ``conflict``), besides the record's own columns (its ``method`` as
    ``run_method``)."""
    rows = []
    for r in arms.to_dict("records"):
        c = r.get("conflict")
        diag = ({"tasks": list(c["norm"]), "norm": list(c["norm"].values())}
                if isinstance(c, dict) else None)
        rows.append({**r, "method": r["arm"], "run_method": r.get("method"), **r["cross"],
                     **directional(r["cross"]),
                     **{f"ll_{k}": v for k, v in r["loglik"].items()}, "diagnostics": diag})
    return pd.DataFrame(rows)


def grid_evidence(profile: Profile, root: str | Path | None = None, *, run: bool = False,
                  device: str = "auto") -> Evidence:
    """The ``multimodal`` grid (every fusion: the sum with its label weight chosen on
    validation against each MOO method with its smoothing chosen the same way), trained
    first when ``run``. Raises an :class:`~mtvae.errors.MTVAEError` naming the command while
    a fusion is incomplete: a partial grid is not reported."""
    from mtvae.studies.evidence import complete_evidence, mm_evidence

    return complete_evidence("multimodal", mm_evidence, profile, root, run=run, device=device,
                             chapter="Chapter 3.3")


def from_label_grid(arm_runs: pd.DataFrame, per_class: int = 1, device: str = "cpu"
                    ) -> dict[str, dict[str, Tensor]]:
    """Per row of ``arm_runs`` (``arm`` and the run's config columns, one seed per arm):
    MNIST images and 8x8 digits generated from the labels 0..9, by the model the grid
    trained for that run (:func:`mtvae.experiments.kinds.multimodal.mm_model`)."""
    from mtvae.experiments.kinds.multimodal import MM_KEYS, mm_model

    out = {}
    for r in arm_runs.to_dict("records"):
        cfg = {k: r[k] for k in MM_KEYS} | {"method": r.get("run_method") or r["method"]}
        model = mm_model(cfg, device)
        dev = next(model.parameters()).device
        y = torch.arange(10).repeat_interleave(per_class).to(dev)
        gen = torch.Generator(device=dev).manual_seed(int(cfg["seed"]))
        with torch.no_grad():
            out[r["arm"]] = {m: model.cross_generate({"y": y}, ("label",), m, gen).cpu()
                             for m in ("mnist", "digit")}
    return out
