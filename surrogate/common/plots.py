"""Figures: parity plot (paper Fig. 5), error vs number of terms (Fig. 4), image panels (Fig. 6).

Uses matplotlib's Agg backend (no display needed); every function writes a
PNG atomically and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["parity_plot", "sweep_plot", "image_panels", "save_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, *, dpi: int = 120, **savefig_kwargs) -> Path:
    """Write a matplotlib figure to ``path`` atomically; a pyplot figure is closed afterwards.

    The one figure writer of the project (surrogate plots, comparison,
    ensemble and refinement figures); ``savefig_kwargs`` go to ``fig.savefig``.
    """
    import sys

    from surrogate.common.atomic import atomic_path

    try:
        with atomic_path(path, suffix=Path(path).suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # figures made without pyplot need no closing
            sys.modules["matplotlib.pyplot"].close(fig)
    return Path(path)


def parity_plot(targets, predictions, path, title="", max_points=200_000, seed=0) -> Path:
    """Multislice vs predicted pixel intensity (2-D histogram, log colour scale)."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    t = np.asarray(targets).ravel()
    p = np.asarray(predictions).ravel()
    if t.size > max_points:
        idx = np.random.default_rng(seed).choice(t.size, max_points, replace=False)
        t, p = t[idx], p[idx]
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.hist2d(t, p, bins=200, range=[[lo, hi], [lo, hi]], norm=LogNorm(), cmap="viridis")
    ax.plot([lo, hi], [lo, hi], "r-", lw=0.8)
    ax.set_xlabel("multislice intensity")
    ax.set_ylabel("predicted intensity")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    return save_figure(fig, path, bbox_inches="tight")


def sweep_plot(rows, path, title="") -> Path:
    """CV 1−R² and fractional RMS vs number of terms (log x axis), one point per model."""
    plt = _plt()
    rows = sorted(rows, key=lambda r: r["n_terms"])
    n = np.array([r["n_terms"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "one_minus_r2", "CV 1 − R²"), (axes[1], "frms", "CV fractional RMS")):
        v = np.array([r[key] for r in rows])
        colors = ["C1" if r["log_term"] else "C0" for r in rows]
        markers = [("s" if r["interactions"] else "o") for r in rows]
        for x, y, c, m in zip(n, v, colors, markers):
            ax.scatter(x, y, c=c, marker=m, s=25)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of terms")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(title + "  (orange: log term; squares: interactions)", fontsize=9)
    return save_figure(fig, path, bbox_inches="tight")


def image_panels(images: dict, path, pixel_size=None, title="") -> Path:
    """Side-by-side images (e.g. experiment / simulated / difference), first axis x drawn horizontally."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4))
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, images.items()):
        img = np.asarray(img)
        extent = None
        if pixel_size:
            extent = [0, img.shape[0] * pixel_size, 0, img.shape[1] * pixel_size]
        diff = "diff" in name.lower()
        vmax = np.abs(img).max() if diff else None
        im = ax.imshow(img.T, origin="lower", cmap="RdBu_r" if diff else "gray", extent=extent,
                       vmin=-vmax if diff else None, vmax=vmax)
        ax.set_title(name, fontsize=9)
        if pixel_size:
            ax.set_xlabel("x (Å)")
            ax.set_ylabel("y (Å)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, bbox_inches="tight")
