"""Building blocks: MLPs, a small convolutional encoder/decoder for 28x28 images, and its
spatial variant that keeps a 7x7 grid of code vectors (for VQ-VAEs)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtvae import rng
from mtvae.errors import MTVAEError


class Dropout(nn.Module):
    """``nn.Dropout`` whose mask comes from :func:`mtvae.rng.dropout` (per member when
    stacked; exactly ``F.dropout`` otherwise). Same state dict as ``nn.Dropout``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return rng.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int | None = None,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Linear + activation layers; a last linear layer to ``out_dim`` when given."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), activation()]
        prev = width
    if out_dim is not None:
        layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def _check_28(shape: tuple[int, ...]) -> None:
    if tuple(shape[-2:]) != (28, 28):
        raise MTVAEError(
            f"the convolutional architecture expects 28x28 images, got shape {tuple(shape)}; "
            "use arch='mlp' for other sizes"
        )


class ConvEncoder(nn.Module):
    """[B, C, 28, 28] -> [B, out_dim] with two stride-2 convolutions (28 -> 14 -> 7)."""

    def __init__(self, shape: tuple[int, ...], out_dim: int, channels: int = 32) -> None:
        super().__init__()
        _check_28(shape)
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(shape[0], c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, 256),
            nn.ReLU(),
            nn.Linear(256, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """[B, in_dim] -> [B, out_channels, 28, 28], mirroring :class:`ConvEncoder`."""

    def __init__(self, in_dim: int, shape: tuple[int, ...], out_channels: int,
                 channels: int = 32) -> None:
        super().__init__()
        _check_28(shape)
        c = channels
        self.net = nn.Sequential(
            nn.Linear(in_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 2 * c * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class GridEncoder(nn.Module):
    """[B, C, 28, 28] -> [B, out_channels, 7, 7]: a spatial code grid (VQ-VAE encoder)."""

    def __init__(self, shape: tuple[int, ...], out_channels: int, channels: int = 32) -> None:
        super().__init__()
        _check_28(shape)
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(shape[0], c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * c, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GridDecoder(nn.Module):
    """[B, in_channels, 7, 7] -> [B, out_channels, 28, 28], mirroring :class:`GridEncoder`."""

    def __init__(self, in_channels: int, shape: tuple[int, ...], out_channels: int,
                 channels: int = 32) -> None:
        super().__init__()
        _check_28(shape)
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
