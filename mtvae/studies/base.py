"""What every chapter's study shares: its profile, device, run grid and loaded data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from mtvae.data import Dataset, load
from mtvae.device import resolve_device
from mtvae.profiles import Profile, get_profile
from mtvae.train import FitResult


@dataclass
class ChapterStudy:
    """Base of each chapter's ``Study``: subclasses set ``chapter`` (e.g. ``"01"``)."""

    chapter: ClassVar[str]

    profile: Profile
    device: str = "auto"
    progress: str = "auto"
    _data: dict[Any, Dataset] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, profile: str, device: str = "auto", progress: str = "auto") -> Self:
        return cls(get_profile(profile), device=resolve_device(device).type, progress=progress)

    @property
    def grid(self) -> str:
        """The folder of this chapter's run records: ``chNN-<profile>``."""
        return f"ch{self.chapter}-{self.profile.name}"


def binarized_images(name: str, train_size: int | None, shapes_n: int) -> Dataset:
    """MNIST-5k (optionally a stratified training subset) or ``n`` procedural shapes,
    dynamically binarised for a Bernoulli likelihood."""
    if name == "shapes":
        return load(name, binarize="dynamic", n=shapes_n)
    return load(name, binarize="dynamic", train_size=train_size)


def fit_info(result: FitResult) -> dict[str, Any]:
    """What a chapter's run records about its training: the best epoch, the epochs run, the
    cap and whether patience stopped it before the cap (the book's convergence rule,
    Chapter 4), the training seconds and the best validation loss."""
    return {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "epoch_cap": result.epoch_cap, "stopped_early": result.stopped_early,
            "train_seconds": result.seconds, "best_val": result.best_val}
