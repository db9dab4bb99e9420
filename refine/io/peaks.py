"""Projected atomic columns of a zone-axis HAADF image: the peaks of the image.

:func:`find_columns` finds them as the local maxima of the image smoothed
by :data:`SMOOTH` Å (a window of ±0.3 bond lengths), inside the valid
pixels, rising above the vacuum level
(:func:`refine.analysis.cross_sections.vacuum_level`) by at least
:data:`PEAK_FRACTION` of the brightest peak's height; maxima closer than
half a bond are one column (the brighter kept). Used by the start from the
image's counts (:mod:`refine.search.column_start`) and the lattice-based
distortion correction (:mod:`refine.io.distortion`).

:func:`resolved_columns` asks the converse: which columns of a 3-D
structure does the image show as a peak of their own? A column counted from
a part of the image that shows no columns (a grain off its zone axis, a
blurred rim) has a cross-section but no peak; its count says little, and a
count table reports such columns apart. Lengths in Å.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = ["find_columns", "resolved_columns", "SMOOTH", "PEAK_FRACTION", "RESOLVED_DISTANCE"]

#: Gaussian smoothing (Å) of the image before its column peaks are found
SMOOTH = 0.3
#: a column's peak must rise above vacuum by this fraction of the brightest peak's height
PEAK_FRACTION = 0.08
#: a column is resolved by an image peak within this many nearest-neighbour distances (about half the closest
#: column spacing of the zone axes that resolve columns, fcc [100]: 0.71; a peak near two columns resolves the
#: nearer only)
RESOLVED_DISTANCE = 0.3


def find_columns(image, nn_distance: float, *, smooth: float = SMOOTH, fraction: float = PEAK_FRACTION
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Projected column positions of ``image``: its smoothed local maxima, shape ``(m, 2)`` Å, and their heights.

    Parameters
    ----------
    image : refine.io.ExperimentalImage
    nn_distance : float
        Å; peaks closer than half of it are one column.
    smooth, fraction : float
        Smoothing σ (Å) and the threshold above vacuum (fraction of the highest peak).

    Returns
    -------
    (xy, height)
        Column centres in the image's frame (Å) and their smoothed heights above the vacuum level
        (image units), brightest first.
    """
    from refine.analysis.cross_sections import vacuum_level

    dx = float(image.pixel_size)
    data = np.where(image.mask, image.data, np.nan)
    fill = np.nanmedian(data) if np.isfinite(data).any() else 0.0
    smoothed = gaussian_filter(np.nan_to_num(data, nan=fill), smooth / dx)
    vacuum = vacuum_level(image)
    size = max(3, 2 * int(round(0.3 * nn_distance / dx)) + 1)
    peaks = (smoothed == maximum_filter(smoothed, size=size)) & image.mask
    height = smoothed - vacuum
    top = float(height[peaks].max()) if peaks.any() else 0.0
    if not top > 0:
        raise InputError("the image has no bright peaks above its vacuum level: no columns to count")
    ii, jj = np.nonzero(peaks & (height >= fraction * top))
    order = np.argsort(-height[ii, jj], kind="stable")
    ii, jj = ii[order], jj[order]
    xy = np.c_[image.origin[0] + ii * dx, image.origin[1] + jj * dx]
    # plateaus give several equal maxima: keep the first of any pair closer than half a bond
    keep = np.ones(len(xy), dtype=bool)
    tree = cKDTree(xy)
    for a, b in sorted(tree.query_pairs(0.5 * nn_distance)):
        if keep[a] and keep[b]:
            keep[b] = False
    return xy[keep], height[ii, jj][keep]


def resolved_columns(xy, image, nn_distance: float, *, distance: float = RESOLVED_DISTANCE) -> np.ndarray:
    """Which of the columns ``xy`` the image resolves: boolean, shape ``(m,)``.

    A column is resolved when a peak of :func:`find_columns` lies within
    ``distance`` × ``nn_distance`` of it and it is that peak's nearest
    column (one peak resolves one column).

    Parameters
    ----------
    xy : array_like, shape (m, 2)
        Column centres in the image's frame (Å), e.g. a structure's projected columns.
    image : refine.io.ExperimentalImage
    nn_distance : float
        Å, the nearest-neighbour distance of the structure's atoms.
    distance : float
        In nearest-neighbour distances.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    out = np.zeros(len(xy), dtype=bool)
    if not len(xy):
        return out
    try:
        peaks, _ = find_columns(image, nn_distance)
    except InputError:  # no peak at all: the image resolves none of the columns
        return out
    d, nearest = cKDTree(xy).query(peaks)
    out[nearest[d <= float(distance) * float(nn_distance)]] = True
    return out
