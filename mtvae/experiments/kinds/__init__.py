"""Run kinds: what one run of a grid does, registered by name (:mod:`.registry`).

Importing this package registers every kind the named grids use:

* :mod:`.tables`: ``hetero``, ``tables``, ``reference`` and ``baseline`` (the
  heterogeneous tables, Chapters 3.1 and 5);
* :mod:`.aux`: ``aux`` and ``aux-plain`` (supervised heads, Chapter 3.2);
* :mod:`.conditional`: ``cvae`` and ``heads-gen`` (label-conditioned generation, 3.2);
* :mod:`.multimodal`: ``mm`` (Chapter 3.3); :mod:`.hierarchical`: ``hier`` (Chapter 3.4);
* :mod:`.vq`: ``vqhead`` (Chapter 2); :mod:`.beta`: ``beta`` (Chapter 1).

The settings' kinds share one way to train and score (:mod:`.training`). Every kind scores
on validation (what the staged grids choose on) and on test (what the chapters report), and
early-stops on validation, never on test.
"""

from mtvae.experiments.kinds import (  # noqa: F401  (importing registers the kinds)
    aux,
    beta,
    conditional,
    hierarchical,
    multimodal,
    tables,
    vq,
)
from mtvae.experiments.kinds.registry import (
    KINDS,
    STACKED,
    Kind,
    StackedKind,
    available,
    get_kind,
    register,
    register_stacked,
    require,
    stack_group,
    stackable,
)

__all__ = ["KINDS", "STACKED", "Kind", "StackedKind", "available", "get_kind", "register",
           "register_stacked", "require", "stack_group", "stackable"]
