"""``preparation.png``: what :func:`refine.io.prepare_image` did to a raw image, for the microscopist to check.

Three panels, lengths in Å with x (the file's first axis) to the right and y up,
as in the refinement's other figures (:mod:`refine.workflows.figures`):

1. the raw image with the vacuum pixels tinted blue, every particle's outline
   (numbered by size), the crop box (yellow) and the outline of the pixels used
   (the mask after cropping and resampling, red);
2. the histogram of the smoothed image with the vacuum level (± its noise σ),
   the particle threshold and the level where a particle's edge ends;
3. the prepared image (beam units when normalised) with the mask outline.

The raw image is read again from ``image.source`` (or given as ``raw``) and
its particles and vacuum recomputed with the recorded parameters
(deterministic: the same pixels as the preparation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refine.io.images import ExperimentalImage, read_image
from refine.io.particles import MARGIN, SMOOTHING, segment_particles, zero_padding
from surrogate.common import InputError, save_figure

__all__ = ["plot_preparation"]

#: longest side (pixels) of the raw image as drawn; larger images are drawn every k-th pixel
_MAX_DRAWN = 1024


def _steps(image: ExperimentalImage) -> dict:
    steps = image.metadata.get("preparation")
    if not steps:
        raise InputError("the image carries no preparation record (read it with refine.io.prepare_image)")
    return {s["step"]: s for s in steps}


def _raw(image: ExperimentalImage, steps: dict, raw):
    """(data, valid, pixel size Å, origin Å) of the file before any preparation."""
    read = steps.get("read", {}).get("parameters", {})
    if raw is None:
        if image.source == "<array>" or not Path(image.source).is_file():
            raise InputError("the raw image is not a file to read again; pass raw= (the 2-D array)")
        mask = read.get("mask") if read.get("mask") not in ("<array>", "auto") else None
        raw = read_image(image.source, pixel_size=read.get("pixel_size"), signal=read.get("signal"),
                         frame=read.get("frame"), origin=read.get("origin"), mask=mask)
        valid = ~zero_padding(raw.data) if read.get("mask") == "auto" else raw.mask
        return raw.data, valid, raw.pixel_size, raw.origin
    data = np.asarray(raw, dtype=float)
    how = str(read.get("mask")).lower()
    valid = ~zero_padding(data) if how == "auto" else (data != 0) if how == "zeros" else np.ones(data.shape, bool)
    step = read.get("pixel_size") or image.metadata.get("file_pixel_size")
    if step is None:
        res = image.metadata.get("resampled")
        step = res["from_pixel_size"] if res else image.pixel_size
    crop = image.metadata.get("crop") or (0, 0, 0, 0)
    origin = read.get("origin") or (image.origin[0] - crop[0] * step, image.origin[1] - crop[2] * step)
    return data, valid, float(step), tuple(origin)


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_preparation(image: ExperimentalImage, path, *, raw=None) -> Path:
    """Draw ``preparation.png`` (module docstring) for an image made by :func:`refine.io.prepare_image`.

    Parameters
    ----------
    image : ExperimentalImage
        The prepared image; its ``metadata["preparation"]`` says what to draw.
    path : path
        The PNG to write (atomically).
    raw : ndarray, shape of the file, optional
        The raw image, when ``image.source`` is not a file (an array was prepared);
        its pixels are valid but for ``mask`` "zeros" or "auto" (zero padding); an array mask is not redrawn.

    Returns
    -------
    Path
    """
    steps = _steps(image)
    data, valid, step, origin = _raw(image, steps, raw)
    measured = next((steps[k]["parameters"] for k in ("background", "crop", "mask")
                     if k in steps and "smoothing_A" in steps[k]["parameters"]), None)
    seg = None
    if measured is not None:
        seg = segment_particles(data, valid, step, smoothing=measured.get("smoothing_A", SMOOTHING),
                                margin=measured.get("margin_A", MARGIN))
    k = max(1, int(np.ceil(max(data.shape) / _MAX_DRAWN)))
    x0, y0 = origin
    extent = (x0 - 0.5 * step, x0 + (data.shape[0] - 0.5) * step, y0 - 0.5 * step, y0 + (data.shape[1] - 0.5) * step)
    fig = _figure((15.5, 5.0))
    ax_raw, ax_hist, ax_out = fig.subplots(1, 3, width_ratios=[1.0, 0.8, 1.0])

    lo, hi = np.percentile(data[valid], [0.5, 99.5])
    ax_raw.imshow(data[::k, ::k].T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi)
    xs = x0 + np.arange(0, data.shape[0], k) * step
    ys = y0 + np.arange(0, data.shape[1], k) * step
    if seg is not None:
        tint = np.zeros(seg.vacuum[::k, ::k].T.shape + (4,))
        tint[seg.vacuum[::k, ::k].T] = (0.2, 0.45, 1.0, 0.35)
        ax_raw.imshow(tint, origin="lower", extent=extent)
        if seg.n_particles:
            ax_raw.contour(xs, ys, (seg.labels[::k, ::k] > 0).T.astype(float), levels=[0.5], colors="orange",
                           linewidths=0.8)
        for label, (i0, i1, j0, j1) in enumerate(seg.boxes, start=1):
            ax_raw.text(x0 + 0.5 * (i0 + i1) * step, y0 + 0.5 * (j0 + j1) * step, str(label),
                        color="orange" if seg.whole[label - 1] else "grey", ha="center", va="center", fontsize=9)
    crop = image.metadata.get("crop")
    if crop:
        from matplotlib.patches import Rectangle

        i0, i1, j0, j1 = crop
        ax_raw.add_patch(Rectangle((x0 + (i0 - 0.5) * step, y0 + (j0 - 0.5) * step), (i1 - i0) * step,
                                   (j1 - j0) * step, fill=False, edgecolor="yellow", linewidth=1.2))
    _mask_outline(ax_raw, image)
    ax_raw.set_title("raw: vacuum (blue), particles (orange), crop (yellow), used (red)", fontsize=9)

    _histogram(ax_hist, data, valid, seg, steps)

    g = image.grid
    out_extent = (g.origin[0] - 0.5 * g.pixel_size, g.origin[0] + (g.shape[0] - 0.5) * g.pixel_size,
                  g.origin[1] - 0.5 * g.pixel_size, g.origin[1] + (g.shape[1] - 0.5) * g.pixel_size)
    cmap = _grey_with_bad()
    im = ax_out.imshow(np.where(image.mask, image.data, np.nan).T, origin="lower", extent=out_extent, cmap=cmap)
    fig.colorbar(im, ax=ax_out, shrink=0.8,
                 label="fraction of the incident beam" if image.metadata.get("beam_units") else "image units")
    _mask_outline(ax_out, image)
    ax_out.set_title(f"prepared: {image.shape[0]}×{image.shape[1]} px at {image.pixel_size:.4g} Å", fontsize=9)
    for ax in (ax_raw, ax_out):
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    fig.suptitle(f"preparation of {Path(image.source).name if image.source != '<array>' else 'the image'}")
    return save_figure(fig, Path(path), dpi=100, format="png")


def _grey_with_bad():
    """Grey scale with excluded (NaN) pixels in pale blue."""
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad=(0.75, 0.82, 0.95))


def _mask_outline(ax, image: ExperimentalImage) -> None:
    """The outline of the used pixels, on the image's probe positions (Å)."""
    if image.mask.all():
        return
    g = image.grid
    xs = g.origin[0] + np.arange(g.shape[0]) * g.pixel_size
    ys = g.origin[1] + np.arange(g.shape[1]) * g.pixel_size
    ax.contour(xs, ys, image.mask.T.astype(float), levels=[0.5], colors="red", linewidths=0.9)


def _histogram(ax, data, valid, seg, steps) -> None:
    """Histogram of the smoothed (else raw) image, with the vacuum level ± σ and the threshold."""
    values = seg.smoothed[valid & np.isfinite(seg.smoothed)] if seg is not None else data[valid]
    ax.hist(values.ravel()[:: max(1, values.size // 2_000_000)], bins=200, color="0.4", log=True)
    if seg is not None:
        ax.axvline(seg.threshold, color="orange", label=f"particle threshold {seg.threshold:.4g}")
        ax.axvline(seg.edge, color="orange", linestyle="--", label=f"particle edge {seg.edge:.4g}")
    bg = steps.get("background", {}).get("values", {})
    if "noise_sigma" in bg:
        level, sigma = bg["offset"], bg["noise_sigma"]
        ax.axvline(level, color="tab:blue", label=f"vacuum level {level:.4g} (σ {sigma:.3g})")
        ax.axvspan(level - sigma, level + sigma, color="tab:blue", alpha=0.15)
    elif bg.get("offset"):
        ax.axvline(bg["offset"], color="tab:blue", label=f"background {bg['offset']:.4g} (given)")
    ax.set_xlabel("smoothed intensity (file units)" if seg is not None else "intensity (file units)")
    ax.set_ylabel("pixels")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
