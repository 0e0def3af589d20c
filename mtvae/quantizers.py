"""Quantisers: the discrete bottleneck of a VQ-VAE.

:class:`VectorQuantizer` maps each encoder output vector to its nearest codebook entry
(van den Oord et al. 2017) and passes gradients straight through (Bengio et al. 2013):
``z_q = z_e + sg[e - z_e]``, so that d loss / d z_e = d loss / d z_q. Its losses are

* codebook ``||sg[z_e] - e||^2`` (moves codes towards the outputs they are assigned), and
* commitment ``beta ||z_e - sg[e]||^2`` (beta = 0.25; keeps the encoder near its codes),

each summed over the latent grid and averaged over the batch, like the reconstruction.
Remedies for codebook collapse, all optional:

* ``ema``: codes follow exponential moving averages of their assigned outputs (decay
  0.99, Laplace-smoothed counts; van den Oord et al. 2017, App. A; Razavi et al. 2019)
  instead of the codebook loss;
* ``kmeans_init``: on the first training batch the codebook is set by k-means (k-means++
  seeding) on that batch's encoder outputs (Zeghidour et al. 2021);
* ``restart_threshold``: a code whose moving-average use falls below this many vectors per
  step is moved onto a random encoder output of the current batch (Dhariwal et al. 2020);
* ``lookup_dim`` / ``l2_normalize``: look codes up in a low-dimensional projection and/or
  on the unit sphere (cosine similarity), as in ViT-VQGAN (Yu et al. 2022).

Codebook updates (k-means, EMA, restarts) happen inside ``forward`` in training mode, using
the batch that forward already sees; evaluation (``eval()``) never changes the codebook.
This keeps the trainer free of model-specific hooks, and the updates are part of the
module's state, so checkpoints resume them exactly.

:class:`FSQ` (Mentzer et al. 2024) needs no codebook: it bounds each of a few channels and
rounds it to a fixed grid of levels (``[8, 6, 5]`` = 240 codes), again straight through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae.errors import MTVAEError, check_choice, check_positive


@dataclass
class QuantizerOutput:
    """What a quantiser returns for encoder outputs ``z_e`` of shape ``[B, D, H, W]``."""

    z_q: Tensor  # [B, D, H, W], straight-through: gradients pass to z_e unchanged
    indices: Tensor  # [B, H, W] code index per position
    losses: dict[str, Tensor] = field(default_factory=dict)  # per-image, batch-averaged
    perplexity: Tensor | None = None  # of this batch's assignments (detached)


def perplexity(indices: Tensor, num_codes: int) -> Tensor:
    """exp(entropy) of the code frequencies in ``indices``: 1 = one code, K = uniform use."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def _to_rows(z: Tensor) -> Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _to_grid(rows: Tensor, shape: Sequence[int]) -> Tensor:
    b, _, h, w = shape
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _per_image(sq: Tensor, batch: int) -> Tensor:
    """Per-vector squared errors ``[N]`` summed per image, averaged over the batch."""
    return sq.reshape(batch, -1).sum(1).mean()


def nearest(rows: Tensor, codes: Tensor) -> Tensor:
    """Index of the nearest code (squared Euclidean distance) for every row."""
    dist = rows.square().sum(1, keepdim=True) - 2 * rows @ codes.T + codes.square().sum(1)
    return dist.argmin(1)


def kmeans(rows: Tensor, k: int, iters: int = 10, spherical: bool = False
           ) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), drawing from
    the global torch RNG; returns centroids ``[k, d]`` and cluster sizes ``[k]``."""
    cent = torch.empty(k, rows.shape[1], dtype=rows.dtype, device=rows.device)
    cent[0] = rows[torch.randint(len(rows), (1,), device=rows.device)]
    d2 = (rows - cent[0]).square().sum(1)
    for j in range(1, k):  # next seed with probability proportional to squared distance
        weights = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)
        cent[j] = rows[torch.multinomial(weights, 1)]
        d2 = torch.minimum(d2, (rows - cent[j]).square().sum(1))
    if spherical:
        cent = F.normalize(cent, dim=1)
    counts = torch.zeros(k, device=rows.device)
    for _ in range(iters):
        idx = nearest(rows, cent)
        counts = torch.bincount(idx, minlength=k).to(rows.dtype)
        sums = torch.zeros_like(cent).index_add_(0, idx, rows)
        filled = counts > 0
        cent[filled] = sums[filled] / counts[filled, None]  # empty clusters keep their seed
        if spherical:
            cent = F.normalize(cent, dim=1)
    return cent, counts


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantisation with optional collapse remedies.

    Args:
        num_codes: codebook size K.
        dim: channels D of the encoder output (and of ``z_q``).
        beta: commitment weight (0.25 in van den Oord et al. 2017).
        ema: update codes by moving averages (no codebook loss) instead of gradients.
        decay: EMA decay of code statistics and of the usage counts (0.99).
        eps: Laplace smoothing of the EMA counts.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        restart_threshold: restart codes used fewer than this many times per step (moving
            average); ``None`` disables restarts.
        lookup_dim: quantise a linear projection to this many dimensions (``None``: D).
        l2_normalize: compare l2-normalised vectors and codes (cosine similarity).
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, kmeans_init: bool = False,
                 kmeans_iters: int = 10, restart_threshold: float | None = None,
                 lookup_dim: int | None = None, l2_normalize: bool = False) -> None:
        super().__init__()
        for name, value in (("num_codes", num_codes), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise MTVAEError(f"{name} must be a positive integer, got {value!r}")
        if num_codes < 2:
            raise MTVAEError(f"a codebook needs at least 2 codes, got num_codes={num_codes}")
        check_positive("beta", beta, allow_zero=True)
        if not 0.0 < decay < 1.0:
            raise MTVAEError(f"decay must lie strictly between 0 and 1, got {decay!r}")
        if restart_threshold is not None:
            check_positive("restart_threshold", restart_threshold)
        if lookup_dim is not None and (not isinstance(lookup_dim, int) or lookup_dim < 1):
            raise MTVAEError(f"lookup_dim must be a positive integer or None, got {lookup_dim!r}")
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.use_ema, self.decay, self.eps = float(beta), ema, float(decay), eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_threshold = restart_threshold
        self.l2_normalize = l2_normalize
        d = lookup_dim or dim
        self.project_in: nn.Module = nn.Linear(dim, d) if lookup_dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(d, dim) if lookup_dim else nn.Identity()
        # Uniform(-1/K, 1/K) as in the reference implementations: a small, collapse-prone start.
        init = torch.empty(num_codes, d).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        self.embedding = nn.Parameter(init, requires_grad=not ema)
        self.register_buffer("usage", torch.zeros(num_codes))  # EMA of assignments per step
        self.register_buffer("ema_sum", torch.zeros(num_codes, d) if ema else torch.zeros(0))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("restarts", torch.tensor(0, dtype=torch.long))

    def codes(self) -> Tensor:
        """The codebook as it is compared with (normalised when ``l2_normalize``): [K, d]."""
        return F.normalize(self.embedding, dim=1) if self.l2_normalize else self.embedding

    def _rows(self, z_e: Tensor) -> Tensor:
        h = self.project_in(_to_rows(z_e))
        return F.normalize(h, dim=1) if self.l2_normalize else h

    # -- codebook updates (training mode only) -----------------------------------------
    @torch.no_grad()
    def _initialise(self, rows: Tensor) -> None:
        k = self.num_codes
        if self.kmeans_init:
            cent, counts = kmeans(rows, k, self.kmeans_iters, spherical=self.l2_normalize)
            self.embedding.copy_(cent)
            self.usage.copy_(counts)
        else:
            self.usage.fill_(1.0)  # one use per step: unused codes fall below 1 at once
        if self.use_ema:
            self.ema_sum.copy_(self.embedding * self.usage[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_dead(self, rows: Tensor) -> Tensor:
        """Move codes whose usage is below the threshold onto random rows; their indices."""
        dead = (self.usage < self.restart_threshold).nonzero().reshape(-1)
        if len(dead) == 0:
            return dead
        pick = torch.randperm(len(rows), device=rows.device)[: len(dead)]
        if len(pick) < len(dead):
            pick = torch.randint(len(rows), (len(dead),), device=rows.device)
        self.embedding[dead] = rows[pick]
        self.usage[dead] = self.restart_threshold  # restarted again next step if still unused
        if self.use_ema:
            self.ema_sum[dead] = rows[pick] * self.usage[dead, None]
        self.restarts += len(dead)
        return dead

    @torch.no_grad()
    def ema_update(self, rows: Tensor, indices: Tensor) -> None:
        """N_k <- g N_k + (1-g) n_k;  m_k <- g m_k + (1-g) sum_{i: k(i)=k} z_i;
        e_k = m_k / N~_k with Laplace-smoothed N~_k = (N_k + eps) / (N + K eps) * N."""
        g = self.decay
        counts = torch.bincount(indices, minlength=self.num_codes).to(rows.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, rows)
        self.usage.mul_(g).add_(counts, alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        n = self.usage.sum()
        smoothed = (self.usage + self.eps) / (n + self.num_codes * self.eps) * n
        self.embedding.copy_(self.ema_sum / smoothed[:, None])

    # -- forward ---------------------------------------------------------------------
    def forward(self, z_e: Tensor) -> QuantizerOutput:
        if z_e.dim() != 4 or z_e.shape[1] != self.dim:
            raise MTVAEError(f"expected encoder outputs [B, {self.dim}, H, W], got "
                             f"{tuple(z_e.shape)}")
        b = z_e.shape[0]
        rows = self._rows(z_e)
        if self.training:
            if not bool(self.initialized):
                self._initialise(rows.detach())
            if self.restart_threshold is not None:
                self.restart_dead(rows.detach())
        codes = self.codes()
        idx = nearest(rows.detach(), codes.detach())
        q = F.embedding(idx, codes)
        losses = {"commitment": self.beta * _per_image((rows - q.detach()).square().sum(1), b)}
        if not self.use_ema:
            losses = {"codebook": _per_image((rows.detach() - q).square().sum(1), b)} | losses
        q_st = rows + (q - rows).detach()  # straight-through estimator
        if self.training:
            with torch.no_grad():
                if self.use_ema:
                    self.ema_update(rows.detach(), idx)
                else:
                    counts = torch.bincount(idx, minlength=self.num_codes).to(rows.dtype)
                    self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        z_q = _to_grid(self.project_out(q_st), z_e.shape)
        h, w = z_e.shape[2:]
        return QuantizerOutput(z_q, idx.reshape(b, h, w), losses,
                               perplexity(idx, self.num_codes).detach())

    @torch.no_grad()
    def lookup(self, indices: Tensor) -> Tensor:
        """Decoder inputs ``[B, D, H, W]`` for code indices ``[B, H, W]``."""
        b, h, w = indices.shape
        rows = self.project_out(F.embedding(indices.reshape(-1), self.codes()))
        return _to_grid(rows, (b, self.dim, h, w))


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2024): round bounded channels to levels.

    ``dim`` encoder channels are projected to ``len(levels)`` channels, channel ``c`` is
    squashed to ``levels[c]`` values by ``tanh`` and rounded (straight through), and the
    result is projected back. The implicit codebook has ``prod(levels)`` entries.
    """

    def __init__(self, dim: int, levels: Sequence[int] = (8, 6, 5), eps: float = 1e-3) -> None:
        super().__init__()
        if not levels or any(not isinstance(v, int) or v < 2 for v in levels):
            raise MTVAEError(f"FSQ levels must be integers ≥ 2, got {list(levels)!r}")
        self.dim, self.levels_list = dim, [int(v) for v in levels]
        self.num_codes = math.prod(self.levels_list)
        lv = torch.tensor(self.levels_list)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1, *self.levels_list[:-1]]), 0),
                             persistent=False)
        self.eps = eps
        d = len(self.levels_list)
        self.project_in: nn.Module = nn.Linear(dim, d) if dim != d else nn.Identity()
        self.project_out: nn.Module = nn.Linear(d, dim) if dim != d else nn.Identity()

    @property
    def _half_width(self) -> Tensor:
        return (self.levels // 2).float()

    def bound(self, z: Tensor) -> Tensor:
        """Squash channel c into the open interval that rounds to ``levels[c]`` integers."""
        half_l = (self.levels - 1).float() * (1 - self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: Tensor) -> Tensor:
        """Rounded, rescaled to [-1, 1]: values (j - L//2) / (L//2) for j = 0 .. L-1."""
        bounded = self.bound(z)
        return (bounded + (bounded.round() - bounded).detach()) / self._half_width

    def codes_to_indices(self, q: Tensor) -> Tensor:
        digits = (q * self._half_width + self._half_width).round().long()
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        digits = (indices[..., None] // self.basis) % self.levels
        return (digits.float() - self._half_width) / self._half_width

    def forward(self, z_e: Tensor) -> QuantizerOutput:
        if z_e.dim() != 4 or z_e.shape[1] != self.dim:
            raise MTVAEError(f"expected encoder outputs [B, {self.dim}, H, W], got "
                             f"{tuple(z_e.shape)}")
        b, _, h, w = z_e.shape
        q = self.quantize(self.project_in(_to_rows(z_e)))
        idx = self.codes_to_indices(q.detach())
        z_q = _to_grid(self.project_out(q), z_e.shape)
        return QuantizerOutput(z_q, idx.reshape(b, h, w), {},
                               perplexity(idx, self.num_codes).detach())

    @torch.no_grad()
    def lookup(self, indices: Tensor) -> Tensor:
        b, h, w = indices.shape
        rows = self.project_out(self.indices_to_codes(indices.reshape(-1)))
        return _to_grid(rows, (b, self.dim, h, w))


# The remedies compared in Chapter 2, by name.
PRESETS: dict[str, dict[str, object]] = {
    "plain": {},
    "kmeans": {"kmeans_init": True},
    "lowdim-l2": {"lookup_dim": 4, "l2_normalize": True},
    "ema": {"ema": True},
    "ema-restart": {"ema": True, "restart_threshold": 1.0},
    "ema-restart-kmeans": {"ema": True, "restart_threshold": 1.0, "kmeans_init": True},
    "fsq": {},
}


def make_quantizer(name: str, dim: int, num_codes: int | None = 512,
                   levels: Sequence[int] = (8, 6, 5), **options: object) -> nn.Module:
    """A quantiser by preset name (see ``PRESETS``); ``options`` override its settings.

    ``fsq`` has ``prod(levels)`` codes: pass ``num_codes=None`` (or that product).
    """
    check_choice("quantizer", name, PRESETS)
    if name == "fsq":
        if num_codes is not None and num_codes != math.prod(levels):
            raise MTVAEError(
                f"FSQ with levels {list(levels)} has {math.prod(levels)} codes, not "
                f"{num_codes}; pass num_codes=None or choose levels whose product is {num_codes}"
            )
        return FSQ(dim, levels, **options)  # type: ignore[arg-type]
    if num_codes is None:
        raise MTVAEError(f"quantizer {name!r} needs num_codes (the codebook size)")
    return VectorQuantizer(num_codes, dim, **(PRESETS[name] | options))  # type: ignore[arg-type]
