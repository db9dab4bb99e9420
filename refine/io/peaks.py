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
count table reports such columns apart.

:func:`missing_columns` fills the holes that the peak search leaves inside
a particle: a place surrounded by columns on all sides and farther from
all of them than any point of a zone-axis lattice can be (:data:`GAP_RADIUS`)
is a column the image does not resolve as a peak of its own (a dimmer or
blurred column between bright ones). A 3-D structure built on the peaks
alone has a channel of vacancies there, through the whole particle. Lengths in Å.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = ["find_columns", "resolved_columns", "missing_columns", "SMOOTH", "PEAK_FRACTION", "RESOLVED_DISTANCE",
           "GAP_RADIUS", "GAP_NEIGHBOURS", "GAP_OPENING"]

#: Gaussian smoothing (Å) of the image before its column peaks are found
SMOOTH = 0.3
#: a column's peak must rise above vacuum by this fraction of the brightest peak's height
PEAK_FRACTION = 0.08
#: a column is resolved by an image peak within this many nearest-neighbour distances (about half the closest
#: column spacing of the zone axes that resolve columns, fcc [100]: 0.71; a peak near two columns resolves the
#: nearer only)
RESOLVED_DISTANCE = 0.3
#: nearest-neighbour distances; an empty circle this wide among columns holds a missing column. The widest empty
#: circle of a close-packed zone axis is 0.53 (fcc [110]: the circumradius of its 2.50, 2.50, 2.88 Å triangles for
#: Au) or 0.50 ([100]); 0.64 leaves room for columns measured 0.2 Å off their sites
GAP_RADIUS = 0.64
#: columns at least, within 1.2 nearest-neighbour distances of a missing column (a whole neighbourhood is 6 on [110])
GAP_NEIGHBOURS = 4
#: degrees; the widest angle between a missing column's neighbours seen from it: at most 180, the place lies within
#: its neighbours (a hole, or a notch in a straight edge); a place beyond a particle's convex edge is wider
GAP_OPENING = 180.0


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


def missing_columns(xy, nn_distance: float, *, radius: float = GAP_RADIUS, neighbours: int = GAP_NEIGHBOURS,
                    opening: float = GAP_OPENING) -> np.ndarray:
    """Columns the peak search missed inside a particle: positions, shape ``(k, 2)`` Å (k may be 0).

    The centre of the widest empty circle among the columns ``xy`` (a
    vertex of their Voronoi diagram) is a missing column where the circle's
    radius is at least ``radius`` nearest-neighbour distances, at least
    ``neighbours`` columns lie within 1.2 of them, and those columns
    surround it (no angle between them, seen from it, wider than
    ``opening`` degrees). The column goes to the place in that circle
    where most of the surrounding columns' own neighbour vectors point
    (:func:`_lattice_site`: a lattice site; the circle's centre would put
    one column half-way between the two sites of a two-column hole), and
    the search is repeated until no such circle is left, widest first.

    Parameters
    ----------
    xy : array_like, shape (m, 2)
        Column positions, Å (:func:`find_columns`).
    nn_distance : float
        Å.
    """
    from scipy.spatial import Delaunay, QhullError

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    nn = float(nn_distance)
    added = []
    points = xy
    for _ in range(len(xy)):  # each round adds one column; a hole cannot hold more columns than surround it
        try:
            tri = Delaunay(points)
        except (QhullError, ValueError):  # fewer than three columns, or all on a line: no inside to fill
            break
        a, b, c = (points[tri.simplices[:, k]] for k in range(3))
        centre, r = _circumcircles(a, b, c)
        order = np.argsort(-r)
        tree = cKDTree(points)
        found = None
        for t in order:
            if not r[t] >= radius * nn:
                break
            near = points[tree.query_ball_point(centre[t], 1.2 * nn)]
            if len(near) < int(neighbours):
                continue
            angles = np.sort(np.arctan2(*(near - centre[t]).T[::-1]))
            widest = np.degrees(np.max(np.diff(np.r_[angles, angles[0] + 2 * np.pi])))
            if widest <= opening:
                found = _lattice_site(points, tree, centre[t], r[t], nn)
                break
        if found is None:
            break
        added.append(found)
        points = np.vstack([points, found])
    return np.array(added).reshape(-1, 2)


def _lattice_site(points, tree, centre, radius: float, nn_distance: float) -> np.ndarray:
    """The lattice site in the empty circle (``centre``, ``radius``) that most columns around it point to (Å, (2,)).

    The neighbour vectors of the columns within 3 bonds of the circle
    (pairs closer than 1.3 × their median nearest distance p: the local
    lattice, whichever grain it is) are added to each column around the
    circle; the proposals inside the circle and at least 0.75·p from every
    column vote, and the place with votes from the most different columns
    (within 0.4 Å) wins. With no proposal, the circle's centre.
    """
    from refine.analysis.columns import median_neighbour_distance

    local = points[tree.query_ball_point(centre, radius + 3.0 * float(nn_distance))]
    p = median_neighbour_distance(local) if len(local) >= 2 else None
    if not p:
        return centre
    pairs = cKDTree(local).query_pairs(1.3 * p, output_type="ndarray")
    if not len(pairs):
        return centre
    vectors = local[pairs[:, 1]] - local[pairs[:, 0]]
    vectors = np.vstack([vectors, -vectors])
    around = local[np.linalg.norm(local - centre, axis=1) <= radius + 1.3 * p]
    proposals = (around[:, None, :] + vectors[None, :, :]).reshape(-1, 2)
    voter = np.repeat(np.arange(len(around)), len(vectors))
    inside = np.linalg.norm(proposals - centre, axis=1) < radius
    clear = tree.query(proposals)[0] >= 0.75 * p
    proposals, voter = proposals[inside & clear], voter[inside & clear]
    if not len(proposals):
        return centre
    groups = cKDTree(proposals).query_ball_point(proposals, 0.4)
    votes = np.array([len(set(voter[g])) for g in groups])
    best = groups[int(np.argmax(votes))]
    return proposals[best].mean(axis=0)


def _circumcircles(a, b, c):
    """Centres (shape (t, 2)) and radii (shape (t,)) of the circles through the triangles a, b, c (each (t, 2))."""
    ab, ac = b - a, c - a
    d = 2.0 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
    d = np.where(np.abs(d) > 1e-12, d, np.nan)  # a degenerate (flat) triangle has no circle
    ab2, ac2 = (ab * ab).sum(1), (ac * ac).sum(1)
    ux = (ac[:, 1] * ab2 - ab[:, 1] * ac2) / d
    uy = (ab[:, 0] * ac2 - ac[:, 0] * ab2) / d
    offset = np.c_[ux, uy]
    return a + offset, np.nan_to_num(np.hypot(ux, uy), nan=0.0)
