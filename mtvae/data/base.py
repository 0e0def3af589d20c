"""Dataset containers: splits of aligned tensors and an in-memory mini-batch iterator.

Whole datasets live on the training device; a mini-batch is an index into them, which
avoids per-batch host-to-device copies. A batch is a ``dict`` of tensors (``"x"``, and
``"y"``/``"mask"`` where they exist), the input of every model's ``loss_terms``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import Tensor

from mtvae.errors import MTVAEError

Batch = dict[str, Tensor]
Transform = Callable[[Batch, torch.Generator | None], Batch]


@dataclass
class Split:
    """Aligned tensors (first dimension = examples) and an optional training transform."""

    tensors: dict[str, Tensor]
    transform: Transform | None = None

    def __post_init__(self) -> None:
        if "x" not in self.tensors:
            raise MTVAEError("a Split needs an 'x' tensor")
        sizes = {k: len(v) for k, v in self.tensors.items()}
        if len(set(sizes.values())) != 1:
            raise MTVAEError(f"tensors of a Split must have the same length, got {sizes}")
        if len(self) == 0:
            raise MTVAEError("this split is empty: there is no data to train or evaluate on")
        x = self.tensors["x"]
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise MTVAEError("the inputs contain NaN or infinite values; clean or impute them")

    def __len__(self) -> int:
        return len(self.tensors["x"])

    @property
    def x(self) -> Tensor:
        return self.tensors["x"]

    @property
    def y(self) -> Tensor:
        if "y" not in self.tensors:
            raise MTVAEError("this split has no labels 'y'")
        return self.tensors["y"]

    def to(self, device: torch.device | str) -> Split:
        return replace(self, tensors={k: v.to(device) for k, v in self.tensors.items()})

    def subset(self, index: Tensor) -> Split:
        """Rows selected by an index or boolean mask, keeping the transform."""
        return replace(self, tensors={k: v[index] for k, v in self.tensors.items()})

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        train: bool = False,
    ) -> Iterator[Batch]:
        """Yield mini-batches; the transform (e.g. dynamic binarisation) runs when ``train``."""
        if batch_size < 1:
            raise MTVAEError(f"batch_size must be ≥ 1, got {batch_size}")
        n = len(self)
        device = self.x.device
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in self.tensors.items()}
            if train and self.transform is not None:
                batch = self.transform(batch, generator)
            yield batch


@dataclass
class Dataset:
    """Train/validation/test splits plus what a model needs to know about the data."""

    name: str
    train: Split
    val: Split
    test: Split
    x_shape: tuple[int, ...]
    n_classes: int | None = None
    info: dict[str, object] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Dataset:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> pd.DataFrame:
        """Examples per split and, for labelled data, per class."""
        rows = {}
        for name, split in self.splits().items():
            row = {"examples": len(split)}
            if "y" in split.tensors and self.n_classes is not None:
                counts = torch.bincount(split.y.cpu(), minlength=self.n_classes)
                row |= {f"class {c}": int(n) for c, n in enumerate(counts)}
            rows[name] = row
        return pd.DataFrame.from_dict(rows, orient="index")
