"""Figure helpers with one house style (seaborn, colour-blind palette).

Helpers take data (tensors, arrays, DataFrames) and return Matplotlib figures; they never
train or evaluate models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import Tensor

PALETTE = "colorblind"


def set_style() -> None:
    """Apply the house style to every later figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold",
                      "figure.autolayout": False})


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
        _, ax = plt.subplots(figsize=(6, 6 * nrow / max(1, int(np.ceil(len(images) / nrow)))))
    ax.imshow(np.clip(_tile(images, nrow), 0, 1), cmap="gray_r", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure


def image_rows(rows: Mapping[str, Tensor], title: str | None = None) -> Figure:
    """One labelled row of images per entry (e.g. data vs reconstructions)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.0 * len(rows) + 0.4))
    axes = np.atleast_1d(axes)
    for ax, (label, imgs) in zip(axes, rows.items(), strict=True):
        ax.imshow(np.clip(_tile(imgs, 1), 0, 1), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
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
        _, ax = plt.subplots(figsize=(5.5, 5))
    labels = np.asarray(labels)
    palette = sns.color_palette("tab10", n_colors=int(labels.max()) + 1)
    sns.scatterplot(x=z[:, 0], y=z[:, 1], hue=labels, palette=palette, s=12, linewidth=0,
                    ax=ax, legend="full")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(title="digit", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
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
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    agg = df.groupby("beta")[["test_rate", "test_distortion"]].agg(["mean", "std"])
    sns.scatterplot(data=df, x="test_rate", y="test_distortion", hue="beta",
                    palette="viridis", ax=ax, s=30, legend=False)
    ax.plot(agg[("test_rate", "mean")], agg[("test_distortion", "mean")], color="0.4", lw=1)
    for beta, row in agg.iterrows():
        ax.annotate(f"β={beta:g}", (row[("test_rate", "mean")], row[("test_distortion", "mean")]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    lo = float(min(df["test_rate"].min(), 0))
    hi = float(df["test_rate"].max())
    d_min = float((df["test_distortion"] + df["test_rate"]).min())
    xs = np.linspace(lo, hi, 50)
    ax.plot(xs, d_min - xs, ls="--", color="0.6", lw=1, label="D + R = best −ELBO")
    ax.set_xlabel("rate R (nats)")
    ax.set_ylabel("distortion D (nats)")
    ax.legend(fontsize=8)
    return ax.figure


def kl_per_dim_heatmap(df: pd.DataFrame, ax: plt.Axes | None = None) -> Figure:
    """Mean KL of each latent dimension (sorted, largest first) for each beta."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.8))
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
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", errorbar="sd", ax=ax)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return ax.figure


def usage_vs_size(df: pd.DataFrame, hue: str = "remedy", ax: plt.Axes | None = None) -> Figure:
    """Share of codes used over an epoch (%) against codebook size, mean ± sd over seeds."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.8, 3.9))
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
        _, ax = plt.subplots(figsize=(5.8, 3.9))
    for label, c in counts.items():
        freq = np.sort(np.asarray(c, dtype=float))[::-1]
        freq = freq / freq.sum()
        ax.plot(np.arange(1, len(freq) + 1), np.where(freq > 0, freq, np.nan), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("code rank")
    ax.set_ylabel("share of encoder outputs")
    ax.legend(fontsize=8)
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
        _, ax = plt.subplots(figsize=(7, 0.9 + 0.55 * depth))
    ax.hlines(0, lo, hi, color="black", lw=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, -0.08, 0, color="black", lw=1)
        ax.text(t, -0.12, str(t), ha="center", va="bottom", fontsize=9)
    ax.hlines(-0.55, lo, lo + cd, color="black", lw=1.5)
    ax.vlines([lo, lo + cd], -0.6, -0.5, color="black", lw=1.5)
    ax.text(lo + cd / 2, -0.62, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    colors = sns.color_palette(PALETTE, n_colors=k)
    span = hi - lo
    for i, (name, rank) in enumerate(zip(names, r, strict=True)):
        left = i < n_left
        y = label_y0 + 0.3 * (i if left else k - 1 - i)
        x_end = lo - 0.08 * span if left else hi + 0.08 * span
        ax.plot([rank, rank, x_end], [0, y, y], color=colors[i], lw=1.2)
        ax.text(x_end + (-0.02 if left else 0.02) * span, y, f"{name} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=9)
    for n, (i, j) in enumerate(cliques):
        y = 0.22 + 0.15 * n
        ax.hlines(y, r[i] - 0.03 * span, r[j] + 0.03 * span, color="black", lw=4)
    ax.set_xlim(lo - 0.1 * span, hi + 0.1 * span)
    ax.set_ylim(depth + 0.15, -0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure
