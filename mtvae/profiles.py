"""Named profiles: how much compute each chapter spends.

``smoke`` runs every code path of every chapter in about a minute on two CPU cores (CI,
nbval); ``full`` produces the thesis numbers. Chapters read their settings from here so
that the methodology chapter can render the hyper-parameters instead of retyping them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from dataclasses import fields as fields_of

import pandas as pd

from mtvae.errors import MTVAEError, check_choice


@dataclass(frozen=True)
class VAEStudy:
    """Settings of Chapter 1 (VAEs on MNIST-5k); its β sweep is the ``beta`` grid
    (:class:`BetaGrid`)."""

    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    batch_size: int = 100
    lr: float = 1e-3
    epochs: int = 300
    patience: int = 20
    train_size: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    iwae_ks: tuple[int, ...] = (1, 10, 100, 1000, 5000)
    iwae_eval_size: int = 250
    # every model of the chapter trains under the reference budget (``epochs``, ``patience``)
    # and stops by patience: the convolutional, likelihood, 2-d and anomaly models once had
    # caps of 50, 80, 100 and 40 epochs, which most of their runs reached still improving
    conv_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    conv_ks: tuple[int, ...] = (1, 100)
    anomaly_digits: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    anomaly_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # pPCA: a cap well above where patience stops it (200 epochs stopped none of 5 runs)
    ppca_epochs: int = 2000
    ppca_ks: tuple[int, ...] = (1, 5, 10, 50, 100, 500, 1000, 5000)
    ppca_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class VQStudy:
    """Settings of Chapter 2 (VQ-VAEs on MNIST-5k)."""

    quantizer: str = "ema-restart"  # the reference VQ-VAE
    num_codes: int = 512
    code_dim: int = 16
    channels: int = 32
    batch_size: int = 100
    lr: float = 1e-3
    epochs: int = 25
    patience: int = 5
    train_size: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    remedies: tuple[str, ...] = ("plain", "kmeans", "lowdim-l2", "ema", "ema-restart", "fsq")
    fsq_levels: tuple[int, ...] = (8, 6, 5)
    sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    size_remedies: tuple[str, ...] = ("plain", "ema-restart")
    ablation_epochs: int = 10
    ablation_seeds: tuple[int, ...] = (0, 1)
    prior_d_model: int = 64
    prior_layers: int = 2
    prior_epochs: int = 20
    prior_lr: float = 3e-3
    prior_patience: int = 4
    n_samples: int = 1000
    vae_gamma: float = 2.0
    classifier_epochs: int = 15


@dataclass(frozen=True)
class GridStudy:
    """Settings of the single-stage experiment grid ``hetero``: ``python -m mtvae grid hetero``.

    The heterogeneous-VAE imputation protocol (:mod:`mtvae.imputation.vae`) at a fixed
    budget of 1000 steps, crossed over tables x methods x missing rates x seeds, plus the
    mean/mode baseline per table, rate and seed: 450 + 90 records in ``full``. No chapter
    reads its records any more (the book's tabular comparisons are the tables grid,
    :class:`TablesStudy`). The grid remains as the workload of ``python -m mtvae bench grid``
    (:mod:`mtvae.bench.grid`: ``hetero`` runs with the network and optimiser of the ``smoke``
    settings) and as the CLI's small example grid. Its fields are unchanged so that its run
    ids are too.
    """

    datasets: tuple[str, ...] = ("wine", "boston", "breast_cancer", "hi", "rwm5yr", "labour")
    methods: tuple[str, ...] = ("sum", "pcgrad", "imtl-g", "upgrad", "mgda")
    missing_rates: tuple[float, ...] = (0.1, 0.3, 0.5)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_rows: int | None = 3000
    hidden: int = 100
    depth: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    steps: int = 1000
    patience_steps: int = 250
    monitor_every: int = 10


@dataclass(frozen=True)
class TablesStudy:
    """Settings of the tables grid (Chapters 3-5): ``python -m mtvae grid tables``.

    Two stages. **Tuning**: every method family gets the same budget of
    ``len(variants) x len(lrs)`` configurations — the plain sum its three static task
    weightings, each MOO method its main option (CR-MOGM smoothing of the weights, or
    GradNorm's alpha) — trained at ``tuning_rate`` on ``tuning_seeds`` (masks and
    initialisations never reported) and chosen by the mean validation error of the missing
    cells. **Evaluation**: the chosen configuration on ``seeds`` at every missing rate, and
    the default one (first variant, first learning rate: the untuned comparison and the
    anchor protocol) at ``tuning_rate``. The ``parameter_families`` (Jacobian descent over
    the shared parameters, the costliest family per run on CPU) answer
    a narrower question — does the step-size rescaling matter? — so after the same tuning
    they are evaluated at ``tuning_rate`` only, on the first ``parameter_seeds`` seeds, on
    ``parameter_datasets``. Budgets are in optimiser steps whatever the table's
    size; validation every ``val_every_steps`` steps; patience in steps.
    """

    datasets: tuple[str, ...] = ("wine", "boston", "breast_cancer", "labour", "hi", "rwm5yr",
                                 "diamonds", "movies")
    row_caps: tuple[tuple[str, int], ...] = (("diamonds", 10000), ("movies", 10000))
    seed_caps: tuple[tuple[str, int], ...] = (("hi", 5), ("rwm5yr", 5), ("diamonds", 5),
                                              ("movies", 5))
    missing_rates: tuple[float, ...] = (0.1, 0.3, 0.5)
    seeds: tuple[int, ...] = tuple(range(10))
    tuning_seeds: tuple[int, ...] = (100, 101, 102)
    tuning_rate: float = 0.3
    families: tuple[str, ...] = ("sum", "mgda", "pcgrad", "imtl-g", "upgrad", "dualproj",
                                 "aligned-mtl", "gradnorm+pcgrad", "nsgd+imtl-g")
    parameter_families: tuple[str, ...] = ("imtl-g@parameter-rescaled",
                                           "pcgrad@parameter-rescaled", "imtl-g@parameter")
    # Cut (methods before tables, per issue 12's priorities): on boston the three parameter
    # families cost 0.8 core-hours for their first 37 of 74 runs, so two more tables would
    # cost ~3 of the grid's remaining ~14 core-hours.
    parameter_datasets: tuple[str, ...] = ("wine", "boston")
    parameter_seeds: int = 5
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    hidden: int = 100
    depth: int = 3
    batch_size: int = 256
    steps: int = 5000
    patience_steps: int = 400
    val_every_steps: int = 50
    monitor_every: int = 50


@dataclass(frozen=True)
class MultimodalStudy:
    """Settings of Chapter 3, "Multimodal VAEs" (paired MNIST / 8x8 digit / label)."""

    latent_dim: int = 20
    hidden: int = 256
    batch_size: int = 100
    lr: float = 1e-3
    epochs: int = 20  # 30 runs in about 9 CPU minutes (one thread)
    patience: int = 5
    train_size: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    fusions: tuple[str, ...] = ("poe", "moe", "mopoe")
    methods: tuple[str, ...] = ("sum", "imtl-g")
    monitor_every: int = 10
    digit_classifier_epochs: int = 30
    n_samples: int = 1000
    loglik_samples: int = 10


LOG_WEIGHTS = (0.1, 1.0, 10.0, 100.0, 1000.0)
TUNED_CRMOGM = (0.0, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class AuxGrid:
    """Settings of the staged grid ``aux`` (Chapter 3, auxiliary heads, done properly).

    **Tuning** on ``tuning_seeds`` (never reported): every family gets
    ``len(label_weights) == len(crmogm)`` configurations — the plain sum its label weight
    lambda from ``label_weights``, each MOO method its CR-MOGM smoothing from ``crmogm``
    (lambda = 1: IMTL-G and UPGrad do not see the scale of a task). The choice maximises
    the mean of ``select_on`` over the tuning seeds (VALIDATION only). **Evaluation** on
    ``seeds``: the chosen configuration and the default one (sum: lambda = 1, MOO: no
    smoothing), plus the plain VAE with linear probes. Caps/patience are a guess (the old
    runs hit their 20-epoch cap), checked on the records: ``stopped_early`` is recorded.
    """

    datasets: tuple[str, ...] = ("mnist5k", "shapes")
    label_fractions: tuple[float, ...] = (1.0, 0.1, 0.01)  # MNIST; shapes: 100 % only
    families: tuple[str, ...] = ("sum", "imtl-g", "pcgrad", "upgrad")
    label_weights: tuple[float, ...] = LOG_WEIGHTS
    default_label_weight: float = 1.0
    crmogm: tuple[float, ...] = TUNED_CRMOGM
    select_on: str = "val_head_acc"  # mean head accuracy on the LABELLED validation rows
    seeds: tuple[int, ...] = tuple(range(10))
    tuning_seeds: tuple[int, ...] = (100, 101, 102)
    latent_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    batch_size: int = 100
    lr: float = 1e-3
    # 400, not 200: on shapes the sum at small lambda, PCGrad and UPGrad were still improving
    # at epoch 200 (36 % of its runs stopped by patience); the records that patience stopped
    # under 200 carried over (`grid aux --raise-cap`), the capped ones ran again
    epochs: int = 400
    patience: int = 10
    train_size: int | None = None
    shapes_n: int = 6000
    eval_samples: int = 10


@dataclass(frozen=True)
class CvaeGrid:
    """Settings of the grid ``cvae`` (label-conditioned generation on MNIST-5k, Chapter 3.2):
    a conditional VAE and the multitask VAE with a digit head trained with the sum at each of
    ``head_weights`` (1: the untuned sum; 100: the weight the ``aux`` grid's tuning chose on
    validation at 100 % labels), on ``seeds``, with the :class:`AuxGrid` architecture and
    budget; ``per_class`` images generated per label."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    head_weights: tuple[float, ...] = (1.0, 100.0)
    per_class: int = 100


@dataclass(frozen=True)
class MultimodalGrid:
    """Settings of the staged grid ``multimodal`` (PoE / MoE / MoPoE on paired digits).

    As :class:`AuxGrid`: the sum tunes the label modality's weight (``label_weights``; the
    image modalities keep weight 1), each MOO method its CR-MOGM smoothing, the same number
    of configurations each; the choice maximises the mean validation single-source
    coherence (``select_on``) over ``tuning_seeds``.
    """

    fusions: tuple[str, ...] = ("poe", "moe", "mopoe")
    families: tuple[str, ...] = ("sum", "imtl-g", "pcgrad", "upgrad")
    label_weights: tuple[float, ...] = (1.0, 5.0, 25.0, 125.0, 625.0)
    default_label_weight: float = 1.0
    crmogm: tuple[float, ...] = TUNED_CRMOGM
    select_on: str = "val_cross_mean"
    # 10 evaluation seeds although it is the costliest setting: with 5 the two-sided
    # signed-rank test cannot reach p < 0.0625 (2 / 2**5); 2 seeds to tune
    seeds: tuple[int, ...] = tuple(range(10))
    tuning_seeds: tuple[int, ...] = (100, 101)
    latent_dim: int = 20
    hidden: int = 256
    batch_size: int = 100
    lr: float = 1e-3
    epochs: int = 200
    patience: int = 10
    train_size: int | None = None
    n_samples: int = 1000
    loglik_samples: int = 10


@dataclass(frozen=True)
class HierGrid:
    """Settings of the grid ``hier``: a log-spaced (beta1, beta2) grid trained with the sum on
    ``seeds``, and the rates as MOO tasks (at beta1 = beta2 = 1) with each of ``moo_methods``
    against the sum on ``moo_seeds``."""

    datasets: tuple[str, ...] = ("mnist5k", "shapes")
    betas1: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    betas2: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    moo_methods: tuple[str, ...] = ("pcgrad", "imtl-g", "upgrad")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # the (beta1, beta2) grid
    # the rates as tasks against the sum: 10 seeds, since with 5 the two-sided signed-rank
    # test cannot reach p < 0.0625 (2 / 2**5)
    moo_seeds: tuple[int, ...] = tuple(range(10))
    z1_dim: int = 16
    z2_dim: int = 8
    hidden: tuple[int, ...] = (256, 128)
    batch_size: int = 100
    lr: float = 2e-3
    # 800, not 200: every MNIST-5k run stopped by patience under 200, but on shapes 41 of the
    # first 50 runs reached 200 still improving (best epochs 159-200); the records that
    # patience stopped carried over (`grid hier --raise-cap`), the capped ones ran again
    epochs: int = 800
    patience: int = 10
    train_size: int | None = None
    shapes_n: int = 6000


@dataclass(frozen=True)
class VQHeadGrid:
    """Settings of the staged grid ``vqhead``: a VQ-VAE with a label head on z_q (Chapter 2's
    reference VQ-VAE), the sum's label weight against MOO, equal budgets as
    :class:`AuxGrid`; the choice maximises the validation accuracy."""

    families: tuple[str, ...] = ("sum", "pcgrad", "imtl-g", "upgrad")
    label_weights: tuple[float, ...] = LOG_WEIGHTS
    default_label_weight: float = 1.0
    crmogm: tuple[float, ...] = TUNED_CRMOGM
    select_on: str = "val_accuracy"
    # 10 seeds: with 5 the two-sided signed-rank test cannot reach p < 0.0625 (2 / 2**5)
    seeds: tuple[int, ...] = tuple(range(10))
    tuning_seeds: tuple[int, ...] = (100, 101)
    quantizer: str = "ema-restart"
    num_codes: int = 512
    code_dim: int = 16
    channels: int = 32
    batch_size: int = 100
    lr: float = 1e-3
    # a pilot (sum, tuning seed 100): lambda = 1 stopped by patience at epoch 247 (best 237),
    # lambda = 100 at epoch 73; under a 100-epoch cap both lambda = 1 tuning runs hit the cap
    epochs: int = 400
    patience: int = 10
    train_size: int | None = None


@dataclass(frozen=True)
class BetaGrid:
    """Settings of the grid ``beta`` (Chapter 1's beta sweep at the reference budget: the
    reference model's epochs and patience); beta is chosen by the mean validation −ELBO
    (:func:`mtvae.experiments.setting_grids.beta_choice`), every reported number is test."""

    betas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    seeds: tuple[int, ...] = tuple(range(10))
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    batch_size: int = 100
    lr: float = 1e-3
    epochs: int = 300
    patience: int = 20
    train_size: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    vae: VAEStudy = field(default_factory=VAEStudy)
    vq: VQStudy = field(default_factory=VQStudy)
    grid: GridStudy = field(default_factory=GridStudy)
    tables: TablesStudy = field(default_factory=TablesStudy)
    multimodal: MultimodalStudy = field(default_factory=MultimodalStudy)
    aux_grid: AuxGrid = field(default_factory=AuxGrid)
    mm_grid: MultimodalGrid = field(default_factory=MultimodalGrid)
    cvae_grid: CvaeGrid = field(default_factory=CvaeGrid)
    hier_grid: HierGrid = field(default_factory=HierGrid)
    vq_grid: VQHeadGrid = field(default_factory=VQHeadGrid)
    beta_grid: BetaGrid = field(default_factory=BetaGrid)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="every code path, tiny budgets: ~1 minute per chapter on 2 CPU cores",
        vae=VAEStudy(
            epochs=3, patience=2, train_size=1000, seeds=(0,), iwae_ks=(1, 10, 100),
            iwae_eval_size=100,
            conv_seeds=(0,), conv_ks=(1, 10), anomaly_digits=(1,),
            anomaly_seeds=(0,), ppca_epochs=20, ppca_ks=(1, 10, 100),
            ppca_seeds=(0,),
        ),
        vq=VQStudy(
            epochs=2, patience=2, train_size=1000, seeds=(0,), sizes=(16, 64),
            ablation_epochs=1, ablation_seeds=(0,), prior_epochs=2, n_samples=100,
            classifier_epochs=1,
        ),
        grid=GridStudy(
            datasets=("wine", "labour"), methods=("sum", "pcgrad"), missing_rates=(0.1, 0.5),
            seeds=(0,), max_rows=400, steps=30, patience_steps=30, monitor_every=2,
        ),
        tables=TablesStudy(
            datasets=("wine", "labour"), row_caps=(("labour", 300),), missing_rates=(0.1, 0.5),
            seeds=(0, 1), tuning_seeds=(100,), tuning_rate=0.5,
            families=("sum", "pcgrad", "gradnorm+pcgrad"),
            parameter_families=("pcgrad@parameter-rescaled",), parameter_datasets=("wine",),
            parameter_seeds=1,
            lrs=(1e-3,), steps=40, patience_steps=20, val_every_steps=10, monitor_every=5,
        ),
        multimodal=MultimodalStudy(epochs=2, patience=2, train_size=1000, seeds=(0,),
                                   fusions=("poe", "mopoe"), methods=("sum", "imtl-g"),
                                   digit_classifier_epochs=3, n_samples=200,
                                   loglik_samples=2),
        aux_grid=AuxGrid(label_fractions=(1.0, 0.1), families=("sum", "pcgrad"),
                         label_weights=(1.0, 100.0), crmogm=(0.0, 0.5), seeds=(0, 1),
                         tuning_seeds=(100,), hidden=(64, 32), epochs=2, patience=1,
                         train_size=500, shapes_n=600, eval_samples=1),
        cvae_grid=CvaeGrid(seeds=(0, 1), head_weights=(1.0,), per_class=5),
        mm_grid=MultimodalGrid(fusions=("poe",), families=("sum", "pcgrad"),
                               label_weights=(1.0, 25.0), crmogm=(0.0, 0.5), seeds=(0, 1),
                               tuning_seeds=(100,), hidden=64, epochs=2, patience=1,
                               train_size=500, n_samples=100, loglik_samples=1),
        hier_grid=HierGrid(betas1=(1.0, 4.0), betas2=(1.0, 4.0),
                           moo_methods=("pcgrad",), seeds=(0, 1), moo_seeds=(0, 1),
                           hidden=(64, 32), epochs=2,
                           patience=1, train_size=500, shapes_n=600),
        vq_grid=VQHeadGrid(families=("sum", "pcgrad"), label_weights=(1.0, 100.0),
                           crmogm=(0.0, 0.5), seeds=(0, 1), tuning_seeds=(100,), num_codes=32,
                           channels=8, epochs=1, patience=1, train_size=300),
        beta_grid=BetaGrid(betas=(0.5, 1.0), seeds=(0,), hidden=(64, 32), epochs=2,
                           patience=1, train_size=500),
    ),
    "full": Profile(
        name="full",
        description=("the thesis numbers, all seeds and budgets: 25-50 CPU minutes a chapter; "
                     "the tables grid behind Chapters 3.1 and 5 runs outside the book "
                     "(`python -m mtvae grid tables`, many core-hours)"),
    ),
}


def available() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str) -> Profile:
    """A profile by name; an unknown name raises an error listing the valid ones."""
    check_choice("profile", name, PROFILES)
    return PROFILES[name]


def _show(value: object) -> str:
    if value is None:
        return "all"
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)


def settings_table(study: str = "vae") -> pd.DataFrame:
    """One row per setting of a chapter's study, one column per profile (as text)."""
    fields = {name: getattr(get_profile(name), study, None) for name in available()}
    missing = [n for n, v in fields.items() if v is None]
    if missing:
        valid = [f.name for f in fields_of(Profile) if f.name not in ("name", "description")]
        raise MTVAEError(f"profiles {missing} have no study {study!r}; valid studies: "
                         + ", ".join(valid))
    return pd.DataFrame({n: {k: _show(v) for k, v in asdict(f).items()}
                         for n, f in fields.items()})
