"""The audit's plots (PNG via matplotlib's Agg backend), computed from the overview columns only."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from maskmine.transforms.audit.table import Overview

PLOTS = {
    "noun_rank.png": "Noun frequency by rank (log-log): the long tail of the vocabulary",
    "score_hist.png": "CLIP score (cosine similarity of the masked crop and its noun)",
    "margin_hist.png": "Margin (score of the chosen mask minus the runner-up's)",
    "pairs_per_image.png": "Pairs per mined image",
    "mask_area.png": "Mask area as a fraction of the image",
}


@contextmanager
def _axes(path: Path) -> Iterator[Any]:
    """The axes of a fresh figure to draw on; on leaving, the figure is saved to ``path`` (PNG) and closed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, fontsize=14, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def noun_rank(ov: Overview, path: Path) -> None:
    with _axes(path) as ax:
        counts = np.sort(ov.noun_counts())[::-1]
        counts = counts[counts > 0]
        if len(counts):
            ranks = np.arange(1, len(counts) + 1)
            ax.loglog(ranks, counts, marker=".", linestyle="-", color="#1f6fb2", markersize=3)
            ax.set_xlabel("noun rank")
            ax.set_ylabel("pairs")
            ax.grid(True, which="both", alpha=0.3)
        else:
            _empty(ax, "pairs")
        ax.set_title(f"{len(counts):,} nouns")


def histogram(values: np.ndarray, path: Path, xlabel: str, title: str, bins: int = 50, color: str = "#1f6fb2") -> None:
    with _axes(path) as ax:
        values = values[~np.isnan(values)]
        if len(values):
            ax.hist(values, bins=bins, color=color)
            ax.axvline(float(np.median(values)), color="#d62728", linestyle="--", label=f"median {np.median(values):.3f}")
            ax.legend()
            ax.set_xlabel(xlabel)
            ax.set_ylabel("pairs")
        else:
            _empty(ax, "values")
        ax.set_title(title)


def pairs_per_image(ov: Overview, path: Path) -> None:
    with _axes(path) as ax:
        per_image = ov.pairs_per_image()
        if len(per_image):
            values, counts = np.unique(per_image, return_counts=True)
            ax.bar(values, counts, width=0.8, color="#2ca02c")
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of images: no 17.5
            ax.set_xlabel("pairs in the image")
            ax.set_ylabel("images")
            ax.set_title(f"{len(per_image):,} images, mean {per_image.mean():.2f} pairs")
        else:
            _empty(ax, "pairs")


def mask_area(ov: Overview, path: Path) -> None:
    with _axes(path) as ax:
        area = ov.area[ov.area > 0]
        if len(area):
            bins = np.logspace(np.log10(max(area.min(), 1e-6)), 0, 40)
            ax.hist(area, bins=bins, color="#9467bd")
            ax.set_xscale("log")
            ax.set_xlabel("mask area / image area")
            ax.set_ylabel("pairs")
            ax.set_title(f"median {np.median(area):.3f} of the image")
        else:
            _empty(ax, "masks")


def write_plots(ov: Overview, folder: Path) -> dict[str, str]:
    """All plots into ``folder``; returns file name -> caption."""
    folder.mkdir(parents=True, exist_ok=True)
    noun_rank(ov, folder / "noun_rank.png")
    histogram(ov.score, folder / "score_hist.png", "score", "Score")
    histogram(ov.margin, folder / "margin_hist.png", "margin", "Margin (pairs with 2+ proposals)", color="#ff7f0e")
    pairs_per_image(ov, folder / "pairs_per_image.png")
    mask_area(ov, folder / "mask_area.png")
    return dict(PLOTS)
