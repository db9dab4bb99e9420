"""Sites and regions of a particle, seen along the beam (z): where atoms can go, which atoms move together.

* Empty lattice sites (:func:`interior_vacancies`, :func:`surface_sites`):
  continued nearest-neighbour bonds, enumerated deterministically; both
  hollows of every facet triangle (:func:`surface_hollows`).
* Lines of sight (:func:`depth_sides`, :func:`beyond_line_of_sight`): one
  projection cannot tell the top of a column from its bottom.
* Surface islands (:func:`surface_patches`) and their move through the
  particle under the same columns (:func:`transfer_patch`).
* Columns (:func:`beam_column`) and the wedges and caps of a particle about
  its column axis (:func:`beam_sectors`).

The deterministic sweeps (:mod:`refine.search.sweeps`) and the depth
mutations (:mod:`refine.search.operators`) are built on these. Lengths in Å.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from refine.search.geometry import NEIGHBOUR_FACTOR

__all__ = [
    "interior_vacancies",
    "surface_sites",
    "surface_hollows",
    "depth_sides",
    "beyond_line_of_sight",
    "surface_patches",
    "transfer_patch",
    "beam_column",
    "beam_sectors",
]


def _merged(points: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Points linked by steps shorter than ``distance`` Å merged into one (their mean); returns (sites, label of each point)."""
    links = cKDTree(points).query_pairs(distance, output_type="ndarray").reshape(-1, 2)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(len(points), len(points)))
    n_sites, label = connected_components(graph, directed=False)
    sites = np.zeros((n_sites, points.shape[1]))
    np.add.at(sites, label, points)
    sites /= np.bincount(label, minlength=n_sites)[:, None]
    return sites, label


def _lattice_sites(positions, nn_distance: float, min_neighbours: int, max_neighbours: int | None = None) -> np.ndarray:
    """Empty lattice sites next to a particle: continued nearest-neighbour bonds, shape ``(m, 3)`` in Å.

    Every nearest-neighbour bond i→j, continued by one bond length
    (2·r_j − r_i), ends on a lattice site of a close-packed crystal (for a
    subsurface→surface bond: the hollow site of the right stacking on the
    facet). An end point counts when no atom is within 0.8 bond lengths of
    it and the number of atoms within ``NEIGHBOUR_FACTOR`` bond lengths is
    in ``[min_neighbours, max_neighbours]``. End points linked by steps of
    less than 1 Å are one site (their mean): the ends of different bonds
    onto one site scatter by a few tenths of an Å in a relaxed particle,
    while distinct sites are ≥ 1.6 Å apart (fcc and hcp hollows). Sites
    come out most-coordinated first.
    """
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return np.empty((0, 3))
    tree = cKDTree(pos)
    pairs = tree.query_pairs(NEIGHBOUR_FACTOR * nn_distance, output_type="ndarray").reshape(-1, 2)
    if not len(pairs):
        return np.empty((0, 3))
    ends = np.vstack([2.0 * pos[pairs[:, 1]] - pos[pairs[:, 0]], 2.0 * pos[pairs[:, 0]] - pos[pairs[:, 1]]])
    dist, _ = tree.query(ends)
    ends = ends[dist > 0.8 * nn_distance]
    if not len(ends):
        return np.empty((0, 3))
    count = np.asarray(tree.query_ball_point(ends, NEIGHBOUR_FACTOR * nn_distance, return_length=True))
    keep = count >= min_neighbours
    if max_neighbours is not None:
        keep &= count <= max_neighbours
    ends, count = ends[keep], count[keep]
    if not len(ends):
        return np.empty((0, 3))
    sites, label = _merged(ends, 1.0)
    site_count = np.zeros(len(sites))
    np.maximum.at(site_count, label, count)
    return sites[np.argsort(-site_count, kind="stable")]


def interior_vacancies(positions, nn_distance: float, *, min_neighbours: int = 9) -> np.ndarray:
    """Empty lattice sites inside a particle, shape ``(m, 3)`` in Å (m may be 0).

    The ends of continued nearest-neighbour bonds (see :func:`surface_sites`)
    with no atom within 0.8 bond lengths and at least ``min_neighbours``
    atoms within ``NEIGHBOUR_FACTOR`` bond lengths (a surface site has ≤ 9
    in fcc, an interior one 12). No ideal particle has one.
    """
    return _lattice_sites(positions, nn_distance, min_neighbours)


def surface_sites(positions, nn_distance: float, *, min_neighbours: int = 3, max_neighbours: int = 8) -> np.ndarray:
    """Empty lattice sites on a particle's surface, shape ``(m, 3)`` in Å, most-coordinated first.

    The ends of continued nearest-neighbour bonds (each bond i→j continued by
    one bond length, 2·r_j − r_i: a lattice site of a close-packed crystal)
    with ``min_neighbours`` to ``max_neighbours`` atoms around them: the
    hollow sites of the right stacking on every facet (3 neighbours on
    {111}, 4 on {100}) and the sites along steps and island edges (5–8).
    Unlike :func:`hollow_sites` it enumerates them all, deterministically.
    """
    return _lattice_sites(positions, nn_distance, min_neighbours, max_neighbours)


def surface_hollows(positions, nn_distance: float, *, clearance: float = 0.85, merge: float = 0.5,
                    min_neighbours: int = 3) -> np.ndarray:
    """Both hollow sites of every facet triangle, shape ``(m, 3)`` in Å (m may be 0), most-coordinated first.

    :func:`surface_sites` continues bonds and so finds, on a {111} facet,
    only the hollow that continues the crystal's stacking. An adatom sits
    on either (fcc or hcp hollow, 1.6 Å apart); a relaxed particle's
    adatoms are found on both. Here, for every triangle of mutually bonded
    surface atoms (fewer than 12 neighbours), the two points one bond
    length from all three corners are candidates; those at least
    ``clearance`` bonds from every atom and with ``min_neighbours`` atoms
    within ``NEIGHBOUR_FACTOR`` bonds are kept, and candidates closer than
    ``merge`` Å are one site (their mean). Deterministic.
    """
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 3:
        return np.empty((0, 3))
    cutoff = NEIGHBOUR_FACTOR * nn_distance
    tree = cKDTree(pos)
    neighbours = tree.query_ball_point(pos, cutoff)
    surface = np.array([len(v) - 1 < 12 for v in neighbours])
    corners = []
    for a in np.flatnonzero(surface):
        nb = sorted(b for b in neighbours[a] if b > a and surface[b])
        for i, b in enumerate(nb):
            for c in nb[i + 1:]:
                if np.linalg.norm(pos[b] - pos[c]) <= cutoff:
                    corners.append((a, b, c))
    if not corners:
        return np.empty((0, 3))
    tri = pos[np.asarray(corners)]  # (t, 3 corners, 3)
    centre = tri.mean(axis=1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # the circumradius of a near-equilateral triangle: its centroid's mean distance to the corners
    height2 = nn_distance ** 2 - np.mean(np.sum((tri - centre[:, None]) ** 2, axis=2), axis=1)
    ok = height2 > 0
    h = np.sqrt(height2[ok])[:, None]
    points = np.vstack([centre[ok] + h * normal[ok], centre[ok] - h * normal[ok]])
    if not len(points):
        return np.empty((0, 3))
    points = points[tree.query(points)[0] >= clearance * nn_distance]
    if not len(points):
        return np.empty((0, 3))
    sites, _ = _merged(points, merge)
    count = np.asarray(tree.query_ball_point(sites, cutoff, return_length=True))
    keep = count >= min_neighbours
    sites, count = sites[keep], count[keep]
    return sites[np.argsort(-count, kind="stable")]


def depth_sides(points, positions, radius: float) -> np.ndarray:
    """+1 where a point lies in the upper half (larger z) of the particle's line of sight through it, else −1.

    The line of sight of a point is the set of atoms of ``positions``
    within ``radius`` Å of its x, y; the point is on the upper side when
    its z is at least the mid-point of their z range. A point with no atom
    in its line of sight is compared with its own z (+1). Shape ``(m,)``.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    pos = np.asarray(positions, dtype=float)
    pairs = cKDTree(pts[:, :2]).sparse_distance_matrix(cKDTree(pos[:, :2]), radius, output_type="ndarray")
    z_lo = np.full(len(pts), np.inf)
    z_hi = np.full(len(pts), -np.inf)
    np.minimum.at(z_lo, pairs["i"], pos[pairs["j"], 2])
    np.maximum.at(z_hi, pairs["i"], pos[pairs["j"], 2])
    mid = pts[:, 2].copy()
    seen = np.isfinite(z_lo)
    mid[seen] = 0.5 * (z_lo[seen] + z_hi[seen])
    return np.where(pts[:, 2] >= mid, 1, -1)


def beyond_line_of_sight(positions, xy, radius: float, side: int, nn_distance: float) -> float:
    """z (Å) one bond beyond the top (``side`` +1) or bottom (−1) end of a line of sight.

    The line of sight is the atoms of ``positions`` within ``radius`` Å of
    ``xy`` (all atoms when there are none): a point there keeps its
    projection and sits on the surface, on the chosen side of the particle.
    """
    pos = np.asarray(positions, dtype=float)
    near = np.hypot(pos[:, 0] - xy[0], pos[:, 1] - xy[1]) <= radius
    z = pos[near, 2] if near.any() else pos[:, 2]
    return float(z.max() + nn_distance if side > 0 else z.min() - nn_distance)


def surface_patches(positions, nn_distance: float, *, sizes: Sequence[int] = (3, 5, 7, 10, 14), seeds: int = 6,
                    max_coordination: int = 9) -> list[np.ndarray]:
    """Connected patches of low-coordinated surface atoms on one side (top or bottom) of a particle.

    Seeds are the least-coordinated atoms (a seed already inside an
    earlier seed's largest patch is skipped). A patch grows from its seed
    one neighbour at a time, the least-coordinated first (then the nearest
    to the seed), through surface atoms (coordination ≤
    ``max_coordination``) on the seed's side along the beam
    (:func:`depth_sides`): an island on a facet (coordination 4–7) is taken
    whole before its rim (9 and more, counting the island's own atoms).
    One patch per size in ``sizes``; a patch that cannot grow to a size
    is not repeated. Returns index arrays, seed by seed, smallest first.
    """
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    if n < 4:
        return []
    cutoff = NEIGHBOUR_FACTOR * nn_distance
    tree = cKDTree(pos)
    neighbours = tree.query_ball_point(pos, cutoff)
    cn = np.array([len(v) - 1 for v in neighbours])
    side = depth_sides(pos, pos, nn_distance)
    sizes = sorted({int(s) for s in sizes if int(s) >= 1})
    patches, covered, n_seeds = [], set(), 0
    for seed in np.argsort(cn, kind="stable"):
        if n_seeds >= seeds or not sizes:
            break
        seed = int(seed)
        if seed in covered or cn[seed] > max_coordination:
            continue
        n_seeds += 1
        allowed = (cn <= max_coordination) & (side == side[seed])
        d_seed = np.linalg.norm(pos - pos[seed], axis=1)
        patch, frontier = [seed], set(j for j in neighbours[seed] if allowed[j] and j != seed)
        last = 0
        for size in sizes:
            while len(patch) < size and frontier:
                j = min(frontier, key=lambda i: (cn[i], d_seed[i], i))
                frontier.discard(j)
                patch.append(j)
                frontier.update(i for i in neighbours[j] if allowed[i] and i not in patch)
            if len(patch) > last:
                patches.append(np.array(patch, dtype=int))
                last = len(patch)
        covered.update(patch)
    return patches


def transfer_patch(positions, patch, nn_distance: float, *, max_shift: float | None = None) -> np.ndarray:
    """Move the atoms ``patch`` to empty lattice sites on the opposite side of the particle, same x, y.

    The image of a top-side island and of a bottom-side island over the
    same columns are nearly the same; the energy tells them apart, but no
    local move carries a connected group of atoms through the particle.
    Here the patch atoms are lifted off and put, one at a time, on the
    :func:`surface_sites` of the rest on the other side along the beam
    (:func:`depth_sides`), each on the free site nearest to its own x, y
    (the closest pair first; sites are recomputed after every placement,
    so a patch can build more than one layer). An atom with no such site
    within ``max_shift`` Å in x, y (default half a bond) goes one bond
    beyond the far end of its line of sight instead. Returns new positions
    ``(n, 3)``; the input is not changed.
    """
    pos = np.array(positions, dtype=float)
    patch = [int(k) for k in np.atleast_1d(patch)]
    if not patch:
        return pos
    tol = 0.5 * nn_distance if max_shift is None else float(max_shift)
    side = depth_sides(pos[patch], pos, nn_distance)
    placed = np.ones(len(pos), bool)
    placed[patch] = False
    todo = dict(zip(patch, -side))  # atom → the side it goes to
    while todo:
        rest = pos[placed]
        sites = surface_sites(rest, nn_distance)
        best = None
        if len(sites):
            site_side = depth_sides(sites, rest, nn_distance)
            for k, target in todo.items():
                ok = site_side == target
                if not ok.any():
                    continue
                d = np.hypot(sites[ok, 0] - pos[k, 0], sites[ok, 1] - pos[k, 1])
                i = int(np.argmin(d))
                if d[i] <= tol and (best is None or d[i] < best[0]):
                    best = (d[i], k, sites[ok][i])
        if best is None:  # no lattice site under any atom left: the far end of its line of sight
            k, target = next(iter(todo.items()))
            pos[k, 2] = beyond_line_of_sight(rest, pos[k, :2], 0.5 * nn_distance, target, nn_distance)
        else:
            _, k, site = best
            pos[k] = site
        placed[k] = True
        del todo[k]
    return pos


def beam_column(positions, nn_distance: float, *, max_tilt: float = 20.0,
                min_fraction: float = 0.2) -> np.ndarray | None:
    """The lattice vector along the lines of sight, shape ``(3,)`` Å with z > 0, or None where there is none.

    Neighbour pairs (0.5–1.5 bonds apart) whose bond is within
    ``max_tilt`` degrees of the beam (z) are neighbours in a column seen
    end-on or nearly so; the most common such vector (the mean of the
    largest cluster, 0.3 bond wide) is the translation that carries every
    column of a grain onto itself — one bond along ⟨110⟩, tilted with the
    particle (a particle 10° off its zone axis has it 10° off z, 0.48 Å
    sideways per period). None when fewer than ``min_fraction`` of the
    atoms are in such a pair (no column along the beam: no grain can
    slide along it unseen). The default tilt limit keeps out the {111}
    stacking's bonds (35° off its normal) up to 15° off axis.
    """
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return None
    pairs = cKDTree(pos).query_pairs(1.5 * nn_distance, output_type="ndarray").reshape(-1, 2)
    d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    d *= np.where(d[:, 2] < 0, -1.0, 1.0)[:, None]
    length = np.linalg.norm(d, axis=1)
    along = (length > 0.5 * nn_distance) & (d[:, 2] >= np.cos(np.radians(max_tilt)) * length)
    if np.unique(pairs[along]).size < min_fraction * len(pos):
        return None
    d = d[along]
    # the mode of the bond vectors: the grains of a decahedron share their five-fold axis, other columns are rare
    tree = cKDTree(d)
    counts = np.asarray(tree.query_ball_point(d, 0.3 * nn_distance, return_length=True))
    members = tree.query_ball_point(d[int(np.argmax(counts))], 0.3 * nn_distance)
    return d[members].mean(axis=0)


def _azimuthal_frame(positions, axis=None):
    """Coordinates (u, v) of atoms in the plane normal to ``axis`` (default z), about their centre, Å."""
    pos = np.asarray(positions, dtype=float)
    w = np.array([0.0, 0.0, 1.0]) if axis is None else np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    # u: x projected normal to the axis (the axis is near z, never near x)
    u = np.array([1.0, 0.0, 0.0]) - w[0] * w
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    rel = pos - pos.mean(axis=0)
    return rel @ u, rel @ v


def beam_sectors(positions, *, axis=None, widths: Sequence[float] = (72.0, 144.0, 180.0), step: float = 24.0,
                 caps: Sequence[float] = (), cap_step: float = 30.0,
                 column_tolerance: float = 0.6) -> list[np.ndarray]:
    """Wedges (and caps) of a particle seen along its columns: boolean masks of the atoms in each, shape ``(n,)``.

    A wedge spans ``width`` degrees of azimuth about ``axis`` (default z,
    the beam; :func:`beam_column` for a tilted particle) through the
    centre of mass, starting at every multiple of ``step`` degrees; a 180°
    wedge and its complement are one (only starts below 180° are kept).
    Twin boundaries of a decahedron seen near its five-fold axis bound
    wedges of 72° and 144°; a half particle is 180°. A cap is the
    fraction ``f`` (each of ``caps``) of the atoms farthest along a
    direction normal to the axis, for directions every ``cap_step``
    degrees: an edge region cut off by a straight line in projection.
    Masks select whole columns: atoms within ``column_tolerance`` Å of each
    other across the axis (chained) are one column, placed at its mean, so
    that shifting a region along the axis never splits a column.
    """
    u, v = _azimuthal_frame(positions, axis)
    n = len(u)
    if n > 1 and column_tolerance > 0:
        uv = np.column_stack([u, v])
        pairs = cKDTree(uv).query_pairs(column_tolerance, output_type="ndarray").reshape(-1, 2)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        size = np.bincount(label)
        u = (np.bincount(label, weights=u) / size)[label]
        v = (np.bincount(label, weights=v) / size)[label]
    azimuth = np.degrees(np.arctan2(v, u)) % 360.0
    masks = []
    for width in widths:
        for start in np.arange(0.0, 360.0, step):
            if width >= 180.0 and start >= 180.0:
                continue
            inside = ((azimuth - start) % 360.0) < width
            if 0 < inside.sum() < n:
                masks.append(inside)
    for fraction in caps:
        for angle in np.radians(np.arange(0.0, 360.0, cap_step)):
            along = u * np.cos(angle) + v * np.sin(angle)
            inside = along > np.quantile(along, 1.0 - fraction)
            if 0 < inside.sum() < n:
                masks.append(inside)
    return masks
