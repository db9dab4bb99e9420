"""Figures of a structure comparison, and the blank figure every analysis figure starts from."""

from __future__ import annotations

import numpy as np

from refine.analysis.comparison import Comparison
from surrogate.common import save_figure

__all__ = ["new_figure", "plot_comparison"]


def new_figure(figsize):
    """A matplotlib figure on the Agg canvas, constrained layout, no pyplot (no global state, nothing to close).

    ``figsize`` (width, height) in inches. The analysis figures start here
    (comparison, ensemble, image comparison) and are written by
    :func:`surrogate.common.save_figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_comparison(comparison: Comparison, path=None):
    """Overlay of both projections along the beam, displacement and coordination histograms.

    Parameters
    ----------
    comparison : Comparison
    path : path-like or None
        Where to write the figure (PNG, written atomically); None to only return it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colors

    fig = new_figure((13, 4.4))
    ax0, ax1, ax2 = fig.subplots(1, 3, width_ratios=[1.3, 1, 1])
    t = comparison.truth.positions
    a = comparison.aligned.positions
    d = comparison.displacements
    al = comparison.alignment
    m = al.matched
    for i in np.flatnonzero(m):
        j = al.reference_index[i]
        ax0.plot([t[j, 0], a[i, 0]], [t[j, 1], a[i, 1]], color="0.6", lw=0.6, zorder=1)
    ax0.scatter(t[:, 0], t[:, 1], s=60, facecolors="none", edgecolors="k", lw=0.8, label="truth", zorder=2)
    norm = colors.Normalize(0, max(1.0, float(np.nanmax(d)) if m.any() else 1.0))
    sc = ax0.scatter(a[m, 0], a[m, 1], c=d[m], s=18, cmap="viridis", norm=norm, label="refined (aligned)", zorder=3)
    if (~m).any():
        ax0.scatter(a[~m, 0], a[~m, 1], marker="x", c="r", s=25, label="unmatched", zorder=3)
    fig.colorbar(sc, ax=ax0, label="displacement (Å)", shrink=0.8)
    ax0.set_aspect("equal")
    ax0.set_xlabel("x (Å)")
    ax0.set_ylabel("y (Å)")
    ax0.set_title(
        f"RMSD {comparison.rmsd:.3f} Å, max {comparison.max_displacement:.2f} Å"
        + (" (mirrored)" if comparison.mirrored else "")
    )
    ax0.legend(loc="upper right", fontsize=7)

    dm = d[m]
    ax1.hist(dm, bins=np.linspace(0, max(1.5, float(dm.max()) if len(dm) else 1.5), 40), color="C0")
    for thr, frac in comparison.within.items():
        ax1.axvline(thr, color="k", ls=":", lw=0.8)
        ax1.text(thr, ax1.get_ylim()[1] * 0.95, f" {100 * frac:.0f}%", fontsize=7, va="top")
    ax1.set_xlabel("displacement (Å)")
    ax1.set_ylabel("atoms")
    ax1.set_title("within " + ", ".join(f"{k:g} Å" for k in comparison.within))

    ht, hr = comparison.coordination.histograms()
    x = np.arange(len(ht))
    ax2.bar(x - 0.2, ht, width=0.4, label="truth", color="0.4")
    ax2.bar(x + 0.2, hr, width=0.4, label="refined", color="C1")
    ax2.set_xlabel("coordination number")
    ax2.set_ylabel("atoms")
    ax2.set_title(f"same CN: {100 * comparison.coordination.fraction_same:.0f}% of pairs")
    ax2.legend(fontsize=7)
    if path is not None:
        save_figure(fig, path)
    return fig
