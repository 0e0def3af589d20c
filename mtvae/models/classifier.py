"""A small CNN digit classifier, trained here on MNIST-5k, to score generated images.

Sample quality is judged without downloaded feature extractors: a classifier trained on
real images reads each generated image, and two numbers summarise its verdicts (the two
ingredients of the Inception score, Salimans et al. 2016): the mean confidence of its top
class (are samples recognisable digits?) and the entropy of the average predicted class
distribution (do samples cover all ten digits? log2 10 ≈ 3.32 bits at most).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtvae.errors import MTVAEError
from mtvae.terms import Terms

SIDES = (28, 8)  # MNIST images and scikit-learn's 8x8 digits


class Classifier(nn.Module):
    """Two conv + max-pool stages and an MLP head for ``[B, 1, 28, 28]`` (or 8x8) images.

    The two pooling stages divide the side by 4 (28 -> 7, 8 -> 2); the 28x28 network is the
    one chapter 2 trained (same layers, same order, so the same seed gives the same weights).
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10,
                 channels: int = 16, hidden: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        side = int(x_shape[-1])
        if tuple(x_shape[-2:]) not in {(s, s) for s in SIDES}:
            raise MTVAEError(f"the classifier expects 28x28 or 8x8 images, got shape "
                             f"{tuple(x_shape)}; resize the images to one of these")
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(x_shape[0], c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * c * (side // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss_terms(self, batch: dict[str, Tensor]) -> Terms:
        logits = self(batch["x"])
        ce = F.cross_entropy(logits, batch["y"])
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return Terms(tasks={"y": ce}, stats={"accuracy": acc.detach()})

    @torch.no_grad()
    def predict_proba(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """Class probabilities ``[N, n_classes]`` (eval mode), on the CPU."""
        self.eval()
        return torch.cat([F.softmax(self(x[i: i + batch_size]), 1).cpu()
                          for i in range(0, len(x), batch_size)])
