"""Impute a split, map it to original units and score one of two kinds of cells."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

from mtvae.data.base import Dataset, Split
from mtvae.data.schema import check_same_columns
from mtvae.errors import MTVAEError, check_choice
from mtvae.imputation.metric import imputation_errors, summarise
from mtvae.imputation.references import REFERENCES, reference_imputer
from mtvae.imputation.space import schema_of, to_original
from mtvae.likelihoods import check_estimator

CELLS = ("missing", "observed")
"""The cells :func:`evaluate_imputation` scores (see there)."""

_MASK_OF = {"missing": "score", "observed": "mask"}


class Imputer(Protocol):
    """Anything that imputes a split in model space (a HeteroVAE, the references)."""

    def impute(
        self,
        data: Mapping[str, Tensor] | Split,
        batch_size: int = ...,
        *,
        estimator: str = ...,
        reconstruct: bool = ...,
    ) -> Tensor: ...


def evaluate_imputation(
    model: Imputer | str,
    dataset: Dataset,
    split: str = "test",
    batch_size: int = 1000,
    *,
    estimator: str = "mean",
    cells: str = "missing",
    seed: int = 0,
) -> dict[str, object]:
    """Impute ``split`` in model space, map it to original units, score ``cells``.

    Args:
        model: a trained HeteroVAE, an imputer from :func:`reference_imputer` (or
            :func:`mean_imputation`), or a reference's name (one of :data:`REFERENCES`,
            e.g. ``"mean"`` for the baseline), fitted here on ``dataset``'s train split.
        split: ``train``, ``val`` or ``test``.
        estimator: the point estimate of each cell: ``"mean"`` (the predictive mean; the
            default) or ``"mode"`` (the reference protocol's LogNormal mode and floor of the
            Poisson rate; an ablation). Point imputers round their count columns under
            ``"mode"``. See :mod:`mtvae.likelihoods.features`.
        cells: which cells of ``split`` are scored:

            * ``"missing"`` (the default, the corrected protocol): the MCAR-masked cells
              with a known value (the split's ``score`` mask), imputed from the observed
              cells; the model never saw them.
            * ``"observed"`` (the anchor paper's protocol, Javaloy et al. 2022):
              reconstruction of the OBSERVED cells (the ``mask`` cells) from the same
              observed input; every cell is the model's prediction, the observed ones
              included. Used on the validation split to reproduce the anchor's numbers.
              Only imputers that can reconstruct support it (a HeteroVAE, the mean
              baseline); the scikit-learn references refuse it.
        seed: seeds a reference fitted here from its name.

    Returns:
        ``{"errors": Series per feature, "mean", "numerical", "nominal": floats,
        "n_scored": number of scored cells, "cells": cells, "estimator": estimator}``.
    """
    check_choice("split", split, ("train", "val", "test"))
    check_choice("cells", cells, CELLS)
    check_estimator(estimator)
    schema = schema_of(dataset)
    if isinstance(model, str):
        check_choice("baseline", model, REFERENCES)
        model = reference_imputer(model, dataset, seed=seed)
    check_same_columns(getattr(model, "schema", None), schema, f"dataset {dataset.name!r}")
    part = dataset.splits()[split]
    which = _MASK_OF[cells]
    if which not in part.tensors:
        raise MTVAEError(
            f"the {split} split has no {which!r} mask of cells to score with cells={cells!r}; "
            "load the table with mtvae.data.tabular"
        )
    if isinstance(model, nn.Module):
        part = part.to(next(model.parameters()).device)
    x_imp = model.impute(part, batch_size=batch_size, estimator=estimator,
                         reconstruct=cells == "observed").cpu()
    part = part.to("cpu")
    scored = part.tensors[which]
    errors = imputation_errors(
        to_original(dataset, part.tensors["x"].double()),
        to_original(dataset, x_imp.double()),  # float64: exp of a large log stays finite
        scored,
        schema,
        torch.as_tensor(dataset.info["ranges"]).cpu(),
    )
    return {"errors": errors, **summarise(errors, schema),
            "n_scored": int((scored > 0).sum()), "cells": cells, "estimator": estimator}
