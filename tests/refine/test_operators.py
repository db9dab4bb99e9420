"""Genetic operators, repairs, duplicate control (refine.search.operators, .geometry, .selection)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Icosahedron
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from surrogate.common.errors import InputError
from refine.search.geometry import (
    composition_of,
    default_min_distance,
    hollow_sites,
    min_interatomic_distance,
    repair_composition,
    repair_min_distance,
)
from refine.search.operators import (
    CutSpliceCrossover,
    DepthFlipMutation,
    DepthMoveMutation,
    ImageGuidedMutation,
    MirrorMutation,
    MutationSelector,
    PermutationMutation,
    RattleMutation,
    RotationMutation,
    SurfaceMoveMutation,
)
from refine.search.relaxation import LocalRelaxation
from refine.search.selection import Fingerprint, SimilarityCriterion, diversity
from surrogate.common.geometry import coordination_numbers
from refine.search.population import random_cluster, shape_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ga_toy import ToyFitness  # noqa: E402

COMP = {"Pt": 40, "Mo": 12}
D_MIN = default_min_distance(COMP)
D_NN = D_MIN / 0.75


def _parents(seed):
    rng = np.random.default_rng(seed)
    return random_cluster(COMP, rng), shape_cluster(COMP, "icosahedron", rng)


def _all_operators(rng, difference):
    return [
        RattleMutation(rng, D_MIN),
        PermutationMutation(rng, D_MIN),
        SurfaceMoveMutation(rng, D_MIN, n_moves=2),
        ImageGuidedMutation(rng, D_MIN, difference, n_moves=2),
        RotationMutation(rng, D_MIN),
        MirrorMutation(rng, D_MIN, COMP),
        DepthFlipMutation(rng, D_MIN),
        DepthFlipMutation(rng, D_MIN, whole=1.0),
        DepthMoveMutation(rng, D_MIN, n_moves=2),
    ]


_TARGET = shape_cluster(COMP, "decahedron", np.random.default_rng(1))
_TOY = ToyFitness(_TARGET)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_every_operator_keeps_composition_and_min_distance(seed):
    rng = np.random.default_rng(seed)
    a, b = _parents(seed)
    for op in _all_operators(rng, _TOY.difference):
        (child,) = op(a.copy())
        assert composition_of(child) == COMP, op.name
        assert min_interatomic_distance(child.positions) >= D_MIN * (1 - 1e-6), op.name
        assert child.info["operator"] == op.name
    for beam_parallel in (0.0, 1.0):
        c1, c2 = CutSpliceCrossover(rng, D_MIN, COMP, beam_parallel=beam_parallel)(a.copy(), b.copy())
        for c in (c1, c2):
            assert composition_of(c) == COMP
            assert min_interatomic_distance(c.positions) >= D_MIN * (1 - 1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_structure_the_polish_sweeps_try_keeps_composition_and_min_distance(seed):
    # the polish's sweeps (vacancy fills, image-guided moves, dark-site fills, island transfers, depth moves, column
    # shifts) make their own candidates; with a relaxation that does nothing, each must already be a valid offspring
    # (the dark-site sweep's unrelaxed ranking included)
    from refine.search import PolishSettings
    from refine.search.polish import polish_sweeps

    tried = []

    def evaluate(atoms):
        tried.append((composition_of(atoms), min_interatomic_distance(atoms.positions)))
        return _TOY.chi2(atoms)  # (Mo has no asap3 EMT parameters)

    start = random_cluster(COMP, np.random.default_rng(seed))
    sweeps = PolishSettings(image_moves=4, dark_sites=2, patches=2, atoms=10, seed=0)
    out, cost, n = polish_sweeps(start.copy(), lambda a: None, evaluate, _TOY.difference, D_NN, D_MIN, sweeps,
                                 shifts=1)
    assert n == len(tried) > 20  # every sweep made trials
    assert all(c == COMP for c, _ in tried)
    assert min(d for _, d in tried) >= D_MIN * (1 - 1e-6)
    assert composition_of(out) == COMP and cost <= _TOY.chi2(start) + 1e-9


def test_the_polish_draws_only_from_its_seed(monkeypatch):
    # each sweep of the polish gets a fresh generator seeded with polish_seed (PolishSettings.seed) for its overlap
    # repairs: the same structure and seed give the same polish, whatever any other generator did in between
    import refine.search.polish as polish_module
    from refine.search import GASettings, PolishSettings
    from refine.search.polish import polish_sweeps
    from refine.search.sweeps import transfer_patches

    handed = []  # (sweep, generator, its state when handed over)

    def spy(name):
        real = getattr(polish_module, name)

        def sweep(*args, rng, **kw):
            handed.append((name, rng, rng.bit_generator.state))
            return real(*args, rng=rng, **kw)

        monkeypatch.setattr(polish_module, name, sweep)

    for name in ("image_guided_sweep", "dark_site_sweep", "transfer_patches", "shift_sectors"):
        spy(name)

    class Mover(polish_module.DepthMoveMutation):
        def __init__(self, rng, *args, **kw):
            handed.append(("depth_move", rng, rng.bit_generator.state))
            super().__init__(rng, *args, **kw)

    monkeypatch.setattr(polish_module, "DepthMoveMutation", Mover)
    start = random_cluster(COMP, np.random.default_rng(5))
    sweeps = PolishSettings(image_moves=2, dark_sites=1, patches=1, atoms=4, seed=3)

    def polish():
        out, cost, n = polish_sweeps(start.copy(), lambda a: None, _TOY.chi2, _TOY.difference, D_NN, D_MIN, sweeps,
                                     shifts=1)
        return out.positions.tobytes(), cost, n

    first = polish()
    names = [name for name, _, _ in handed]
    # image-guided, patch, depth-move and shift sweeps, and the shift candidates' depth moves and image-guided sweep
    assert {"image_guided_sweep", "dark_site_sweep", "transfer_patches", "shift_sectors", "depth_move"} <= set(names)
    assert names.count("depth_move") == 2 and names.count("image_guided_sweep") >= 2
    fresh = np.random.default_rng(3).bit_generator.state
    assert all(state == fresh for _, _, state in handed)
    assert len({id(rng) for _, rng, _ in handed}) == len(handed)  # a generator of its own for each
    handed.clear()
    np.random.default_rng(99).random(1000)
    np.random.seed(1)  # the legacy global state: not used either
    assert polish() == first

    # a sweep takes a generator, or an int that seeds a fresh one
    def patches(rng):
        out, cost, n, _ = transfer_patches(start, lambda a: None, _TOY.chi2, D_NN, min_distance=D_MIN, seeds=2,
                                           rng=rng)
        return out.positions.tobytes(), cost, n

    assert patches(3) == patches(np.random.default_rng(3))
    with pytest.raises(InputError, match="polish_seed"):
        GASettings(polish=PolishSettings(seed=-1)).validate()


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_crossover_repair_is_exact_for_segregated_parents(seed):
    # parent 1 has all Mo on the +x side, parent 2 on the -x side: most cuts splice too many or
    # too few Mo atoms, which the repair must fix exactly
    rng = np.random.default_rng(seed)
    p1, p2 = _parents(seed)
    for p, sign in ((p1, 1), (p2, -1)):
        order = np.argsort(-sign * p.positions[:, 0])
        numbers = np.full(len(p), 78)
        numbers[order[:COMP["Mo"]]] = 42
        p.numbers = numbers
    c1, c2 = CutSpliceCrossover(rng, D_MIN, COMP)(p1, p2)
    assert composition_of(c1) == COMP and composition_of(c2) == COMP


def test_crossover_children_come_from_both_parents(rng):
    a = shape_cluster({"Pt": 55}, "icosahedron", rng)
    b = a.copy()
    b.positions = b.positions * 1.3  # a distinguishable, expanded parent
    ra = np.sort(np.linalg.norm(a.positions, axis=1))
    c1, _ = CutSpliceCrossover(rng, 0.1, {"Pt": 55})(a.copy(), b.copy())
    # some atoms at parent-1 radii, some at parent-2 radii (after recentring)
    r = np.linalg.norm(c1.positions - c1.positions.mean(axis=0), axis=1)
    assert r.max() > 1.1 * ra.max()
    assert len(c1) == 55


def _xy_matched(child, parents_xy, tol=1e-9):
    from scipy.spatial import cKDTree

    d, _ = cKDTree(parents_xy).query(child.positions[:, :2])
    return d <= tol


def test_beam_parallel_crossover_keeps_both_projections(rng):
    # two parents in the same place in x, y but with different depth orders: every child atom
    # keeps the x, y of the parent it came from (the projection on the image is kept)
    a = shape_cluster({"Pt": 55}, "icosahedron", rng)
    b = a.copy()
    b.rotate(180, "x", center=b.positions.mean(axis=0))  # z → −z (and y → −y)
    b.positions[:, 1] = a.positions[:, 1]  # ... back in y: same projection, other depth order
    b.positions[:, 2] += 7.0  # a different mean depth is ignored
    xy = np.concatenate([a.positions[:, :2], b.positions[:, :2]])
    c1, c2 = CutSpliceCrossover(rng, 0.5, {"Pt": 55}, beam_parallel=1.0)(a.copy(), b.copy())
    for c in (c1, c2):
        assert _xy_matched(c, xy).mean() > 0.9  # all but atoms moved by the overlap repair at the cut
    with pytest.raises(InputError, match="beam_parallel"):
        CutSpliceCrossover(rng, 0.5, {"Pt": 55}, beam_parallel=1.5)


def test_depth_flip_keeps_the_projection_and_changes_depths(rng):
    a = shape_cluster({"Pt": 55}, "decahedron", rng)
    a.rotate(30, "x")
    for whole in (0.0, 1.0):
        (c,) = DepthFlipMutation(rng, 0.5, whole=whole)(a.copy())
        np.testing.assert_allclose(c.positions[:, :2], a.positions[:, :2])
        flipped = np.abs(c.positions[:, 2] - a.positions[:, 2]) > 1e-9
        if whole:
            # the whole particle mirrored along the beam about its mean depth
            np.testing.assert_allclose(c.positions[:, 2], 2 * a.positions[:, 2].mean() - a.positions[:, 2])
        else:
            assert 0.2 * len(a) <= flipped.sum() <= 0.8 * len(a)


def test_depth_move_carries_a_surface_atom_through_the_particle(rng):
    # a Pt55 icosahedron with its 5-fold axis along the beam plus one adatom on top of the
    # axis: the adatom is the least coordinated atom and must end below the bottom vertex,
    # at the same x, y
    a = Icosahedron("Pt", 3)
    a.positions -= a.positions.mean(axis=0)
    from scipy.spatial.transform import Rotation

    axis = a.positions[np.argmax(np.linalg.norm(a.positions, axis=1))]
    a.positions = Rotation.align_vectors([[0, 0, 1]], [axis])[0].apply(a.positions)
    top = a.positions[:, 2].max()
    a += Atoms("Pt", positions=[[0.0, 0.0, top + 2.3]])
    moves = [DepthMoveMutation(rng, 2.0)(a.copy())[0] for _ in range(20)]
    hits = [m for m in moves if m.positions[-1, 2] < a.positions[:, 2].min()]
    assert len(hits) >= 10  # the adatom is by far the most likely pick
    for m in hits:
        np.testing.assert_allclose(m.positions[-1, :2], [0.0, 0.0], atol=1e-9)
        assert m.positions[-1, 2] == pytest.approx(a.positions[:-1, 2].min() - 2.0 / 0.75, abs=1e-6)


def test_crossover_refuses_different_sizes(rng):
    with pytest.raises(InputError, match="differ"):
        CutSpliceCrossover(rng, D_MIN, {"Pt": 13})(Icosahedron("Pt", 2), Icosahedron("Pt", 3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([78, 42, 79]), min_size=10, max_size=10), st.integers(0, 2**16))
def test_repair_composition_exact_and_minimal(numbers, seed):
    atoms = Atoms(numbers=numbers, positions=np.arange(30.0).reshape(10, 3))
    target = {"Pt": 6, "Mo": 4}
    before = np.array(atoms.numbers)
    n = repair_composition(atoms, target, np.random.default_rng(seed))
    assert composition_of(atoms) == target
    changed = int(np.count_nonzero(atoms.numbers != before))
    assert n == changed
    # minimal: only the deficits are relabelled
    deficit = sum(max(c - int(np.count_nonzero(before == z)), 0) for z, c in ((78, 6), (42, 4)))
    assert changed == deficit


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 80), st.floats(0.3, 1.0))
def test_repair_min_distance_always_succeeds(seed, n, density):
    rng = np.random.default_rng(seed)
    # a dense random cloud, with one exactly coincident pair
    radius = (n * 4.0 / density) ** (1 / 3)
    pos = rng.uniform(-radius, radius, size=(n, 3))
    pos[-1] = pos[0]
    atoms = Atoms(numbers=[78] * n, positions=pos)
    repair_min_distance(atoms, 2.0, rng)
    assert min_interatomic_distance(atoms.positions) >= 2.0 * (1 - 1e-6)
    assert np.all(np.isfinite(atoms.positions))


def test_repair_min_distance_leaves_good_structures_alone(rng):
    ico = Icosahedron("Pt", 3)
    atoms = ico.copy()
    assert repair_min_distance(atoms, 2.0, rng) == 0
    assert np.array_equal(atoms.positions, ico.positions)


def test_rotation_is_rigid_and_in_plane_keeps_z(rng):
    a = shape_cluster({"Pt": 55}, "icosahedron", rng)
    (r,) = RotationMutation(rng, D_MIN, in_plane_probability=0.0, max_angle=1.0)(a.copy())
    assert np.allclose(np.sort(pdist(r.positions)), np.sort(pdist(a.positions)))
    assert not np.allclose(r.positions, a.positions)
    (z,) = RotationMutation(rng, D_MIN, in_plane_probability=1.0, max_angle=1.0)(a.copy())
    assert np.allclose(z.positions[:, 2], a.positions[:, 2])


def test_permutation_swaps_species_only(rng):
    a = shape_cluster(COMP, "icosahedron", rng)
    (p,) = PermutationMutation(rng, D_MIN, n_swaps=3)(a.copy())
    assert np.array_equal(p.positions, a.positions)
    assert 0 < np.count_nonzero(p.numbers != a.numbers) <= 6
    single = Icosahedron("Pt", 3)
    (s,) = PermutationMutation(rng, D_MIN)(single.copy())
    assert np.array_equal(s.positions, single.positions) and np.array_equal(s.numbers, single.numbers)


def test_mirror_makes_a_mirror_symmetric_particle(rng):
    a = random_cluster({"Pt": 40}, rng)
    (m,) = MirrorMutation(rng, 0.1, {"Pt": 40})(a.copy())  # tiny d_min: no repair moves
    # every atom has a mirror partner through some plane: the two halves have equal
    # sorted distance lists to the centroid
    assert len(m) == 40
    r = np.sort(np.linalg.norm(m.positions - m.positions.mean(axis=0), axis=1))
    assert np.allclose(r[0::2], r[1::2], atol=1e-6)


def test_hollow_sites_are_at_bond_length_from_three_atoms(rng):
    ico = Icosahedron("Pt", 3)
    pos = ico.positions
    sites, coord = hollow_sites(pos, 2.77, rng, min_distance=2.0)
    assert len(sites) > 0
    d = np.sort(np.linalg.norm(pos[None, :, :] - sites[:, None, :], axis=2), axis=1)
    assert np.allclose(d[:, :3], 2.77, atol=1e-6)
    assert np.all(d[:, 0] >= 2.0)
    assert np.all(coord >= 3)


def test_surface_move_puts_an_adatom_into_a_hollow(rng):
    ico = Icosahedron("Pt", 3)
    ico.positions -= ico.positions.mean(axis=0)
    top = ico.positions[np.argmax(ico.positions[:, 2])]
    atoms = ico + Atoms("Pt", positions=[top + [0, 0, 2.77]])  # on-top adatom, 1 neighbour
    cn_before = coordination_numbers(atoms.positions, 1.2 * 2.77)
    assert cn_before[-1] == 1
    gained = 0
    for seed in range(10):
        (m,) = SurfaceMoveMutation(np.random.default_rng(seed), 2.0, nn_distance=2.77)(atoms.copy())
        cn = coordination_numbers(m.positions, 1.2 * 2.77)
        gained += cn.min() >= 3  # the 1-coordinated adatom is gone
    assert gained >= 7


def test_image_guided_move_lowers_chi2():
    from surrogate import ConvolutionParameters, ProbeGrid, convolution_image

    rng = np.random.default_rng(5)
    ico = Icosahedron("Pt", 3)
    ico.positions -= ico.positions.mean(axis=0)
    sites, _ = hollow_sites(ico.positions, 2.77, rng, min_distance=2.2)
    # truth: an adatom in one hollow; candidate: the adatom in the hollow farthest away in projection
    truth = ico + Atoms("Pt", positions=[sites[np.argmax(sites[:, 0])]])
    cand = ico + Atoms("Pt", positions=[sites[np.argmin(sites[:, 0])]])
    params = ConvolutionParameters(pixel_size=0.2, cross_section=None)
    grid = ProbeGrid.around(truth, pixel_size=0.2)
    exp = convolution_image(truth, grid, params)

    def difference(atoms):  # same frame: no alignment needed
        return convolution_image(atoms, grid, params) - exp, grid

    def chi2(atoms):
        return float(np.sum(difference(atoms)[0] ** 2))

    before = chi2(cand)
    better = 0
    for seed in range(6):
        (m,) = ImageGuidedMutation(np.random.default_rng(seed), 2.0, difference, nn_distance=2.77)(cand.copy())
        better += chi2(m) < 0.5 * before
    assert better >= 5


def test_mutation_selector_follows_weights(rng):
    class Tag:
        def __init__(self, name):
            self.name = name

        def __call__(self, ind):
            ind.append(self.name)
            return (ind,)

    sel = MutationSelector(rng, [(3.0, Tag("a")), (1.0, Tag("b")), (0.0, Tag("never"))])
    picks = [sel([])[0][0] for _ in range(2000)]
    assert "never" not in picks
    assert 0.70 < picks.count("a") / len(picks) < 0.80
    with pytest.raises(InputError):
        MutationSelector(rng, [(0.0, Tag("x"))])


def test_operators_need_a_generator():
    with pytest.raises(TypeError):
        RattleMutation(np.random.RandomState(0), 2.0)
    with pytest.raises(InputError):
        RattleMutation(np.random.default_rng(0), -1.0)


def test_local_relaxation_lowers_emt_energy(rng):
    from asap3 import EMT

    a = random_cluster({"Pt": 38}, rng)
    toy = ToyFitness(a)
    e0 = toy.energy(a)
    relaxed = a.copy()
    LocalRelaxation(EMT, steps=15, min_distance=D_MIN, rng=rng)(relaxed)
    assert toy.energy(relaxed) < e0 - 1.0
    assert relaxed.calc is None and relaxed.cell.rank == 0
    assert min_interatomic_distance(relaxed.positions) >= D_MIN * (1 - 1e-6)


def test_fingerprint_and_similarity(rng):
    a = shape_cluster({"Pt": 55}, "icosahedron", rng)
    a.info["cost"] = 10.0
    rotated = a.copy()
    rotated.rotate(40, "x", center="COM")
    rotated.positions += 3.0
    rotated.positions = rotated.positions[rng.permutation(55)]
    fp = Fingerprint()
    assert np.allclose(fp(a), fp(rotated))
    same = SimilarityCriterion(cost_tol=1e-4, fingerprint_tol=0.03)
    assert same(a, rotated)
    other_cost = rotated.copy()
    other_cost.info["cost"] = 11.0
    assert not same(a, other_cost)
    rattled = a.copy()
    rattled.positions += rng.normal(scale=0.2, size=(55, 3))
    assert not same(a, rattled)
    assert diversity([a, rotated]) == pytest.approx(0.0, abs=1e-9)
    assert diversity([a, rattled]) > 0.03


def test_image_guided_move_finds_the_missing_atom_in_noise():
    # the same adatom problem on a noisy image: picking raw pixels ∝ (−diff)² mostly picks noise,
    # the matched filter (smooth ≈ the PSF) picks the atom-sized dark blob
    from surrogate import ConvolutionParameters, ProbeGrid, convolution_image

    rng = np.random.default_rng(5)
    ico = Icosahedron("Pt", 3)
    ico.positions -= ico.positions.mean(axis=0)
    sites, _ = hollow_sites(ico.positions, 2.77, rng, min_distance=2.2)
    target = sites[np.argmax(sites[:, 0])]
    truth = ico + Atoms("Pt", positions=[target])
    cand = ico + Atoms("Pt", positions=[sites[np.argmin(sites[:, 0])]])
    params = ConvolutionParameters(pixel_size=0.1, cross_section=None)
    grid = ProbeGrid.around(truth, pixel_size=0.1)
    clean = convolution_image(truth, grid, params)
    exp = clean + rng.normal(0.0, 0.05 * clean.max(), clean.shape)

    def difference(atoms):
        return convolution_image(atoms, grid, params) - exp, grid

    def near_target(atoms):
        return int(np.count_nonzero(np.hypot(*(atoms.positions[:, :2] - target[:2]).T) < 0.7))

    def hits(smooth):
        n = 0
        for seed in range(12):
            op = ImageGuidedMutation(np.random.default_rng(seed), 2.0, difference, nn_distance=2.77, smooth=smooth)
            (m,) = op(cand.copy())
            n += near_target(m) > near_target(cand)  # an atom was put into the dark blob's column
        return n

    raw, filtered = hits(0.0), hits(0.3)
    assert filtered >= 8 and filtered > raw


def test_interior_vacancy_is_found_and_filled_by_the_sweep():
    from ase.cluster import Icosahedron

    from refine.search.sites import interior_vacancies
    from refine.search.sweeps import fill_vacancies

    truth = Icosahedron("Pt", 3)  # 55 atoms, ideal: no vacancy
    pos = truth.positions - truth.positions.mean(axis=0)
    assert len(interior_vacancies(pos, 2.77)) == 0
    centre = int(np.argmin(np.linalg.norm(pos, axis=1)))
    start = truth.copy()
    p = pos.copy()
    p[centre] = p[np.argmax(p[:, 2])] + [0.0, 0.0, 2.77]  # the centre atom becomes an adatom on top
    start.positions = p
    sites = interior_vacancies(p, 2.77)
    assert len(sites) == 1 and np.linalg.norm(sites[0]) < 0.3  # the empty centre, nothing else

    def cost(atoms):  # distance to the ideal particle: lowest when the centre is filled again
        from scipy.spatial import cKDTree

        return float(np.sum(cKDTree(atoms.positions).query(pos)[0] ** 2))

    calls = []
    best, best_cost, n_trials, n_accepted = fill_vacancies(start, lambda a: calls.append(1), cost, 2.77)
    assert n_accepted == 1 and n_trials == len(calls) >= 1
    assert best_cost < 1e-12 and cost(start) > 1.0
    np.testing.assert_array_equal(start.positions, p)  # the input is not changed
    assert len(interior_vacancies(best.positions, 2.77)) == 0
