"""Errors that name the problem and the fix.

Every user-facing check in the library raises one of these, so that bad input never
surfaces as a stack trace from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Iterable


class MTVAEError(ValueError):
    """Bad input or configuration: the message says what is wrong and how to fix it."""


class TrainingDivergedError(MTVAEError, RuntimeError):
    """A training run diverged (non-finite or exploding loss, exploding weights) and was stopped.

    An :class:`MTVAEError` like every other user-facing fault (the message names the epoch,
    the step, the loss terms and the fix), and still a ``RuntimeError`` for older callers.
    """


class MTVAEWarning(UserWarning):
    """Something the library changed or suspects in the user's data, with the fix."""


class ZerosReplacedWarning(MTVAEWarning):
    """Zeros in a ``pos`` (strictly positive) column were replaced before the log."""


class SchemaFitWarning(MTVAEWarning):
    """A column's declared type fits its training values poorly (see :mod:`mtvae.marginals`)."""


class TimeLimitReached(MTVAEError):
    """A time-boxed call (``--max-minutes``) reached its limit at a run boundary."""


DEADLINE_ENV = "MTVAE_DEADLINE"
"""Unix time after which no new run starts (set by ``regenerate --max-minutes``)."""


def check_deadline(what: str) -> None:
    """Raise :class:`TimeLimitReached` before starting ``what`` once the deadline passed."""
    import os
    import time

    value = os.environ.get(DEADLINE_ENV)
    if value and time.time() >= float(value):
        raise TimeLimitReached(f"the time limit was reached before {what}; finished runs are "
                               "recorded: run the same command again to continue")


def check_choice(kind: str, value: object, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise an error listing them."""
    options = sorted(valid)
    if not isinstance(value, str) or value not in options:
        raise MTVAEError(f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(options)}")
    return value


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise a clear error unless ``value`` is a positive (or non-negative) finite number."""
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or value != value or not ok:
        bound = "≥ 0" if allow_zero else "> 0"
        raise MTVAEError(f"{name} must be a number {bound}, got {value!r}")
