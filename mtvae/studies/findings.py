"""The book's headline findings, computed once from the run records for the front matter.

The abstract (book front page) and the Discussion chapter state what the Results chapter
found. Glued values belong to the page that glues them, so those pages recompute the numbers
here, from the same records and with the same functions as Chapters 3.1 and 5
(:mod:`mtvae.studies.results`, :mod:`mtvae.comparisons`, :mod:`mtvae.studies.overview`):
every MOO method's relative gain over the tuned sum with the table as the unit (bootstrap
interval over tables, Bayesian signed-rank test, Holm over the declared primary
comparisons), the best classical imputer, the conditions analysis per method, and the
verdicts of every other multitask setting of the book. Nothing is trained here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mtvae import comparisons as C
from mtvae import tables as T
from mtvae.errors import MTVAEError
from mtvae.experiments import get_grid
from mtvae.experiments.runner import run_staged
from mtvae.profiles import get_profile
from mtvae.stats import holm_adjust
from mtvae.studies import evidence as EV
from mtvae.studies import overview as O
from mtvae.studies import results as R
from mtvae.studies import settings as S
from mtvae.studies import tables as TS

BETTER, WORSE = "better on every seed", "worse on every seed"


@dataclass(frozen=True)
class Findings:
    """What the tables grid and the other multitask settings say about MOO versus the sum."""

    n_records: int  # successful records of the tables grid's complete tables
    n_tables: int  # complete tables
    n_planned: int  # tables in the grid
    n_moo: int
    n_rates: int
    n_seeds: int  # evaluation seeds of a table (the largest tables have fewer)
    sum_error: float  # the tuned sum's mean imputation error over the complete tables
    best_method: str  # the MOO method with the largest mean relative gain over tables
    best_gain: float  # relative (0.01 = 1 % lower error than the tuned sum)
    best_low: float
    best_high: float
    better: tuple[str, ...]  # MOO methods whose interval over tables lies above 0
    worse: tuple[str, ...]  # ... below 0
    bayes_better: tuple[str, ...]  # P(better than the tuned sum by > ROPE) > 0.95
    bayes_equivalent: tuple[str, ...]
    bayes_worse: tuple[str, ...]
    holm_rejected: tuple[str, ...]  # Wilcoxon over tables, Holm over the MOO methods
    rope: float
    best_reference: str
    reference_gain: float
    reference_low: float
    reference_high: float
    settings: pd.DataFrame  # overview.settings_table: one row per setting × condition × method
    conditions: pd.DataFrame  # results.conditions (empty with fewer than 3 tables)
    aux: EV.Evidence | None = None  # the aux grid's tuned comparisons (complete settings)
    aux_equivalent: pd.DataFrame | None = None  # settings.equivalent_weights (aux tuning runs)

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


def compute(profile: str, device: str = "auto", run_grid: bool | None = None) -> Findings:
    """Read the tables grid's and the chapters' records and reduce them to the findings.

    ``run_grid`` runs what the tables grid lacks first: ``None`` does so for the smoke
    profile only (a fresh checkout executes the front page before Chapter 3.1), never for
    ``full``, whose grid runs outside the book. Raises :class:`mtvae.errors.MTVAEError`
    (naming the command to run) while fewer than two tables of the grid are complete:
    across-table statements need two."""
    P = get_profile(profile)
    if run_grid or (run_grid is None and P.name == "smoke"):
        run_staged(lambda: get_grid("tables", P.name), device=device, progress="none")
    res = R.load(P)
    if not res.many:
        raise MTVAEError(f"the headline needs at least 2 complete tables of the tables-{P.name} "
                         f"grid, it has {len(res.complete)}; run "
                         f"`python -m mtvae grid tables --profile {P.name}`")
    g = res.across.set_index("method")
    moo = list(res.moo)
    pt = res.per_table[res.per_table.method.isin(moo)]
    bayes = C.bayes_by_method(pt).set_index("method")
    holm = holm_adjust(dict(C.wilcoxon_tables(pt)[["method", "p_value"]].to_numpy()))
    best = str(g.loc[moo, "gain"].idxmax())
    ref = str(g.loc[list(res.references), "gain"].idxmax())
    conditions = (R.conditions(res, R.table_properties(res)) if len(res.complete) >= 3
                  else pd.DataFrame())
    ok = res.runs[res.runs.status == "ok"]
    aux_runs = S.records("aux", P)  # read once: the evidence and the λ positions share it
    aux = EV.aux_evidence(P, runs=aux_runs)
    tuned_points = set(zip(aux.status[aux.status.tuned].dataset,
                           aux.status[aux.status.tuned].label_fraction, strict=True))
    aux_runs = aux_runs[[p in tuned_points for p in zip(aux_runs.dataset,
                                                       aux_runs.label_fraction, strict=True)]]
    aux_eq = S.equivalent_weights(aux_runs) if len(aux_runs) else None
    return Findings(
        n_records=len(ok), n_tables=len(res.complete), n_planned=len(P.tables.datasets),
        n_moo=len(moo), n_rates=len(P.tables.missing_rates), n_seeds=len(P.tables.seeds),
        sum_error=float(res.main[res.main.method == TS.TUNED_SUM].mean_error.mean()),
        best_method=best, best_gain=float(g.loc[best, "gain"]),
        best_low=float(g.loc[best, "ci_low"]), best_high=float(g.loc[best, "ci_high"]),
        better=tuple(m for m in moo if g.loc[m, "ci_low"] > 0),
        worse=tuple(m for m in moo if g.loc[m, "ci_high"] < 0),
        bayes_better=tuple(bayes[bayes.p_better > 0.95].index),
        bayes_equivalent=tuple(bayes[bayes.p_equivalent > 0.95].index),
        bayes_worse=tuple(bayes[bayes.p_worse > 0.95].index),
        holm_rejected=tuple(holm[holm.reject].index), rope=C.RELATIVE_ROPE,
        best_reference=ref, reference_gain=float(g.loc[ref, "gain"]),
        reference_low=float(g.loc[ref, "ci_low"]), reference_high=float(g.loc[ref, "ci_high"]),
        settings=O.settings_table(profile, device, O.GridEvidence.read(P, aux=aux)),
        conditions=conditions, aux=aux,
        aux_equivalent=aux_eq,
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


def pct(x: float) -> str:
    """A relative gain as a signed percentage with a true minus: ``−1.1 %``."""
    return T.fmt_fixed(100 * x, 1, sign=True) + " %"


def tables_sentence(f: Findings, lead: str = "on heterogeneous tables ") -> str:
    """One clause on the tables grid: which MOO methods beat (or lose to) the tuned sum."""
    if f.bayes_better or f.holm_rejected:
        winners = sorted(set(f.bayes_better) | set(f.holm_rejected))
        text = (f"{lead}{code_list(winners)} beat a plain sum given the same tuning budget "
                "(Bayesian signed-rank test or Holm-corrected Wilcoxon over tables)")
    else:
        text = (f"{lead}no MOO method beats a plain sum given the same tuning budget: none has "
                f"a posterior probability above 0.95 of a gain beyond ±{100 * f.rope:g} %, and "
                f"no Holm-corrected test over the {f.n_tables} tables rejects a zero gain")
    if f.worse:
        verb = "is" if len(f.worse) == 1 else "are"
        text += (f", while {code_list(f.worse)} {verb} worse than it (95 % interval over "
                 "tables below zero)")
    return text


def reference_sentence(f: Findings) -> str:
    """One sentence on where the VAEs stand among classical imputers."""
    side = "lower" if f.reference_gain > 0 else "higher"
    return (f"The best classical imputer, {f.best_reference}, has a {side} error than the tuned "
            f"sum ({pct(f.reference_gain)} relative gain, 95 % interval over tables "
            f"[{pct(f.reference_low)}, {pct(f.reference_high)}]).")


def conclusion_sentence(f: Findings) -> str:
    """The abstract's last sentence: what the two kinds of evidence say together."""
    tuned = sorted(set(f.bayes_better) | set(f.holm_rejected))
    text = ("Multitask VAEs therefore do not beat the plain VAE as a rule: against an untuned "
            "sum they change which term the shared network serves, which helps where a small "
            "task is drowned by a large one and costs where the terms should stay unequal; ")
    if tuned:
        return text + (f"on tables, {code_list(tuned)} still help against a sum given the same "
                       "tuning budget.")
    return text + ("on tables, against a sum given the same tuning budget, none of them helps "
                   f"(on {tables_scope(f)}).")


def tables_scope(f: Findings) -> str:
    """Which tables the headline rests on: all of the grid's, or those complete so far."""
    if f.n_tables == f.n_planned:
        return f"all {f.n_tables} tables of the grid"
    return f"the {f.n_tables} of the grid's {f.n_planned} tables complete so far"


def settings_sentence(f: Findings) -> str:
    """One sentence on every multitask setting: consistent gains, losses, and their price."""
    n, g, loss = len(f.settings), len(f.consistent_gains), len(f.consistent_losses)
    text = (f"Of the {n} comparisons of a MOO method with the untuned plain sum across the "
            f"book's other multitask settings, {g} are better on every seed, {loss} worse on "
            f"every seed and {n - g - loss} mixed")
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


def aux_tuned_sentence(f: Findings) -> str:
    """One sentence on the auxiliary heads against a tuned sum: the primary comparisons of the
    ``aux`` grid's complete settings, or that none is complete yet."""
    e = f.aux
    if e is None or e.holm is None:
        return ("For the label heads the tuned-sum grid (a λ grid against each MOO method's "
                "smoothing, equal budgets) has no complete setting yet.")
    where = list(dict.fromkeys(e.primary["where"]))
    wins = e.holm[e.holm.reject & (e.holm.gain > 0)]
    losses = e.holm[e.holm.reject & (e.holm.gain < 0)]
    best = e.primary.loc[e.primary.gain.idxmax()]
    text = (f"For the label heads, the tuned-sum grid is complete at {'; '.join(where)}: "
            f"against a sum whose label weight was chosen on validation, ")
    if len(wins):
        text += f"{len(wins)} of the {len(e.holm)} tuned MOO comparisons gain (Holm-corrected)"
    else:
        text += (f"none of the {len(e.holm)} tuned MOO comparisons gains in head accuracy "
                 f"(the best, `{best.arm.removesuffix(' (tuned)')}`, "
                 f"{T.fmt_fixed(100 * best.gain, 1, sign=True)} points, 95 % interval "
                 f"[{T.fmt_fixed(100 * best.low, 1, sign=True)}, "
                 f"{T.fmt_fixed(100 * best.high, 1, sign=True)}])")
    if len(losses):
        text += f", and {len(losses)} lose after Holm's correction"
    return text + "."


def aux_equivalence_sentence(f: Findings) -> str:
    """Where each untuned MOO method trains on the sum's λ curve (label heads, validation
    numbers of the tuning runs), in the settings where the position can be read and the
    accuracies agree; empty when there is nothing to say."""
    eq = f.aux_equivalent
    if eq is None or eq.empty:
        return ""
    good = eq[eq.readable & eq.matches]
    if good.empty:
        return ""
    parts = []
    for method, g in good.groupby("method", sort=False):
        lams = sorted(set(g.lambda_like))
        parts.append(f"`{method}` where the sum does at λ = "
                     + " or ".join(f"{v:g}" for v in lams) + f" ({len(g)} of "
                     f"{int((eq.method == method).sum())} settings)")
    text = ("Untuned, each MOO method trains where a fixed weighting does — matched on the "
            "validation −ELBO of the label heads' tuning runs, with the validation accuracy "
            f"within {100 * S.MATCHING_ACCURACY:g} points: " + "; ".join(parts) + ".")
    scale_free = good[good.method == "imtl-g"].lambda_like
    others = good[good.method != "imtl-g"].lambda_like
    if len(scale_free) and len(others) and scale_free.min() > others.max():
        text += (" The scale-invariant method (IMTL-G) stands in for a larger λ than any of "
                 "the others, which keep the tasks' sizes.")
    return text


def aux_vs_plain_sentence(f: Findings) -> str:
    """The thesis question for the label heads: the multitask VAE (the sum at its λ chosen on
    validation) against a plain VAE with a linear probe on the same labelled images, on head
    accuracy and on the test −ELBO, per complete setting; empty without one."""
    e = f.aux
    if e is None or e.arms.empty:
        return ""

    def pick(t: pd.DataFrame, where: str) -> pd.Series | None:
        r = t[(t["where"] == where) & (t.arm == S.TUNED_SUM) & (t.reference == S.PLAIN_PROBE)]
        return None if r.empty else r.iloc[0]

    parts = []
    for where in dict.fromkeys(e.arms["where"]):
        acc, cost = pick(e.task, where), pick(e.cost, where)
        if acc is None or cost is None:
            continue
        lo, hi = (cost.low, cost.high) if cost.gain > 0 else (-cost.high, -cost.low)
        price = ("no measurable −ELBO cost (95 % interval "
                 f"[{T.fmt_fixed(cost.low, 1, sign=True)}, {T.fmt_fixed(cost.high, 1, sign=True)}]"
                 " nats, positive = better)" if cost.low <= 0 <= cost.high else
                 f"a −ELBO {'gain' if cost.gain > 0 else 'cost'} of "
                 f"{T.fmt_fixed(abs(cost.gain), 1)} nats [{T.fmt_fixed(lo, 1)}, "
                 f"{T.fmt_fixed(hi, 1)}]")
        parts.append(f"{where}: {T.fmt_fixed(100 * acc.gain, 1, sign=True)} points "
                     f"[{T.fmt_fixed(100 * acc.low, 1, sign=True)}, "
                     f"{T.fmt_fixed(100 * acc.high, 1, sign=True)}] at {price}")
    if not parts:
        return ""
    return ("Against a plain VAE whose code is read by a linear probe trained on the same "
            "labelled images, the multitask VAE's head (the sum at its λ chosen on "
            "validation) gains in test accuracy " + "; ".join(parts) + ".")
