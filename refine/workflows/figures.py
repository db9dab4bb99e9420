"""The two figures of a refinement: ``images.png`` and ``fitness_history.png``.

Both are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no
pyplot state) and written atomically by :func:`surrogate.common.save_figure`.
Images are drawn with x to the right and y up (``image[i, j]`` at
``(x0 + iΔ, y0 + jΔ)``, transposed for ``imshow``); lengths in Å.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from surrogate.common import save_figure

__all__ = ["plot_images", "plot_history"]


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_images(experimental, simulated, difference, grid, path, *, title: str = "") -> Path:
    """Experimental, simulated and difference images side by side (x right, y up) as a PNG.

    Parameters
    ----------
    experimental, simulated, difference : ndarray, shape ``grid.shape``
        NaN where masked; the first two share one grey scale, the difference
        a symmetric red–blue one.
    grid : surrogate.imaging.grid.ProbeGrid
        Origin and pixel size (Å) of the images.
    path : path
        The PNG to write.
    title : str
        Figure title.
    """
    x0, y0 = grid.origin
    x1 = x0 + (grid.shape[0] - 1) * grid.pixel_size
    y1 = y0 + (grid.shape[1] - 1) * grid.pixel_size
    extent = (x0, x1, y0, y1)
    fig = _figure((12.5, 4.3))
    axes = fig.subplots(1, 3)
    lo = float(np.nanmin([np.nanmin(experimental), np.nanmin(simulated)]))
    hi = float(np.nanmax([np.nanmax(experimental), np.nanmax(simulated)]))
    for ax, data, name in ((axes[0], experimental, "experimental"), (axes[1], simulated, "simulated (a·I + b)")):
        im = ax.imshow(np.asarray(data).T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, shrink=0.8)
    lim = float(np.nanmax(np.abs(difference))) if np.isfinite(difference).any() else 1.0
    im = axes[2].imshow(np.asarray(difference).T, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[2].set_title("experimental − simulated")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, Path(path), dpi=110, format="png")


def _read_logbook(path: Path) -> dict:
    """The GA's ``logbook.csv`` as column name → float array (unparsable cells NaN)."""
    cols: dict = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                try:
                    cols.setdefault(k, []).append(float(v) if v not in ("", None) else math.nan)
                except ValueError:
                    cols.setdefault(k, []).append(math.nan)
    return {k: np.asarray(v) for k, v in cols.items()}


def plot_history(logbook_csv, path, *, n_valid: int | None = None) -> Path:
    """Best/mean cost, best χ² (per pixel when ``n_valid`` is given) and best E (eV) per generation."""
    cols = _read_logbook(Path(logbook_csv))
    gen = cols.get("gen", np.array([]))
    fig = _figure((12.5, 3.8))
    axes = fig.subplots(1, 3)
    if "best_cost" in cols:
        axes[0].plot(gen, cols["best_cost"], label="best")
    if "mean_cost" in cols:
        axes[0].plot(gen, cols["mean_cost"], label="mean", alpha=0.6)
    axes[0].set_ylabel("cost E + α·χ²")
    axes[0].legend()
    chi = cols.get("best_chi2", np.full_like(gen, np.nan))
    if n_valid:
        chi = chi / n_valid
    axes[1].plot(gen, chi)
    axes[1].set_ylabel("χ² per pixel (best)" if n_valid else "χ² (best)")
    if np.all(np.isfinite(chi)) and chi.size and np.all(chi > 0):
        axes[1].set_yscale("log")
    axes[2].plot(gen, cols.get("best_energy", np.full_like(gen, np.nan)))
    axes[2].set_ylabel("E (eV, best)")
    for ax in axes:
        ax.set_xlabel("generation")
    return save_figure(fig, Path(path), dpi=110, format="png")
