"""Figure helpers: every figure prints its text at 8 pt or more at the thesis text width.

The PDF shrinks a figure wider than the text width (``plots.TEXT_WIDTH_IN``, checked against
the LaTeX build in ``tests/test_pdf.py``) to that width, so its text shrinks with it. Each
helper is drawn here at its default size with data shaped like the chapters', and its
smallest printed font size is checked; the chapters' own figures go through ``plots.show``,
which applies the same check whenever a chapter is executed (the nbval run executes them all).
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from mtvae import plots
from mtvae.errors import MTVAEError


@pytest.fixture(autouse=True)
def _house_style():
    plots.set_style()
    yield
    plt.close("all")


def _sweep() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"beta": b, "seed": s, "test_rate": 30 / b + rng.normal(), "test_distortion":
             60 + 10 * b + rng.normal(), "kl_per_dim": rng.exponential(2, 16)}
            for b in (0.25, 0.5, 1, 2, 4, 8) for s in range(3)]
    return pd.DataFrame(rows)


def _helper_figures():
    rng = np.random.default_rng(0)
    images = torch.rand(10, 1, 28, 28)
    yield "image_grid", plots.image_grid(torch.rand(60, 1, 28, 28), nrow=6, title="samples")
    yield "image_rows", plots.image_rows({"test image": images, "reconstruction": images,
                                          "poe · imtl-g: 8×8": images})
    yield "latent_scatter", plots.latent_scatter(rng.normal(size=(500, 2)),
                                                 rng.integers(0, 10, 500))
    yield "rate_distortion", plots.rate_distortion(_sweep())
    yield "kl_per_dim_heatmap", plots.kl_per_dim_heatmap(_sweep())
    yield "lines_over_k", plots.lines_over_k(
        pd.DataFrame({"k": [1, 10, 100] * 3, "gap": rng.random(9), "m": ["a", "b", "c"] * 3}),
        "k", "gap", hue="m")
    vq = pd.DataFrame([{"num_codes": k, "fraction_used": rng.random(), "remedy": r, "seed": s}
                       for k in (16, 64, 256, 1024) for r in ("none", "EMA + restarts")
                       for s in range(3)])
    yield "usage_vs_size", plots.usage_vs_size(vq)
    yield "code_frequencies", plots.code_frequencies(
        {"VQ-VAE (no remedy)": rng.integers(0, 50, 512),
         "EMA + restarts": rng.integers(0, 50, 512)})
    ranks = {"sum": 2.9, "pcgrad": 2.7, "imtl-g": 2.6, "upgrad": 2.8, "mgda": 4.0,
             "gradnorm+pcgrad": 3.1}
    yield "cd_diagram", plots.cd_diagram(ranks, cd=0.8, title="Average rank over 18 blocks")


@pytest.mark.parametrize("name", [n for n, f in _helper_figures()])
def test_helper_prints_its_text_at_8pt_or_more(name: str) -> None:
    fig = dict(_helper_figures())[name]
    sizes = [pt for _, pt in plots.printed_font_sizes(fig)]
    assert sizes, f"{name}: no text found"
    assert min(sizes) >= plots.MIN_PRINTED_PT, (name, plots.printed_width(fig), min(sizes))
    plots.check_print_size(fig)


def test_a_figure_wider_than_the_text_prints_smaller_and_is_refused() -> None:
    fig, ax = plt.subplots(figsize=(2 * plots.TEXT_WIDTH_IN, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("epoch")
    width = plots.printed_width(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")  # as the inline backend saves it
    png.seek(0)
    assert width == pytest.approx(plt.imread(png).shape[1] / plt.rcParams["savefig.dpi"],
                                  abs=0.02)
    assert width > 1.5 * plots.TEXT_WIDTH_IN
    printed = dict(plots.printed_font_sizes(fig))["epoch"]
    assert printed == pytest.approx(plt.rcParams["axes.labelsize"] * plots.TEXT_WIDTH_IN / width)
    with pytest.raises(MTVAEError,
                       match=r"below 8 pt at the thesis text width.*\(\d\.\d pt\).*plots\.figsize"):
        plots.show(fig)


def test_a_figure_at_the_text_width_keeps_its_sizes_but_small_fonts_are_refused() -> None:
    fig, ax = plt.subplots(figsize=plots.figsize(2.5))
    ax.set_title("title")
    ax.plot([0, 1], label="sum")
    ax.legend(fontsize=7)
    sizes = dict(plots.printed_font_sizes(fig))
    assert sizes["title"] == pytest.approx(plt.rcParams["axes.titlesize"])
    with pytest.raises(MTVAEError, match=r"'sum' \(7\.0 pt\)"):
        plots.check_print_size(fig)


def test_hidden_axes_do_not_count() -> None:
    fig, axes = plt.subplots(1, 2, figsize=plots.figsize(2))
    axes[1].tick_params(labelsize=4)
    axes[1].set_axis_off()
    plots.check_print_size(fig)


@pytest.mark.parametrize("height, width", [(0, 1), (2, 0), (2, 1.5)])
def test_figsize_rejects_sizes_that_do_not_fit(height: float, width: float) -> None:
    with pytest.raises(MTVAEError, match="share of the text width"):
        plots.figsize(height, width)
