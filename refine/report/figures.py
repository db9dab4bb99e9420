"""The report's figures, rendered with matplotlib (Agg, no pyplot) to PNG ``data:`` URIs for inlining.

Nothing is written to the run folder: each figure is drawn in memory and
returned as ``data:image/png;base64,...``, so the page stays one
self-contained file. Images are drawn as in ``images.png`` (x right, y up:
``image[i, j]`` at ``(x0 + iΔ, y0 + jΔ)`` is transposed for ``imshow``,
lengths in Å); the fitness history is ``fitness_history.png``'s own
drawing (:func:`refine.workflows.figures.plot_history`).
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["png_data_uri", "image_panels", "history_figure", "counts_overlay"]

_DPI = 100


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return png_data_uri(buf.getvalue())


def _extent(shape, origin, pixel_size):
    x0, y0 = origin
    return (x0, x0 + (shape[0] - 1) * pixel_size, y0, y0 + (shape[1] - 1) * pixel_size)


def image_panels(images: dict, origin, pixel_size: float) -> str:
    """Experimental, simulated and difference images side by side (those present), as a data URI.

    Parameters
    ----------
    images : dict
        ``"experimental.npy"``, ``"simulated.npy"``, ``"difference.npy"`` →
        ndarray ``(nx, ny)``; the difference is NaN where the image was masked,
        and the experimental image is masked the same way here.
    origin : (float, float)
        Å, position of pixel ``[0, 0]``.
    pixel_size : float
        Å.
    """
    from refine.analysis.plots import new_figure

    exp, sim, diff = (images.get(k) for k in ("experimental.npy", "simulated.npy", "difference.npy"))
    if exp is not None and diff is not None:
        exp = np.where(np.isfinite(diff), exp, np.nan)  # the pixels χ² was taken over
    panels = [(a, n) for a, n in ((exp, "experimental"), (sim, "simulated (a·I + b)"),
                                  (diff, "experimental − simulated")) if a is not None]
    fig = new_figure((4.2 * len(panels), 3.9))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    grey = [a for a, n in panels if not n.startswith("experimental −")]
    lo = float(np.nanmin([np.nanmin(a) for a in grey])) if grey else 0.0
    hi = float(np.nanmax([np.nanmax(a) for a in grey])) if grey else 1.0
    for ax, (data, name) in zip(axes, panels):
        extent = _extent(data.shape, origin, pixel_size)
        if name.startswith("experimental −"):
            lim = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0
            im = ax.imshow(data.T, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:  # one grey scale for both, so that brightness compares between them
            im = ax.imshow(data.T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the incident beam")
    return _figure_uri(fig)


def history_figure(logbook_csv, n_valid: int | None) -> str:
    """The fitness history of ``logbook.csv`` (cost, χ²/px, E per generation) as a data URI."""
    from refine.workflows.figures import plot_history

    with tempfile.TemporaryDirectory(prefix="stem-refine-report-") as tmp:
        path = plot_history(Path(logbook_csv), Path(tmp) / "history.png", n_valid=n_valid)
        return png_data_uri(path.read_bytes())


def counts_overlay(counts, experimental, origin, pixel_size: float | None) -> str:
    """Column counts over the experimental image, and cross-section against atoms in the 3-D answer.

    Left: a marker per column at (x, y) Å labelled with the image's count;
    columns whose counts disagree are red and labelled ``image/3-D``; columns
    the image does not resolve (``counts.resolved`` False) dashed.
    Right: cross-section (Å² × fraction of the beam) against the 3-D count,
    agreeing and disagreeing columns apart: the library steps show as bands.

    Parameters
    ----------
    counts : refine.report.counts.ColumnCountTable
    experimental : ndarray (nx, ny) or None
        Drawn under the markers when given (with ``pixel_size``).
    origin : (float, float)
        Å.
    pixel_size : float or None
        Å.
    """
    from refine.analysis.count_files import draw_column_rings
    from refine.analysis.plots import new_figure

    fig = new_figure((11.5, 5.0))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.25, 1.0])
    if experimental is not None and pixel_size:
        ax.imshow(np.asarray(experimental).T, origin="lower", cmap="gray",
                  extent=_extent(experimental.shape, origin, pixel_size))
    bad = counts.disagree
    ok = ~bad
    # marker and label sizes shrink with the number of columns so that a 300-column particle stays legible
    n = max(counts.n_columns, 1)
    size = float(np.clip(3000.0 / n, 12.0, 90.0))
    font = float(np.clip(200.0 / np.sqrt(n), 5.0, 10.0))
    shown = np.ones(counts.n_columns, dtype=bool) if counts.resolved is None else np.asarray(counts.resolved, bool)
    draw_column_rings(ax, counts.x, counts.y, ((ok, "#22c3e6", 1.0, f"counts agree ({int(ok.sum())})"),
                                               (bad, "#ff3030", 1.6, f"counts differ ({int(bad.sum())}): image/3-D")),
                      shown, size=size)
    for x, y, a, b, d in zip(counts.x, counts.y, counts.atoms_image, counts.atoms_3d, bad):
        # beside the marker, not on it: the ring stays visible and the number legible
        ax.annotate(f"{a}/{b}" if d else f"{a}", (x, y), xytext=(3, 3), textcoords="offset points", ha="left",
                    va="bottom", fontsize=font, color="#ff5050" if d else "#f4f4a0", fontweight="bold")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title("atoms per column counted from the image")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    rng = np.random.default_rng(0)  # jitter only spreads overlapping points; fixed so the page is reproducible
    jitter = rng.uniform(-0.12, 0.12, counts.n_columns)
    ax2.scatter(counts.atoms_3d[ok] + jitter[ok], counts.cross_section[ok], s=14, c="#1f77b4",
                label="image count = 3-D count")
    ax2.scatter(counts.atoms_3d[bad] + jitter[bad], counts.cross_section[bad], s=22, c="#d62728", marker="x",
                label="image count ≠ 3-D count")
    ax2.set_xlabel("atoms in the column (3-D answer)")
    ax2.set_ylabel("scattering cross-section (Å² × fraction of beam)")
    ax2.set_title("cross-section per column")
    ax2.legend(fontsize=8)
    return _figure_uri(fig)
