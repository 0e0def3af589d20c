"""The imputation protocol for heterogeneous tabular data.

Following Javaloy, Meghdadi & Valera (ICML 2022) and HI-VAE (Nazabal et al. 2020), a
fraction of the known cells is masked completely at random (MCAR); the model never sees
them and imputes them. The error is computed in ORIGINAL units, per feature
(:mod:`mtvae.imputation.metric`): the range-normalised RMSE for numerical features, the
error rate for nominal ones.

Two kinds of scored cells (:func:`evaluate_imputation`, ``cells=``): ``"missing"`` -- the
MCAR-masked cells (the ``score`` mask), the corrected protocol and the default -- and
``"observed"`` -- the reconstruction of the observed cells, the anchor paper's own protocol.
Two point estimators (``estimator=``): the predictive ``"mean"`` (default) and the
reference's ``"mode"`` (:mod:`mtvae.likelihoods.features`).

Reference imputers under the same masks, splits and metric
(:mod:`mtvae.imputation.references`): the training mean/mode (:func:`mean_imputation`),
k-NN, MICE-style chained Bayesian ridge and missForest-style chained extremely randomised
trees, all from scikit-learn, fitted on the training split's observed cells only.

The heterogeneous VAE's own run on a masked table -- load the table, size the budget, train
and score (:mod:`mtvae.imputation.vae`) -- is imported from its module and not re-exported
here: it pulls in the models and the trainer, which the metric and the references need not.
"""

from mtvae.imputation.evaluate import CELLS, Imputer, evaluate_imputation
from mtvae.imputation.mean import MeanImputer, mean_imputation
from mtvae.imputation.metric import imputation_errors, summarise
from mtvae.imputation.references import (
    REFERENCES,
    SETTINGS,
    ReferenceImputer,
    reference_imputer,
)

__all__ = [
    "CELLS",
    "REFERENCES",
    "SETTINGS",
    "Imputer",
    "MeanImputer",
    "ReferenceImputer",
    "evaluate_imputation",
    "imputation_errors",
    "mean_imputation",
    "reference_imputer",
    "summarise",
]
