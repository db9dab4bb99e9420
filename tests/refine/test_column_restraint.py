"""Relaxation with every atom tied to its column (refine.search.column_restraint)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree
from ase.cluster import Octahedron

from refine.cost import make_calculator
from refine.search.column_restraint import ColumnRestraint, relax_in_columns
from surrogate.common import InputError


def _emt():
    return make_calculator("auto", ("Pt",))


def _energy(atoms, calc=None):
    a = atoms.copy()
    a.cell = np.diag(np.ptp(a.positions, axis=0) + 20.0)
    a.calc = calc if calc is not None else _emt()
    return float(a.get_potential_energy())


@pytest.fixture(scope="module")
def strained():
    """A Pt octahedron whose atoms are pushed sideways (x, y) and along the beam (z) off their sites."""
    atoms = Octahedron("Pt", 4, cutoff=1)
    atoms.positions -= atoms.positions.mean(axis=0)
    rng = np.random.default_rng(3)
    atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
    atoms.cell = np.zeros((3, 3))
    return atoms


def test_the_spring_adds_half_k_d_squared_per_atom(strained):
    anchors = strained.positions[:, :2] + np.array([0.1, -0.2])  # every atom 0.1, 0.2 Å off its anchor
    k = 3.0
    restrained = _energy(strained, ColumnRestraint(_emt(), anchors, k))
    assert restrained - _energy(strained) == pytest.approx(0.5 * k * len(strained) * (0.1**2 + 0.2**2), rel=1e-9)


def test_the_forces_are_minus_the_gradient_of_the_restrained_energy(strained, numerical_force):
    anchors = strained.positions[:, :2] + np.random.default_rng(0).normal(scale=0.2, size=(len(strained), 2))
    a = strained.copy()
    a.cell = np.diag(np.ptp(a.positions, axis=0) + 20.0)
    a.calc = ColumnRestraint(_emt(), anchors, 2.0)
    forces = a.get_forces()
    for i, c in [(0, 0), (5, 1), (11, 2)]:
        assert numerical_force(a, i, c) == pytest.approx(forces[i, c], abs=1e-4)


def test_a_stiff_spring_keeps_the_columns_and_a_soft_one_buys_energy(strained):
    e0 = _energy(strained)
    stiff = relax_in_columns(strained, _emt(), stiffness=200.0)
    soft = relax_in_columns(strained, _emt(), stiffness=0.2)
    shift = lambda r: np.linalg.norm(r.positions[:, :2] - strained.positions[:, :2], axis=1).max()  # noqa: E731
    # the sideways force on a 0.15 Å-rattled atom is a few eV/Å: k = 200 eV/Å² holds it within a few 0.01 Å
    assert shift(stiff) < 0.05 and shift(soft) > 0.2
    assert stiff.info["column_shift_max"] == pytest.approx(shift(stiff))
    # along the beam the stiff spring leaves the atoms free: they did move, and the energy fell
    assert np.abs(stiff.positions[:, 2] - strained.positions[:, 2]).max() > 0.05
    assert _energy(soft) < _energy(stiff) < e0
    assert stiff.calc is None and len(stiff) == len(strained) and stiff.info["column_stiffness"] == 200.0


def test_no_steps_is_a_plain_copy_and_bad_settings_are_input_errors(strained):
    same = relax_in_columns(strained, _emt(), steps=0)
    np.testing.assert_array_equal(same.positions, strained.positions)
    assert same is not strained
    with pytest.raises(InputError, match="stiffness"):
        relax_in_columns(strained, _emt(), stiffness=0.0)
    with pytest.raises(InputError, match="stiffness"):
        ColumnRestraint(_emt(), strained.positions[:, :2], float("nan"))
    with pytest.raises(InputError, match="steps"):
        relax_in_columns(strained, _emt(), steps=-1)


def test_sliding_columns_along_the_beam_finds_the_compact_stacking_and_keeps_every_count():
    """A [110] octahedron with two columns pushed out of it by whole periods: the slides put them back."""
    from refine.analysis.cross_sections import projected_columns
    from refine.search.column_restraint import slide_columns

    atoms = Octahedron("Pt", 5, cutoff=1)
    atoms.rotate([1, 1, 0], [0, 0, 1])
    atoms.positions -= atoms.positions.mean(axis=0)
    centres, heights, label = projected_columns(atoms.positions, tolerance=0.8)
    period = 3.92 / np.sqrt(2)
    pushed = atoms.copy()
    middle = np.argsort(np.linalg.norm(centres, axis=1))[:2]  # two central columns, out by two periods
    for c, sign in zip(middle, (1, -1)):
        pushed.positions[label == c, 2] += sign * 2 * period
    start = relax_in_columns(pushed, _emt())
    e_ideal = _energy(relax_in_columns(atoms, _emt()))
    assert _energy(start) > e_ideal + 2.0  # the pushed columns cost eV
    centres, heights, _ = projected_columns(start.positions, tolerance=0.8)  # relaxed: the surface contracts
    for seed in range(3):
        slid = slide_columns(start, _emt(), np.random.default_rng(seed))
        assert _energy(slid) < e_ideal + 0.2 and slid.info["column_slides"] >= 2
        # the projection is untouched: the same columns with the same heights
        c2, h2, lab2 = projected_columns(slid.positions, tolerance=0.8)
        d, k = cKDTree(c2).query(centres)
        assert len(c2) == len(centres) and d.max() < 0.1
        np.testing.assert_array_equal(h2[k], heights)
