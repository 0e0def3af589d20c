"""The VQ-VAE (van den Oord et al. 2017), optionally with a label head on its codes.

A convolutional encoder maps a 28x28 image to a 7x7 grid of D-dimensional vectors z_e; a
quantiser (:mod:`mtvae.quantizers`) replaces each by a code, giving z_q; a convolutional
decoder maps z_q to the parameters of p(x | z_q). ``loss_terms`` follows the ``Terms``
contract: the reconstruction -log p(x | z_q) (and, with ``n_classes``, the label head's
cross-entropy) are **tasks**; the codebook and commitment losses are **regularisers**,
which multi-objective combiners never rebalance; the shared representation is z_q, where
decoder and label head meet (a multitask VQ-VAE).

Viewed as a VAE, the posterior is a point mass on one code per position and the prior is
uniform over the K codes, so the KL is the constant 49 log K and drops out of training;
after training, a learned prior over the code grid (:mod:`mtvae.models.prior`) replaces
the uniform one for sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae.errors import MTVAEError, check_positive
from mtvae.likelihoods import Likelihood, make_likelihood
from mtvae.nets import GridDecoder, GridEncoder
from mtvae.quantizers import QuantizerOutput, make_quantizer
from mtvae.terms import Terms


class VQVAE(nn.Module):
    """A VQ-VAE for 28x28 images with a 7x7 code grid.

    Args:
        x_shape: shape of one example, ``(1, 28, 28)``.
        quantizer: a preset name of :func:`mtvae.quantizers.make_quantizer` (``plain``,
            ``ema``, ``ema-restart``, ``kmeans``, ``lowdim-l2``, ``fsq``, ...) or a module.
        num_codes: codebook size K (``None`` for FSQ, whose size follows from its levels).
        code_dim: channels D of z_e and z_q.
        channels: width of the convolutional encoder and decoder.
        likelihood: ``bernoulli`` (binarised pixels) or a Gaussian (see
            :mod:`mtvae.likelihoods.images`).
        n_classes: add a label head p(y | z_q) with this many classes (``None``: none).
        head_hidden: hidden width of the label head.
        label_weight: lambda, the weight of the label head's cross-entropy task (a tuned
            plain sum; 1 is the unweighted sum).
        quantizer_options: overrides passed to the quantiser preset.
    """

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        quantizer: str | nn.Module = "ema-restart",
        num_codes: int | None = 512,
        code_dim: int = 16,
        channels: int = 32,
        likelihood: str | Likelihood = "bernoulli",
        n_classes: int | None = None,
        head_hidden: int = 128,
        label_weight: float = 1.0,
        **quantizer_options: object,
    ) -> None:
        super().__init__()
        check_positive("label_weight", label_weight)
        self.label_weight = float(label_weight)
        if not isinstance(code_dim, int) or code_dim < 1:
            raise MTVAEError(f"code_dim must be a positive integer, got {code_dim!r}")
        if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 2):
            raise MTVAEError(f"n_classes must be an integer ≥ 2 or None, got {n_classes!r}")
        check_positive("channels", channels)
        self.x_shape = tuple(int(s) for s in x_shape)
        self.code_dim = code_dim
        self.likelihood = (likelihood if isinstance(likelihood, Likelihood)
                           else make_likelihood(likelihood, self.x_shape))
        self.encoder = GridEncoder(self.x_shape, code_dim, channels)
        self.quantizer = (quantizer if isinstance(quantizer, nn.Module)
                          else make_quantizer(quantizer, code_dim, num_codes, **quantizer_options))
        self.num_codes: int = int(self.quantizer.num_codes)
        out_channels = self.likelihood.n_params * self.x_shape[0]
        self.decoder = GridDecoder(code_dim, self.x_shape, out_channels, channels)
        self.grid = (self.x_shape[1] // 4, self.x_shape[2] // 4)
        self.head = None
        if n_classes is not None:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(code_dim * math.prod(self.grid),
                                                              head_hidden),
                                      nn.ReLU(), nn.Linear(head_hidden, n_classes))

    @property
    def capacity_bits(self) -> float:
        """Bits the code grid can carry at most: positions x log2 K (uniform prior)."""
        return math.prod(self.grid) * math.log2(self.num_codes)

    # -- the pieces ------------------------------------------------------------------
    def quantize(self, x: Tensor) -> QuantizerOutput:
        return self.quantizer(self.encoder(x))

    def decode(self, z_q: Tensor) -> Tensor:
        """Likelihood parameters ``[B, n_params, *x_shape]`` for a code grid z_q."""
        out = self.decoder(z_q)
        return out.reshape(z_q.shape[0], self.likelihood.n_params, *self.x_shape)

    def codes(self, x: Tensor) -> Tensor:
        """Code indices ``[B, 7, 7]`` of images (use in eval mode: no codebook updates)."""
        return self.quantize(x).indices

    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x | z_q(x))."""
        return self.likelihood.mean(self.decode(self.quantize(x).z_q))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Mean images for code grids ``[B, 7, 7]`` (e.g. samples of a learned prior)."""
        return self.likelihood.mean(self.decode(self.quantizer.lookup(indices)))

    def classify(self, x: Tensor) -> Tensor:
        """Class logits of the label head."""
        if self.head is None:
            raise MTVAEError("this VQ-VAE has no label head; build it with n_classes=...")
        return self.head(self.quantize(x).z_q)

    # -- objective -------------------------------------------------------------------
    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """Reconstruction (and label) tasks, codebook/commitment regularisers, shared z_q."""
        x = batch["x"]
        out = self.quantize(x)
        nll = -self.likelihood.log_prob(self.decode(out.z_q), x).mean()
        tasks = {"x": nll}
        stats: dict[str, Tensor] = {"distortion": nll.detach()}
        if out.perplexity is not None:
            stats["perplexity"] = out.perplexity
        if self.head is not None:
            if "y" not in batch:
                raise MTVAEError("the label head needs labels: the batch has no 'y'")
            logits = self.head(out.z_q)
            ce = F.cross_entropy(logits, batch["y"])
            tasks["y"] = ce if self.label_weight == 1.0 else self.label_weight * ce
            stats["accuracy"] = (logits.argmax(1) == batch["y"]).float().mean().detach()
        return Terms(tasks=tasks, regularizers=dict(out.losses), shared=out.z_q, stats=stats)

    @torch.no_grad()
    def distortion(self, x: Tensor) -> Tensor:
        """-log p(x | z_q(x)) per example, in nats: ``[B]``."""
        return -self.likelihood.log_prob(self.decode(self.quantize(x).z_q), x)
