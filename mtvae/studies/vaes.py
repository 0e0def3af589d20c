"""Chapter 1 experiments: VAEs on MNIST-5k and a known-answer check on pPCA data.

Every run goes through :func:`mtvae.results.cached_run` (one JSON record per run under
``results/ch01-<profile>/``) and :func:`mtvae.train.fit` with a checkpoint, so re-executing
the chapter loads instead of retraining and an interrupted execution resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtvae import metrics as M
from mtvae.bootstrap import Interval, paired_bootstrap_ci
from mtvae.data import Dataset, Split, linear_gaussian_log_marginal, load, make_ppca
from mtvae.device import resolve_device
from mtvae.errors import MTVAEError
from mtvae.experiments.runner import load_results, plan, run_grid
from mtvae.experiments.setting_grids import beta_choice, beta_grid
from mtvae.models import VAE
from mtvae.profiles import Profile, VAEStudy
from mtvae.results import cache_dir, cached_run, run_id
from mtvae.studies.base import ChapterStudy, fit_info
from mtvae.train import FitResult, fit


class Study(ChapterStudy):
    """Shared context of the chapter's runs."""

    chapter = "01"

    @property
    def s(self) -> VAEStudy:
        return self.profile.vae

    def mnist(self, binarize: str | None = "dynamic", exclude: tuple[int, ...] = ()) -> Dataset:
        key = (binarize, exclude)
        if key not in self._data:
            self._data[key] = load("mnist5k", binarize=binarize, exclude=exclude,
                                   train_size=self.s.train_size)
        return self._data[key]

    def base_config(self, **extra: Any) -> dict[str, Any]:
        s = self.s
        cfg = {"latent_dim": s.latent_dim, "hidden": list(s.hidden), "batch_size": s.batch_size,
               "lr": s.lr, "epochs": s.epochs, "patience": s.patience,
               "train_size": s.train_size, "arch": "mlp", "likelihood": "bernoulli",
               "beta": 1.0, "binarize": "dynamic", "device": self.device}
        return cfg | extra

    def train(self, name: str, config: dict[str, Any], data: Dataset,
              **model_kw: Any) -> tuple[VAE, FitResult]:
        """Train (or load from its checkpoint) the VAE that ``config`` describes."""
        model = VAE(data.x_shape, config["latent_dim"], likelihood=config["likelihood"],
                    arch=config["arch"], hidden=tuple(config["hidden"]), beta=config["beta"],
                    **model_kw)
        ckpt = cache_dir() / self.grid / f"{run_id(name, config)}.pt"
        result = fit(model, data, epochs=config["epochs"], batch_size=config["batch_size"],
                     lr=config["lr"], patience=config["patience"], seed=config["seed"],
                     device=self.device, checkpoint=ckpt, progress=self.progress,
                     desc=f"{name} seed={config['seed']}")
        return model, result

    def run(self, name: str, config: dict[str, Any], compute: Any) -> dict[str, Any]:
        return cached_run(self.grid, name, config, compute, device=self.device)


def fixed_binarization(split: Split, seed: int) -> Split:
    """A split with one seeded Bernoulli draw of its grey values (to score training data)."""
    gen = torch.Generator(device=split.x.device).manual_seed(seed)
    return Split({**split.tensors, "x": torch.bernoulli(split.x, generator=gen)})


def spread(split: Split, n: int, seed: int = 0) -> Split:
    """A fixed random subset of ``n`` examples (MNIST-5k is stored sorted by class, so a
    prefix would hold only the first digits)."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[: min(n, len(split))].sort().values.to(split.x.device))


def one_per_class(split: Split, per_class: int = 1) -> Tensor:
    """Indices of the first ``per_class`` examples of every class, class by class."""
    y = split.y.cpu()
    idx = [int(i) for c in y.unique() for i in (y == c).nonzero()[:per_class, 0]]
    return torch.tensor(idx, device=split.x.device)


def vae_metrics(model: VAE, data: Dataset, ks: tuple[int, ...], eval_size: int,
                seed: int) -> dict[str, Any]:
    """Test -ELBO, rate, distortion, IWAE-k NLLs, active units, KL per dimension."""
    torch.manual_seed(seed)
    dist, rate = M.elbo_parts(model, data.test)
    sub = spread(data.test, eval_size)
    au, activity = M.active_units(model, data.test)
    out: dict[str, Any] = {
        "test_nelbo": float((dist + rate).mean()), "test_rate": float(rate.mean()),
        "test_distortion": float(dist.mean()), "active_units": au,
        "activity": activity.tolist(), "kl_per_dim": M.kl_per_dim(model, data.test).tolist(),
        "iwae_eval_size": len(sub),
    }
    if data.info.get("binarize") == "dynamic":
        train_b = fixed_binarization(spread(data.train, len(data.test)), seed)
        out["train_nelbo"] = float(M.negative_elbo(model, train_b).mean())
    out["iwae_nll"] = {str(k): float(M.iwae_nll(model, sub, k).mean()) for k in ks}
    return out


# -- experiments ---------------------------------------------------------------------------
def _main_config(study: Study, seed: int, arch: str, epochs: int | None,
                 ks: tuple[int, ...] | None) -> dict[str, Any]:
    s = study.s
    return study.base_config(seed=seed, arch=arch, epochs=epochs or s.epochs,
                             iwae_ks=list(ks or s.iwae_ks), iwae_eval_size=s.iwae_eval_size)


def main_runs(study: Study, arch: str = "mlp", seeds: tuple[int, ...] | None = None,
              epochs: int | None = None, ks: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The reference Bernoulli VAE (dynamic binarisation) over seeds: one row per seed."""
    s = study.s
    data = study.mnist("dynamic")
    rows = []
    for seed in seeds or s.seeds:
        cfg = _main_config(study, seed, arch, epochs, ks)

        def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
            model, res = study.train("main", cfg, data)
            return fit_info(res) | vae_metrics(model, data, tuple(cfg["iwae_ks"]),
                                               cfg["iwae_eval_size"], cfg["seed"])

        rec = study.run("main", cfg, compute)
        rows.append({"arch": arch, "seed": seed, **rec["metrics"]})
    return pd.DataFrame(rows)


def main_model(study: Study, seed: int = 0, arch: str = "mlp", epochs: int | None = None,
               ks: tuple[int, ...] | None = None) -> tuple[VAE, Dataset]:
    """The trained reference model of one seed (loaded from its checkpoint)."""
    data = study.mnist("dynamic")
    model, _ = study.train("main", _main_config(study, seed, arch, epochs, ks), data)
    return model, data


def likelihood_models(study: Study, seed: int = 0) -> tuple[dict[str, VAE], pd.DataFrame]:
    """Bernoulli (binarised pixels) vs Gaussian with fixed / learned scale (grey pixels)."""
    grey = study.mnist(None)
    models, rows = {}, []
    for lik, binarize in (("bernoulli", "dynamic"), ("gaussian", None),
                          ("gaussian-learned", None)):
        data = study.mnist(binarize)
        cfg = study.base_config(seed=seed, likelihood=lik, binarize=binarize)
        model, res = study.train("likelihood", cfg, data)

        def compute(model: VAE = model, data: Dataset = data, res: FitResult = res
                    ) -> dict[str, Any]:
            dist, rate = M.elbo_parts(model, data.test)
            with torch.no_grad():
                recon = model.reconstruct(data.test.x)
            mse = float((recon.clamp(0, 1) - grey.test.x.to(recon.device)).square().mean())
            return fit_info(res) | {"test_nelbo": float((dist + rate).mean()),
                                     "test_rate": float(rate.mean()),
                                     "recon_mse_grey": mse,
                                     "active_units": M.active_units(model, data.test)[0]}

        rec = study.run("likelihood", cfg, compute)
        models[lik] = model
        rows.append({"likelihood": lik, "data": binarize or "grey", **rec["metrics"]})
    return models, pd.DataFrame(rows)


def latent_2d_model(study: Study, seed: int = 0) -> tuple[VAE, Dataset]:
    data = study.mnist("dynamic")
    cfg = study.base_config(seed=seed, latent_dim=2)
    model, _ = study.train("latent2d", cfg, data)
    return model, data


@dataclass(frozen=True)
class BetaSweep:
    """Chapter 1's beta sweep, read from the ``beta`` grid's records.

    Attributes:
        runs: the ok records of every beta whose seeds are all recorded (test and
            validation rate, distortion and −ELBO, active units, KL per dimension, convergence).
        n_planned: the grid's planned runs; ``n_recorded``: its ok records.
        chosen_beta: the beta with the lowest mean VALIDATION −ELBO.
        vs_one: the chosen beta's paired test −ELBO gain over beta = 1 (seed by seed, positive:
            the chosen beta is better), None when the choice is beta = 1, beta = 1 is absent
            or there is one seed.
        runner_up: the beta with the second-lowest mean validation −ELBO (None with one beta);
            ``vs_runner_up``: the chosen beta's paired test −ELBO gain over it (None with one
            seed).
    """

    runs: pd.DataFrame
    n_planned: int
    n_recorded: int
    chosen_beta: float
    vs_one: Interval | None
    runner_up: float | None = None
    vs_runner_up: Interval | None = None

    @property
    def complete(self) -> bool:
        return self.n_recorded == self.n_planned


def beta_sweep(profile: Profile, root: str | Path | None = None, *, run: bool = False,
               device: str = "auto") -> BetaSweep:
    """The ``beta`` grid of ``profile`` (trained first when ``run``), beta chosen on validation.

    Raises an :class:`~mtvae.errors.MTVAEError` that names the command to run when no beta
    has all its seeds recorded."""
    spec = beta_grid(profile)
    if run:
        run_grid(spec, root=root, device=device, progress="none")
    planned = len(spec.runs())
    status = plan(spec, root)
    n_done = int((status.status == "done").sum())
    runs = load_results(spec, root) if n_done else pd.DataFrame(columns=["beta", "seed"])
    seeds = set(profile.beta_grid.seeds)
    full = [b for b, d in runs.groupby("beta") if set(d.seed) == seeds]
    runs = runs[runs.beta.isin(full)].sort_values(["beta", "seed"]).reset_index(drop=True)
    if runs.empty:
        raise MTVAEError(
            f"the {spec.name} grid has no β with every seed recorded ({n_done} of {planned} "
            f"runs); train it with `python -m mtvae grid beta --profile {profile.name}` (or "
            "execute Chapter 1 with run_grid=True)")
    chosen = float(beta_choice(runs).chosen["beta"].iloc[0])
    by_val = runs.groupby("beta").val_nelbo.mean().sort_values()
    runner_up = float(by_val.index[1]) if len(by_val) > 1 else None

    def gain_over(other: float | None) -> Interval | None:
        """The chosen beta's paired test −ELBO gain over ``other`` (positive: chosen better)."""
        if other is None or other == chosen or len(seeds) < 2:
            return None
        ref = runs[runs.beta == other].set_index("seed").test_nelbo
        best = runs[runs.beta == chosen].set_index("seed").test_nelbo
        return paired_bootstrap_ci((ref - best.reindex(ref.index)).to_numpy())

    return BetaSweep(runs, planned, n_done, chosen, gain_over(1.0 if 1.0 in full else None),
                     runner_up, gain_over(runner_up))


def anomaly_detection(study: Study, k: int = 10) -> pd.DataFrame:
    """Train without one digit; AUROC of the IWAE-k NLL for that digit vs the others."""
    s = study.s
    rows = []
    for digit in s.anomaly_digits:
        data = study.mnist("dynamic", exclude=(digit,))
        for seed in s.anomaly_seeds:
            cfg = study.base_config(seed=seed, held_out=digit, score_k=k)

            def compute(cfg: dict[str, Any] = cfg, data: Dataset = data,
                        digit: int = digit) -> dict[str, Any]:
                model, res = study.train("anomaly", cfg, data)
                torch.manual_seed(cfg["seed"])
                nll = M.iwae_nll(model, data.test, cfg["score_k"])
                is_anomaly = (data.test.y == digit).cpu().numpy()
                return fit_info(res) | {
                    "auroc": M.auroc(nll.numpy(), is_anomaly),
                    "nll_anomalous": float(nll[is_anomaly].mean()),
                    "nll_normal": float(nll[~is_anomaly].mean())}

            rec = study.run("anomaly", cfg, compute)
            rows.append({"held_out": digit, "seed": seed, **rec["metrics"]})
    return pd.DataFrame(rows)


def ppca_check(study: Study, data_dim: int = 20, latent_dim: int = 4, sigma: float = 0.5,
               elbo_samples: int = 1000) -> pd.DataFrame:
    """Known answer: ELBO <= IWAE-k <= log p(x) for a VAE with an affine Gaussian decoder.

    One row per (seed, k): the averages over test points of the exact log-likelihood
    under the trained model, the ELBO (averaged over ``elbo_samples`` draws), the IWAE-k
    bound, the gaps log p(x) - bound, and the fraction of test points whose single IWAE-k
    estimate lies above their exact log-likelihood (Monte-Carlo noise).
    """
    s = study.s
    rows = []
    for seed in s.ppca_seeds:
        cfg = {"experiment": "ppca", "seed": seed, "data_dim": data_dim,
               "latent_dim": latent_dim, "sigma": sigma, "hidden": [64, 64],
               "epochs": s.ppca_epochs, "batch_size": 100, "lr": 1e-3, "patience": s.patience,
               "ks": list(s.ppca_ks), "elbo_samples": elbo_samples, "device": study.device}

        def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
            data, truth = make_ppca(data_dim, latent_dim, sigma, seed=cfg["seed"])
            model = VAE((data_dim,), latent_dim, likelihood="gaussian", arch="linear",
                        hidden=(64, 64), gaussian_scale=sigma)
            ckpt = cache_dir() / study.grid / f"{run_id('ppca', cfg)}.pt"
            res = fit(model, data, epochs=cfg["epochs"], batch_size=100, lr=1e-3,
                      patience=cfg["patience"], seed=cfg["seed"], device=study.device,
                      checkpoint=ckpt, progress=study.progress, desc=f"ppca seed={cfg['seed']}")
            test = data.test.to(resolve_device(study.device))
            torch.manual_seed(cfg["seed"])
            with torch.no_grad():
                exact = linear_gaussian_log_marginal(
                    test.x, model.decoder.weight, model.decoder.bias, sigma).cpu()
                elbo = model.log_weights(test.x, elbo_samples).mean(0).cpu()
            bounds = {str(k): M.iwae_bound(model, test, k).numpy() for k in cfg["ks"]}
            return fit_info(res) | {
                "exact_log_px": float(exact.mean()),
                "true_model_log_px": float(truth.log_prob(data.test.x).mean()),
                "elbo": float(elbo.mean()),
                "iwae": {k: float(v.mean()) for k, v in bounds.items()},
                "frac_points_iwae_above_exact": {
                    k: float(np.mean(v > exact.numpy() + 1e-4)) for k, v in bounds.items()}}

        rec = study.run("ppca", cfg, compute)
        m = rec["metrics"]
        for k in cfg["ks"]:
            rows.append({"seed": seed, "k": k, "exact_log_px": m["exact_log_px"],
                         "elbo": m["elbo"], "iwae": m["iwae"][str(k)],
                         "true_model_log_px": m["true_model_log_px"],
                         "frac_above": m["frac_points_iwae_above_exact"][str(k)],
                         "stopped_early": m["stopped_early"], "best_epoch": m["best_epoch"]})
    df = pd.DataFrame(rows)
    df["gap_iwae"] = df["exact_log_px"] - df["iwae"]
    df["gap_elbo"] = df["exact_log_px"] - df["elbo"]
    return df
