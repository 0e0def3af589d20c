"""The conditional VAE (Sohn, Lee & Yan 2015): the label is an input, not a task.

Encoder q(z | x, y) = N(mu(x, y), diag sigma(x, y)^2) and decoder p(x | z, y) are MLPs that
read the one-hot label beside the image (resp. the code); the prior is N(0, I), as in the
standard CVAE for label-conditioned generation (Sohn et al.'s conditional prior network
p(z | x) serves structured output prediction, not this use). The negative ELBO of one pair,

    -ELBO(x, y) = -E_q(z|x,y) log p(x | z, y) + KL(q(z | x, y) || N(0, I)),

is returned as one reconstruction task plus the beta-weighted KL regulariser, like
:class:`~mtvae.models.VAE`; ``log_weights`` gives log p(x, z | y) - log q(z | x, y) for the
IWAE bound on log p(x | y). Generation picks the label: :meth:`ConditionalVAE.sample`.

Every row needs its label (the label is an input): a batch whose ``labelled`` mask marks
rows unlabelled is refused rather than trained on hidden labels. Label checks need concrete
values, so they run outside ``torch.func.vmap`` (a single run, and the stacked engine's
counting pass on its first member); inside the stacked engine's vmap they are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae import rng
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError, check_positive
from mtvae.likelihoods import Likelihood, make_likelihood
from mtvae.models.vae import importance_log_weights
from mtvae.nets import mlp
from mtvae.terms import Terms


def _concrete(t: Tensor) -> bool:
    """False for functorch's batched wrappers (inside ``vmap``), whose values are unknown."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


class ConditionalVAE(nn.Module):
    """An MLP CVAE on fixed-shape inputs with integer class labels.

    Args:
        x_shape: shape of one example, e.g. ``(1, 28, 28)``.
        latent_dim: number of latent dimensions.
        n_classes: number of label values (labels are integers ``0 .. n_classes - 1``).
        likelihood: ``bernoulli``, ``gaussian``, ``gaussian-learned`` or an instance.
        hidden: hidden widths of the encoder and (reversed) decoder, as for the VAE.
        beta: weight on the KL term; 1 gives the ELBO.
        label_key: the batch tensor holding the labels.
        gaussian_scale: the fixed scale when ``likelihood="gaussian"``.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int,
        n_classes: int = 10,
        likelihood: str | Likelihood = "bernoulli",
        hidden: Sequence[int] = (512, 256),
        beta: float = 1.0,
        label_key: str = "y",
        gaussian_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise MTVAEError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise MTVAEError(f"n_classes must be an integer ≥ 2, got {n_classes!r}")
        check_positive("beta", beta, allow_zero=True)
        self.x_shape = tuple(int(s) for s in x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.beta, self.label_key = float(beta), label_key
        self.likelihood = (likelihood if isinstance(likelihood, Likelihood)
                           else make_likelihood(likelihood, self.x_shape, scale=gaussian_scale))
        n_out = self.likelihood.n_params * self.x_dim
        self.encoder = mlp(self.x_dim + n_classes, tuple(hidden), 2 * latent_dim)
        self.decoder = mlp(latent_dim + n_classes, tuple(reversed(tuple(hidden))), n_out)

    # -- labels -----------------------------------------------------------------------
    def one_hot(self, y: Tensor | int | Sequence[int]) -> Tensor:
        """``[B, n_classes]`` one-hot rows for integer labels ``[B]`` (or one-hot ``[B, C]``).

        Raises one :class:`MTVAEError` naming the problem for labels of the wrong shape,
        non-integer labels, out-of-range labels or one-hot rows of the wrong width.
        """
        t = y if isinstance(y, Tensor) else torch.as_tensor(
            y, device=next(self.parameters()).device)
        c = self.n_classes
        if t.dim() == 0:
            t = t.reshape(1)
        if t.dim() == 2:  # already one-hot
            if t.shape[1] != c:
                raise MTVAEError(f"one-hot labels have {t.shape[1]} columns but the model has "
                                 f"{c} classes; build it with n_classes={t.shape[1]} or pass "
                                 f"integer labels 0..{c - 1}")
            if _concrete(t) and not bool(((t == 0) | (t == 1)).all() and (t.sum(1) == 1).all()):
                raise MTVAEError("one-hot labels must hold exactly one 1 per row; pass integer "
                                 f"labels 0..{c - 1} instead")
            return t.to(torch.get_default_dtype())
        if t.dim() != 1:
            raise MTVAEError(f"labels must be integers [B] (or one-hot [B, {c}]), got shape "
                             f"{tuple(t.shape)}")
        if _concrete(t) and len(t):
            if t.is_floating_point() and not bool((t == t.round()).all()):
                raise MTVAEError("labels must be whole numbers (class indices), got "
                                 "fractional values; pass integer labels")
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= c:
                raise MTVAEError(f"labels must lie in 0..{c - 1} for a model with {c} classes, "
                                 f"got values in {lo}..{hi}; build the model with "
                                 f"n_classes={hi + 1} or fix the labels")
        classes = torch.arange(c, device=t.device)
        return (t.long()[:, None] == classes).to(torch.get_default_dtype())

    def labels(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The batch's one-hot labels, refusing batches with unlabelled rows."""
        if self.label_key not in batch:
            raise MTVAEError(f"the conditional VAE reads labels from batch[{self.label_key!r}], "
                             f"which this batch lacks (it has {sorted(batch)}); load a "
                             "labelled dataset or set label_key")
        lab = batch.get("labelled")
        if lab is not None and _concrete(lab) and not bool((lab > 0).all()):
            raise MTVAEError("the conditional VAE takes the label as an input and needs it on "
                             "every row, but this batch marks rows unlabelled; train it with "
                             "all labels (label fraction 1)")
        return self.one_hot(batch[self.label_key])

    # -- the two halves -----------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z | x, y), each ``[B, latent_dim]``."""
        h = self.encoder(torch.cat([x.flatten(1), self.one_hot(y).to(x.dtype)], dim=-1))
        loc, raw = h.chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        """Likelihood parameters ``[B, n_params, *x_shape]`` of p(x | z, y)."""
        out = self.decoder(torch.cat([z, self.one_hot(y).to(z.dtype)], dim=-1))
        return out.reshape(z.shape[0], self.likelihood.n_params, *self.x_shape)

    def reconstruct(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean of p(x | z = E[z | x, y], y)."""
        loc, _ = self.encode(x, y)
        return self.likelihood.mean(self.decode(loc, y))

    @torch.no_grad()
    def sample(self, y: Tensor | int | Sequence[int], n: int = 1,
               generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x | z, y) for z ~ N(0, I): ``n`` images per requested label.

        Returns ``[len(y) * n, *x_shape]``; row ``i * n + j`` is the j-th image of ``y[i]``
        (an int ``y`` is one label).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MTVAEError(f"n (images per label) must be a positive integer, got {n!r}")
        onehot = self.one_hot(y).repeat_interleave(n, dim=0)
        z = torch.randn(len(onehot), self.latent_dim, device=onehot.device,
                        generator=generator)
        return self.likelihood.mean(self.decode(z, onehot))

    # -- objectives -----------------------------------------------------------------------
    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """beta-weighted negative ELBO of (x, y), averaged over the batch, as :class:`Terms`."""
        x, y = batch["x"], self.labels(batch)
        loc, scale = self.encode(x, y)
        z = loc + scale * rng.randn_like(scale)
        nll = -self.likelihood.log_prob(self.decode(z, y), x).mean()
        kl = kl_std_normal(loc, scale).sum(-1).mean()
        return Terms(tasks={"x": nll}, regularizers={"kl": self.beta * kl}, shared=z,
                     stats={"kl": kl.detach(), "nelbo": (nll + kl).detach()})

    def elbo_parts(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One-sample log p(x | z, y) and the analytic KL per example: ``([B], [B])``."""
        loc, scale = self.encode(x, y)
        z = loc + scale * rng.randn_like(scale)
        return self.likelihood.log_prob(self.decode(z, y), x), kl_std_normal(loc, scale).sum(-1)

    def elbo(self, x: Tensor, y: Tensor | int | Sequence[int], samples: int = 1) -> Tensor:
        """ELBO(x, y) per example (analytic KL, ``samples`` draws of z): a lower bound on
        log p(x | y), ``[B]``."""
        onehot = self.one_hot(y)
        if len(onehot) == 1 and len(x) > 1:
            onehot = onehot.expand(len(x), -1)
        loc, scale = self.encode(x, onehot)
        rec = torch.stack([self.likelihood.log_prob(
            self.decode(loc + scale * rng.randn_like(scale), onehot), x)
            for _ in range(samples)]).mean(0)
        return rec - kl_std_normal(loc, scale).sum(-1)

    def marginal_elbo(self, x: Tensor, samples: int = 1) -> Tensor:
        """log (1/C) sum_y exp ELBO(x, y) per example: a lower bound on log p(x) under a
        uniform label prior, comparable with an unconditional VAE's ELBO (``[B]``).

        Since ELBO(x, y) ≤ log p(x | y), the sum is ≤ sum_y p(y) p(x | y) = p(x). With
        Monte-Carlo ELBOs the bound holds in expectation up to the small upward bias of a
        log-sum-exp of noisy terms (use more ``samples`` to shrink it).
        """
        per_label = torch.stack([self.elbo(x, c, samples) for c in range(self.n_classes)])
        return torch.logsumexp(per_label, 0) - math.log(self.n_classes)

    def log_weights(self, x: Tensor, y: Tensor, k: int, chunk: int | None = None) -> Tensor:
        """Importance log-weights log p(x, z | y) - log q(z | x, y) for k samples: ``[k, B]``.

        Their mean is a Monte-Carlo ELBO; ``logsumexp - log k`` the IWAE-k bound on
        log p(x | y). ``chunk`` bounds how many samples are decoded at once.
        """
        onehot = self.one_hot(y)
        loc, scale = self.encode(x, onehot)
        return importance_log_weights(
            x, loc, scale, k, chunk,
            lambda z, xr, kc: self.likelihood.log_prob(self.decode(z, onehot.repeat(kc, 1)), xr))
