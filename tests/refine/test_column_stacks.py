"""Column stacks: whole columns annealed on a coordination proxy, with the image's count evidence."""

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from refine.search.column_stacks import ColumnStacks, anneal_stacks, count_evidence, settle_columns
from surrogate.common import InputError
from surrogate.groundtruth.particles import LATTICE_CONSTANTS

NN = LATTICE_CONSTANTS["Pt"] / np.sqrt(2.0)


def _particle(n=201):
    """An fcc Pt truncated octahedron with [110] along z (columns along the beam, atoms one bond apart)."""
    from surrogate.groundtruth.particles import crystalline_particle

    atoms = crystalline_particle("truncated_octahedron", n, np.random.default_rng(0), symbol="Pt")
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]])
    return Atoms(atoms.get_chemical_symbols(), positions=rot.apply(atoms.positions))


def _coordination(positions):
    tree = cKDTree(positions)
    return np.array([len(x) - 1 for x in tree.query_ball_point(positions, 1.2 * NN)])


def _proxy(positions):
    return -np.sqrt(_coordination(positions)).sum()


def _sorted(p):
    return p[np.lexsort(np.round(p, 3).T)]


def test_stacks_give_back_the_structure_and_its_coordination():
    atoms = _particle()
    st = ColumnStacks.from_atoms(atoms, NN)
    assert st.counts.sum() == len(atoms)
    assert st.period == pytest.approx(NN, rel=1e-6)
    np.testing.assert_allclose(_sorted(st.positions()), _sorted(atoms.positions), atol=1e-6)
    assert st.proxy_energy() == pytest.approx(_proxy(atoms.positions))


def test_moves_keep_the_coordination_bookkeeping_exact():
    st = ColumnStacks.from_atoms(_particle(), NN)
    anneal_stacks(st, np.random.default_rng(1), moves=400, temperatures=(50.0, 50.0))  # hot: most moves accepted
    occupied = np.flatnonzero(st.occupied[:-1])
    assert len(occupied) == st.counts.sum()
    assert st.proxy_energy() == pytest.approx(_proxy(st.positions()))


def test_slides_bring_a_displaced_column_back_and_keep_every_count():
    atoms = _particle()
    st = ColumnStacks.from_atoms(atoms, NN)
    ideal = st.proxy_energy()
    counts = st.counts.copy()
    inner = int(np.argmax(st.counts))  # the tallest column, displaced by three periods
    moved = ColumnStacks(st.centres, st.fraction, st.first + 3 * (np.arange(len(counts)) == inner), counts,
                         st.period, NN)
    assert moved.proxy_energy() > ideal + 1.0
    out = anneal_stacks(moved, np.random.default_rng(0))
    np.testing.assert_array_equal(moved.counts, counts)
    assert out["transfers"] == 0
    assert moved.proxy_energy() == pytest.approx(ideal)


def _table(stacks, reading, steps=1.0):
    """A count table whose every column reads ``reading`` atoms on a linear library."""
    from refine.analysis.cross_sections import CountTable

    n_max = int(stacks.counts.max()) + 3
    return CountTable(xy=stacks.centres, atoms_3d=stacks.counts.copy(), atoms_image=np.rint(reading).astype(int),
                      cross_section=np.asarray(reading, float) * steps,
                      library=np.tile(np.arange(n_max + 1) * steps, (len(reading), 1)), scale=1.0)


def test_count_evidence_is_the_weighted_squared_distance_in_atoms():
    st = ColumnStacks.from_atoms(_particle(), NN)
    reading = st.counts + 0.5 * (np.arange(len(st.counts)) % 2)
    perm = np.random.default_rng(0).permutation(len(st.counts))  # columns asked in another order
    ev = count_evidence(_table(st, reading, steps=7.0), st.centres[perm], 2.0)
    n = np.arange(ev.shape[1])
    np.testing.assert_allclose(ev, 2.0 * (reading[perm][:, None] - n[None, :]) ** 2)


def test_an_unsure_count_goes_where_the_energy_wants_it():
    """An ad-atom on top of the tallest column and a missing end atom elsewhere: where the image reads both
    columns half-way, the anneal moves the atom back; where it reads them clearly, the counts stay."""
    atoms = _particle()
    st = ColumnStacks.from_atoms(atoms, NN)
    ideal_counts, ideal_first = st.counts.copy(), st.first.copy()
    top = int(np.argmax(st.counts))
    edge = int(np.argmin(np.where(st.counts > 3, st.counts, 99)))
    counts = ideal_counts.copy()
    counts[top] += 1
    counts[edge] -= 1
    unsure = counts.astype(float)
    unsure[[top, edge]] = ideal_counts[[top, edge]] + np.array([0.5, -0.5])  # half-way: no preference
    for reading, back in ((unsure, True), (counts, False)):
        rough = ColumnStacks(st.centres, st.fraction, ideal_first, counts, st.period, NN)
        e0 = rough.proxy_energy()
        anneal_stacks(rough, np.random.default_rng(2), evidence=count_evidence(_table(rough, reading), rough.centres, 5.0))
        assert rough.counts.sum() == ideal_counts.sum()
        if back:
            np.testing.assert_array_equal(rough.counts, ideal_counts)
            assert rough.proxy_energy() < e0
        else:
            np.testing.assert_array_equal(rough.counts, counts)


def test_settle_columns_keeps_the_atoms_and_refuses_bad_weights():
    atoms = _particle()
    atoms.numbers[::3] = 78 - 1  # Ir on every third atom: the species are kept as a multiset
    out = settle_columns(atoms, None, None, np.random.default_rng(0), weight=np.inf, nn_distance=NN)
    assert len(out) == len(atoms)
    assert sorted(out.numbers) == sorted(atoms.numbers)
    assert out.info["column_settle"]["columns_recounted"] == 0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="count weight"):
            settle_columns(atoms, None, None, np.random.default_rng(0), weight=bad, nn_distance=NN)


def test_refine_settles_the_counted_start_as_asked(tmp_path, caplog):
    """``--count-weight`` reaches the counted start: settled with counts kept (inf), or left as counted and slid
    along the beam on EMT (none); a settled start is not slid on EMT afterwards."""
    import json
    import sys
    from pathlib import Path

    from refine.cli.main import main

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from zone_axis_case import zone_axis_case

    atoms, _, image = zone_axis_case()
    path = tmp_path / "image.npy"
    np.save(path, image.data)
    for weight, settled in (("inf", True), ("none", False)):
        out = tmp_path / weight
        caplog.clear()
        with caplog.at_level("INFO"):
            assert main(["refine", str(path), "-c", f"Pt{len(atoms)}", "--pixel-size", str(image.pixel_size),
                         "--start", "counts", "--generations", "0", "--population", "4", "-o", str(out),
                         "--count-weight", weight, "--no-progress"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["count_weight"] == (weight if settled else None)
        messages = [r.getMessage() for r in caplog.records if "settled on its columns" in r.getMessage()]
        assert len(messages) == (1 if settled else 0)
        slid = [r for r in caplog.records if "slides along the beam accepted" in r.getMessage()]
        assert len(slid) == (0 if settled else 1)
        if settled:
            assert "0 of" in messages[0] and "changed their count" in messages[0]  # inf: no count moves


def test_the_count_weight_of_a_manifest_or_the_api_is_checked_at_the_boundary():
    from refine.workflows.inputs import validate_count_weight

    assert validate_count_weight(None) is None and validate_count_weight("none") is None
    assert validate_count_weight("inf") == np.inf and validate_count_weight(2) == 2.0
    for bad in (0, -1.0, "x", True, float("nan")):
        with pytest.raises(InputError, match="count_weight"):
            validate_count_weight(bad)


def test_each_settling_round_reads_the_evidence_off_the_last_rounds_structure(monkeypatch):
    """Round 2 counts the structure round 1 left (relaxed), not the input; ``inf`` has nothing to read: one round."""
    import refine.analysis.cross_sections as cross_sections

    atoms = _particle()
    asked = []

    def table_of(structure, image, model, scale):
        asked.append(structure.positions.copy())
        st = ColumnStacks.from_atoms(structure, NN)
        return _table(st, st.counts + 0.5)  # every column half-way: the energy decides

    def relax(a):  # a stand-in relaxation that leaves a mark: the structure it returns is not the annealed one
        out = a.copy()
        out.positions[:, 2] += 0.01
        return out

    monkeypatch.setattr(cross_sections, "column_count_table", table_of)
    out = settle_columns(atoms, None, None, np.random.default_rng(0), weight=3.0, relax=relax, nn_distance=NN,
                         rounds=2)
    assert len(asked) == 2
    assert np.allclose(_sorted(asked[0]), _sorted(atoms.positions))
    assert not np.allclose(_sorted(asked[1]), _sorted(asked[0]))

    def phase(z):  # Å, where the sites sit modulo half a period (both sublattices)
        return np.angle(np.mean(np.exp(2j * np.pi * z / (NN / 2)))) * (NN / 2) / (2 * np.pi)

    assert phase(asked[1][:, 2]) - phase(atoms.positions[:, 2]) == pytest.approx(0.01, abs=1e-6)  # relaxed, round 1
    assert out.info["column_settle"]["rounds"] == 2 and len(out) == len(atoms)
    asked.clear()
    out = settle_columns(atoms, None, None, np.random.default_rng(0), weight=np.inf, nn_distance=NN, rounds=3)
    assert asked == [] and out.info["column_settle"]["rounds"] == 1
    for bad in (0, 1.5, -2):
        with pytest.raises(InputError, match="rounds"):
            settle_columns(atoms, None, None, np.random.default_rng(0), weight=3.0, nn_distance=NN, rounds=bad)
