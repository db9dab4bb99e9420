"""Geometry of a particle that the operators, sweeps and starting populations share.

* :func:`nearest_neighbour_distance`, :func:`default_min_distance`: bulk
  bond lengths of a composition (ASE reference states).
* :func:`composition_of`, :func:`min_interatomic_distance`: what a structure is.
* :func:`hollow_sites`, :func:`best_site`, :func:`outside_point`: where an
  atom can go on the surface.
* :func:`repair_min_distance`, :func:`repair_composition`: the repairs every
  operator ends with (no pair closer than a minimum distance; the exact
  species counts).

All randomness comes from the :class:`numpy.random.Generator` passed in.
Lengths in Å.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = [
    "MIN_DISTANCE_FRACTION",
    "NEIGHBOUR_FACTOR",
    "nearest_neighbour_distance",
    "default_min_distance",
    "composition_of",
    "min_interatomic_distance",
    "random_unit_vectors",
    "hollow_sites",
    "best_site",
    "outside_point",
    "repair_min_distance",
    "repair_composition",
]

log = logging.getLogger(__name__)

#: fraction of the nearest-neighbour distance used as the default minimum distance
MIN_DISTANCE_FRACTION = 0.75
#: neighbours are atoms closer than this factor times the nearest-neighbour distance
NEIGHBOUR_FACTOR = 1.2


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


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random directions, shape ``(n, 3)``: normalised Gaussian draws (uniform on the sphere)."""
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


def best_site(positions, nn_distance, rng, *, min_distance, avoid=None, n_triples=64):
    """A :func:`hollow_sites` site of maximal coordination (random among ties), shape ``(3,)`` Å, or None.

    Sites within half a bond of ``avoid`` (an atom's old position, Å) are left out.
    """
    sites, coord = hollow_sites(positions, nn_distance, rng, n_triples=n_triples, min_distance=min_distance)
    if avoid is not None and len(sites):
        keep = np.linalg.norm(sites - avoid, axis=1) > 0.5 * nn_distance
        sites, coord = sites[keep], coord[keep]
    if len(sites) == 0:
        return None
    best = np.flatnonzero(coord == coord.max())
    return sites[best[rng.integers(len(best))]]


def outside_point(positions, min_distance, rng):
    """A point guaranteed at least ``min_distance`` from every atom (just outside the cluster)."""
    pos = np.asarray(positions, dtype=float)
    centre = pos.mean(axis=0)
    u = random_unit_vectors(rng, 1)[0]
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
            v[zero] = random_unit_vectors(rng, int(zero.sum())) * 1e-3
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
            site = best_site(others, nn, rng, min_distance=min_distance)
            pos[k] = site if site is not None else outside_point(others, min_distance, rng)
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
