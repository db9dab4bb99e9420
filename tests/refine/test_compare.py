"""Structure comparison: alignment, assignment, displacement statistics, columns, coordination."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Decahedron, Icosahedron, Octahedron
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from refine.analysis import (
    align_structures,
    column_counts,
    compare_structures,
    coordination_numbers,
    plot_comparison,
)
from surrogate.common.errors import InputError


@pytest.fixture
def seed():
    return 20261125


def _plain(atoms):
    return Atoms(atoms.get_chemical_symbols(), positions=atoms.positions.copy())


def _disordered(n_shells=4, sigma=0.25, seed=0):
    """An icosahedron with random displacements: no symmetry, not superposable on its mirror image."""
    a = _plain(Icosahedron("Pt", n_shells))
    a.positions += np.random.default_rng(seed).normal(0.0, sigma, a.positions.shape)
    return a


def _moved_copy(truth, rng, *, n_displaced=0, step=1.0, mirror=False):
    """Rotated, translated, permuted copy with ``n_displaced`` atoms moved by ``step`` Å.

    Returns the copy and the indices (in the copy's order) of the displaced atoms.
    """
    n = len(truth)
    pos = truth.positions.copy()
    moved = rng.choice(n, n_displaced, replace=False)
    v = rng.normal(size=(n_displaced, 3))
    pos[moved] += step * v / np.linalg.norm(v, axis=1)[:, None]
    perm = rng.permutation(n)
    R = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
    if mirror:
        R = R @ np.diag([1.0, 1.0, -1.0])
    copy = Atoms(np.asarray(truth.get_chemical_symbols())[perm], positions=pos[perm] @ R.T + rng.normal(0, 20, 3))
    displaced = np.flatnonzero(np.isin(perm, moved))
    return copy, displaced


def test_self_comparison_is_exact():
    truth = _plain(Icosahedron("Pt", 4))
    c = compare_structures(truth.copy(), truth)
    assert len(truth) == 147
    assert c.rmsd < 1e-6
    assert c.max_displacement < 1e-6
    assert c.within == {0.3: 1.0, 0.5: 1.0, 1.0: 1.0}
    assert np.array_equal(c.truth_index, np.arange(len(truth)))
    assert c.columns.fraction_equal == 1.0
    ht, hr = c.coordination.histograms()
    assert np.array_equal(ht, hr) and c.coordination.fraction_same == 1.0


@pytest.mark.parametrize("make", [lambda: Octahedron("Pt", 6, 1), lambda: Decahedron("Pt", 3, 1, 1)], ids=["octa140", "deca100"])
def test_finds_exactly_the_displaced_five_percent(make, seed):
    truth = _plain(make())
    n = len(truth)
    assert n % 20 == 0
    rng = np.random.default_rng(seed)
    moved, displaced = _moved_copy(truth, rng, n_displaced=n // 20)
    c = compare_structures(moved, truth)
    assert set(c.displaced(0.5).tolist()) == set(displaced.tolist())
    assert set(np.flatnonzero(c.displacements > 0.3).tolist()) == set(displaced.tolist())
    assert c.within[0.3] == pytest.approx(0.95)
    assert c.within[0.5] == pytest.approx(0.95)
    assert c.within[1.0] >= 0.95
    # the displaced atoms stay ~1 Å off, the rest sit almost exactly on their sites
    assert np.all(np.abs(c.displacements[displaced] - 1.0) < 0.15)
    rest = np.setdiff1d(np.arange(n), displaced)
    assert c.displacements[rest].max() < 0.15
    assert c.rmsd == pytest.approx(np.sqrt(0.05), rel=0.15)
    # the aligned structure carries the per-atom results and sits in the truth's frame
    assert np.allclose(c.aligned.arrays["displacement"], c.displacements)
    j = c.truth_index[rest]
    assert np.allclose(c.aligned.positions[rest], truth.positions[j], atol=0.15)


def test_asymmetric_particle_permuted_rotated(seed):
    truth = _disordered(5, seed=1)  # 309 atoms, no symmetry to fall back on
    rng = np.random.default_rng(seed)
    for _ in range(3):
        moved, displaced = _moved_copy(truth, rng, n_displaced=15)
        c = compare_structures(moved, truth)
        assert set(c.displaced(0.5).tolist()) == set(displaced.tolist())


def test_misplaced_atoms_do_not_make_the_others_look_displaced(seed):
    """10 % of the atoms put in wrong places far away: exactly those are reported displaced.

    Least squares would match them through chains of shifted partners and
    tilt the alignment towards them; the robust loss does neither.
    """
    truth = _disordered(5, sigma=0.1, seed=6)
    rng = np.random.default_rng(seed)
    n = len(truth)
    wrong = rng.choice(n, n // 10, replace=False)
    pos = truth.positions.copy()
    centre = pos.mean(axis=0)
    radius = np.linalg.norm(pos - centre, axis=1).max()
    for i in wrong:  # a random point in the particle's outer shell, far from the atom's own site
        while True:
            v = rng.normal(size=3)
            p = centre + v / np.linalg.norm(v) * rng.uniform(0.6, 1.1) * radius
            if np.linalg.norm(p - pos[i]) > 4.0:
                break
        pos[i] = p
    refined = Atoms(truth.get_chemical_symbols(), positions=pos)
    refined, _ = _moved_copy(refined, rng)  # rotate, translate, permute (no further displacement)
    # indices of the misplaced atoms in the copy's order: the copy keeps atoms' identity via positions
    c = compare_structures(refined, truth)
    assert len(c.displaced(0.5)) == len(wrong)
    assert set(c.truth_index[c.displaced(0.5)].tolist()) == set(wrong.tolist())
    assert c.within[0.5] == pytest.approx(1 - len(wrong) / n)
    ls = compare_structures(refined, truth, robust=False)
    assert ls.within[0.5] < c.within[0.5]
    assert ls.rmsd <= c.rmsd + 1e-9  # least squares is the RMSD optimum


def test_mirror_image_matches_only_with_mirror(seed):
    truth = _disordered(4, seed=2)
    mirrored, _ = _moved_copy(truth, np.random.default_rng(seed), mirror=True)
    c = compare_structures(mirrored, truth, mirror=True)
    assert c.mirrored
    assert c.rmsd < 1e-6
    assert np.linalg.det(c.alignment.rotation) == pytest.approx(-1.0)
    strict = compare_structures(mirrored, truth, mirror=False)
    assert not strict.mirrored
    assert strict.rmsd > 0.2


def test_beam_mode_only_rotates_about_z():
    truth = _disordered(4, seed=3)
    theta = 1.1
    Rz = Rotation.from_euler("z", theta).as_matrix()
    turned = Atoms(truth.get_chemical_symbols(), positions=truth.positions @ Rz.T + [3.0, -2.0, 7.0])
    c = compare_structures(turned, truth, rotation="beam")
    assert c.rmsd < 1e-6
    # a 30° tilt away from the beam cannot be undone by rotations about z ...
    tilt = Rotation.from_euler("x", 0.5).as_matrix()
    tilted = Atoms(truth.get_chemical_symbols(), positions=truth.positions @ tilt.T)
    assert compare_structures(tilted, truth, rotation="beam").rmsd > 0.5
    # ... but by a full rotation
    assert compare_structures(tilted, truth, rotation="full").rmsd < 1e-6
    # the beam-mode mirror is the projection ambiguity z -> -z
    flipped = Atoms(truth.get_chemical_symbols(), positions=truth.positions * [1, 1, -1])
    cf = compare_structures(flipped, truth, rotation="beam")
    assert cf.mirrored and cf.rmsd < 1e-6
    assert compare_structures(flipped, truth, rotation="beam", mirror=False).rmsd > 0.2


def test_different_composition_is_refused_clearly():
    truth = _plain(Icosahedron("Pt", 3))
    fewer = truth[:-3]
    with pytest.raises(InputError, match=r"different compositions.*Pt52.*Pt55"):
        compare_structures(fewer, truth)
    alloy = truth.copy()
    alloy.symbols[:5] = "Mo"
    with pytest.raises(InputError, match="Mo5Pt50"):
        compare_structures(alloy, truth)
    with pytest.raises(InputError, match="no atoms"):
        compare_structures(Atoms(), truth)


def test_unmatched_atoms_are_reported(seed):
    truth = _disordered(4, seed=4)
    rng = np.random.default_rng(seed)
    removed = np.sort(rng.choice(len(truth), 4, replace=False))
    keep = np.setdiff1d(np.arange(len(truth)), removed)
    fewer, _ = _moved_copy(truth[keep], rng)
    c = compare_structures(fewer, truth, allow_unmatched=True)
    assert np.array_equal(c.unmatched_truth, removed)
    assert len(c.unmatched_refined) == 0
    assert c.rmsd < 1e-6
    # fractions are of the truth's atoms: the 4 missing ones are not "within"
    assert c.within[0.3] == pytest.approx(len(keep) / len(truth))
    more = compare_structures(truth, fewer, allow_unmatched=True)
    assert len(more.unmatched_refined) == 4 and np.all(np.isnan(more.displacements[more.unmatched_refined]))


def test_alloy_assignment_is_per_element(seed):
    truth = _disordered(4, seed=5)
    rng = np.random.default_rng(seed)
    truth.symbols[rng.choice(len(truth), 20, replace=False)] = "Mo"
    moved, _ = _moved_copy(truth, rng)
    c = compare_structures(moved, truth)
    assert c.rmsd < 1e-6
    assert np.array_equal(np.asarray(moved.get_chemical_symbols()), np.asarray(truth.get_chemical_symbols())[c.truth_index])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mirror=st.booleans())
def test_rigid_copies_always_align_exactly(seed, mirror):
    truth = _plain(Decahedron("Pt", 3, 2, 0))
    truth.positions += np.random.default_rng(seed).normal(0, 0.05, truth.positions.shape)
    moved, _ = _moved_copy(truth, np.random.default_rng(seed + 1), mirror=mirror)
    al = align_structures(moved, truth)
    assert al.rmsd < 1e-6


def test_column_counts_follow_the_beam():
    # three columns along z with 3, 2 and 1 atoms; the refined structure moves one
    # atom from the first column to a new column and one into the third
    truth = np.array([[0, 0], [0, 0.05], [0.02, 0], [2.5, 0], [2.5, 0.01], [0, 2.5]])
    refined = np.array([[0, 0], [0.1, 0], [2.5, 0], [2.52, 0], [0, 2.5], [0.1, 2.45], [5, 5]])
    cc = column_counts(truth, refined, tolerance=0.5)
    got = {(round(x), round(y)): (a, b) for (x, y), a, b in zip(cc.xy, cc.n_truth, cc.n_refined)}
    assert got == {(0, 0): (3, 2), (2, 0): (2, 2), (0, 2): (1, 2), (5, 5): (0, 1)} or got == {
        (0, 0): (3, 2), (3, 0): (2, 2), (0, 3): (1, 2), (5, 5): (0, 1)}
    assert cc.fraction_equal == pytest.approx(1 / 3)
    assert cc.mean_abs_difference == pytest.approx(3 / 4)


def test_column_counts_of_a_zone_axis_particle():
    # fcc octahedron seen along [001]: columns of atoms sharing (x, y)
    truth = _plain(Octahedron("Pt", 5))
    c = compare_structures(truth.copy(), truth, rotation="none")
    xy = np.round(truth.positions[:, :2], 3)
    _, counts = np.unique(xy, axis=0, return_counts=True)
    assert sorted(c.columns.n_truth.tolist()) == sorted(counts.tolist())
    assert c.columns.n_truth.sum() == len(truth)


def test_coordination_numbers_of_a_13_atom_icosahedron():
    cn = coordination_numbers(_plain(Icosahedron("Pt", 2)))
    assert sorted(cn.tolist()) == [6] * 12 + [12]
    # an explicit cutoff below the nearest-neighbour distance finds no bonds
    assert coordination_numbers(_plain(Icosahedron("Pt", 2)), cutoff=2.0).sum() == 0


def test_comparison_to_dict_and_figure(tmp_path, seed):
    truth = _plain(Octahedron("Pt", 6, 1))
    moved, displaced = _moved_copy(truth, np.random.default_rng(seed), n_displaced=7)
    c = compare_structures(moved, truth)
    d = c.to_dict(per_atom=True)
    for key in ("rmsd", "max_displacement", "within_0.3", "within_0.5", "within_1.0"):
        assert key in d
    assert d["within_0.3"] == pytest.approx(0.95)
    assert sorted(i for i, v in enumerate(d["displacements"]) if v > 0.5) == sorted(displaced.tolist())
    png = tmp_path / "sub" / "compare.png"
    plot_comparison(c, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*"))  # no temporary file left behind


def test_comparison_of_600_atoms_is_fast(seed):
    truth = _plain(Icosahedron("Pt", 6))  # 561 atoms
    moved, _ = _moved_copy(truth, np.random.default_rng(seed), n_displaced=28)
    compare_structures(moved, truth)  # warm-up (caches the rotation grid)
    t = time.perf_counter()
    compare_structures(moved, truth)
    # ~0.2-0.5 s on one free core; generous for a shared machine
    assert time.perf_counter() - t < 3.0
