"""mtvae — executable companion to the thesis *Multitask Variational Autoencoders*.

The package is organised as one concept per module (see ``DESIGN.md``):
data loading (:mod:`mtvae.data`), likelihoods, networks, models that expose the
``loss_terms`` contract (:mod:`mtvae.terms`), combiners that turn terms into gradients
(:mod:`mtvae.moo`), the trainer (:mod:`mtvae.train`), metrics, run records, plots,
named profiles and the papermill regeneration pipeline.

``mtvae.seed(n)`` before building a model makes a whole run reproducible.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mtvae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"


def seed(n: int) -> None:
    """Make everything that follows reproducible: seed Python, NumPy and torch with ``n``.

    Call it once before building a model, so that the weights' initialisation is seeded
    too (``fit(seed=...)`` seeds shuffling and sampling, but the model already exists by
    then). Two processes that call ``mtvae.seed(n)`` and then run the same code on the same
    device and thread count print the same numbers.
    """
    from mtvae.device import seed_everything
    from mtvae.errors import MTVAEError

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise MTVAEError(f"the seed must be an integer ≥ 0, got {n!r}")
    seed_everything(n)


__all__ = ["__version__", "seed"]
