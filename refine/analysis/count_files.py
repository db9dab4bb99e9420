"""The files of a column count table: ``counts.csv`` and the overlay figure ``counts.png``.

``counts.csv`` has exactly the columns ``x,y,atoms_3d,atoms_image,cross_section,disagree,resolved``
(x, y in Å; cross_section in Å² × fraction of the incident beam; disagree
and resolved ``true``/``false``: resolved where the image shows the column
as a peak of its own, :func:`refine.io.peaks.resolved_columns`); other tools
read it by that header. ``counts.png`` draws the image (x right, y up) with
a marker per column labelled with the image's count, the columns where the
3-D structure disagrees in another colour, the columns the image does not
resolve with dashed markers, and a legend. Both written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from surrogate.common import atomic_write_text, save_figure

__all__ = ["COUNTS_HEADER", "write_counts_csv", "plot_counts", "draw_column_rings", "write_counts",
           "resolved_agreement"]

#: the header of counts.csv
COUNTS_HEADER = ("x", "y", "atoms_3d", "atoms_image", "cross_section", "disagree", "resolved")


def write_counts_csv(table, path) -> Path:
    """``table.rows`` (:class:`refine.analysis.cross_sections.CountTable`) as ``counts.csv``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COUNTS_HEADER)
    for r in table.rows:
        w.writerow([f"{r['x']:.4f}", f"{r['y']:.4f}", r["atoms_3d"], r["atoms_image"], f"{r['cross_section']:.6g}",
                    "true" if r["disagree"] else "false", "true" if r["resolved"] else "false"])
    return atomic_write_text(path, buf.getvalue())


def plot_counts(table, image, path, *, title: str = "") -> Path:
    """The image with every column's image count; disagreeing columns highlighted (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = image.grid
    extent = (g.origin[0], g.origin[0] + (g.shape[0] - 1) * g.pixel_size,
              g.origin[1], g.origin[1] + (g.shape[1] - 1) * g.pixel_size)
    fig = Figure(figsize=(7.0, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(np.where(image.mask, image.data, np.nan).T, origin="lower", extent=extent, cmap="gray")
    bad = table.disagree
    draw_column_rings(ax, table.xy[:, 0], table.xy[:, 1],
                      ((~bad, "tab:cyan", 1.5, f"3-D structure agrees: {int((~bad).sum())}"),
                       (bad, "tab:red", 1.5, f"3-D structure disagrees (its count in brackets): {int(bad.sum())}")),
                      table.is_resolved, size=60, dashed_width=1.0,
                      dashed_label="dashed: no peak of its own in the image: {n}")
    for (x, y), n, n3, b in zip(table.xy, table.atoms_image, table.atoms_3d, bad):
        ax.annotate(f"{n}" + (f" ({n3})" if b else ""), (x, y), xytext=(4, 4), textcoords="offset points",
                    color="tab:red" if b else "yellow", fontsize=8, fontweight="bold")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title(title or f"atoms per column from the image: {table.fraction_equal:.0%} equal to the 3-D structure, "
                          f"{table.fraction_within_1:.0%} within ±1", fontsize=9)
    ax.legend(loc="upper right", fontsize=8, title="label = atoms from the image", title_fontsize=8)
    return save_figure(fig, path)


def draw_column_rings(ax, x, y, groups, resolved, *, size: float, dashed_width: float | None = None,
                      dashed_label: str = "dashed: no peak of its own ({n})") -> None:
    """Rings at the columns (x, y in Å, shape (m,)) on matplotlib ``ax``, solid where ``resolved``, dashed where not.

    ``groups``: ``(mask, colour, line width, legend label)`` each, e.g. the
    columns whose counts agree and those whose counts differ. A column the
    image shows no peak of its own (``resolved`` False) is dashed (line
    width ``dashed_width``, default the group's): its count says little.
    Where there are such columns, a grey legend entry ``dashed_label``
    (``{n}``: how many) explains the dashes.
    """
    resolved = np.asarray(resolved, dtype=bool)
    for sel, colour, width, label in groups:
        ax.scatter(x[sel & resolved], y[sel & resolved], s=size, facecolors="none", edgecolors=colour,
                   linewidths=width, label=label)
        if (sel & ~resolved).any():
            ax.scatter(x[sel & ~resolved], y[sel & ~resolved], s=size, facecolors="none", edgecolors=colour,
                       linewidths=width if dashed_width is None else dashed_width, linestyle="--")
    if not resolved.all():
        ax.scatter([], [], s=size, facecolors="none", edgecolors="0.6", linewidths=1.0, linestyle="--",
                   label=dashed_label.format(n=int((~resolved).sum())))


def write_counts(table, image, out_dir) -> dict:
    """``counts.csv`` then ``counts.png`` in ``out_dir``; returns name → path."""
    out = Path(out_dir)
    files = {"counts.csv": write_counts_csv(table, out / "counts.csv")}
    files["counts.png"] = plot_counts(table, image, out / "counts.png")
    return files


def resolved_agreement(summary: dict) -> str | None:
    """The agreement over the resolved columns in words, from a count summary; None where every column is resolved.

    ``summary``: :meth:`CountTable.summary <refine.analysis.cross_sections.CountTable.summary>` or
    :meth:`ColumnCountTable.to_dict <refine.report.counts.ColumnCountTable.to_dict>` (None too where
    the table does not say which columns are resolved).
    """
    n, k = summary.get("n_columns"), summary.get("n_resolved")
    if k is None or k >= n:
        return None
    if k == 0:
        return f"none of the {n} columns has a peak of its own in the image"
    return (f"{summary['fraction_equal_resolved']:.1%} equal, {summary['fraction_within_1_resolved']:.1%} within ±1 "
            f"on the {k} of {n} columns with a peak of their own in the image")
