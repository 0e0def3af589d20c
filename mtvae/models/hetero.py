"""A VAE for heterogeneous tabular data with missing cells (HI-VAE style).

After HI-VAE (Nazabal et al. 2020, "Handling incomplete heterogeneous data using VAEs")
in the form used by Javaloy, Meghdadi & Valera (ICML 2022, "Mitigating modality collapse
in multimodal VAEs via impartial optimization"): the encoder sees only the observed cells
(x * mask, categories one-hot, counts as log1p) next to the mask; a shared decoder trunk
maps z to a representation h; one small linear head per feature maps h to the parameters
of that feature's likelihood (:mod:`mtvae.likelihoods.features`). Each feature is one task of
:class:`~mtvae.terms.Terms`, so multi-objective combiners can balance them; ``h`` is the
shared representation where their gradients meet.

Everything is in MODEL SPACE (standardised reals, standardised log of positives, raw
counts and codes; see the tabular contract). The model never reads ``x`` where
``mask == 0``: such cells are replaced by 0 before anything touches them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae import rng
from mtvae.data.base import Split
from mtvae.data.schema import Schema
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError, check_choice, check_positive
from mtvae.likelihoods import COUNT_LIKELIHOODS, Head, check_estimator, make_head
from mtvae.nets import Dropout, mlp
from mtvae.terms import Terms

if TYPE_CHECKING:
    from mtvae.data.marginals import Marginal
    from mtvae.data.tabular import TabularScaler

Batch = dict[str, Tensor]


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, BatchNorm running stats) and no gradients, then restore."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class HeteroVAE(nn.Module):
    """A VAE over mixed-type columns with a per-feature likelihood head.

    Args:
        schema: a :class:`~mtvae.data.schema.Schema` (or anything ``Schema.parse`` takes).
        latent_dim: latent dimensions; default ceil(0.75 * number of features) (the
            reference uses 50-75 % of the number of features).
        hidden: width of every hidden layer of the encoder and the decoder trunk.
        depth: number of hidden layers of the encoder and of the decoder trunk.
        beta: weight on the KL term; 1 gives the ELBO.
        dropout: dropout rate on the encoder input.
        scaler: the dataset's ``TabularScaler``; its per-column ``scale`` is needed by the
            ``pos`` heads to impute the LogNormal mean or mode in original units (``None``:
            scale 1 everywhere), and
            its ``marginals`` (the training split's per-column statistics) set each head's
            output bias so the heads start at the column's marginal (a Poisson at the
            training mean, a Normal at the standardised moments, ...).
        count: likelihood of ``count`` columns: ``"poisson"`` (default) or ``"negbin"``
            (negative binomial with a learned dispersion, for overdispersed counts; the
            loaders' ``info["fit_report"]`` says when a column needs it).
    """

    def __init__(
        self,
        schema: Schema | Mapping[str, str] | Sequence[tuple[str, str]],
        latent_dim: int | None = None,
        hidden: int = 100,
        depth: int = 3,
        beta: float = 1.0,
        dropout: float = 0.1,
        scaler: TabularScaler | None = None,
        count: str = "poisson",
    ) -> None:
        super().__init__()
        self.schema = Schema.parse(schema)
        n_features = len(self.schema)
        if latent_dim is None:
            latent_dim = math.ceil(0.75 * n_features)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise MTVAEError(f"latent_dim must be a positive integer or None, got {latent_dim!r}")
        for name, value in (("hidden", hidden), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise MTVAEError(f"{name} must be a positive integer, got {value!r}")
        check_positive("beta", beta, allow_zero=True)
        if not 0.0 <= dropout < 1.0:
            raise MTVAEError(f"dropout must be in [0, 1), got {dropout!r}")
        self.latent_dim = latent_dim
        self.beta = float(beta)
        self.count = check_choice("count likelihood", count, COUNT_LIKELIHOODS)
        scales = self._column_scales(scaler, n_features)
        self.likelihoods: list[Head] = [
            make_head(f, scales[d], self.count) for d, f in enumerate(self.schema)
        ]
        in_dim = sum(f.k if f.type == "cat" else 1 for f in self.schema) + n_features
        self.encoder = nn.Sequential(
            Dropout(dropout),
            nn.BatchNorm1d(in_dim),
            *mlp(in_dim, [hidden] * depth, 2 * latent_dim, activation=nn.Tanh),
        )
        self.trunk = mlp(latent_dim, [hidden] * depth)
        self.heads = nn.ModuleList(nn.Linear(hidden, h.n_params) for h in self.likelihoods)
        self._start_at_marginals(getattr(scaler, "marginals", None))

    @torch.no_grad()
    def _start_at_marginals(self, marginals: Sequence[Marginal] | None) -> None:
        """Set each head's output bias to its column's training marginal (if known)."""
        if marginals is None:
            return
        if [m.name for m in marginals] != self.schema.names:
            raise MTVAEError(
                f"the scaler's marginals are for columns {[m.name for m in marginals]}, the "
                f"schema has {self.schema.names}; pass the dataset's own info['scaler']"
            )
        for head, lik, m in zip(self.heads, self.likelihoods, marginals, strict=True):
            head.bias.copy_(lik.initial_bias(m).to(head.bias))

    @staticmethod
    def _column_scales(scaler: TabularScaler | None, n_features: int) -> list[float]:
        if scaler is None:
            return [1.0] * n_features
        scale = getattr(scaler, "scale", None)
        if scale is None or len(scale) != n_features:
            raise MTVAEError(
                f"the scaler must have a per-column 'scale' of length {n_features}; pass the "
                "dataset's info['scaler'] (a TabularScaler) or None"
            )
        return [float(s) for s in scale]

    # -- parameter groups (MOO code relies on them being disjoint) --------------------
    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-feature heads (task-specific)."""
        return list(self.heads.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder and the decoder trunk (shared by every task)."""
        return [*self.encoder.parameters(), *self.trunk.parameters()]

    # -- inputs ----------------------------------------------------------------------
    def _observed(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(x with masked cells set to 0, boolean observed mask)``, both ``[B, D]``."""
        d = len(self.schema)
        for key in ("x", "mask"):
            if key not in batch:
                raise MTVAEError(
                    f"a HeteroVAE batch needs {key!r} (x: model-space values, mask: 1 = "
                    "observed); load tabular data with mtvae.data.tabular"
                )
            t = batch[key]
            if t.dim() != 2 or t.shape[1] != d:
                raise MTVAEError(
                    f"batch[{key!r}] has shape {tuple(t.shape)} but the schema has {d} "
                    f"features; pass a [B, {d}] tensor with columns in schema order"
                )
        obs = batch["mask"] > 0
        x = batch["x"]
        return torch.where(obs, x, torch.zeros((), dtype=x.dtype, device=x.device)), obs

    def _encoder_input(self, x: Tensor, obs: Tensor) -> Tensor:
        parts: list[Tensor] = []
        for d, feature in enumerate(self.schema):
            col = x[:, d]
            if feature.type == "cat":
                code = col.long().clamp(0, feature.k - 1)
                parts.append(F.one_hot(code, feature.k).to(x.dtype) * obs[:, d, None])
            elif feature.type == "count":
                parts.append(torch.log1p(col.clamp_min(0)).unsqueeze(1))
            else:
                parts.append(col.unsqueeze(1))
        parts.append(obs.to(x.dtype))
        return torch.cat(parts, dim=1)

    # -- the two halves --------------------------------------------------------------
    def encode(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Posterior mean and standard deviation ``[B, latent_dim]`` from observed cells."""
        return self._posterior(*self._observed(batch))

    def _posterior(self, x: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.encoder(self._encoder_input(x, obs)).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    def decode_shared(self, z: Tensor) -> Tensor:
        """The shared representation h = trunk(z), ``[B, hidden]``."""
        return self.trunk(z)

    def decode(self, z: Tensor) -> list[Tensor]:
        """Per-feature likelihood parameters, each ``[B, n_params_d]``, in schema order."""
        h = self.decode_shared(z)
        return [head(h) for head in self.heads]

    def _log_probs(self, params: list[Tensor], x: Tensor, cells: Tensor) -> Tensor:
        """log p(x[n, d] | params) where ``cells`` is True and 0 elsewhere: ``[B, D]``."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        safe = torch.where(cells, x, zero)
        cols = [lik.log_prob(p, safe[:, d]) for d, (lik, p) in enumerate(zip(
            self.likelihoods, params, strict=True))]
        return torch.where(cells, torch.stack(cols, dim=1), zero)

    # -- objective -------------------------------------------------------------------
    def loss_terms(self, batch: Mapping[str, Tensor]) -> Terms:
        """beta-weighted negative ELBO on the observed cells, one task per feature.

        Task d is -sum_n mask[n, d] log p(x[n, d] | z_n) / B (divided by the batch size, not
        by the observed count), so the tasks plus the KL are the per-example negative ELBO.
        """
        x, obs = self._observed(batch)
        loc, scale = self._posterior(x, obs)
        z = loc + scale * rng.randn_like(scale)
        h = self.decode_shared(z)
        # one alias of h per head, so MOO combiners get all per-task gradients in one pass
        copies = [h.view_as(h) for _ in self.heads]
        params = [head(c) for head, c in zip(self.heads, copies, strict=True)]
        nll = -self._log_probs(params, x, obs).sum(0) / x.shape[0]
        kl = kl_std_normal(loc, scale).sum(-1).mean()
        tasks = {f.name: nll[d] for d, f in enumerate(self.schema)}
        return Terms(
            tasks=tasks,
            regularizers={"kl": self.beta * kl},
            shared=h,
            stats={"kl": kl.detach(), "nelbo": (nll.sum() + kl).detach()},
            task_inputs=copies,
        )

    # -- evaluation ------------------------------------------------------------------
    def _batches(self, data: Mapping[str, Tensor] | Split, batch_size: int) -> Iterator[Batch]:
        """Mini-batches of a Split; a batch dict is processed as it is, in one go."""
        if isinstance(data, Split):
            yield from data.batches(batch_size)
        else:
            yield dict(data)

    def impute(
        self,
        data: Mapping[str, Tensor] | Split,
        batch_size: int = 1000,
        *,
        estimator: str = "mean",
        reconstruct: bool = False,
    ) -> Tensor:
        """Every cell imputed in model space, ``[N, D]``: z = posterior mean, then each
        head's point estimate (:meth:`mtvae.likelihoods.Head.impute`).

        Args:
            estimator: ``"mean"`` (the predictive mean: LogNormal mean in original units,
                Poisson rate, unrounded; the default) or ``"mode"`` (the reference's
                LogNormal mode and floor of the rate; the old behaviour, an ablation).
                Nominal features get the most likely value under both.
            reconstruct: ``False`` (the default): observed cells keep their observed values
                and only the other cells are predicted. ``True``: every cell is the
                model's prediction, observed ones included (reconstruction of the observed
                cells from the same observed input, the anchor paper's protocol).

        Runs in eval mode without gradients; never reads ``x`` at cells with mask 0.
        """
        check_estimator(estimator)
        out = []
        with _evaluating(self):
            for batch in self._batches(data, batch_size):
                x, obs = self._observed(batch)
                loc, _ = self._posterior(x, obs)
                params = self.decode(loc)
                imp = torch.stack([lik.impute(p, estimator) for lik, p in zip(
                    self.likelihoods, params, strict=True)], 1).to(x.dtype)
                out.append(imp if reconstruct else torch.where(obs, x, imp))
        return torch.cat(out)

    def feature_log_likelihood(
        self, data: Mapping[str, Tensor] | Split, cells: str = "score", batch_size: int = 1000
    ) -> Tensor:
        """Mean log-likelihood per feature over the cells where ``data[cells]`` is 1: ``[D]`` (CPU).

        The encoder sees the observed cells only; z is the posterior mean; densities are in
        MODEL SPACE (for ``pos`` columns subtract ``log x + log scale`` to get the density
        in original units; for ``real`` subtract ``log scale``). With
        ``cells="score"`` this scores the held-out (MCAR-masked) cells. NaN for a feature
        without any such cell.
        """
        d = len(self.schema)
        total = torch.zeros(d, dtype=torch.float64)
        count = torch.zeros(d, dtype=torch.float64)
        with _evaluating(self):
            for batch in self._batches(data, batch_size):
                if cells not in batch:
                    raise MTVAEError(
                        f"the data has no {cells!r} mask; use cells='score' (held-out cells) "
                        "or cells='mask' (observed cells)"
                    )
                which = batch[cells] > 0
                loc, _ = self._posterior(*self._observed(batch))
                lp = self._log_probs(self.decode(loc), batch["x"], which)
                total += lp.sum(0).double().cpu()
                count += which.sum(0).double().cpu()
        mean = torch.where(count > 0, total / count.clamp_min(1), math.nan)
        return mean.to(torch.get_default_dtype())
