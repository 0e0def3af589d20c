"""The book's headline findings, computed once from the run records for the front matter.

The abstract (book front page) and the Discussion chapter state what the Results chapter
found. Glued values belong to the page that glues them, so those pages recompute the numbers
here, from the same records and with the same functions as Chapter 5
(:mod:`mtvae.studies.results`, :mod:`mtvae.studies.overview`, :mod:`mtvae.stats`): the
paired Wilcoxon–Holm comparison of every MOO method with the plain sum over the grid's
table–rate blocks, the share of paired runs a MOO method wins, and the verdicts of every
multitask setting of the book. Runs without a record are run first (train-or-load, as in
Chapter 5), so with committed records nothing is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mtvae import stats as S
from mtvae.studies import overview as O
from mtvae.studies import results as R

BETTER, WORSE = "better on every seed", "worse on every seed"


@dataclass(frozen=True)
class Findings:
    """What the grid and the other multitask settings say about MOO versus the plain sum."""

    n_records: int
    n_tables: int
    n_moo: int
    n_rates: int
    n_seeds: int
    sum_error: float  # the plain VAE's mean imputation error over the grid
    best_method: str  # the MOO method with the largest mean paired gain on the grid
    best_gain: float
    sig_better: tuple[str, ...]  # Wilcoxon over blocks, Holm-corrected
    sig_worse: tuple[str, ...]
    per_seed_better: float  # share of paired (table, rate, seed) runs a MOO method wins
    n_pairs: int
    settings: pd.DataFrame  # overview.settings_table: one row per setting × condition × method
    strongest_condition: str
    strongest_rho: float
    strongest_p: float
    n_significant_conditions: int
    n_conditions: int

    @property
    def consistent_gains(self) -> pd.DataFrame:
        return self.settings[self.settings.verdict == BETTER]

    @property
    def consistent_losses(self) -> pd.DataFrame:
        return self.settings[self.settings.verdict == WORSE]

    @property
    def paid_gains(self) -> pd.DataFrame:
        """Consistent gains on the main metric that came with a worse second metric."""
        gains = self.consistent_gains
        return gains[gains.cost_gain < 0]


def compute(profile: str, device: str = "auto") -> Findings:
    """Read the grid's and the chapters' records and reduce them to the headline findings."""
    study = R.Study.create(profile, device=device)
    study.run()  # resumable: a no-op once every run of the grid has its record
    runs = study.records()
    methods = list(study.s.methods)
    blocks = R.block_scores(runs, methods)
    wx = S.wilcoxon_holm(blocks, reference=R.REFERENCE)
    gains = R.paired_gains(runs)
    by_method = gains.groupby("method").gain.mean()
    best = str(by_method.idxmax())
    props = R.table_properties(list(study.s.datasets), study.s.max_rows)
    corr = R.correlations(R.conditions(runs, props))
    strongest = corr.iloc[int(corr.rho.abs().fillna(0).to_numpy().argmax())]
    return Findings(
        n_records=len(runs), n_tables=len(study.s.datasets), n_moo=len(methods) - 1,
        n_rates=int(runs.missing_rate.nunique()), n_seeds=len(study.s.seeds),
        sum_error=float(runs[runs.method == R.REFERENCE].mean_error.mean()),
        best_method=best, best_gain=float(by_method[best]),
        sig_better=tuple(wx[wx.significant & (wx.gain > 0)].method),
        sig_worse=tuple(wx[wx.significant & (wx.gain < 0)].method),
        per_seed_better=float((gains.gain > 0).mean()), n_pairs=len(gains),
        settings=O.settings_table(profile, device, runs),
        strongest_condition=str(strongest.condition), strongest_rho=float(strongest.rho),
        strongest_p=float(strongest.p_holm),
        n_significant_conditions=int((corr.p_holm < 0.05).sum()), n_conditions=len(corr),
    )


def _quoted(names: list[str]) -> str:
    """Setting names (which may contain commas) quoted and joined: “a”, “b” and “c”."""
    items = [f"“{n}”" for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def code_list(names: tuple[str, ...] | list[str]) -> str:
    """``a``, ``b`` and ``c`` as Markdown code spans joined in prose."""
    items = [f"`{n}`" for n in names]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def tables_sentence(f: Findings, lead: str = "on heterogeneous tables ") -> str:
    """One clause on the grid: which MOO methods beat (or lose to) the plain sum."""
    if f.sig_better:
        text = (f"{lead}{code_list(f.sig_better)} beat the plain VAE significantly over the "
                "table–rate blocks")
    else:
        text = (f"{lead}no MOO method beats the plain VAE significantly once the number of "
                "comparisons is accounted for")
    if f.sig_worse:
        verb = "is" if len(f.sig_worse) == 1 else "are"
        text += f", while {code_list(f.sig_worse)} {verb} significantly worse"
    return text


def settings_sentence(f: Findings) -> str:
    """One sentence on every multitask setting: consistent gains, losses, and their price."""
    n, g, loss = len(f.settings), len(f.consistent_gains), len(f.consistent_losses)
    text = (f"Of the {n} comparisons of a MOO method with the plain sum across the book's "
            f"multitask settings, {g} are better on every seed, {loss} worse on every seed "
            f"and {n - g - loss} mixed")
    gains = sorted(set(f.consistent_gains.setting))
    losses = sorted(set(f.consistent_losses.setting))
    if gains:
        text += "; the consistent gains are in the settings " + _quoted(gains)
    if losses:
        text += ("; the consistent losses in " if gains else "; the consistent losses are in ") \
            + _quoted(losses)
    text += "."
    paid = f.paid_gains
    if g:
        text += f" {len(paid)} of the {g} consistent gains came with a worse second metric"
        text += (" (" + ", ".join(sorted(set(paid.cost_metric))) + ")." if len(paid) else ".")
    return text
