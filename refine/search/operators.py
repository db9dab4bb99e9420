"""Genetic operators on nanoparticle structures, and the repairs they share.

Every operator is a small class built with an injected
:class:`numpy.random.Generator` (never the global random state) and follows
DEAP's contract: it is called with one individual (mutations) or two
(crossover), modifies them **in place** and returns them as a tuple. The GA
clones parents before varying them (:func:`refine.search.ga.make_toolbox`).
Individuals are :class:`ase.Atoms` (or the GA's ``Atoms`` subclass); the
number of atoms never changes.

After its move every operator repairs the structure to a minimum interatomic
distance (:func:`repair_min_distance`), and operators that can change the
species counts (crossover, mirror) restore the exact composition
(:func:`repair_composition`). The operator's name is recorded in
``atoms.info["operator"]``.

Geometry helpers (nearest-neighbour distances, coordination, surface
hollow sites) and duplicate control (:class:`Fingerprint`,
:class:`SimilarityCriterion`, :func:`diversity`) live here too, because the
operators, the starting populations and the GA loop all use them.

Lengths in Å, energies in eV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from surrogate.common import InputError
from surrogate.common.geometry import coordination_numbers

__all__ = [
    "nearest_neighbour_distance",
    "default_min_distance",
    "interior_vacancies",
    "fill_vacancies",
    "beam_column",
    "beam_sectors",
    "shift_sectors",
    "image_guided_sweep",
    "smoothed_difference",
    "surface_sites",
    "depth_sides",
    "surface_patches",
    "transfer_patch",
    "transfer_patches",
    "hollow_sites",
    "repair_min_distance",
    "repair_composition",
    "min_interatomic_distance",
    "composition_of",
    "Operator",
    "CutSpliceCrossover",
    "RattleMutation",
    "PermutationMutation",
    "SurfaceMoveMutation",
    "ImageGuidedMutation",
    "RotationMutation",
    "MirrorMutation",
    "MutationSelector",
    "LocalRelaxation",
    "Fingerprint",
    "SimilarityCriterion",
    "diversity",
]

log = logging.getLogger(__name__)

#: fraction of the nearest-neighbour distance used as the default minimum distance
MIN_DISTANCE_FRACTION = 0.75
#: neighbours are atoms closer than this factor times the nearest-neighbour distance
NEIGHBOUR_FACTOR = 1.2


# ---------------------------------------------------------------------------
# geometry helpers
# ---------------------------------------------------------------------------

def _element_nn_distance(symbol: str) -> float:
    """Bulk nearest-neighbour distance (Å) of an element from ASE's reference states."""
    z = atomic_numbers[symbol]
    state = reference_states[z] or {}
    sym, a = state.get("symmetry"), state.get("a")
    if sym == "fcc":
        return a / np.sqrt(2.0)
    if sym == "bcc":
        return a * np.sqrt(3.0) / 2.0
    if sym == "hcp":
        return a
    if sym == "diamond":
        return a * np.sqrt(3.0) / 4.0
    return 2.0 * float(covalent_radii[z])


def nearest_neighbour_distance(symbols) -> float:
    """Mean bulk nearest-neighbour distance (Å) of a set of element symbols.

    ``symbols`` is an iterable of symbols or a composition mapping (counts
    weight the mean).
    """
    if isinstance(symbols, Mapping):
        items = [(s, n) for s, n in symbols.items() if n > 0]
    else:
        syms = list(symbols)
        items = [(s, syms.count(s)) for s in dict.fromkeys(syms)]
    if not items:
        raise InputError("need at least one element to estimate a nearest-neighbour distance")
    total = sum(n for _, n in items)
    return float(sum(_element_nn_distance(s) * n for s, n in items) / total)


def default_min_distance(symbols) -> float:
    """Default minimum interatomic distance (Å): 0.75 × the nearest-neighbour distance."""
    return MIN_DISTANCE_FRACTION * nearest_neighbour_distance(symbols)


def composition_of(atoms) -> dict[str, int]:
    """Species counts of a structure, ``{"Pt": 557, "Mo": 29}`` (order of first appearance)."""
    numbers = np.asarray(atoms.numbers)
    out: dict[str, int] = {}
    for z in dict.fromkeys(numbers.tolist()):
        out[chemical_symbols[z]] = int(np.count_nonzero(numbers == z))
    return out


def min_interatomic_distance(positions) -> float:
    """Smallest pair distance (Å) of an (n, 3) array; ``inf`` for fewer than 2 atoms."""
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return float("inf")
    d, _ = cKDTree(pos).query(pos, k=2)
    return float(d[:, 1].min())


def _random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return v / norm


def hollow_sites(positions, nn_distance: float, rng: np.random.Generator, *, n_triples: int = 64,
                 min_distance: float | None = None, anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate adsorption (hollow) sites on the surface of a cluster.

    Triples of mutually neighbouring atoms are drawn at random (starting from
    ``anchors`` if given, else from the less coordinated atoms); for each the
    two points at ``nn_distance`` from all three are candidates. Candidates
    closer than ``min_distance`` to any atom are dropped.

    Returns
    -------
    sites : ndarray, shape (m, 3)
        Site positions in Å (m may be 0).
    coordination : ndarray of int, shape (m,)
        Number of atoms within ``NEIGHBOUR_FACTOR × nn_distance`` of each site.
    """
    pos = np.asarray(positions, dtype=float)
    d_min = MIN_DISTANCE_FRACTION * nn_distance if min_distance is None else min_distance
    cutoff = NEIGHBOUR_FACTOR * nn_distance
    if len(pos) < 3:
        return np.empty((0, 3)), np.empty(0, dtype=int)
    tree = cKDTree(pos)
    neigh = tree.query_ball_point(pos, cutoff)
    if anchors is None:
        cn = np.array([len(n) - 1 for n in neigh])
        weights = np.exp(-(cn - cn.min()) * 0.7)
        anchors = rng.choice(len(pos), size=n_triples, p=weights / weights.sum())
    triples = []
    for a in np.asarray(anchors, dtype=int):
        nb = [b for b in neigh[a] if b != a]
        if len(nb) < 2:
            continue
        b = nb[rng.integers(len(nb))]
        common = [c for c in nb if c != b and np.linalg.norm(pos[c] - pos[b]) < cutoff]
        if not common:
            continue
        c = common[rng.integers(len(common))]
        triples.append((a, b, c))
    if not triples:
        return np.empty((0, 3)), np.empty(0, dtype=int)
    t = np.asarray(triples)
    p1, p2, p3 = pos[t[:, 0]], pos[t[:, 1]], pos[t[:, 2]]
    # trilateration with three equal radii r = nn_distance
    e12 = p2 - p1
    d = np.linalg.norm(e12, axis=1)
    ex = e12 / d[:, None]
    v13 = p3 - p1
    i = np.einsum("ij,ij->i", ex, v13)
    ey = v13 - i[:, None] * ex
    ey_norm = np.linalg.norm(ey, axis=1)
    ok = ey_norm > 1e-6
    ey = ey / np.where(ok, ey_norm, 1.0)[:, None]
    ez = np.cross(ex, ey)
    j = np.einsum("ij,ij->i", ey, v13)
    x = d / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (i * i + j * j) / (2.0 * j) - i * x / j
    z2 = nn_distance ** 2 - x * x - y * y
    ok &= np.isfinite(y) & (z2 > 0)
    z = np.sqrt(np.where(ok, z2, 0.0))
    base = p1 + x[:, None] * ex + y[:, None] * ey
    cand = np.concatenate([(base + z[:, None] * ez)[ok], (base - z[:, None] * ez)[ok]])
    if len(cand) == 0:
        return np.empty((0, 3)), np.empty(0, dtype=int)
    dist, _ = tree.query(cand)
    cand = cand[dist >= d_min * (1.0 - 1e-9)]
    if len(cand) == 0:
        return np.empty((0, 3)), np.empty(0, dtype=int)
    cand = np.unique(np.round(cand, 6), axis=0)
    coord = np.asarray(tree.query_ball_point(cand, cutoff, return_length=True))
    return cand, coord


def _best_site(positions, nn_distance, rng, *, min_distance, avoid=None, n_triples=64):
    """A hollow site of maximal coordination (random among ties), or None."""
    sites, coord = hollow_sites(positions, nn_distance, rng, n_triples=n_triples, min_distance=min_distance)
    if avoid is not None and len(sites):
        keep = np.linalg.norm(sites - avoid, axis=1) > 0.5 * nn_distance
        sites, coord = sites[keep], coord[keep]
    if len(sites) == 0:
        return None
    best = np.flatnonzero(coord == coord.max())
    return sites[best[rng.integers(len(best))]]


def _outside_point(positions, min_distance, rng):
    """A point guaranteed at least ``min_distance`` from every atom (just outside the cluster)."""
    pos = np.asarray(positions, dtype=float)
    centre = pos.mean(axis=0)
    u = _random_unit_vectors(rng, 1)[0]
    # the atom farthest along u, then one min_distance further: every atom's projection on u is
    # smaller, so its distance to the new point is at least min_distance.
    proj = (pos - centre) @ u
    return centre + (proj.max() + min_distance * 1.0001) * u


def repair_min_distance(atoms, min_distance: float, rng: np.random.Generator, *, max_iter: int = 300,
                        nn_distance: float | None = None) -> int:
    """Push atoms apart until no pair is closer than ``min_distance`` Å (in place).

    Overlapping pairs are moved apart symmetrically along their connecting
    line (a random direction for coincident atoms), iterating up to
    ``max_iter`` sweeps; atoms still in conflict then are moved to a free
    surface hollow site (or just outside the cluster), which always succeeds.

    Returns the number of sweeps used (0 when nothing was too close).
    """
    pos = np.array(atoms.positions, dtype=float)
    n = len(pos)
    if n < 2:
        return 0
    r = min_distance * (1.0 - 1e-9)
    target = min_distance * 1.01
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        pairs = cKDTree(pos).query_pairs(r, output_type="ndarray")
        if len(pairs) == 0:
            sweeps -= 1
            break
        i, j = pairs[:, 0], pairs[:, 1]
        v = pos[j] - pos[i]
        d = np.linalg.norm(v, axis=1)
        zero = d < 1e-9
        if zero.any():
            v[zero] = _random_unit_vectors(rng, int(zero.sum())) * 1e-3
            d[zero] = 1e-3
        u = v / d[:, None]
        push = 0.5 * (target - d)[:, None] * u
        ij = np.concatenate([i, j])
        disp = np.column_stack([np.bincount(ij, np.concatenate([-push[:, k], push[:, k]]), minlength=n)
                                for k in range(3)])
        # an atom in many conflicts would over-shoot: damp its summed pushes
        count = np.bincount(ij, minlength=n)
        pos += disp / np.maximum(count, 1)[:, None] ** 0.5
    else:
        nn = nn_distance if nn_distance is not None else min_distance / MIN_DISTANCE_FRACTION
        while True:
            pairs = cKDTree(pos).query_pairs(r, output_type="ndarray")
            if len(pairs) == 0:
                break
            k = int(pairs[0, 1])
            others = np.delete(pos, k, axis=0)
            site = _best_site(others, nn, rng, min_distance=min_distance)
            pos[k] = site if site is not None else _outside_point(others, min_distance, rng)
        log.debug("min-distance repair fell back to relocating atoms after %d sweeps", max_iter)
    atoms.positions = pos
    return sweeps


def repair_composition(atoms, composition: Mapping[str, int], rng: np.random.Generator,
                       *, candidates: np.ndarray | None = None) -> int:
    """Relabel atoms so that the species counts equal ``composition`` exactly (in place).

    Atoms of over-represented elements (chosen at random, from ``candidates``
    first when given, e.g. the atoms near a crossover cut) become atoms of
    under-represented ones. The number of atoms must already be right.

    Returns the number of atoms relabelled.
    """
    numbers = np.array(atoms.numbers)
    want = {atomic_numbers[s]: int(n) for s, n in composition.items()}
    if sum(want.values()) != len(numbers):
        raise InputError(f"structure has {len(numbers)} atoms but the composition needs {sum(want.values())}")
    have = {z: int(np.count_nonzero(numbers == z)) for z in set(numbers.tolist()) | set(want)}
    deficit: list[int] = []
    for z in sorted(have):
        deficit += [z] * max(want.get(z, 0) - have[z], 0)
    if not deficit:
        return 0
    rng.shuffle(deficit)
    pool: list[int] = []
    preferred = set() if candidates is None else set(np.asarray(candidates).tolist())
    for z in sorted(have):
        excess = have[z] - want.get(z, 0)
        if excess <= 0:
            continue
        idx = np.flatnonzero(numbers == z)
        first = np.array([k for k in idx if k in preferred], dtype=int)
        rest = np.array([k for k in idx if k not in preferred], dtype=int)
        order = np.concatenate([rng.permutation(first), rng.permutation(rest)]).astype(int)
        pool += order[:excess].tolist()
    for k, z in zip(pool, deficit):
        numbers[k] = z
    atoms.numbers = numbers
    return len(deficit)


# ---------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------

class Operator:
    """Base of all operators: an injected generator and the minimum-distance repair.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness of this operator.
    min_distance : float
        Minimum interatomic distance (Å) every result is repaired to.
    nn_distance : float, optional
        Nearest-neighbour distance (Å) for site finding; default
        ``min_distance / 0.75``.
    """

    name = "operator"

    def __init__(self, rng: np.random.Generator, min_distance: float, *, nn_distance: float | None = None):
        if not isinstance(rng, np.random.Generator):
            raise TypeError("operators need a numpy.random.Generator")
        if not (np.isfinite(min_distance) and min_distance > 0):
            raise InputError(f"minimum distance must be a positive number of Å, got {min_distance!r}")
        self.rng = rng
        self.min_distance = float(min_distance)
        self.nn_distance = float(nn_distance) if nn_distance else self.min_distance / MIN_DISTANCE_FRACTION

    def _finish(self, atoms):
        repair_min_distance(atoms, self.min_distance, self.rng, nn_distance=self.nn_distance)
        atoms.info["operator"] = self.name
        return atoms

    def __repr__(self):
        return f"{type(self).__name__}(min_distance={self.min_distance:g})"


class CutSpliceCrossover(Operator):
    """Deaven–Ho cut-and-splice crossover with exact composition repair.

    Both parents are put on a common centre of mass; a random plane through
    it (random normal) cuts them. Child 1 takes the ``k`` atoms of parent 1
    farthest on the + side and the ``n − k`` atoms of parent 2 farthest on
    the − side; child 2 the complement (parent 2's + side, parent 1's − side).
    ``k`` is drawn uniformly in ``[n/4, 3n/4]``. The particle orientation is
    kept (it matters for the image). Species counts are then repaired,
    relabelling atoms near the cut first, and overlaps at the cut removed.

    With probability ``beam_parallel`` the plane contains the beam direction
    (its normal has no z component): both parents then keep their own part of
    the projection, so two parents that each match the image give children
    that still match it, with the depth (z) arrangement of one parent on one
    side and of the other on the other side.

    Parameters
    ----------
    composition : mapping
        Target species counts, e.g. ``{"Pt": 557, "Mo": 29}``.
    beam_parallel : float
        Probability of a cut plane parallel to the beam (z).
    """

    name = "cut_splice"

    def __init__(self, rng, min_distance, composition: Mapping[str, int], *, beam_parallel: float = 0.0, **kw):
        super().__init__(rng, min_distance, **kw)
        self.composition = dict(composition)
        if not 0.0 <= beam_parallel <= 1.0:
            raise InputError(f"beam_parallel must be a probability in [0, 1], got {beam_parallel!r}")
        self.beam_parallel = float(beam_parallel)

    def __call__(self, ind1, ind2):
        n = len(ind1)
        if len(ind2) != n:
            raise InputError(f"crossover parents differ in size ({n} and {len(ind2)} atoms)")
        p1 = np.array(ind1.positions, dtype=float)
        p2 = np.array(ind2.positions, dtype=float)
        z1, z2 = np.array(ind1.numbers), np.array(ind2.numbers)
        c1 = p1.mean(axis=0)
        if self.beam_parallel > 0.0 and self.rng.random() < self.beam_parallel:
            # keep both parents where they are in x, y (both are aligned on the image)
            p2[:, 2] += c1[2] - p2[:, 2].mean()
            phi = self.rng.uniform(0.0, 2.0 * np.pi)
            normal = np.array([np.cos(phi), np.sin(phi), 0.0])
        else:
            p2 = p2 - p2.mean(axis=0) + c1
            normal = _random_unit_vectors(self.rng, 1)[0]
        k = int(self.rng.integers(max(n // 4, 1), max(3 * n // 4, 1) + 1)) if n > 1 else n
        s1 = np.argsort(-((p1 - c1) @ normal), kind="stable")  # + side first
        s2 = np.argsort(-((p2 - c1) @ normal), kind="stable")
        # child 1: top k of parent 1, bottom n-k of parent 2; child 2: top k of parent 2, bottom n-k of parent 1
        a_idx, b_idx = s1[:k], s2[k:]
        c_idx, d_idx = s2[:k], s1[k:]
        children = []
        for (pa, za, ia), (pb, zb, ib) in (((p1, z1, a_idx), (p2, z2, b_idx)), ((p2, z2, c_idx), (p1, z1, d_idx))):
            pos = np.concatenate([pa[ia], pb[ib]])
            num = np.concatenate([za[ia], zb[ib]])
            # atoms nearest the cut plane are relabelled first
            near_cut = np.argsort(np.abs((pos - c1) @ normal), kind="stable")[: max(n // 5, 1)]
            children.append((pos, num, near_cut))
        for ind, (pos, num, near_cut) in zip((ind1, ind2), children):
            ind.numbers = num
            ind.positions = pos
            repair_composition(ind, self.composition, self.rng, candidates=near_cut)
            self._finish(ind)
        return ind1, ind2


class RattleMutation(Operator):
    """Displace a random fraction of the atoms by Gaussian noise.

    Parameters
    ----------
    sigma : float
        Standard deviation of each displacement component, Å.
    fraction : float
        Probability that an atom moves (at least one atom always moves).
    """

    name = "rattle"

    def __init__(self, rng, min_distance, *, sigma: float = 0.25, fraction: float = 0.25, **kw):
        super().__init__(rng, min_distance, **kw)
        self.sigma, self.fraction = float(sigma), float(fraction)

    def __call__(self, ind):
        n = len(ind)
        move = self.rng.random(n) < self.fraction
        if not move.any():
            move[self.rng.integers(n)] = True
        pos = np.array(ind.positions)
        pos[move] += self.rng.normal(scale=self.sigma, size=(int(move.sum()), 3))
        ind.positions = pos
        return (self._finish(ind),)


class PermutationMutation(Operator):
    """Swap the species of random pairs of unlike atoms (alloys; a no-op for one element).

    Parameters
    ----------
    n_swaps : int
        Number of swaps; default ``max(1, round(0.05 × n_minority))``.
    """

    name = "permutation"

    def __init__(self, rng, min_distance, *, n_swaps: int | None = None, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_swaps = n_swaps

    def __call__(self, ind):
        numbers = np.array(ind.numbers)
        species = np.unique(numbers)
        if len(species) < 2:
            ind.info["operator"] = self.name
            return (ind,)
        minority = min(np.count_nonzero(numbers == z) for z in species)
        n_swaps = self.n_swaps or max(1, int(round(0.05 * minority)))
        for _ in range(n_swaps):
            i = int(self.rng.integers(len(numbers)))
            others = np.flatnonzero(numbers != numbers[i])
            j = int(others[self.rng.integers(len(others))])
            numbers[i], numbers[j] = numbers[j], numbers[i]
        ind.numbers = numbers
        return (self._finish(ind),)


class SurfaceMoveMutation(Operator):
    """Move low-coordinated atoms to the best-coordinated free hollow site on the surface.

    The atom is drawn with probability ∝ exp(−0.7·(CN − CN_min)) and placed
    on a site of maximal coordination among random hollow sites of the
    rest of the cluster (not its own old site).

    Parameters
    ----------
    n_moves : int
        Atoms moved per call.
    """

    name = "surface_move"

    def __init__(self, rng, min_distance, *, n_moves: int = 1, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_moves = int(n_moves)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        for _ in range(self.n_moves):
            cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * self.nn_distance)
            w = np.exp(-0.7 * (cn - cn.min()))
            k = int(self.rng.choice(len(pos), p=w / w.sum()))
            others = np.delete(pos, k, axis=0)
            site = _best_site(others, self.nn_distance, self.rng, min_distance=self.min_distance, avoid=pos[k])
            if site is not None:
                pos[k] = site
        ind.positions = pos
        return (self._finish(ind),)


class _PixelSampler:
    """``sample(points) -> values``: an image on a :class:`surrogate.ProbeGrid` read at the nearest pixel of each x, y."""

    def __init__(self, image, grid):
        self.image = image
        self.grid = grid

    def __call__(self, points) -> np.ndarray:
        pts = np.asarray(points, dtype=float).reshape(-1, np.shape(points)[-1])
        dx = self.grid.pixel_size
        x0, y0 = self.grid.origin
        ii = np.clip(np.rint((pts[:, 0] - x0) / dx).astype(int), 0, self.image.shape[0] - 1)
        jj = np.clip(np.rint((pts[:, 1] - y0) / dx).astype(int), 0, self.image.shape[1] - 1)
        return self.image[ii, jj]


def smoothed_difference(difference: Callable, atoms, smooth: float):
    """The simulated minus the experimental image of ``atoms``, smoothed, and a sampler of it.

    ``difference(atoms) -> (diff, grid)`` as for :class:`ImageGuidedMutation`;
    NaN (masked) pixels count as 0. ``smooth`` (Å, 0: none) is the σ of a
    Gaussian applied first: a matched filter for atom-sized blobs (a missing
    or extra atom is a PSF-sized blob in the difference, pixel noise is not).
    Returns ``(diff, sample)``: the smoothed image, shape ``grid.shape``, and
    ``sample(points) -> values`` at the nearest pixel of each point's x, y
    (``sample.grid`` is the grid).
    """
    diff, grid = difference(atoms)
    diff = np.nan_to_num(np.asarray(diff, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        diff = gaussian_filter(diff, smooth / grid.pixel_size, mode="constant")
    return diff, _PixelSampler(diff, grid)


class ImageGuidedMutation(Operator):
    """Move an atom from where the simulated image is too bright to where it is too dark.

    Parameters
    ----------
    difference : callable
        ``difference(atoms) -> (diff, grid)``: the simulated minus the
        experimental image (after the fitness's alignment and intensity map),
        shape ``grid.shape``, on a :class:`surrogate.ProbeGrid` in the
        atoms' frame (``diff[i, j]`` at ``x0 + iΔ, y0 + jΔ``); NaN (masked)
        pixels count as 0. :class:`refine.search.ga.FitnessDifference` builds it
        from a :class:`refine.cost.fitness.Fitness`.
    n_moves : int
        Atoms moved per call.
    power : float
        Pixel (target) and atom (source) choice probabilities ∝ (excess)^power.
    smooth : float
        Å; the difference image is smoothed by a Gaussian of this σ first
        (a matched filter for atom-sized blobs; 0: raw pixels).

    Notes
    -----
    Source: an atom with probability ∝ max(diff at its (x, y), 0)^power
    (uniform if no atom sits on a too-bright pixel). Target column: a pixel
    with probability ∝ max(−diff, 0)^power. Along that column the height z
    with the highest coordination that keeps the minimum distance is chosen
    (scanned in 0.1 Å steps over the local extent of the particle ± one
    nearest-neighbour distance).
    """

    name = "image_guided"

    def __init__(self, rng, min_distance, difference: Callable, *, n_moves: int = 1, power: float = 2.0,
                 smooth: float = 0.3, **kw):
        super().__init__(rng, min_distance, **kw)
        self.difference = difference
        self.n_moves = int(n_moves)
        self.power = float(power)
        self.smooth = float(smooth)

    def __call__(self, ind):
        diff, sample = smoothed_difference(self.difference, ind, self.smooth)
        pos = np.array(ind.positions, dtype=float)
        dark = np.clip(-diff, 0.0, None) ** self.power
        total = dark.sum()
        if not np.isfinite(total) or total <= 0:
            ind.info["operator"] = self.name
            return (self._finish(ind),)
        pix_p = (dark / total).ravel()
        grid = sample.grid
        dx = grid.pixel_size
        x0, y0 = grid.origin
        cutoff = NEIGHBOUR_FACTOR * self.nn_distance
        for _ in range(self.n_moves):
            bright = np.clip(sample(pos), 0.0, None) ** self.power
            if bright.sum() > 0:
                k = int(self.rng.choice(len(pos), p=bright / bright.sum()))
            else:
                k = int(self.rng.integers(len(pos)))
            flat = int(self.rng.choice(pix_p.size, p=pix_p))
            ti, tj = np.unravel_index(flat, diff.shape)
            x, y = x0 + ti * dx, y0 + tj * dx
            others = np.delete(pos, k, axis=0)
            near = np.hypot(others[:, 0] - x, others[:, 1] - y) < 2.0 * self.nn_distance
            zs = others[near, 2] if near.any() else others[:, 2]
            zgrid = np.arange(zs.min() - self.nn_distance, zs.max() + self.nn_distance + 1e-9, 0.1)
            cand = np.column_stack([np.full_like(zgrid, x), np.full_like(zgrid, y), zgrid])
            tree = cKDTree(others)
            dist, _ = tree.query(cand)
            ok = dist >= self.min_distance
            if ok.any():
                cand = cand[ok]
                coord = np.asarray(tree.query_ball_point(cand, cutoff, return_length=True))
                best = np.flatnonzero(coord == coord.max())
                pos[k] = cand[best[self.rng.integers(len(best))]]
            else:  # the column is full: the hollow site nearest to it in projection
                sites, _ = hollow_sites(others, self.nn_distance, self.rng, min_distance=self.min_distance)
                if len(sites):
                    pos[k] = sites[np.argmin(np.hypot(sites[:, 0] - x, sites[:, 1] - y))]
        ind.positions = pos
        return (self._finish(ind),)


class RotationMutation(Operator):
    """Rotate the whole particle about its centre of mass.

    With probability ``in_plane_probability`` the rotation is about the beam
    (z) axis, else about a uniformly random axis; the angle is uniform in
    ``[−max_angle, max_angle]`` (radians).
    """

    name = "rotation"

    def __init__(self, rng, min_distance, *, max_angle: float = np.pi / 6, in_plane_probability: float = 0.5, **kw):
        super().__init__(rng, min_distance, **kw)
        self.max_angle = float(max_angle)
        self.in_plane_probability = float(in_plane_probability)

    def __call__(self, ind):
        if self.rng.random() < self.in_plane_probability:
            axis = np.array([0.0, 0.0, 1.0])
        else:
            axis = _random_unit_vectors(self.rng, 1)[0]
        angle = self.rng.uniform(-self.max_angle, self.max_angle)
        pos = np.array(ind.positions, dtype=float)
        com = pos.mean(axis=0)
        ind.positions = Rotation.from_rotvec(angle * axis).apply(pos - com) + com
        return (self._finish(ind),)


class MirrorMutation(Operator):
    """Keep one half of the particle and replace the other half by its mirror image.

    A random plane through the median projection (random normal) splits the
    atoms; the ``⌈n/2⌉`` atoms on the + side are kept and the ``⌊n/2⌋`` of
    them farthest from the plane are reflected through it (for odd ``n`` the
    kept atom nearest the plane is not duplicated). Species follow their
    atom; the exact composition is then restored.
    """

    name = "mirror"

    def __init__(self, rng, min_distance, composition: Mapping[str, int], **kw):
        super().__init__(rng, min_distance, **kw)
        self.composition = dict(composition)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        num = np.array(ind.numbers)
        n = len(pos)
        if n < 2:
            return (self._finish(ind),)
        normal = _random_unit_vectors(self.rng, 1)[0]
        proj = pos @ normal
        order = np.argsort(-proj, kind="stable")
        keep = order[: (n + 1) // 2]
        plane = 0.5 * (proj[order[(n + 1) // 2 - 1]] + proj[order[min((n + 1) // 2, n - 1)]])
        mirrored = keep[: n // 2]  # farthest from the plane
        refl = pos[mirrored] - 2.0 * ((pos[mirrored] @ normal) - plane)[:, None] * normal
        ind.positions = np.concatenate([pos[keep], refl])
        ind.numbers = np.concatenate([num[keep], num[mirrored]])
        repair_composition(ind, self.composition, self.rng)
        return (self._finish(ind),)


class DepthFlipMutation(Operator):
    """Reflect the depth (z) of the atoms on one side of a beam-parallel plane.

    One projection cannot tell z from −z: flipping the depth order of a part
    of the particle keeps its image exactly and changes only its 3D
    structure (and energy). A random plane containing the beam direction
    splits the atoms at a random quantile in [1/4, 3/4] (or, with
    probability ``whole``, the whole particle is flipped); the atoms on the +
    side get z → 2·z̄ − z, z̄ their mean depth. Overlaps at the cut are
    repaired.

    Parameters
    ----------
    whole : float
        Probability of flipping the whole particle (its mirror image along the beam).
    """

    name = "depth_flip"

    def __init__(self, rng, min_distance, *, whole: float = 0.0, **kw):
        super().__init__(rng, min_distance, **kw)
        self.whole = float(whole)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        n = len(pos)
        if self.rng.random() < self.whole or n < 4:
            part = np.arange(n)
        else:
            phi = self.rng.uniform(0.0, 2.0 * np.pi)
            proj = pos[:, 0] * np.cos(phi) + pos[:, 1] * np.sin(phi)
            k = int(self.rng.integers(n // 4, 3 * n // 4 + 1))
            part = np.argsort(-proj, kind="stable")[:k]
        zbar = pos[part, 2].mean()
        pos[part, 2] = 2.0 * zbar - pos[part, 2]
        ind.positions = pos
        return (self._finish(ind),)


class DepthMoveMutation(Operator):
    """Move surface atoms to the other end of their line of sight (same x, y; other z).

    An atom on the top surface and one at the same x, y on the bottom
    surface give the same image: only the energy tells them apart, and local
    moves cannot carry an atom through the particle. This mutation takes a
    low-coordinated atom (probability ∝ exp(−0.7·(CN − CN_min))), finds the
    atoms within ``column_radius`` of its x, y (its column along the beam)
    and puts it one bond length beyond the far end of that column, keeping
    its x, y — its projection. Overlaps are repaired.

    Parameters
    ----------
    n_moves : int
        Atoms moved per call.
    column_radius : float, optional
        Å; default half the nearest-neighbour distance.
    """

    name = "depth_move"

    def __init__(self, rng, min_distance, *, n_moves: int = 1, column_radius: float | None = None, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_moves = int(n_moves)
        self.column_radius = float(column_radius) if column_radius else 0.5 * self.nn_distance

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        if len(pos) < 2:
            return (self._finish(ind),)
        for _ in range(self.n_moves):
            cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * self.nn_distance)
            w = np.exp(-0.7 * (cn - cn.min()))
            k = int(self.rng.choice(len(pos), p=w / w.sum()))
            self.move(pos, k)
        ind.positions = pos
        return (self._finish(ind),)

    def move(self, pos: np.ndarray, k: int) -> None:
        """Move atom ``k`` of ``pos`` (n, 3) to the far end of its column, in place."""
        side = depth_sides(pos[k], pos, self.column_radius)[0]
        pos[k, 2] = _beyond_line_of_sight(pos, pos[k, :2], self.column_radius, -side, self.nn_distance)

    def polish(self, ind, relax: Callable, evaluate: Callable, *, max_atoms: int = 60, cost: float | None = None):
        """Deterministic sweep: try the depth move of each of the ``max_atoms`` least-coordinated atoms.

        Each trial is relaxed with ``relax(atoms)`` and scored with
        ``evaluate(atoms) -> cost``; a trial that lowers the cost is kept
        (and the sweep goes on from it). ``cost``: the cost of ``ind`` when
        already known (else it is evaluated). Returns ``(best, cost,
        n_trials, n_accepted)``; ``ind`` is not changed.
        """
        best = ind.copy()
        best_cost = evaluate(best) if cost is None else float(cost)
        cn = coordination_numbers(best.positions, NEIGHBOUR_FACTOR * self.nn_distance)
        order = np.argsort(cn, kind="stable")[:max_atoms]
        n_trials = n_accepted = 0
        for k in order:
            trial = best.copy()
            pos = np.array(trial.positions)
            self.move(pos, int(k))
            trial.positions = pos
            self._finish(trial)
            relax(trial)
            cost = evaluate(trial)
            n_trials += 1
            if cost < best_cost:
                best, best_cost = trial, cost
                n_accepted += 1
        return best, best_cost, n_trials, n_accepted


def _best_trial(trials, relax: Callable, evaluate: Callable):
    """Relax (``relax(atoms)``, in place) and score (``evaluate(atoms) -> cost``) each trial structure.

    Returns ``((cost, atoms) of the lowest cost or None, number of trials)``; the sweeps below keep it
    only when it beats their current cost.
    """
    best, n = None, 0
    for trial in trials:
        relax(trial)
        cost = evaluate(trial)
        n += 1
        if best is None or cost < best[0]:
            best = (cost, trial)
    return best, n


def _greedy_rounds(best, best_cost: float, rounds: int, trials_of: Callable, relax: Callable, evaluate: Callable):
    """Rounds of a sweep: the best of ``trials_of(best)`` (relaxed, scored) replaces ``best`` while it is better.

    ``trials_of(best)`` yields the trial structures of one round, or returns None when there are none. At
    most ``rounds`` rounds (at least one). Returns ``(best, cost, n_trials, n_accepted)``.
    """
    n_trials = n_accepted = 0
    for _ in range(max(1, int(rounds))):
        trials = trials_of(best)
        if trials is None:
            break
        trial_best, n = _best_trial(trials, relax, evaluate)
        n_trials += n
        if trial_best is None or not trial_best[0] < best_cost:
            break
        best_cost, best = trial_best
        n_accepted += 1
    return best, best_cost, n_trials, n_accepted


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
    links = cKDTree(ends).query_pairs(1.0, output_type="ndarray").reshape(-1, 2)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(len(ends), len(ends)))
    n_sites, label = connected_components(graph, directed=False)
    sites = np.zeros((n_sites, 3))
    np.add.at(sites, label, ends)
    sites /= np.bincount(label, minlength=n_sites)[:, None]
    site_count = np.zeros(n_sites)
    np.maximum.at(site_count, label, count)
    return sites[np.argsort(-site_count, kind="stable")]


def interior_vacancies(positions, nn_distance: float, *, min_neighbours: int = 9) -> np.ndarray:
    """Empty lattice sites inside a particle, shape ``(m, 3)`` in Å (m may be 0).

    The ends of continued nearest-neighbour bonds (:func:`_lattice_sites`)
    with no atom within 0.8 bond lengths and at least ``min_neighbours``
    atoms within ``NEIGHBOUR_FACTOR`` bond lengths (a surface site has ≤ 9
    in fcc, an interior one 12). No ideal particle has one.
    """
    return _lattice_sites(positions, nn_distance, min_neighbours)


def surface_sites(positions, nn_distance: float, *, min_neighbours: int = 3, max_neighbours: int = 8) -> np.ndarray:
    """Empty lattice sites on a particle's surface, shape ``(m, 3)`` in Å, most-coordinated first.

    The ends of continued nearest-neighbour bonds (:func:`_lattice_sites`)
    with ``min_neighbours`` to ``max_neighbours`` atoms around them: the
    hollow sites of the right stacking on every facet (3 neighbours on
    {111}, 4 on {100}) and the sites along steps and island edges (5–8).
    Unlike :func:`hollow_sites` it enumerates them all, deterministically.
    """
    return _lattice_sites(positions, nn_distance, min_neighbours, max_neighbours)


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


def _beyond_line_of_sight(positions, xy, radius: float, side: int, nn_distance: float) -> float:
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
            pos[k, 2] = _beyond_line_of_sight(rest, pos[k, :2], 0.5 * nn_distance, target, nn_distance)
        else:
            _, k, site = best
            pos[k] = site
        placed[k] = True
        del todo[k]
    return pos


def transfer_patches(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                     seeds: int = 6, sizes: Sequence[int] = (3, 5, 7, 10, 14), rounds: int = 2,
                     cost: float | None = None, rng=None):
    """Deterministic sweep: move each :func:`surface_patches` patch to the far side; keep what lowers the cost.

    A refinement can put a whole island of surface atoms on the wrong side
    of the particle along the beam: the projection is right, the energy a
    few eV too high, and every single-atom depth move makes an adatom and
    is rejected. Each trial moves one patch (:func:`transfer_patch`),
    repairs the minimum distance, is relaxed with ``relax(atoms)`` and
    scored with ``evaluate(atoms) -> cost``; the best trial is kept when it
    beats the current cost, and the sweep starts again from it (at most
    ``rounds`` sweeps). ``cost``: the cost of ``ind`` when already known.
    ``rng`` only feeds the overlap repair (default: a fixed seed, so the
    sweep is deterministic). Returns ``(best, cost, n_trials,
    n_accepted)``; ``ind`` is not changed.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)

    def transfers(best):
        for patch in surface_patches(best.positions, nn_distance, sizes=sizes, seeds=seeds):
            trial = best.copy()
            trial.positions = transfer_patch(best.positions, patch, nn_distance)
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            yield trial

    return _greedy_rounds(best, best_cost, rounds, transfers, relax, evaluate)


def fill_vacancies(ind, relax: Callable, evaluate: Callable, nn_distance: float, *,
                   column_radius: float | None = None, candidates: int = 2):
    """Deterministic sweep: fill each interior vacancy of ``ind`` with a surface atom if the cost drops.

    For each site of :func:`interior_vacancies`, the ``candidates``
    least-coordinated atoms of its column along the beam (within
    ``column_radius`` of its x, y, default half a bond: moving one of them
    keeps the projection nearly unchanged) and the ``candidates``
    least-coordinated atoms overall are tried in turn; each trial is relaxed
    with ``relax(atoms)`` and scored with ``evaluate(atoms) -> cost``, and
    the best one is kept when it beats the current cost. A vacancy inside a
    particle and an adatom on its surface give nearly the same projection,
    and local moves cannot carry an atom inside. Returns ``(best, cost,
    n_trials, n_accepted)``; ``ind`` is not changed.
    """
    best = ind.copy()
    best_cost = evaluate(best)
    radius = 0.5 * nn_distance if column_radius is None else float(column_radius)
    n_trials = n_accepted = 0
    for site in interior_vacancies(best.positions, nn_distance):
        pos = np.array(best.positions)
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        column = np.flatnonzero(np.hypot(pos[:, 0] - site[0], pos[:, 1] - site[1]) <= radius)
        movers = list(column[np.argsort(cn[column], kind="stable")][:candidates])
        movers += list(np.argsort(cn, kind="stable")[:candidates])
        def fills(best=best, site=site):
            for k in dict.fromkeys(int(m) for m in movers):
                if cn[k] >= 12:  # an interior atom: moving it only moves the vacancy
                    continue
                trial = best.copy()
                p = np.array(trial.positions)
                p[k] = site
                trial.positions = p
                yield trial

        trial_best, n = _best_trial(fills(), relax, evaluate)
        n_trials += n
        if trial_best is not None and trial_best[0] < best_cost:
            best_cost, best = trial_best
            n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def _one_per_line_of_sight(points, order, radius: float, limit: int, *, min_separation: float = 0.0) -> list[int]:
    """Indices from ``order`` (best first), at most one per line of sight (x, y within ``radius``), ≤ ``limit``."""
    chosen: list[int] = []
    for k in order:
        k = int(k)
        if all(np.hypot(*(points[k, :2] - points[j, :2])) > radius
               and np.linalg.norm(points[k] - points[j]) > min_separation for j in chosen):
            chosen.append(k)
            if len(chosen) >= limit:
                break
    return chosen


def image_guided_sweep(ind, relax: Callable, evaluate: Callable, difference: Callable, nn_distance: float, *,
                       min_distance: float, sizes: Sequence[int] = (1, 2, 4, 8, 16), rounds: int = 4,
                       smooth: float = 0.3, max_coordination: int = 9, significance: float = 0.25,
                       cost: float | None = None, rng=None):
    """Deterministic sweep: move surface atoms from too-bright spots of the difference image onto too-dark sites.

    The deterministic counterpart of :class:`ImageGuidedMutation`. A
    refinement can end with a dozen surface atoms in the wrong lines of
    sight: an island on the bottom facet where the image wants the atoms
    on top of other columns, each misplaced atom a bright blob in the
    simulated − experimental difference and each missing one a dark blob.
    Moved one at a time by the random mutation, such atoms are rarely all
    found before the run ends. Here, from the difference image smoothed by
    ``smooth`` Å (:func:`smoothed_difference`):

    * sources: surface atoms (coordination ≤ ``max_coordination``) where
      the difference is at least ``significance`` times its largest value
      at an atom, brightest first (then least coordinated), one per line of
      sight (x, y within half a bond);
    * sinks: empty surface lattice sites (:func:`surface_sites`) where it
      is at most ``significance`` times its most negative value at a site,
      darkest first, one per line of sight (the most coordinated site of
      that line) and ≥ 0.9 bonds apart;

    and each trial moves the first n sources onto the first n sinks, for
    n in ``sizes`` (a trial with fewer pairs than n is the last). Trials
    are repaired to ``min_distance``, relaxed with ``relax(atoms)`` and
    scored with ``evaluate(atoms) -> cost``; the best is kept when it
    beats the current cost, and the sweep starts again from it with a new
    difference image (at most ``rounds`` times). ``cost``: the cost of
    ``ind`` when already known. ``rng`` only feeds the overlap repair
    (default: a fixed seed, so the sweep is deterministic). Returns
    ``(best, cost, n_trials, n_accepted)``; ``ind`` is not changed.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    sizes = sorted({int(n) for n in sizes if int(n) >= 1})
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    n_trials = n_accepted = 0
    if not sizes:
        return best, best_cost, n_trials, n_accepted
    line = 0.5 * nn_distance

    def moves(best):
        _, sample = smoothed_difference(difference, best, smooth)
        pos = np.array(best.positions, dtype=float)
        excess = sample(pos)
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        # the tails of a misplaced atom's blob reach its neighbours: only clear excesses and deficits count
        floor = significance * excess.max()
        order = [k for k in np.lexsort((cn, -excess)) if excess[k] > 0 and excess[k] >= floor
                 and cn[k] <= max_coordination]
        sources = _one_per_line_of_sight(pos, order, line, sizes[-1])
        sites = surface_sites(pos, nn_distance)
        if not sources or not len(sites):
            return None
        deficit = sample(sites)
        count = np.asarray(cKDTree(pos).query_ball_point(sites, NEIGHBOUR_FACTOR * nn_distance, return_length=True))
        # darkest first; on one line of sight the most coordinated site (an island's edge, not an adatom)
        ceiling = significance * deficit.min()
        dark = [i for i in np.lexsort((-count, deficit)) if deficit[i] < 0 and deficit[i] <= ceiling]
        best_on_line = [int(min(np.flatnonzero(np.hypot(*(sites[:, :2] - sites[i, :2]).T) <= line),
                                key=lambda j: (-count[j], deficit[j]))) for i in dark]
        sinks = _one_per_line_of_sight(sites, list(dict.fromkeys(best_on_line)), line, sizes[-1],
                                       min_separation=0.9 * nn_distance)
        return _moves(best, sources, sites[sinks])

    def _moves(best, sources, targets):
        for n in sizes:
            m = min(n, len(sources), len(targets))
            if m == 0:
                return
            trial = best.copy()
            p = np.array(trial.positions)
            p[sources[:m]] = targets[:m]
            trial.positions = p
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            yield trial
            if m < n:
                return

    return _greedy_rounds(best, best_cost, rounds, moves, relax, evaluate)


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
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

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


def shift_sectors(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                  finish: Callable | None = None, keep: int = 2, widths: Sequence[float] = (72.0, 144.0, 180.0),
                  step: float = 24.0, caps: Sequence[float] = (0.15, 0.3, 0.45), cost: float | None = None,
                  rank: Callable | None = None, rng=None):
    """Slide whole wedges and caps of the particle along its columns by one period; keep what lowers the cost.

    A grain, or the edge of one, can sit one lattice period too high along
    the beam: every column of it holds the right atoms, so the projection
    is right, but its top and bottom facets are stepped against the
    neighbouring grains' (several eV). No local move repairs this. Each
    region of :func:`beam_sectors` (wedges about the column axis, and the
    ``caps`` fractions of atoms at an edge) is shifted by ± the column
    vector (:func:`beam_column`: a lattice translation, tilted with the
    particle, so that every column stays on its line) and repaired to
    ``min_distance``; the candidates are ranked unrelaxed by
    ``rank(atoms) -> float`` (default: ``evaluate``; the energy, eV, where
    the particle is tilted: the columns' end atoms then move 0.5 Å
    sideways, an image-term change that the relaxation undoes but that
    outweighs the stepped surfaces' several eV unrelaxed — the energy
    alone put the undoing shift first in all four damaged cases of
    ``examples/column_shift.py``'s check), and the ``keep`` best are relaxed with
    ``relax(atoms)`` and, when given, finished by ``finish(atoms, cost) ->
    (atoms, cost, n_evaluations)`` (a region's edges rarely match a
    grain's: atoms left on the wrong side need the other sweeps) before
    the cost decides. Returns ``(best, cost, n_trials, n_accepted)`` where
    ``n_trials`` counts every evaluation; ``ind`` is not changed. Nothing
    is tried where the particle has no column along the beam.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    pos = np.array(best.positions, dtype=float)
    column = beam_column(pos, nn_distance)
    if column is None or keep < 1:
        return best, best_cost, 0, 0
    ranked = []
    for inside in beam_sectors(pos, axis=column, widths=widths, step=step, caps=caps):
        for sign in (1.0, -1.0):
            trial = best.copy()
            p = pos.copy()
            p[inside] += sign * column
            trial.positions = p
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            ranked.append(((rank or evaluate)(trial), len(ranked), trial))
    n_trials = len(ranked)
    ranked.sort(key=lambda r: (r[0], r[1]))
    n_accepted = 0
    start_cost = best_cost
    for _, _, trial in ranked[:keep]:
        relax(trial)
        trial_cost = evaluate(trial)
        n_trials += 1
        if finish is not None:
            trial, trial_cost, n = finish(trial, trial_cost)
            n_trials += n
        if trial_cost < best_cost:
            best, best_cost = trial, trial_cost
    if best_cost < start_cost:
        n_accepted = 1
    return best, best_cost, n_trials, n_accepted


class MutationSelector:
    """Apply one of several mutations, drawn with given weights (DEAP ``mutate``).

    Parameters
    ----------
    rng : numpy.random.Generator
    operators : sequence of (weight, operator)
    """

    def __init__(self, rng: np.random.Generator, operators: Sequence[tuple[float, Callable]]):
        self._weighted = [(float(w), op) for w, op in operators]
        ops = [(w, op) for w, op in self._weighted if w > 0]
        if not ops:
            raise InputError("need at least one mutation with a positive weight")
        self.rng = rng
        self.operators = [op for _, op in ops]
        w = np.array([w for w, _ in ops])
        self.probabilities = w / w.sum()

    def __call__(self, ind):
        k = int(self.rng.choice(len(self.operators), p=self.probabilities))
        return self.operators[k](ind)

    def reweighted(self, weights: Mapping[str, float]) -> "MutationSelector":
        """A selector over the same operators (same generator) with the named weights replaced."""
        return MutationSelector(self.rng, [(float(weights.get(op.name, w)), op) for w, op in self._weighted])

    def __repr__(self):
        parts = ", ".join(f"{p:.2f}:{op.name}" for p, op in zip(self.probabilities, self.operators))
        return f"MutationSelector({parts})"


class LocalRelaxation:
    """A short FIRE relaxation of an individual with a given calculator (in place).

    Parameters
    ----------
    calculator : ase calculator or callable
        A calculator instance (re-attached to each structure; asap3's EMT
        allows this) or a zero-argument factory returning one.
    steps : int
        Maximum FIRE steps.
    fmax : float
        Force convergence criterion, eV/Å.
    min_distance : float, optional
        When given, the result is repaired to this minimum distance again.
    rng : numpy.random.Generator, optional
        Needed for that repair.

    The structure keeps its (absent) cell: a large enough box is set only
    while relaxing (asap3 needs a non-zero cell), and the calculator is
    detached afterwards so that individuals stay picklable.
    """

    name = "relax"

    def __init__(self, calculator, *, steps: int = 10, fmax: float = 0.05, min_distance: float | None = None,
                 rng: np.random.Generator | None = None):
        self.calculator = calculator
        self.steps = int(steps)
        self.fmax = float(fmax)
        self.min_distance = min_distance
        self.rng = rng

    def _calc(self):
        c = self.calculator
        if isinstance(c, type) or (callable(c) and not hasattr(c, "calculate")):
            return c()  # a class or a factory function
        return c

    def __call__(self, ind):
        from ase.optimize import FIRE

        if self.steps <= 0:
            return (ind,)
        cell, pbc = ind.cell.copy(), ind.pbc.copy()
        if ind.cell.rank < 3:
            span = np.ptp(ind.positions, axis=0) + 20.0
            ind.cell = np.diag(span)
            ind.pbc = False
        ind.calc = self._calc()
        try:
            FIRE(ind, logfile=None).run(fmax=self.fmax, steps=self.steps)
        finally:
            ind.calc = None
            ind.cell, ind.pbc = cell, pbc
        if self.min_distance is not None and self.rng is not None:
            repair_min_distance(ind, self.min_distance, self.rng)
        return (ind,)


# ---------------------------------------------------------------------------
# duplicates and diversity
# ---------------------------------------------------------------------------

class Fingerprint:
    """Sorted distances of the atoms from the centre of mass (Å), shape ``(n,)``.

    Invariant to atom order, rotation and translation; cheap (O(n log n)).
    """

    def __call__(self, atoms) -> np.ndarray:
        pos = np.asarray(atoms.positions, dtype=float)
        return np.sort(np.linalg.norm(pos - pos.mean(axis=0), axis=1))


class SimilarityCriterion:
    """Two individuals are duplicates when both their costs and fingerprints agree.

    ``|cost₁ − cost₂| ≤ cost_tol · max(1, |cost₁|)`` and the RMS difference of
    their :class:`Fingerprint` ≤ ``fingerprint_tol`` Å. The cost (from
    ``atoms.info["cost"]``, set by the GA after evaluation) is orientation
    dependent, so the same particle in a different pose is not a duplicate.
    Picklable; usable as DEAP ``HallOfFame(similar=...)``.
    """

    def __init__(self, cost_tol: float = 1e-6, fingerprint_tol: float = 0.02):
        self.cost_tol = float(cost_tol)
        self.fingerprint_tol = float(fingerprint_tol)
        self._fp = Fingerprint()

    def __call__(self, a, b) -> bool:
        if len(a) != len(b):
            return False
        ca, cb = a.info.get("cost"), b.info.get("cost")
        if ca is not None and cb is not None and abs(ca - cb) > self.cost_tol * max(1.0, abs(ca)):
            return False
        fa, fb = self._fp(a), self._fp(b)
        return float(np.sqrt(np.mean((fa - fb) ** 2))) <= self.fingerprint_tol


def diversity(population, max_pairs: int = 2000) -> float:
    """Mean RMS fingerprint difference (Å) over pairs of individuals (all pairs up to ``max_pairs``).

    Deterministic: when there are more pairs, a fixed stride through them is used.
    """
    fp = Fingerprint()
    prints = [fp(a) for a in population]
    m = len(prints)
    if m < 2:
        return 0.0
    iu, ju = np.triu_indices(m, k=1)
    if len(iu) > max_pairs:
        step = int(np.ceil(len(iu) / max_pairs))
        iu, ju = iu[::step], ju[::step]
    F = np.asarray(prints)
    return float(np.mean(np.sqrt(np.mean((F[iu] - F[ju]) ** 2, axis=1))))
