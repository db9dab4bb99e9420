"""Energy term: asap3 EMT by name, pluggable calculators, reuse, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase.cluster import Icosahedron

from refine.cost.energy import ASAP_EMT_ELEMENTS, Energy, make_calculator
from surrogate.common.errors import InputError


@pytest.fixture
def seed():
    return 7


@pytest.fixture
def ico():
    a = Icosahedron("Pt", 3)  # 55 atoms
    a.center(vacuum=6.0)
    return a


def reference_emt(atoms):
    from asap3 import EMT

    b = atoms.copy()
    b.calc = EMT()
    return b.get_potential_energy()


def test_emt_matches_asap3_and_per_atom(ico):
    e = Energy("emt", ["Pt"])
    assert e(ico) == pytest.approx(reference_emt(ico), rel=1e-12)
    assert Energy("asap-emt", ["Pt"], per_atom=True)(ico) == pytest.approx(reference_emt(ico) / len(ico))


def test_calculator_is_reused_and_tracks_positions(ico, seed):
    e = Energy("auto", ["Pt"])
    calc = e.calculator
    e0 = e(ico.positions, ico.numbers)  # a box-less cluster: Energy gives it one
    rng = np.random.default_rng(seed)
    rattled = ico.positions + rng.normal(0, 0.15, ico.positions.shape)
    e1 = e(rattled, ico.numbers)
    assert e.calculator is calc
    assert e1 > e0  # the ideal icosahedron is a local minimum of EMT; rattling costs energy
    assert e(ico.positions, ico.numbers) == pytest.approx(e0, rel=1e-12)
    # far from the origin the (non-periodic) energy is the same
    assert e(ico.positions + 500.0, ico.numbers) == pytest.approx(e0, rel=1e-10)


def test_species_change_is_picked_up(ico):
    e = Energy("emt", ["Pt", "Au"])
    e_pt = e(ico)
    alloy = ico.copy()
    alloy.numbers[:10] = 79
    assert e(alloy) == pytest.approx(reference_emt(alloy), rel=1e-12)
    assert e(alloy) != pytest.approx(e_pt)


def test_dotted_path_and_instance(ico):
    via_path = Energy("ase.calculators.emt:EMT", ["Pt"])(ico)
    from ase.calculators.emt import EMT

    assert Energy(EMT(), ["Pt"])(ico) == pytest.approx(via_path, rel=1e-12)
    assert Energy("ase.calculators.emt.EMT", ["Pt"])(ico) == pytest.approx(via_path, rel=1e-12)


def test_unknown_element_lists_supported_ones():
    with pytest.raises(InputError) as err:
        make_calculator("emt", ["Pt", "Mo"])
    msg = str(err.value)
    assert "Mo" in msg and all(el in msg for el in ASAP_EMT_ELEMENTS)


def test_auto_uses_the_alloy_potential_or_says_why():
    try:
        calc = make_calculator("auto", ["Pt", "Mo"])
    except InputError as exc:  # no alloy potential available
        assert "Mo" in str(exc)
    else:
        assert hasattr(calc, "get_potential_energy")
        alloy = Icosahedron("Pt", 2)
        alloy.numbers[:3] = 42
        e = Energy("auto", ["Pt", "Mo"])
        assert np.isfinite(e(alloy)) and e.calculator is e.calculator
    with pytest.raises(InputError, match="Xx|unknown element"):
        make_calculator("auto", ["Xx"])
    with pytest.raises(InputError, match="U"):
        make_calculator("auto", ["U"])


@pytest.mark.parametrize("name", ["nonsense", "no.such.module:Calc", "ase.calculators.emt:Nope"])
def test_bad_calculator_names(name):
    with pytest.raises(InputError):
        make_calculator(name, ["Pt"])


def test_pickles_by_name_and_rebuilds(ico):
    e = Energy("emt", ["Pt"])
    e0 = e(ico)
    clone = pickle.loads(pickle.dumps(e))
    assert clone(ico) == pytest.approx(e0, rel=1e-12)


def test_empty_structure_is_refused():
    with pytest.raises(InputError, match="no atoms"):
        Energy("emt", ["Pt"])(np.zeros((0, 3)), np.zeros(0, int))
