"""mtvae — executable companion to the thesis *Multitask Variational Autoencoders*.

The package is organised as one concept per module (see ``DESIGN.md``):
data loading (:mod:`mtvae.data`), likelihoods, networks, models that expose the
``loss_terms`` contract (:mod:`mtvae.terms`), combiners that turn terms into gradients
(:mod:`mtvae.moo`), the trainer (:mod:`mtvae.train`), metrics, run records, plots,
named profiles and the papermill regeneration pipeline.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mtvae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
