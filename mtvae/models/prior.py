"""A learned prior over VQ-VAE code grids: a tiny causal transformer.

The VQ-VAE is trained with a uniform prior over codes; to *generate*, a second model learns
p(c) = prod_i p(c_i | c_<i) over the code grid read in raster order (van den Oord et al.
2017 used a PixelCNN; a small decoder-only transformer, as in Esser et al. 2021, does the
same job without the PixelCNN's blind spot). Position i is predicted from a start token
and the codes before i, so its output never depends on codes at positions >= i; sampling
draws one position at a time. Its negative log-likelihood of a grid, in bits, is the code
length of the image's latent code: the VQ-VAE's *rate*, comparable with a VAE's KL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae.errors import MTVAEError
from mtvae.terms import Terms


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(d, dim=2)
        q, k, v = (t.reshape(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return h + self.drop(self.mlp(self.norm2(h)))


class CodePrior(nn.Module):
    """Autoregressive prior p(c) over ``[B, H, W]`` grids of code indices in ``0..K-1``.

    Args:
        num_codes: the codebook size K.
        grid: the code grid's height and width.
        d_model, n_layers, n_heads: transformer size.
        dropout: dropout in the residual branches (the code data set is small).
    """

    def __init__(self, num_codes: int, grid: Sequence[int] = (7, 7), d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if not isinstance(num_codes, int) or num_codes < 2:
            raise MTVAEError(f"num_codes must be an integer ≥ 2, got {num_codes!r}")
        if d_model % n_heads:
            raise MTVAEError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.num_codes, self.grid = num_codes, tuple(int(g) for g in grid)
        self.length = math.prod(self.grid)
        self.token = nn.Embedding(num_codes + 1, d_model)  # index K = start token
        self.position = nn.Parameter(torch.randn(1, self.length, d_model) * 0.02)
        self.blocks = nn.ModuleList(CausalBlock(d_model, n_heads, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, num_codes)

    def _check(self, codes: Tensor) -> Tensor:
        if codes.dtype != torch.long or tuple(codes.shape[1:]) != self.grid:
            raise MTVAEError(f"expected code indices of dtype long and shape [B, {self.grid[0]}, "
                             f"{self.grid[1]}], got {codes.dtype} {tuple(codes.shape)}")
        return codes.reshape(len(codes), -1)

    def logits(self, codes: Tensor) -> Tensor:
        """``[B, L, K]``: row i is the logit of p(c_i | c_<i) (raster order)."""
        seq = self._check(codes)
        start = torch.full_like(seq[:, :1], self.num_codes)
        h = self.token(torch.cat([start, seq[:, :-1]], dim=1)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))

    def log_prob(self, codes: Tensor) -> Tensor:
        """log p(c) per grid, in nats: ``[B]``."""
        seq = self._check(codes)
        logits = self.logits(codes)
        nll = F.cross_entropy(logits.reshape(-1, self.num_codes), seq.reshape(-1),
                              reduction="none")
        return -nll.reshape(seq.shape).sum(1)

    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        """One task: the negative log-likelihood of the code grids ``batch["x"]``."""
        nll = -self.log_prob(batch["x"]).mean()
        return Terms(tasks={"codes": nll}, stats={"bits": nll.detach() / math.log(2)})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Ancestral samples ``[n, H, W]`` (eval mode: no dropout)."""
        if temperature <= 0:
            raise MTVAEError(f"temperature must be > 0, got {temperature!r}")
        was_training = self.training
        self.eval()
        device = self.position.device
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for i in range(self.length):
            logits = self.logits(codes.reshape(n, *self.grid))[:, i] / temperature
            codes[:, i] = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]
        self.train(was_training)
        return codes.reshape(n, *self.grid)
