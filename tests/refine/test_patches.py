"""Surface lattice sites and island ("patch") transfers through the particle (refine.operators)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Octahedron
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from refine.operators import (
    NEIGHBOUR_FACTOR,
    depth_sides,
    interior_vacancies,
    surface_patches,
    surface_sites,
    transfer_patch,
    transfer_patches,
)

NN = 2.77  # Å, Pt
ISLAND = 7


def _fcc_111_along_z():
    """A Pt truncated octahedron (314 atoms, ideal lattice) with a {111} facet on top and one on the bottom.

    Eight {111} layers along z: with ABC stacking, a hollow site of the top
    facet then lies over a hollow site of the bottom facet (with 6 or 7
    layers they are nn/√3 = 1.6 Å apart in x, y and no island keeps its
    projection through the particle).
    """
    a = Octahedron("Pt", 8, cutoff=2, latticeconstant=NN * np.sqrt(2))
    pos = a.positions - a.positions.mean(axis=0)
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [[1.0, 1.0, 1.0]])
    return Atoms(f"Pt{len(a)}", positions=rot.apply(pos))


def _with_top_island(base, n):
    """``base`` plus an island of ``n`` atoms on the lattice sites nearest the middle of its top facet."""
    pos = base.positions.copy()
    top = pos[:, 2].max()
    for _ in range(n):
        sites = surface_sites(pos, NN)
        on_top = sites[sites[:, 2] > top + 0.5]
        # the most coordinated, then the most central: a compact island that grows site by site
        coord = np.asarray(cKDTree(pos).query_ball_point(on_top, NEIGHBOUR_FACTOR * NN, return_length=True))
        k = np.lexsort((np.hypot(on_top[:, 0], on_top[:, 1]), -coord))[0]
        pos = np.vstack([pos, on_top[k]])
    return Atoms(f"Pt{len(pos)}", positions=pos)


@pytest.fixture(scope="module")
def truth():
    return _with_top_island(_fcc_111_along_z(), ISLAND)


def _neighbour_distances(pos, k):
    d, _ = cKDTree(np.delete(pos, k, axis=0)).query(pos[k], k=3)
    return d


def test_surface_sites_are_empty_lattice_sites_and_vacancies_are_not_among_them():
    base = _fcc_111_along_z()
    pos = base.positions
    sites = surface_sites(pos, NN)
    assert len(sites) > 50
    tree = cKDTree(pos)
    d, _ = tree.query(sites)
    assert d.min() > 0.8 * NN  # empty
    count = np.asarray(tree.query_ball_point(sites, NEIGHBOUR_FACTOR * NN, return_length=True))
    assert count.min() >= 3 and count.max() <= 8  # on the surface, not inside
    # the top facet's hollow sites: one layer spacing (a/√3 = NN·√(2/3)) above it, at NN from three atoms
    top = pos[:, 2].max()
    over = sites[sites[:, 2] > top + 0.5]
    assert len(over) >= 7
    np.testing.assert_allclose(over[:, 2] - top, NN * np.sqrt(2.0 / 3.0), atol=1e-6)
    three = np.sort(tree.query(over, k=3)[0], axis=1)
    np.testing.assert_allclose(three, NN, atol=1e-6)
    # an ideal particle has no interior vacancy; take out the centre and it is the only one
    assert len(interior_vacancies(pos, NN)) == 0
    centre = int(np.argmin(np.linalg.norm(pos, axis=1)))
    holed = np.delete(pos, centre, axis=0)
    vac = interior_vacancies(holed, NN)
    assert len(vac) == 1 and np.linalg.norm(vac[0] - pos[centre]) < 1e-6
    assert not np.any(np.linalg.norm(surface_sites(holed, NN) - pos[centre], axis=1) < 0.5)


def test_depth_sides_split_the_line_of_sight():
    pos = np.array([[0.0, 0.0, z] for z in (-4.0, -1.0, 1.0, 4.0)] + [[10.0, 0.0, 0.0]])
    pts = np.array([[0.1, 0.0, 3.0], [0.0, 0.1, -0.5], [30.0, 0.0, -7.0]])
    np.testing.assert_array_equal(depth_sides(pts, pos, 1.0), [1, -1, 1])  # no atom under the last: +1


def test_island_goes_through_the_particle_onto_lattice_sites_under_the_same_columns(truth):
    n = len(truth)
    island = np.arange(n - ISLAND, n)
    moved = transfer_patch(truth.positions, island, NN)
    np.testing.assert_array_equal(truth.positions, _with_top_island(_fcc_111_along_z(), ISLAND).positions)
    np.testing.assert_array_equal(moved[: n - ISLAND], truth.positions[: n - ISLAND])  # the rest stays
    shift_xy = np.hypot(*(moved[island, :2] - truth.positions[island, :2]).T)
    assert shift_xy.max() < 1e-6  # the same columns
    bottom = truth.positions[: n - ISLAND, 2].min()
    assert np.all(moved[island, 2] < bottom)  # now under the bottom facet
    assert np.all(depth_sides(moved[island], moved, NN) == -1)
    # each on a lattice site: three neighbours at the bond length, nobody closer
    for k in island:
        np.testing.assert_allclose(_neighbour_distances(moved, k), NN, atol=1e-6)


def test_the_island_is_one_of_the_patches_and_the_sweep_carries_it_back(truth):
    n = len(truth)
    island = set(range(n - ISLAND, n))
    wrong = truth.copy()
    wrong.positions = transfer_patch(truth.positions, sorted(island), NN)
    # the particle's 24 corner atoms are as low-coordinated (6) as the island's rim: ten seeds reach the island
    patches = [set(p.tolist()) for p in surface_patches(wrong.positions, NN, seeds=10)]
    assert island in patches
    assert all(len(np.unique(depth_sides(wrong.positions[list(p)], wrong.positions, NN))) == 1 for p in patches)

    def cost(atoms):  # distance to the truth: zero only with the island back on top
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    relaxed = []
    best, best_cost, n_trials, n_accepted = transfer_patches(wrong, relaxed.append, cost, NN, min_distance=0.75 * NN,
                                                             seeds=10)
    assert cost(wrong) > 10.0
    assert n_accepted >= 1 and best_cost < 1e-10 and cost(best) == pytest.approx(best_cost)
    assert n_trials == len(relaxed) >= len(patches)  # every trial relaxed, every patch of the first sweep tried
    np.testing.assert_array_equal(wrong.positions, transfer_patch(truth.positions, sorted(island), NN))  # untouched
    # nothing to gain from the truth itself: one sweep, nothing kept
    same, same_cost, n2, a2 = transfer_patches(truth, lambda a: None, cost, NN, min_distance=0.75 * NN, cost=0.0)
    assert a2 == 0 and same_cost == 0.0 and n2 == len(surface_patches(truth.positions, NN))  # default: 6 seeds
    np.testing.assert_array_equal(same.positions, truth.positions)
