"""Particle generators and the Pt / Pt–Mo energies."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from surrogate.common.errors import InputError
from surrogate.groundtruth.particles import (CRYSTALLINE_FAMILIES, MIN_DISTANCE, energy_calculator, make_particle,
                                 minimum_distance)


@pytest.mark.parametrize("family", CRYSTALLINE_FAMILIES)
def test_crystalline_exact_size_composition_and_distance(family, rng):
    atoms = make_particle(family, 157, rng, mo_fraction=0.05)
    assert len(atoms) == 157
    assert atoms.get_chemical_symbols().count("Mo") == round(0.05 * 157)
    assert minimum_distance(atoms) >= MIN_DISTANCE
    assert atoms.info["family"] == family
    # crystalline: nearest neighbours at the Pt bulk distance
    assert minimum_distance(atoms) == pytest.approx(3.924 / np.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("axis, spacing", [("110", 3.924 / np.sqrt(2)), ("100", 3.924)])
def test_column_rod_has_tall_columns_along_the_beam(axis, spacing):
    from collections import Counter

    from surrogate.groundtruth.particles import column_rod

    for seed in range(3):
        atoms = column_rod(150, np.random.default_rng(seed), axis=axis, heights=(10, 14))
        assert len(atoms) == 150 and atoms.info["axis"] == axis
        height = atoms.info["column_height"]
        assert 10 <= height <= 14
        pos = atoms.positions
        assert minimum_distance(atoms) == pytest.approx(3.924 / np.sqrt(2), abs=1e-6)  # an ideal crystal
        # atoms share x, y in columns along z, one lattice period apart; the tallest hold the drawn height
        columns = Counter(map(tuple, np.round(pos[:, :2], 3)))
        assert max(columns.values()) == height
        for xy, count in columns.items():
            if count > 1:
                z = np.sort(pos[np.all(np.isclose(pos[:, :2], xy, atol=2e-3), axis=1), 2])
                np.testing.assert_allclose(np.diff(z), spacing, atol=1e-6)
        # a rod, not a blob: far longer along the beam than across
        assert np.ptp(pos[:, 2]) > 1.5 * np.ptp(pos[:, :2], axis=0).max()
    with pytest.raises(InputError, match="axis"):
        column_rod(150, np.random.default_rng(0), axis="111")


def test_column_rod_is_a_family_of_make_particle(rng):
    atoms = make_particle("column_rod", 120, rng, mo_fraction=0.1)
    assert len(atoms) == 120 and atoms.get_chemical_symbols().count("Mo") == 12
    assert atoms.info["family"] == "column_rod" and atoms.info["axis"] in ("110", "100")
    assert 8 <= atoms.info["column_height"] <= 16
    assert minimum_distance(atoms) >= MIN_DISTANCE


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 1.0])
def test_disordered_alloy_composition_exact(fraction, rng):
    atoms = make_particle("disordered", 80, rng, mo_fraction=fraction, rattle=0.3)
    n_mo = atoms.get_chemical_symbols().count("Mo")
    assert n_mo == round(fraction * 80)
    assert atoms.get_chemical_symbols().count("Pt") == 80 - n_mo
    assert minimum_distance(atoms) >= MIN_DISTANCE


def test_amorphous_quench_keeps_atoms_and_distance(rng):
    atoms = make_particle("amorphous", 60, rng, cooling_rate=1000.0)
    assert len(atoms) == 60
    assert minimum_distance(atoms) >= MIN_DISTANCE
    # still one compact particle: every atom has a neighbour within 3.5 Å
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min(axis=1).max() < 3.5
    # amorphous: the nearest-neighbour distances spread, unlike a crystal
    assert np.std(d.min(axis=1)) > 0.01


def test_seeded_generation_is_reproducible(seed):
    a = make_particle("disordered", 50, np.random.default_rng(seed), mo_fraction=0.2)
    b = make_particle("disordered", 50, np.random.default_rng(seed), mo_fraction=0.2)
    c = make_particle("disordered", 50, np.random.default_rng(seed + 1), mo_fraction=0.2)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    assert not np.allclose(a.positions, c.positions)


def test_bad_requests(rng):
    with pytest.raises(InputError):
        make_particle("dodecahedron", 100, rng)
    with pytest.raises(InputError):
        make_particle("icosahedron", 1, rng)
    with pytest.raises(InputError):
        make_particle("icosahedron", 100, rng, mo_fraction=1.5)
    with pytest.raises(InputError):
        make_particle("icosahedron", 100, 42)  # not a Generator
    with pytest.raises(InputError):
        energy_calculator(["Pt", "U"])


def test_energy_calculator_choice():
    from asap3 import EMT

    from surrogate.groundtruth.eam import ZhouEAM

    assert isinstance(energy_calculator(["Pt"]), EMT)
    assert isinstance(energy_calculator(["Pt", "Mo"]), ZhouEAM)


@pytest.mark.parametrize("element, structure, a0, e_coh", [("Pt", "fcc", 3.92, 5.77), ("Mo", "bcc", 3.15, 6.82)])
def test_zhou_eam_reproduces_published_bulk_properties(element, structure, a0, e_coh):
    from surrogate.groundtruth.eam import ZhouEAM

    lattice = np.linspace(a0 - 0.08, a0 + 0.08, 33)
    energies = []
    for a in lattice:
        atoms = bulk(element, structure, a=a)
        atoms.calc = ZhouEAM([element])
        energies.append(atoms.get_potential_energy() / len(atoms))
    k = int(np.argmin(energies))
    assert lattice[k] == pytest.approx(a0, abs=0.01)
    assert -energies[k] == pytest.approx(e_coh, abs=0.01)


def test_zhou_eam_forces_are_the_energy_gradient(rng, numerical_force):
    from surrogate.groundtruth.eam import ZhouEAM

    atoms = make_particle("cuboctahedron", 40, rng, mo_fraction=0.5)
    atoms.rattle(0.1, rng=rng)
    atoms.calc = ZhouEAM(["Pt", "Mo"])
    forces = atoms.get_forces()
    for i in (0, 7, 21):
        for c in range(3):
            assert numerical_force(atoms, i, c) == pytest.approx(forces[i, c], abs=1e-5)


def test_zhou_eam_periodic_matches_free_neighbour_search():
    from surrogate.groundtruth.eam import ZhouEAM

    atoms = bulk("Pt", "fcc", a=3.92, cubic=True).repeat(3)
    atoms.calc = ZhouEAM(["Pt"])
    e_bulk = atoms.get_potential_energy() / len(atoms)
    free = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)
    free.calc = ZhouEAM(["Pt"])
    assert free.get_potential_energy() / len(free) > e_bulk  # surfaces cost energy
