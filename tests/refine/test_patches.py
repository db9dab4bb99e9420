"""Surface lattice sites, island ("patch") transfers through the particle, the image-guided and dark-site sweeps (refine.search.sites, refine.search.sweeps)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Octahedron
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from refine.search.geometry import NEIGHBOUR_FACTOR
from refine.search.sites import (
    depth_sides,
    interior_vacancies,
    surface_hollows,
    surface_patches,
    surface_sites,
    transfer_patch,
)
from refine.search.sweeps import adatom_flip, dark_site_sweep, far_site_sweep, image_guided_sweep, transfer_patches

NN = 2.77  # Å, Pt
ISLAND = 7


def _fcc_111_along_z(layers=8):
    """A Pt truncated octahedron (ideal lattice) with a {111} facet on top and one on the bottom.

    Eight {111} layers along z (314 atoms): with ABC stacking, a hollow site
    of the top facet then lies over a hollow site of the bottom facet (with
    6 or 7 layers they are nn/√3 = 1.6 Å apart in x, y and no island keeps
    its projection through the particle). ``layers=7``: 201 atoms.
    """
    a = Octahedron("Pt", layers, cutoff=2, latticeconstant=NN * np.sqrt(2))
    pos = a.positions - a.positions.mean(axis=0)
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [[1.0, 1.0, 1.0]])
    return Atoms(f"Pt{len(a)}", positions=rot.apply(pos))


def _with_top_island(base, n, *, side=1, centre=(0.0, 0.0)):
    """``base`` plus an island of ``n`` atoms on the lattice sites of its top facet nearest ``centre`` (x, y, Å).

    ``side=-1``: on the bottom facet.
    """
    pos = base.positions.copy()
    face = pos[:, 2].max() if side > 0 else pos[:, 2].min()
    for _ in range(n):
        sites = surface_sites(pos, NN)
        on_face = sites[side * (sites[:, 2] - face) > 0.5]
        # the most coordinated, then the most central: a compact island that grows site by site
        coord = np.asarray(cKDTree(pos).query_ball_point(on_face, NEIGHBOUR_FACTOR * NN, return_length=True))
        k = np.lexsort((np.hypot(on_face[:, 0] - centre[0], on_face[:, 1] - centre[1]), -coord))[0]
        pos = np.vstack([pos, on_face[k]])
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


def _projection_difference(reference, pixel=0.2, sigma=0.5):
    """``difference(atoms) -> (image(atoms) − image(reference), grid)``: Gaussian blobs (σ Å) at the projected atoms."""
    from surrogate.imaging.grid import ProbeGrid

    grid = ProbeGrid(origin=(-16.0, -16.0), shape=(160, 160), pixel_size=pixel)
    x = grid.origin[0] + pixel * np.arange(grid.shape[0])
    y = grid.origin[1] + pixel * np.arange(grid.shape[1])

    def image(pos):
        gx = np.exp(-((x[None, :] - pos[:, 0, None]) ** 2) / (2 * sigma**2))  # (n, nx)
        gy = np.exp(-((y[None, :] - pos[:, 1, None]) ** 2) / (2 * sigma**2))  # (n, ny)
        return gx.T @ gy  # (nx, ny): diff[i, j] at x0 + iΔ, y0 + jΔ

    ref = image(reference.positions)
    return lambda atoms: (image(np.asarray(atoms.positions)) - ref, grid)


def test_image_guided_sweep_moves_misplaced_atoms_onto_the_dark_sites():
    # 7 {111} layers: no bottom hollow under a top hollow, so each dark spot has one surface site on its line
    base = _fcc_111_along_z(layers=7)
    truth = _with_top_island(base, ISLAND)
    n = len(base)
    # the same number of atoms on surface sites of the rest, at least 4 Å from the island in x, y: the wrong projection
    pos = base.positions.copy()
    for _ in range(ISLAND):
        sites = surface_sites(pos, NN)
        gap = np.hypot(*(sites[:, None, :2] - truth.positions[None, n:, :2]).transpose(2, 0, 1)).min(axis=1)
        sites = sites[gap > 4.0]
        coord = np.asarray(cKDTree(pos).query_ball_point(sites, NEIGHBOUR_FACTOR * NN, return_length=True))
        pos = np.vstack([pos, sites[np.argmax(coord)]])  # the most coordinated free site first
    wrong = Atoms(f"Pt{len(pos)}", positions=pos)
    gap = np.hypot(*(wrong.positions[n:, None, :2] - truth.positions[None, n:, :2]).transpose(2, 0, 1))
    assert gap.min() > 4.0
    difference = _projection_difference(truth)

    def cost(atoms):  # the projection's misfit: zero only with every island atom back on its column
        return float(np.sum(difference(atoms)[0] ** 2))

    relaxed = []
    best, best_cost, n_trials, n_accepted = image_guided_sweep(wrong, relaxed.append, cost, difference, NN,
                                                               min_distance=0.75 * NN)
    assert cost(wrong) > 10.0
    assert best_cost < 1e-10 and n_accepted == 1 and cost(best) == pytest.approx(best_cost, abs=1e-12)
    # the first round tries 1, 2, 4 and then all 7 atoms (fewer pairs than 8: the last); the second starts from
    # the exact answer and keeps nothing
    assert n_trials == len(relaxed) >= 4
    d, _ = cKDTree(best.positions).query(truth.positions)
    assert d.max() < 1e-6  # the island is back on its lattice sites
    np.testing.assert_array_equal(wrong.positions[:n], base.positions)  # the input is untouched
    # on the truth there is no bright spot: nothing tried, nothing changed
    same, same_cost, n2, a2 = image_guided_sweep(truth, relaxed.append, cost, difference, NN,
                                                 min_distance=0.75 * NN, cost=0.0)
    assert (n2, a2, same_cost) == (0, 0, 0.0)
    np.testing.assert_array_equal(same.positions, truth.positions)


def test_dark_site_sweep_fills_dark_sites_with_atoms_that_do_not_look_bright():
    # 8 {111} layers: a bottom hollow lies under each top hollow, so each dark spot has a site at both ends of its
    # line of sight. The truth's 3 extra atoms are on the bottom facet; the wrong structure has them on the top
    # facet ≥ 4 Å away in x, y. The difference image handed to the sweeps shows only the deficits (as over a thick
    # column whose intensity saturates): the image-guided sweep, which starts from bright atoms, finds nothing to
    # move, while the dark-site sweep starts from the dark sites and lets the cost choose the atom and the end
    n_extra = 3
    base = _fcc_111_along_z()
    truth = _with_top_island(base, n_extra, side=-1)
    n = len(base)
    pos = base.positions.copy()
    top = pos[:, 2].max()
    for _ in range(n_extra):
        sites = surface_sites(pos, NN)
        gap = np.hypot(*(sites[:, None, :2] - truth.positions[None, n:, :2]).transpose(2, 0, 1)).min(axis=1)
        pos = np.vstack([pos, sites[(gap > 4.0) & (sites[:, 2] > top + 0.5)][0]])
    wrong = Atoms(f"Pt{len(pos)}", positions=pos)
    full = _projection_difference(truth)

    def deficits_only(atoms):
        diff, grid = full(atoms)
        return np.minimum(diff, 0.0), grid

    def cost(atoms):  # 3-D misfit: zero only with every atom of the truth matched (the ends differ in cost)
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    assert cost(wrong) > 10.0
    relaxed = []
    same, same_cost, n_guided, k_guided = image_guided_sweep(wrong, relaxed.append, cost, deficits_only, NN,
                                                             min_distance=0.75 * NN)
    assert (k_guided, n_guided, len(relaxed)) == (0, 0, 0)  # no bright atom: no source, nothing tried
    best, best_cost, n_trials, n_accepted = dark_site_sweep(wrong, relaxed.append, cost, deficits_only, NN,
                                                            min_distance=0.75 * NN, sites=6, keep=2)
    assert best_cost < 1e-10 and cost(best) == pytest.approx(best_cost, abs=1e-12)
    assert n_accepted == n_extra  # one dark site filled per round; then none is left and the sweep stops
    assert len(relaxed) == 2 * n_extra  # only the `keep` best of each round are relaxed ...
    assert n_trials > 10 * len(relaxed)  # ... of the many unrelaxed moves ranked
    d, _ = cKDTree(best.positions).query(truth.positions)
    assert d.max() < 1e-6  # on the bottom facet, at the far end of the dark lines of sight
    np.testing.assert_array_equal(wrong.positions, pos)  # the input is untouched
    # on the truth nothing is dark: nothing tried, nothing changed
    again, again_cost, n2, a2 = dark_site_sweep(truth, relaxed.append, cost, deficits_only, NN,
                                                min_distance=0.75 * NN, cost=0.0)
    assert (n2, a2, again_cost) == (0, 0, 0.0)
    np.testing.assert_array_equal(again.positions, truth.positions)


def test_far_site_sweep_carries_single_adatoms_to_the_hollow_under_them_on_the_other_side():
    # three single adatoms on the bottom facet, apart; the wrong structure has each at the top end of the same
    # line of sight (same x, y: the same projection). The depth-blind image cannot choose; the cost (a 3-D misfit
    # here) can, and the sweep must find each far-side hollow by ranking the empty sites there unrelaxed
    base = _fcc_111_along_z()
    n = len(base)
    bottom = surface_sites(base.positions, NN)
    bottom = bottom[bottom[:, 2] < base.positions[:, 2].min() - 0.5]
    picks = [np.argmin(np.hypot(*(bottom[:, :2] - c).T)) for c in ((-4.0, -3.0), (4.0, -3.0), (0.0, 4.0))]
    truth = Atoms(f"Pt{n + 3}", positions=np.vstack([base.positions, bottom[picks]]))
    pos = base.positions.copy()
    top = pos[:, 2].max()
    for xy in truth.positions[n:, :2]:
        sites = surface_sites(pos, NN)
        above = sites[(sites[:, 2] > top + 0.5) & (np.hypot(*(sites[:, :2] - xy).T) < 0.3)]
        pos = np.vstack([pos, above[0]])
    wrong = Atoms(f"Pt{len(pos)}", positions=pos)
    np.testing.assert_allclose(wrong.positions[n:, :2], truth.positions[n:, :2], atol=0.3)

    def cost(atoms):
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    assert cost(wrong) > 10.0
    relaxed = []
    best, best_cost, n_trials, n_accepted = far_site_sweep(wrong, relaxed.append, cost, NN, min_distance=0.75 * NN,
                                                           atoms=10)
    assert n_accepted == 3 and best_cost < 1e-10
    d, _ = cKDTree(best.positions).query(truth.positions)
    assert d.max() < 1e-6
    assert len(relaxed) <= 10 < n_trials  # one relaxation per atom tried, after ranking several sites unrelaxed
    np.testing.assert_array_equal(wrong.positions, pos)  # the input is untouched
    # on the truth no move lowers the cost: nothing is kept
    again, again_cost, _, kept = far_site_sweep(truth, relaxed.append, cost, NN, min_distance=0.75 * NN, atoms=10,
                                                cost=0.0)
    assert (kept, again_cost) == (0, 0.0)
    np.testing.assert_array_equal(again.positions, truth.positions)


def test_surface_hollows_hold_both_hollows_of_a_facet_where_surface_sites_hold_one():
    base = _fcc_111_along_z()
    pos = base.positions
    top = pos[:, 2].max()
    hollows = surface_hollows(pos, NN)
    lattice = surface_sites(pos, NN)
    on_top = hollows[hollows[:, 2] > top + 0.5]
    lattice_top = lattice[lattice[:, 2] > top + 0.5]
    # every hollow is one bond from three atoms of the facet and closer to none
    d, _ = cKDTree(pos).query(on_top, k=4)
    np.testing.assert_allclose(d[:, :3], NN, atol=1e-6)
    assert np.all(d[:, 3] > 1.2 * NN)
    # the stacking-continuing hollows (what continued bonds give) are among them ...
    assert cKDTree(on_top).query(lattice_top)[0].max() < 1e-6
    # ... and so are the other ones, nn/√3 = 1.6 Å from every lattice site
    other = cKDTree(lattice_top).query(on_top)[0]
    np.testing.assert_allclose(other[other > 0.5], NN / np.sqrt(3), atol=1e-6)
    assert np.count_nonzero(other > 0.5) >= 0.5 * len(lattice_top)
    assert cKDTree(pos).query(hollows)[0].min() >= 0.85 * NN


def test_adatom_flip_carries_an_island_whose_single_moves_do_not_pay():
    # The truth has a 3-atom island on the bottom facet and a lone adatom on top; the wrong structure has the
    # island on the top facet, over the same hollows (8 layers: a bottom hollow lies under each top one), and the
    # same lone adatom. The cost: a truth atom unmatched costs 1, an island atom with no island neighbour 2 (bonds).
    # Each island atom moved alone leaves it unbonded (+2 for -1), two leave the third alone (3, no gain): only
    # the three together pay, so every single-atom sweep stops short while the joint flip does not. The flip also
    # carries the lone adatom over (it is an adatom too); putting it back is what makes the answer exact.
    base = _fcc_111_along_z()
    n = len(base)
    wrong_island = _with_top_island(base, 3).positions[n:]
    top = base.positions[:, 2].max()
    lattice = surface_sites(base.positions, NN)
    lattice = lattice[lattice[:, 2] > top + 0.5]
    lone = lattice[np.argmin(np.where(cKDTree(wrong_island).query(lattice)[0] > 1.5 * NN,
                                      np.hypot(*lattice[:, :2].T), np.inf))]
    hollows = surface_hollows(base.positions, NN)
    bottom = hollows[hollows[:, 2] < base.positions[:, 2].min() - 0.5]
    gap, under = cKDTree(bottom[:, :2]).query(wrong_island[:, :2])
    assert gap.max() < 0.3
    truth = Atoms(f"Pt{n + 4}", positions=np.vstack([base.positions, bottom[under], lone]))
    wrong = Atoms(f"Pt{n + 4}", positions=np.vstack([base.positions, wrong_island, lone]))

    def cost(atoms):
        pos = atoms.positions
        unmatched = np.count_nonzero(cKDTree(pos).query(truth.positions)[0] > 0.5)
        island = pos[n:n + 3]
        alone = np.count_nonzero(np.sort(np.linalg.norm(island[:, None] - island[None], axis=2), axis=1)[:, 1]
                                 > 1.2 * NN)
        return float(unmatched + 2 * alone)

    assert (cost(truth), cost(wrong)) == (0.0, 3.0)
    relaxed = []
    _, single_cost, _, single_kept = far_site_sweep(wrong, relaxed.append, cost, NN, min_distance=0.75 * NN, atoms=10)
    assert (single_kept, single_cost) == (0, 3.0)  # no single far-side move pays
    best, best_cost, n_trials, n_accepted = adatom_flip(wrong, relaxed.append, cost, NN, min_distance=0.75 * NN)
    assert (n_accepted, best_cost) == (1, 0.0) and cost(best) == 0.0
    d, _ = cKDTree(best.positions).query(truth.positions)
    assert d.max() < 1e-6
    assert n_trials > 4 + 4  # several far hollows ranked per adatom, the joint trial, the put-backs
    np.testing.assert_array_equal(wrong.positions[n:n + 3], wrong_island)  # the input is untouched
    # on the truth the flip is tried and refused: the answer stays as it is
    again, again_cost, _, kept = adatom_flip(truth, relaxed.append, cost, NN, min_distance=0.75 * NN)
    assert (kept, again_cost) == (0, 0.0)
    np.testing.assert_array_equal(again.positions, truth.positions)


def _fcc_110_along_z():
    """A Pt particle (ideal lattice) with ⟨110⟩ atomic columns along z: atoms one bond apart in each column."""
    from ase.cluster import FaceCenteredCubic

    a = FaceCenteredCubic("Pt", [(1, 0, 0), (1, 1, 0), (1, 1, 1)], [3, 3, 3], latticeconstant=NN * np.sqrt(2))
    pos = a.positions - a.positions.mean(axis=0)
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]])
    return Atoms(f"Pt{len(a)}", positions=rot.apply(pos))


def test_beam_column_is_the_lattice_vector_along_the_beam_tilted_with_the_particle():
    from refine.search.sites import beam_column

    np.testing.assert_allclose(beam_column(_fcc_110_along_z().positions, NN), [0.0, 0.0, NN], atol=1e-6)
    # 10° off the zone axis: the same bond, 10° off z (0.48 Å sideways per period), not a z step
    tilt = Rotation.from_euler("x", 10.0, degrees=True)
    tilted = tilt.apply(_fcc_110_along_z().positions)
    np.testing.assert_allclose(beam_column(tilted, NN), tilt.apply([0.0, 0.0, NN]), atol=1e-6)
    # {111} stacking along z: an atom is above another only three layers (6.8 Å) up, not a column
    assert beam_column(_fcc_111_along_z().positions, NN) is None


def test_a_wedge_one_period_too_high_slides_back():
    from refine.search.sites import beam_sectors
    from refine.search.sweeps import shift_sectors

    truth = _fcc_110_along_z()
    sectors = beam_sectors(truth.positions)
    assert len(sectors) == 15 + 15 + 8  # 72° and 144° wedges from every 24°, 180° ones from 0°–168°
    wrong = truth.copy()
    pos = wrong.positions.copy()
    pos[sectors[20], 2] += NN  # a 144° wedge one period up: every column keeps its x, y
    wrong.positions = pos

    def cost(atoms):  # distance to the truth: zero only with the wedge back
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    relaxed = []
    best, best_cost, n_trials, n_accepted = shift_sectors(wrong, relaxed.append, cost, NN, min_distance=0.75 * NN,
                                                          keep=2)
    assert cost(wrong) > 10.0
    assert n_accepted == 1 and best_cost < 1e-10 and cost(best) == pytest.approx(best_cost, abs=1e-12)
    regions = len(sectors) + 3 * 12  # and caps of 15, 30 and 45 % of the atoms, every 30°
    assert len(relaxed) == 2 and n_trials == 2 * regions + 2  # every region both ways, then the two best
    np.testing.assert_array_equal(wrong.positions, pos)  # the input is untouched
    # a finishing step runs on each followed-up candidate, and its evaluations count
    finished = []
    _, _, n_finish, _ = shift_sectors(wrong, lambda a: None, cost, NN, min_distance=0.75 * NN, keep=2,
                                      finish=lambda a, c: (finished.append(c), (a, c, 3))[1])
    assert n_finish == n_trials + 2 * 3 and len(finished) == 2 and min(finished) < 1e-10
    # from the truth every slide makes it worse: nothing kept; without a period along the beam, nothing tried
    same, same_cost, _, a2 = shift_sectors(truth, lambda a: None, cost, NN, min_distance=0.75 * NN, cost=0.0)
    assert a2 == 0 and same_cost == 0.0
    np.testing.assert_array_equal(same.positions, truth.positions)
    flat = _fcc_111_along_z()
    assert shift_sectors(flat, lambda a: None, cost, NN, min_distance=0.75 * NN, cost=1.0)[1:] == (1.0, 0, 0)


@pytest.mark.parametrize("tilt", [0.0, 10.0])
def test_an_edge_one_period_too_high_slides_back_along_the_tilted_columns(tilt):
    from refine.search.sites import beam_column, beam_sectors
    from refine.search.sweeps import shift_sectors

    rot = Rotation.from_euler("x", tilt, degrees=True)
    truth = _fcc_110_along_z()
    truth.positions = rot.apply(truth.positions)
    column = beam_column(truth.positions, NN)
    caps = beam_sectors(truth.positions, axis=column, widths=(), caps=(0.3,))
    assert len(caps) == 12 and all(abs(c.mean() - 0.3) < 0.1 for c in caps)
    wrong = truth.copy()
    pos = wrong.positions.copy()
    pos[caps[4]] += column  # an edge one period up its own columns: the projection is unchanged
    wrong.positions = pos

    def cost(atoms):
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    best, best_cost, _, n_accepted = shift_sectors(wrong, lambda a: None, cost, NN, min_distance=0.75 * NN, keep=1)
    assert cost(wrong) > 10.0
    assert n_accepted == 1 and best_cost < 1e-10
    if tilt:  # a step straight along z would put every atom of the edge 0.48 Å off its column: not the answer
        z_shifted = wrong.copy()
        p = wrong.positions.copy()
        p[caps[4], 2] -= np.linalg.norm(column)
        z_shifted.positions = p
        assert cost(z_shifted) > 0.1 * caps[4].sum()


def test_regions_are_whole_columns_even_where_a_fraction_or_an_edge_cuts_through_one():
    from refine.search.sites import beam_column, beam_sectors

    ideal = _fcc_110_along_z()
    column_of = np.unique(np.round(ideal.positions[:, :2], 3), axis=0, return_inverse=True)[1].ravel()
    rot = Rotation.from_euler("x", 10.0, degrees=True)
    noisy = rot.apply(ideal.positions) + np.random.default_rng(3).normal(0.0, 0.08, ideal.positions.shape)
    column = beam_column(noisy, NN)
    masks = beam_sectors(noisy, axis=column, caps=(0.15, 0.3, 0.45))
    split = [m for m in masks if any(0 < m[column_of == c].sum() < (column_of == c).sum()
                                     for c in np.unique(column_of))]
    assert len(masks) > 40 and not split
    # atom by atom (no column grouping) the thermal noise splits columns at the caps' and wedges' edges
    atomwise = beam_sectors(noisy, axis=column, caps=(0.15, 0.3, 0.45), column_tolerance=0.0)
    assert any(any(0 < m[column_of == c].sum() < (column_of == c).sum() for c in np.unique(column_of))
               for m in atomwise)


def test_column_shift_candidates_are_ranked_by_the_given_score():
    from refine.search.sites import beam_column, beam_sectors
    from refine.search.sweeps import shift_sectors

    truth = _fcc_110_along_z()
    column = beam_column(truth.positions, NN)
    cap = beam_sectors(truth.positions, axis=column, widths=(), caps=(0.3,))[2]
    wrong = truth.copy()
    wrong.positions[cap] += column

    def cost(atoms):
        return float(np.sum(cKDTree(atoms.positions).query(truth.positions)[0] ** 2))

    def reverse(atoms):
        return -cost(atoms)

    # followed up: the one the score puts first — the right shift, or, with the score reversed, the worst one
    best_cost, _, accepted = shift_sectors(wrong, lambda a: None, cost, NN, min_distance=0.75 * NN, keep=1,
                                           rank=cost)[1:]
    assert accepted == 1 and best_cost < 1e-10
    assert shift_sectors(wrong, lambda a: None, cost, NN, min_distance=0.75 * NN, keep=1, rank=reverse)[3] == 0
