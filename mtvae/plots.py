"""Figure helpers with one house style (seaborn, colour-blind palette).

Helpers take data (tensors, arrays, DataFrames) and return Matplotlib figures; they never
train or evaluate models.

Figures are drawn at the size they print at. The thesis PDF sets a figure at its natural
size (the PNG's width at its dpi) and shrinks a wider one to the text width, so a figure of
``w`` inches prints its text at ``min(1, TEXT_WIDTH_IN / w)`` times its font size. The house
style (:func:`set_style`) uses seaborn's *paper* context (8.8 pt ticks and legends, 9.6 pt
labels and titles), :func:`figsize` gives a figure of (a share of) the text width, and
:func:`show`, which every chapter calls instead of ``plt.show()``, refuses a figure whose
smallest text would print below :data:`MIN_PRINTED_PT`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import matplotlib.text as mtext
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mtvae.errors import MTVAEError

PALETTE = "colorblind"
#: Width of the thesis PDF's text block in inches: A4 (8.27 in) less Sphinx's default 1 in
#: margins (``tests/test_pdf.py`` checks it against the LaTeX build's ``\textwidth``).
TEXT_WIDTH_IN = 6.27
#: The smallest font size, in points, that any text of a figure may print at.
MIN_PRINTED_PT = 8.0
#: Resolution of the figures: about 940 pixels across the text width, sharp in print.
DPI = 150
#: Padding that the inline backend's ``bbox_inches="tight"`` adds on each side (inches).
_TIGHT_PAD_IN = 0.1


def set_style() -> None:
    """Apply the house style to every later figure: print-sized fonts, one default size."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold",
                      "figure.autolayout": False, "figure.figsize": figsize(3.0)})


def figsize(height: float, width: float = 1.0) -> tuple[float, float]:
    """A figure size in inches: ``width`` is the share of the printed text width (0–1]."""
    if not 0 < width <= 1 or height <= 0:
        raise MTVAEError(f"figsize(height={height}, width={width}): the height must be "
                         "positive and the width a share of the text width in (0, 1]")
    return (width * TEXT_WIDTH_IN, height)


def printed_width(fig: Figure) -> float:
    """Width in inches of the image saved from ``fig`` (tight bounding box, as inline)."""
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())
    return float(bbox.width) + 2 * _TIGHT_PAD_IN


def _drawn_texts(fig: Figure) -> list[mtext.Text]:
    hidden = set()  # tick labels of axes switched off are never drawn
    for ax in fig.axes:
        if not ax.axison:
            hidden |= {id(t) for axis in (ax.xaxis, ax.yaxis) for t in axis.findobj(mtext.Text)}
    return [t for t in fig.findobj(mtext.Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def printed_font_sizes(fig: Figure) -> list[tuple[str, float]]:
    """Each drawn text of ``fig`` with the size in points it prints at in the thesis PDF."""
    scale = min(1.0, TEXT_WIDTH_IN / printed_width(fig))
    return [(t.get_text(), float(t.get_fontsize()) * scale) for t in _drawn_texts(fig)]


def check_print_size(fig: Figure, min_pt: float = MIN_PRINTED_PT) -> None:
    """Raise :class:`MTVAEError` if any text of ``fig`` prints below ``min_pt`` points."""
    small = sorted((pt, text) for text, pt in printed_font_sizes(fig) if pt < min_pt - 1e-6)
    if small:
        texts = ", ".join(f"{text[:30]!r} ({pt:.1f} pt)" for pt, text in small[:5])
        raise MTVAEError(
            f"figure text prints below {min_pt:g} pt at the thesis text width "
            f"({TEXT_WIDTH_IN:g} in; this figure saves {printed_width(fig):.2f} in wide): "
            f"{texts}{' …' if len(small) > 5 else ''}. Draw it at the printed size with "
            "plots.figsize(...) (fewer panels per row, or more rows) and leave font sizes "
            "at the house style (plots.set_style()), never below it")


def legend_above(ax: plt.Axes, ncol: int = 3, **kwargs: object) -> None:
    """Put ``ax``'s legend above the axes in ``ncol`` columns, where it hides no data."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, frameon=False,
              **kwargs)


def show(fig: Figure | None = None) -> None:
    """Check that ``fig`` (default: the current figure) prints legibly, then show it."""
    check_print_size(plt.gcf() if fig is None else fig)
    plt.show()


def _tile(images: Tensor | np.ndarray, nrow: int) -> np.ndarray:
    arr = images.detach().cpu().float().numpy() if isinstance(images, Tensor) else images
    arr = arr.reshape(arr.shape[0], *arr.shape[-2:])
    n, h, w = arr.shape
    ncol = int(np.ceil(n / nrow))
    # thin light-grey gutters (0 is white under the gray_r colour map): no heavy grid lines
    canvas = np.full((nrow * (h + 1) - 1, ncol * (w + 1) - 1), 0.12)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = arr[i]
    return canvas


def image_grid(images: Tensor | np.ndarray, nrow: int, ax: plt.Axes | None = None,
               title: str | None = None) -> Figure:
    """Show images ``[N, (1,) H, W]`` in a grid of ``nrow`` rows (values clipped to [0, 1])."""
    if ax is None:
        ncol = max(1, int(np.ceil(len(images) / nrow)))
        _, ax = plt.subplots(figsize=figsize(0.8 * TEXT_WIDTH_IN * nrow / ncol, 0.8))
    ax.imshow(np.clip(_tile(images, nrow), 0, 1), cmap="gray_r", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure


def image_rows(rows: Mapping[str, Tensor], title: str | None = None) -> Figure:
    """One labelled row of images per entry (e.g. data vs reconstructions)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=figsize(0.55 * len(rows) + 0.3))
    axes = np.atleast_1d(axes)
    for ax, (label, imgs) in zip(axes, rows.items(), strict=True):
        ax.imshow(np.clip(_tile(imgs, 1), 0, 1), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.grid(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def latent_scatter(z: Tensor | np.ndarray, labels: Sequence[int] | np.ndarray,
                   ax: plt.Axes | None = None) -> Figure:
    """2-D latent codes coloured by class."""
    z = np.asarray(z.detach().cpu() if isinstance(z, Tensor) else z)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(3.6, 0.75))
    labels = np.asarray(labels)
    palette = sns.color_palette("tab10", n_colors=int(labels.max()) + 1)
    sns.scatterplot(x=z[:, 0], y=z[:, 1], hue=labels, palette=palette, s=12, linewidth=0,
                    ax=ax, legend="full")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(title="digit", bbox_to_anchor=(1.02, 1), loc="upper left")
    return ax.figure


def standard_normal_grid(n: int, quantile: float = 0.95) -> Tensor:
    """An n x n grid of 2-D points at evenly spaced standard-normal quantiles."""
    probs = torch.linspace(1 - quantile, quantile, n)
    q = torch.distributions.Normal(0.0, 1.0).icdf(probs)
    zz1, zz2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    return torch.stack([zz1.reshape(-1), zz2.reshape(-1)], dim=1)


def rate_distortion(df: pd.DataFrame, ax: plt.Axes | None = None) -> Figure:
    """Distortion against rate, one point per run, labelled by beta (Alemi et al. 2018)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(3.4, 0.8))
    agg = df.groupby("beta")[["test_rate", "test_distortion"]].agg(["mean", "std"])
    sns.scatterplot(data=df, x="test_rate", y="test_distortion", hue="beta",
                    palette="viridis", ax=ax, s=30, legend=False)
    ax.plot(agg[("test_rate", "mean")], agg[("test_distortion", "mean")], color="0.4", lw=1)
    for beta, row in agg.iterrows():
        ax.annotate(f"β={beta:g}", (row[("test_rate", "mean")], row[("test_distortion", "mean")]),
                    textcoords="offset points", xytext=(6, 4))
    lo = float(min(df["test_rate"].min(), 0))
    hi = float(df["test_rate"].max())
    d_min = float((df["test_distortion"] + df["test_rate"]).min())
    xs = np.linspace(lo, hi, 50)
    ax.plot(xs, d_min - xs, ls="--", color="0.6", lw=1, label="D + R = min. −ELBO")
    ax.set_xlabel("rate R (nats)")
    ax.set_ylabel("distortion D (nats)")
    ax.legend(loc="lower left", frameon=False)  # the upper left holds the large-β points
    return ax.figure


def kl_per_dim_heatmap(df: pd.DataFrame, ax: plt.Axes | None = None) -> Figure:
    """Mean KL of each latent dimension (sorted, largest first) for each beta."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(2.4))
    mat = (df.assign(kl=df["kl_per_dim"].map(lambda v: np.sort(np.asarray(v))[::-1]))
           .groupby("beta")["kl"].apply(lambda s: np.mean(np.stack(list(s)), axis=0)))
    data = pd.DataFrame(np.stack(list(mat.values)), index=[f"{b:g}" for b in mat.index])
    sns.heatmap(data, ax=ax, cmap="mako_r", cbar_kws={"label": "KL (nats)"}, linewidths=0.3)
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("β")
    return ax.figure


def lines_over_k(df: pd.DataFrame, x: str, y: str, hue: str | None = None,
                 ax: plt.Axes | None = None, logy: bool = False) -> Figure:
    """Mean ± std of ``y`` against a log-scaled ``x`` (e.g. the IWAE sample count)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(3.0, 0.8))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", errorbar="sd", ax=ax)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return ax.figure


def usage_vs_size(df: pd.DataFrame, hue: str = "remedy", ax: plt.Axes | None = None) -> Figure:
    """Share of codes used over an epoch (%) against codebook size, mean ± sd over seeds."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(3.0, 0.8))
    data = df.assign(percent=100 * df["fraction_used"])
    sns.lineplot(data=data, x="num_codes", y="percent", hue=hue, marker="o", errorbar="sd",
                 ax=ax)
    ax.set_xscale("log", base=2)
    sizes = sorted(data["num_codes"].unique())
    ax.set_xticks(sizes, [str(int(k)) for k in sizes])
    ax.set_ylim(0, 105)
    ax.set_xlabel("codebook size K")
    ax.set_ylabel("codes used over an epoch (%)")
    return ax.figure


def code_frequencies(counts: Mapping[str, Sequence[int]], ax: plt.Axes | None = None) -> Figure:
    """Rank-frequency plot of code use: one line per model, codes sorted by use."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(3.0, 0.8))
    for label, c in counts.items():
        freq = np.sort(np.asarray(c, dtype=float))[::-1]
        freq = freq / freq.sum()
        ax.plot(np.arange(1, len(freq) + 1), np.where(freq > 0, freq, np.nan), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("code rank")
    ax.set_ylabel("share of encoder outputs")
    ax.legend()
    return ax.figure


def _cliques(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs [i, j] of sorted ranks whose spread is below ``cd`` (not significant)."""
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not (spans and spans[-1][1] >= j):
            spans.append((i, j))
    return spans


def _fit_xlim(ax: plt.Axes, x0: float, x1: float, left: Sequence[mtext.Text],
              right: Sequence[mtext.Text]) -> None:
    """Widen the x-range [x0, x1] so that labels hanging left of x0 (right of x1) stay inside
    the axes, and so inside the figure (the figure is never widened, so its text never
    shrinks in print)."""
    renderer = ax.figure.canvas.get_renderer()
    width = ax.get_window_extent(renderer).width

    def widest(texts: Sequence[mtext.Text]) -> float:
        return max((t.get_window_extent(renderer).width for t in texts), default=0.0)

    w_left, w_right = widest(left), widest(right)
    free = max(0.2, 1 - (w_left + w_right) / width)  # share of the axes left for the ranks
    total = (x1 - x0) / free
    ax.set_xlim(x0 - w_left / width * total, x1 + w_right / width * total)


def cd_diagram(ranks: pd.Series | Mapping[str, float], cd: float, ax: plt.Axes | None = None,
               title: str | None = None) -> Figure:
    """Critical-difference diagram (Demšar 2006): average ranks, best (1) on the left.

    Methods joined by a thick bar do not differ significantly (their average ranks are
    less than ``cd`` apart, e.g. :func:`mtvae.stats.nemenyi_cd`); the bar at the top shows
    the CD on the rank scale.
    """
    ranks = pd.Series(ranks, dtype=float).sort_values()
    names, r, k = list(ranks.index), ranks.to_numpy(), len(ranks)
    lo, hi = 1, max(k, int(np.ceil(r.max())))
    cliques = _cliques(r, cd)
    n_left = (k + 1) // 2
    label_y0 = 0.35 + 0.15 * len(cliques)
    depth = label_y0 + 0.3 * max(n_left, k - n_left)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize(0.9 + 0.5 * depth))
    ax.hlines(0, lo, hi, color="black", lw=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, -0.08, 0, color="black", lw=1)
        ax.text(t, -0.12, str(t), ha="center", va="bottom", fontsize=9)
    ax.hlines(-0.55, lo, lo + cd, color="black", lw=1.5)
    ax.vlines([lo, lo + cd], -0.6, -0.5, color="black", lw=1.5)
    ax.text(lo + cd / 2, -0.62, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    colors = sns.color_palette(PALETTE, n_colors=k)
    span = hi - lo
    labels: dict[bool, list[mtext.Text]] = {True: [], False: []}
    for i, (name, rank) in enumerate(zip(names, r, strict=True)):
        left = i < n_left
        y = label_y0 + 0.3 * (i if left else k - 1 - i)
        x_end = lo - 0.08 * span if left else hi + 0.08 * span
        ax.plot([rank, rank, x_end], [0, y, y], color=colors[i], lw=1.2)
        labels[left].append(ax.text(x_end + (-0.02 if left else 0.02) * span, y,
                                    f"{name} ({rank:.2f})", ha="right" if left else "left",
                                    va="center", fontsize=9))
    for n, (i, j) in enumerate(cliques):
        y = 0.22 + 0.15 * n
        ax.hlines(y, r[i] - 0.03 * span, r[j] + 0.03 * span, color="black", lw=4)
    _fit_xlim(ax, lo - 0.1 * span, hi + 0.1 * span, labels[True], labels[False])
    ax.set_ylim(depth + 0.15, -0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure
