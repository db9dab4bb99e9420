"""The start built from the image's own column counts (refine.search.column_start)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from refine.analysis.cross_sections import projected_columns
from refine.search import make_population
from refine.io.peaks import find_columns
from refine.search.column_start import column_sublattices, counted_structure, stack_columns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zone_axis_case import NN, zone_axis_case  # noqa: E402


@pytest.fixture(scope="module")
def zone_axis():
    atoms, _, image = zone_axis_case()
    return atoms, image


def test_the_columns_and_their_sublattices_are_found(zone_axis):
    atoms, image = zone_axis
    xy_true, heights, label = projected_columns(atoms.positions)
    xy, height = find_columns(image, NN)
    assert len(xy) == len(xy_true)
    d, k = cKDTree(xy).query(xy_true)
    assert d.max() < 0.3 and len(set(k)) == len(xy_true)
    assert np.all(np.diff(height) <= 0)  # brightest first
    sub, period = column_sublattices(xy, NN)
    assert period == pytest.approx(NN, abs=0.1)  # [110]: the atoms of a column are nearest neighbours
    # the truth's sublattice of a column: its atoms' z modulo the period, in halves
    parity = np.array([int(np.round((atoms.positions[label == c, 2].min() % NN) / (NN / 2))) % 2
                       for c in range(len(xy_true))])
    found = sub[k]
    assert np.all(found == parity) or np.all(found != parity)  # the same split, up to which half is called 0


def test_stacked_columns_are_centred_on_their_sublattice():
    pos = stack_columns([[0.0, 0.0], [1.0, 0.0]], [3, 4], 2.0, [0, 1])
    np.testing.assert_allclose(pos[:3, 2], [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(pos[3:, 2], [-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_allclose(pos[3:, :2], [[1.0, 0.0]] * 4)


def test_the_counted_structure_has_the_image_counts_and_a_crystal_lattice(zone_axis):
    atoms, image = zone_axis
    from surrogate import default_model

    built = counted_structure(image, default_model(), {"Pt": len(atoms)}, np.random.default_rng(0))
    assert len(built) == len(atoms) and built.info["origin"] == "counts"
    xy_true, heights, _ = projected_columns(atoms.positions)
    xy, counts, _ = projected_columns(built.positions)
    d, k = cKDTree(xy).query(xy_true)
    assert d.max() < 0.3
    assert np.mean(counts[k] == heights) >= 0.9
    # a crystal: every atom has a neighbour one bond away (columns one period apart, sublattices offset by half)
    nearest, _ = cKDTree(built.positions).query(built.positions, k=2)
    assert np.median(nearest[:, 1]) == pytest.approx(NN, abs=0.1)
    assert nearest[:, 1].min() > 0.8 * NN


def test_a_population_of_given_structures_keeps_their_frame_and_rattles_the_copies(zone_axis):
    atoms, _ = zone_axis
    given = atoms.copy()
    given.info["origin"] = "counts"
    pop = make_population(f"Pt{len(atoms)}", 3, np.random.default_rng(0), source=[given], orient=False)
    np.testing.assert_array_equal(pop[0].positions, atoms.positions)  # not centred, not moved
    assert [p.info["origin"] for p in pop] == ["counts"] * 3
    moved = np.linalg.norm(pop[1].positions - atoms.positions, axis=1)
    assert 0.0 < np.median(moved) < 0.5


def test_refine_from_counts_starts_from_the_counted_crystal_relaxed_in_its_columns(zone_axis, tmp_path, caplog):
    """``--start counts --generations 0``: the answer is the counted structure relaxed with column springs."""
    from ase.io import read

    from refine.cli.main import main
    from refine.cost import make_calculator
    from surrogate import default_model

    atoms, image = zone_axis
    path = tmp_path / "image.npy"
    np.save(path, image.data)
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        assert main(["refine", str(path), "-c", f"Pt{len(atoms)}", "--pixel-size", str(image.pixel_size),
                     "--start", "counts", "--generations", "0", "--population", "4", "-o", str(out),
                     "--start-relax-steps", "5", "--no-progress"]) == 0
    # the option relaxes random clusters only: it says so instead of doing nothing silently
    assert any("--start-relax-steps relaxes random starting clusters only" in r.getMessage() for r in caplog.records)
    best = read(out / "best.xyz")
    stacked = counted_structure(image, default_model(), {"Pt": len(atoms)}, np.random.default_rng(0))

    def energy(a):
        a = a.copy()
        a.cell = np.diag(np.ptp(a.positions, axis=0) + 20.0)
        a.calc = make_calculator("auto", ("Pt",))
        return a.get_potential_energy()

    assert energy(best) < energy(stacked) - 0.05 * len(atoms)  # relaxed: well below the stacked lattice
    # and still in the stacked structure's columns: the same heights where the columns are
    xy_s, n_s, _ = projected_columns(stacked.positions)
    xy_b, n_b, _ = projected_columns(best.positions)
    d, k = cKDTree(xy_b).query(xy_s)
    assert np.median(d) < 0.3 and np.mean(n_b[k] == n_s) >= 0.9


def test_the_column_count_total_follows_the_image_not_the_guess(zone_axis):
    from surrogate import default_model

    from refine.search.column_start import column_count_total

    atoms, image = zone_axis
    n = len(atoms)
    low = column_count_total(image, default_model(), "Pt", int(0.8 * n))
    high = column_count_total(image, default_model(), "Pt", int(1.25 * n))
    assert low == high  # the guess only seeds the first round
    total, sigma = low
    assert abs(total - n) <= 0.05 * n and 0 <= sigma < 0.1 * n  # short columns: a 2 % scale error moves no count


def test_refine_with_an_element_only_takes_the_number_of_atoms_from_the_column_counts(zone_axis, tmp_path):
    import json

    from ase.io import read

    from refine.cli.main import main

    atoms, image = zone_axis
    path = tmp_path / "image.npy"
    np.save(path, image.data)
    out = tmp_path / "run"
    assert main(["refine", str(path), "-c", "Pt", "--pixel-size", str(image.pixel_size), "--start", "counts",
                 "--generations", "0", "--population", "4", "-o", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    estimate = summary["composition_estimate"]
    best = read(out / "best.xyz")
    assert estimate["method"].startswith("sum of the column counts") and "integrated intensity gave" in estimate["method"]
    assert estimate["n"] == len(best) == summary["n_atoms"]
    # the structure and the image's own count agree: that total is the one they share
    counts = json.loads((out / "counts.json").read_text())
    assert counts["atoms_3d"] == len(best) and counts["fraction_equal"] >= 0.9
