"""A VAE with auxiliary supervised heads on its latent code (semi-supervised MT-VAE).

The encoder, decoder and likelihood are those of :class:`~mtvae.models.VAE`; on top, one
linear (or small MLP) classifier per head reads the latent sample z. The loss of a batch of B
rows with labelled-mask l_n is, per head k with weight lambda (``label_weight``),

    L = -1/B sum_n log p(x_n | z_n)                       (task "x")
        + lambda/B sum_n l_n CE(head_k(z_n), y_nk)         (task k, one per head)
        + beta/B sum_n KL(q(z|x_n) || p(z))                (regulariser)

i.e. every term is a per-example average over the *whole* batch, so that unlabelled rows
contribute only the ELBO, the head loss of a batch with no labelled row is exactly zero, and
the head terms are the batch estimate of lambda * (labelled share) * E[CE]. Kingma et al.
(2014) fit a classifier on a trained VAE's code (M1) or add an alpha-weighted classification
loss on the labelled rows to a model with the label in its generative process (M2); here the
classification loss trains a discriminative head on z jointly with a plain VAE, as in a
supervised autoencoder (Le et al. 2018); as multitask
learning (Caruana 1997) the heads share the encoder with the reconstruction. ``shared`` is
z and ``task_inputs`` hold one alias of z per task, so activation-space MOO combiners get
every task's gradient at z from one backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae import rng
from mtvae.divergences import kl_std_normal
from mtvae.errors import MTVAEError, check_positive
from mtvae.models.vae import VAE
from mtvae.nets import mlp
from mtvae.terms import Terms

Target = str | tuple[str, int]
"""Where a head's labels live in a batch: a tensor name (``"y"``) or a column of one
(``("factors", 2)``)."""


def factor_targets(names: Sequence[str], factor_names: Sequence[str], prefix: str = "y_"
                   ) -> dict[str, Target]:
    """Heads ``prefix + factor`` reading each named factor from its column of ``factors``.

    The prefix keeps head names apart from the reconstruction task ``"x"`` (shapes have an
    ``x`` factor).
    """
    unknown = [n for n in names if n not in factor_names]
    if unknown:
        raise MTVAEError(f"unknown factors {unknown}; the data has {list(factor_names)}")
    return {prefix + n: ("factors", list(factor_names).index(n)) for n in names}


class MultitaskVAE(VAE):
    """:class:`~mtvae.models.VAE` plus one classification head per auxiliary task.

    Args:
        x_shape, latent_dim: as for the VAE.
        heads: task name -> number of classes, e.g. ``{"label": 10}``.
        targets: task name -> :data:`Target`; by default a head reads the batch tensor of its
            own name, or ``"y"`` when there is a single head.
        label_weight: lambda, the weight of every head's cross-entropy.
        head_hidden: hidden widths of each head (``()`` = a linear classifier on z).
        **vae_options: ``likelihood``, ``arch``, ``hidden``, ``beta`` ... of the VAE.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int,
        heads: Mapping[str, int],
        targets: Mapping[str, Target] | None = None,
        label_weight: float = 1.0,
        head_hidden: Sequence[int] = (),
        **vae_options: object,
    ) -> None:
        super().__init__(x_shape, latent_dim, **vae_options)  # type: ignore[arg-type]
        if not heads:
            raise MTVAEError("give at least one head (task name -> classes); for none use VAE")
        if "x" in heads:
            raise MTVAEError("'x' is the reconstruction task; give the heads other names")
        bad = {k: v for k, v in heads.items() if not isinstance(v, int) or v < 2}
        if bad:
            raise MTVAEError(f"every head needs an integer number of classes ≥ 2, got {bad}")
        check_positive("label_weight", label_weight, allow_zero=True)
        default = {k: k for k in heads} if len(heads) > 1 else {k: "y" for k in heads}
        self.targets: dict[str, Target] = dict(targets or default)
        missing = [k for k in heads if k not in self.targets]
        if missing:
            raise MTVAEError(f"heads {missing} have no target; add them to targets")
        self.n_classes = dict(heads)
        self.label_weight = float(label_weight)
        self.heads = nn.ModuleDict({k: mlp(latent_dim, tuple(head_hidden), n)
                                    for k, n in heads.items()})

    def target(self, batch: Mapping[str, Tensor], head: str) -> Tensor:
        """The integer labels of ``head`` in ``batch``, ``[B]``."""
        spec = self.targets[head]
        key, col = (spec, None) if isinstance(spec, str) else spec
        if key not in batch:
            raise MTVAEError(f"head {head!r} reads labels from {key!r}, which this batch lacks "
                             f"(it has {sorted(batch)}); set targets accordingly")
        y = batch[key] if col is None else batch[key][:, col]
        return y.long()

    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """Reconstruction task, one cross-entropy task per head (labelled rows only), KL."""
        x = batch["x"]
        b = x.shape[0]
        loc, scale = self.encode(x)
        z = loc + scale * rng.randn_like(scale)
        copies = [z.view_as(z) for _ in range(1 + len(self.heads))]
        nll = -self.likelihood.log_prob(self.decode(copies[0]), x).mean()
        labelled = batch.get("labelled")
        lab = torch.ones(b, device=x.device) if labelled is None else labelled.to(x.dtype)
        tasks = {"x": nll}
        stats: dict[str, Tensor] = {}
        for (name, head), zi in zip(self.heads.items(), copies[1:], strict=True):
            logits = head(zi)
            # unlabelled rows may hold placeholder labels: point them at class 0, weight 0
            y = torch.where(lab > 0, self.target(batch, name), 0)
            ce = F.cross_entropy(logits, y, reduction="none")
            tasks[name] = self.label_weight * (ce * lab).sum() / b
            hits = (logits.argmax(-1) == y).to(x.dtype)
            stats[f"acc/{name}"] = ((hits * lab).sum() / lab.sum().clamp_min(1)).detach()
        kl = kl_std_normal(loc, scale).sum(-1).mean()
        return Terms(
            tasks=tasks,
            regularizers={"kl": self.beta * kl},
            shared=z,
            stats={"kl": kl.detach(), "nelbo": (nll + kl).detach(),
                   "labelled": lab.mean().detach(), **stats},
            task_inputs=copies,
        )

    @torch.no_grad()
    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Class probabilities ``[B, n_classes]`` of every head at the posterior mean."""
        loc, _ = self.encode(x)
        return {name: head(loc).softmax(-1) for name, head in self.heads.items()}
