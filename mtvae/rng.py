"""Where models draw their training noise: one hook, so stacked runs get per-member streams.

Models never call ``torch.randn_like`` or ``F.dropout`` directly in ``loss_terms``; they call
:func:`randn_like`, :func:`randn` and :func:`dropout` here. Outside a stacked run these are
exactly the torch calls (same global RNG stream, so single runs are unchanged bit for bit).
Inside :func:`mtvae.stack.fit_stacked` the model runs under ``torch.func.vmap`` over the
members; there a :class:`NoiseBank` is active: every member gets its noise from its *own*
pre-drawn buffer, filled each step from that member's own generator. A member's noise
therefore depends on its seed only — not on the other members, their number or its position
in the stack — which is what makes stacked members independent runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mtvae.errors import MTVAEError


class NoiseBank:
    """Consumes a member's pre-drawn standard normals and uniforms in call order.

    ``normals`` and ``uniforms`` are 1-D (per member, inside ``vmap``). With ``count_only``
    the bank hands out zeros and only counts what the model asked for (to size the buffers).
    """

    def __init__(self, normals: Tensor | None, uniforms: Tensor | None,
                 count_only: bool = False) -> None:
        self.normals, self.uniforms, self.count_only = normals, uniforms, count_only
        self.n_normal = self.n_uniform = 0

    def _take(self, kind: str, like: Tensor, shape: tuple[int, ...]) -> Tensor:
        n = 1
        for s in shape:
            n *= s
        start = self.n_normal if kind == "normal" else self.n_uniform
        if kind == "normal":
            self.n_normal += n
        else:
            self.n_uniform += n
        if self.count_only:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        source = self.normals if kind == "normal" else self.uniforms
        assert source is not None
        if start + n > source.shape[-1]:
            raise MTVAEError(
                f"the stacked engine's noise buffer ran out ({kind}: {start + n} values "
                f"needed, {source.shape[-1]} drawn): the model draws more noise per batch "
                "than on its first batch; train it unstacked (--no-stack)")
        return source[start:start + n].reshape(shape).to(like.dtype)

    def normal(self, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
        return self._take("normal", like, tuple(like.shape if shape is None else shape))

    def uniform(self, like: Tensor) -> Tensor:
        return self._take("uniform", like, tuple(like.shape))


_BANK: ContextVar[NoiseBank | None] = ContextVar("mtvae_noise_bank", default=None)


@contextmanager
def using(bank: NoiseBank | None) -> Iterator[NoiseBank | None]:
    """Route the model's noise through ``bank`` inside the block."""
    token = _BANK.set(bank)
    try:
        yield bank
    finally:
        _BANK.reset(token)


def randn_like(t: Tensor) -> Tensor:
    """Standard normal noise shaped like ``t`` (``torch.randn_like`` outside a stack)."""
    bank = _BANK.get()
    return torch.randn_like(t) if bank is None else bank.normal(t)


def randn(*shape: int, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape`` with ``like``'s dtype and device."""
    bank = _BANK.get()
    if bank is None:
        return torch.randn(*shape, device=like.device, dtype=like.dtype)
    return bank.normal(like, tuple(shape))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (``F.dropout`` outside a stack; a per-member mask inside)."""
    bank = _BANK.get()
    if bank is None or not training or p == 0.0:
        return F.dropout(x, p, training)
    keep = (bank.uniform(x) >= p).to(x.dtype)
    return x * keep / (1.0 - p)
