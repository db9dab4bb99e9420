"""Wrong structures with (nearly) the right projection: what a cost must rank below the truth.

A refinement that finds the projection but not the depths ends in one of a
few kinds of wrong answer. Each function here makes one kind from a known
structure, so that a cost can be tested without a search (``stem-refine
cost``, ``tests/benchmarks/bench_cost.py``):

- :func:`patch_flip`: an island of surface atoms carried through the
  particle to the empty sites under the same columns on the other side
  (the same projection; the energy tells them apart);
- :func:`hollow_moves`: surface atoms moved to empty hollow sites elsewhere on
  the surface (the projection changes by a few atoms; the image tells);
- :func:`column_shift`: an edge region of the particle slid one lattice period
  along its columns (every column keeps its atoms: the same projection,
  stepped facets).

:func:`perturbed_structures` makes the standard set. Positions in Å; the
inputs are never changed. The results are not relaxed: relax them (and the
truth) the same way before comparing costs, since an unrelaxed structure
loses on energy alone.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from refine.search.geometry import nearest_neighbour_distance, repair_min_distance
from refine.search.sites import beam_column, beam_sectors, depth_sides, surface_patches, surface_sites, transfer_patch
from surrogate.common import InputError, coordination_numbers

__all__ = ["column_shift", "hollow_moves", "patch_flip", "perturbed_structures"]


def _nn(atoms: Atoms, nn_distance: float | None) -> float:
    return float(nn_distance) if nn_distance is not None else nearest_neighbour_distance(atoms.get_chemical_symbols())


def _finish(atoms: Atoms, positions, nn: float, seed: int) -> Atoms:
    out = atoms.copy()
    out.positions = positions
    # a carried atom can land a little too close to one already there
    repair_min_distance(out, 0.75 * nn, np.random.default_rng(seed), nn_distance=nn)
    return out


def patch_flip(atoms: Atoms, size: int, *, nn_distance: float | None = None, index: int = 0) -> Atoms:
    """The ``index``-th patch of ``size`` surface atoms on the top side (z up, the beam's exit) carried to the bottom.

    Patches are :func:`refine.search.surface_patches` (connected,
    least-coordinated first); :func:`refine.search.transfer_patch` puts
    each atom on the empty lattice site nearest its x, y on the other side.
    Raises :class:`InputError` when the particle has no such patch.
    """
    nn = _nn(atoms, nn_distance)
    pos = atoms.positions
    top = [p for p in surface_patches(pos, nn, sizes=(size,), seeds=40)
           if len(p) == size and pos[p, 2].mean() > pos[:, 2].mean()]
    if len(top) <= index:
        raise InputError(f"no top-side surface patch of {size} atoms (number {index}) in this particle")
    return _finish(atoms, transfer_patch(pos, top[index], nn), nn, seed=index)


def hollow_moves(atoms: Atoms, n_moves: int, *, nn_distance: float | None = None, seed: int = 0,
                 far_side: bool = True) -> Atoms:
    """``n_moves`` low-coordinated surface atoms moved to empty surface hollow sites at least two bonds away in x, y.

    Each atom (drawn from the 3·``n_moves`` least coordinated, by
    ``seed``) goes to a random :func:`refine.search.surface_sites` site,
    with ``far_side`` one on the opposite side of the particle along the
    beam (the far-side adatoms of the benchmark's case (c)). Sites are
    recomputed after every move.
    """
    nn = _nn(atoms, nn_distance)
    rng = np.random.default_rng(seed)
    pos = atoms.positions.copy()
    cn = coordination_numbers(pos, 1.2 * nn)
    candidates = np.argsort(cn, kind="stable")[: 3 * n_moves]
    movers = rng.choice(candidates, size=min(n_moves, len(candidates)), replace=False)
    for k in movers:
        rest = np.delete(pos, k, axis=0)
        sites = surface_sites(rest, nn)
        far = np.hypot(sites[:, 0] - pos[k, 0], sites[:, 1] - pos[k, 1]) >= 2 * nn
        if far_side and len(sites):
            far &= depth_sides(sites, rest, nn) != depth_sides(pos[k:k + 1], rest, nn)[0]
        if not far.any():
            raise InputError("no empty surface site two bonds away to move an atom to")
        pos[k] = sites[far][rng.integers(far.sum())]
    return _finish(atoms, pos, nn, seed=seed)


def column_shift(atoms: Atoms, fraction: float, *, direction: int = 0, nn_distance: float | None = None,
                 periods: int = 1) -> Atoms:
    """The ``fraction`` of the atoms farthest out along one direction across the columns, slid ``periods`` along them.

    The columns are :func:`refine.search.beam_column` (tilted with the
    particle); the region is a cap of :func:`refine.search.beam_sectors`
    (``direction`` 0–11: every 30° of azimuth). Raises :class:`InputError`
    for a particle without columns along the beam.
    """
    nn = _nn(atoms, nn_distance)
    pos = atoms.positions
    column = beam_column(pos, nn)
    if column is None:
        raise InputError("this particle has no columns along the beam to slide a region along")
    caps = beam_sectors(pos, axis=column, widths=(), caps=(fraction,))
    if not caps:
        raise InputError(f"no cap of {fraction} of the atoms")
    region = caps[direction % len(caps)]
    new = pos.copy()
    new[region] += periods * column
    return _finish(atoms, new, nn, seed=direction)


def perturbed_structures(truth: Atoms, *, nn_distance: float | None = None, seed: int = 0) -> dict[str, Atoms]:
    """The standard set of wrong structures made from ``truth`` (name → unrelaxed ``Atoms``).

    Patch flips of 3, 7 and 14 atoms, 1 and 6 atoms moved to far-side
    hollow sites, and caps of 15 % and 30 % of the atoms slid one period
    along the columns (left out for a particle without columns).
    """
    out = {}
    for size in (3, 7, 14):
        try:
            out[f"patch flip {size}"] = patch_flip(truth, size, nn_distance=nn_distance)
        except InputError:
            pass
    for n in (1, 6):
        out[f"{n} hollow move{'s' * (n > 1)}"] = hollow_moves(truth, n, nn_distance=nn_distance, seed=seed)
    for fraction, direction in ((0.15, 2), (0.3, 5)):
        try:
            out[f"{fraction:.0%} column shift"] = column_shift(truth, fraction, direction=direction,
                                                               nn_distance=nn_distance)
        except InputError:
            pass
    return out
