"""Atoms per column from the image's scattering cross-sections (refine.analysis.cross_sections), the files and the CLI."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Octahedron
from ase.io import read

from refine.analysis import COUNTS_HEADER, column_count_table, write_counts
from refine.analysis.cross_sections import projected_columns
from refine.cli.main import main
from refine.workflows.outputs import write_column_counts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_case import PIXEL, REALISTIC_DOSE, SMALL, as_image as _image, noisy_small_image  # noqa: E402


def _poisson(clean, dose, rng):
    n = dose * PIXEL * PIXEL
    return rng.poisson(np.clip(clean, 0, None) * n) / n


@pytest.fixture(scope="module")
def truth():
    return read(SMALL / "truth.xyz")


@pytest.fixture(scope="module")
def small_clean():
    return np.load(SMALL / "clean.npy").astype(float)


def test_surrogate_image_counts_equal_the_column_heights(model):
    """Unit check: on an image the surrogate made, at a realistic dose, the counts are the truth's column heights."""
    rng = np.random.default_rng(20190312)
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    atoms.rotate([1, 1, 0], [0, 0, 1])  # a [110] zone axis: straight columns of 1..6 atoms
    del atoms[rng.choice(len(atoms), 12, replace=False).tolist()]  # vacancies: heights the shape does not set
    atoms.positions -= atoms.positions.min(axis=0) - 4.0
    grid_image = _image(np.zeros((int(atoms.positions[:, 0].max() / PIXEL) + 40,
                                  int(atoms.positions[:, 1].max() / PIXEL) + 40)))
    clean = model.simulate(atoms, grid_image.grid)
    table = column_count_table(atoms, _image(_poisson(clean, REALISTIC_DOSE, rng)), model)
    _, heights, _ = projected_columns(atoms.positions)
    assert len(table.xy) == len(heights) and len(np.unique(heights)) >= 4
    assert np.mean(table.atoms_image == heights) >= 0.95
    assert table.atoms_3d.tolist() == heights.tolist()


def test_counts_on_the_independent_abtem_image(model, truth, small_clean):
    """The shipped abTEM image (not made by the surrogate): a floor below what was measured.

    Measured (24 columns of 2-4 atoms, tilted 10°): 100 % equal and 100 % within ±1 on the clean image and at
    5e5 e/Å² (seeds 7, 8, 9), with the library's scale left at the model's (1).
    """
    for data in (small_clean, noisy_small_image(REALISTIC_DOSE, seed=7)):
        table = column_count_table(truth, _image(data), model)
        assert len(table.xy) == 24
        assert table.fraction_equal >= 0.9
        assert table.fraction_within_1 >= 0.95
        assert abs(int(table.atoms_image.sum()) - len(truth)) <= 3


def test_library_of_a_column_along_the_beam_is_the_stacked_column(model):
    """A column along the beam weighted n/n_c is n atoms on one (x, y): compare with the model's own image of those
    (up to 6 atoms: the shipped model saw at most 7 stacked; beyond its range the library continues linearly)."""
    from ase import Atoms

    from refine.analysis.cross_sections import column_cells, column_library

    atoms = Atoms("Pt3", positions=[[5.0, 5.0, 0.0], [5.0, 5.0, 2.77], [5.0, 5.0, 5.54]])
    image = _image(np.zeros((100, 100)))
    cells = column_cells(atoms, image, radius=2.0)
    library = column_library(atoms, cells, model, image, 12, context=False)
    vacuum = float(np.median(model.predict(np.zeros((2 * model.border + 3,) * 2))))
    for n in (1, 2, 4, 6):
        stacked = Atoms("Pt" * n, positions=np.tile([5.0, 5.0, 0.0], (n, 1)))
        sim = model.simulate(stacked, image.grid) - vacuum
        assert library[0, n] == pytest.approx(float(sim[cells.labels == 0].sum()) * PIXEL ** 2, rel=1e-6)


def test_library_of_a_tilted_column_keeps_growing(model, truth, small_clean):
    """The 10°-tilted Pt70's columns (2-4 atoms): σ(n) grows at every step to 25 atoms.

    The library used to put the n atoms along the column's axis, 0.48 Å apart in projection, so that from
    n ≈ 9 they fell outside the column's cell and σ(n) went flat; without the continuation beyond the
    model's training range it fell again from n ≈ 15 (to half its top by 25). From 9 to 12 atoms a column
    still gains more than one lone atom's cross-section (a floor: the surrogate itself flattens there).
    """
    from refine.analysis.cross_sections import column_cells, column_library

    image = _image(small_clean)
    cells = column_cells(truth, image)
    library = column_library(truth, cells, model, image, 25)
    assert np.all(np.diff(library, axis=1) > 0)
    assert np.all(library[:, 12] - library[:, 9] > library[:, 1] - library[:, 0])


def test_tall_clusters_of_the_tilted_decahedron_are_counted(model):
    """Case (a) of the independent benchmark (abTEM, Pt300 decahedron 10° off its axis): the tilt merges
    overlapping columns into streaks of 24-50 atoms. Each count is within 10 % of the truth's atoms
    (measured: ≤ 8 %; the old library counted 7 for 28-50), the columns of ≤ 15 atoms exactly."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "independent" / "data" / "decahedron"
    decahedron = read(folder / "truth.xyz")
    table = column_count_table(decahedron, _image(np.load(folder / "clean.npy").astype(float)), model)
    heights = table.atoms_3d
    assert heights.max() >= 40 and len(heights) >= 30
    short = heights <= 15
    assert np.all(table.atoms_image[short] == heights[short])
    assert np.all(np.abs(table.atoms_image - heights) <= np.maximum(1, 0.1 * heights))


def test_a_wrong_column_of_the_answer_is_flagged(model, truth, small_clean):
    """The answer lacks one atom of a 3-atom column: the image still counts 3 there and the row disagrees."""
    _, heights, atom_column = projected_columns(truth.positions)
    c = int(np.flatnonzero(heights == 3)[0])
    members = np.flatnonzero(atom_column == c)
    wrong = truth.copy()
    del wrong[int(members[np.argmax(truth.positions[members, 2])])]
    table = column_count_table(wrong, _image(small_clean), model)
    row = int(np.argmin(np.linalg.norm(table.xy - truth.positions[members, :2].mean(axis=0), axis=1)))
    assert table.atoms_3d[row] == 2 and table.atoms_image[row] == 3 and table.disagree[row]
    assert table.disagree.sum() == 1


def _zone_axis_octahedron():
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    atoms.rotate([1, 1, 0], [0, 0, 1])  # a [110] zone axis: straight columns
    atoms.positions -= atoms.positions.min(axis=0) - 6.0
    return atoms


def test_a_column_where_the_image_shows_no_peak_is_not_resolved(model):
    """Unit check on a surrogate image of a [110] octahedron: an answer with an extra 3-atom column out in the
    vacuum counts it (about 0 atoms there) but flags it unresolved; every column of the particle is resolved,
    and the fractions over resolved columns leave the extra one out."""
    atoms = _zone_axis_octahedron()
    image = _image(np.zeros((int(atoms.positions[:, 0].max() / PIXEL) + 80,
                             int(atoms.positions[:, 1].max() / PIXEL) + 60)))
    image = _image(model.simulate(atoms, image.grid))
    extra = atoms.copy()
    x, y = atoms.positions[:, 0].max() + 4.0, atoms.positions[:, 1].mean()
    for z in (0.0, 2.77, 5.54):
        extra.append("Pt")
        extra.positions[-1] = (x, y, z)
    table = column_count_table(extra, image, model)
    far = int(np.argmin(np.linalg.norm(table.xy - (x, y), axis=1)))
    assert not table.resolved[far] and table.atoms_3d[far] == 3 and table.disagree[far]
    assert table.is_resolved.sum() == len(table.xy) - 1
    equal, within_1 = table.fractions_resolved()
    others = np.arange(len(table.xy)) != far
    assert equal == pytest.approx(np.mean(table.atoms_image[others] == table.atoms_3d[others]))
    assert table.fraction_equal < equal
    summary = table.summary()
    assert summary["n_resolved"] == len(table.xy) - 1 and summary["fraction_equal_resolved"] == equal


def test_a_table_with_no_resolved_column_says_so_in_valid_json():
    import json

    from refine.analysis.count_files import resolved_agreement
    from refine.analysis.cross_sections import CountTable

    n = 3
    table = CountTable(np.zeros((n, 2)), np.array([1, 2, 3]), np.array([1, 2, 4]), np.ones(n), np.ones((n, 5)), 1.0,
                       {}, np.zeros(n, dtype=bool))
    summary = table.summary()
    assert summary["n_resolved"] == 0 and summary["fraction_equal_resolved"] is None
    json.dumps(summary, allow_nan=False)  # no NaN in counts.json
    assert resolved_agreement(summary) == "none of the 3 columns has a peak of its own in the image"
    every = CountTable(np.zeros((n, 2)), np.array([1, 2, 3]), np.array([1, 2, 4]), np.ones(n), np.ones((n, 5)), 1.0)
    assert resolved_agreement(every.summary()) is None and every.summary()["fraction_equal_resolved"] == 2 / 3


def test_resolved_columns_gives_each_peak_to_its_nearest_column():
    """Two blobs; columns on a blob, 0.5 Å off one (nearer another column on it: only the nearest counts), and far."""
    from refine.io.peaks import resolved_columns

    n, dx = 120, 0.1
    ii, jj = np.mgrid[0:n, 0:n] * dx
    data = sum(np.exp(-((ii - cx) ** 2 + (jj - cy) ** 2) / (2 * 0.4 ** 2)) for cx, cy in ((3.0, 3.0), (8.0, 6.0)))
    xy = [(3.0, 3.0), (3.5, 3.0), (8.0, 6.5), (10.5, 10.5)]
    got = resolved_columns(xy, _image(data), 2.77)
    assert got.tolist() == [True, False, True, False]


def test_total_scale_makes_the_counts_add_up(model, truth, small_clean):
    table = column_count_table(truth, _image(0.9 * small_clean), model, scale="total")  # a detector 10 % low
    assert 0.85 < table.scale < 0.95
    assert int(table.atoms_image.sum()) == len(truth)


def test_total_scale_counts_an_image_in_detector_units_as_one_in_beam_units(model, truth, small_clean):
    beam = column_count_table(truth, _image(small_clean), model, scale="total")
    detector = column_count_table(truth, _image(3600.0 * small_clean), model, scale="total")  # counts per beam
    assert detector.scale == pytest.approx(3600.0 * beam.scale, rel=0.05)
    assert int(detector.atoms_image.sum()) == len(truth)
    np.testing.assert_array_equal(detector.atoms_image, beam.atoms_image)


def test_counts_csv_has_the_exact_header_and_the_rows(model, truth, small_clean, tmp_path):
    table = column_count_table(truth, _image(small_clean), model)
    files = write_counts(table, _image(small_clean), tmp_path)
    with open(files["counts.csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["x", "y", "atoms_3d", "atoms_image", "cross_section", "disagree", "resolved"] == \
        list(COUNTS_HEADER)
    assert len(rows) == len(table.xy) + 1
    assert {r[5] for r in rows[1:]} <= {"true", "false"} and {r[6] for r in rows[1:]} <= {"true", "false"}
    assert [r[6] == "true" for r in rows[1:]] == table.is_resolved.tolist()
    assert sum(int(r[2]) for r in rows[1:]) == len(truth)
    assert files["counts.png"].stat().st_size > 10_000


def test_a_failed_counting_loses_nothing(truth, small_clean, tmp_path):
    """The run's outputs call this last; a model that cannot render records the error instead of raising."""
    files = write_column_counts(tmp_path, object(), _image(small_clean), truth)
    assert list(files) == ["counts.json"]
    assert "error" in files["counts.json"].read_text()
    assert not (tmp_path / "counts.csv").exists()


def test_counts_cli(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["counts", str(SMALL / "truth.xyz"), str(SMALL / "clean.npy"), "--pixel-size", "0.1", "-o", str(out),
               "--json"])
    assert rc == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["n_columns"] == 24 and summary["fraction_within_1"] >= 0.95
    assert (out / "counts.csv").read_text().splitlines()[0] == \
        "x,y,atoms_3d,atoms_image,cross_section,disagree,resolved"
    assert (out / "counts.png").is_file()


@pytest.mark.parametrize("args", [["--tolerance", "-1"], ["--radius", "0"]])
def test_counts_cli_errors_are_one_line(tmp_path, capsys, args):
    rc = main(["counts", str(SMALL / "truth.xyz"), str(SMALL / "clean.npy"), "--pixel-size", "0.1",
               "-o", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("stem-refine counts: error:")


def test_counts_cli_missing_structure(tmp_path, capsys):
    rc = main(["counts", str(tmp_path / "none.xyz"), str(SMALL / "clean.npy"), "--pixel-size", "0.1",
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1


def test_a_leaning_crystal_is_counted_along_its_own_columns():
    """Columns tilted 3° off the beam: grouped along the beam they merge; along column_axis they stay whole."""
    from ase.cluster import Octahedron

    from refine.analysis.cross_sections import column_axis, projected_columns

    atoms = Octahedron("Pt", 14, 1, latticeconstant=3.92)  # columns up to ~14 atoms, ~38 Å long
    atoms.rotate([1, 1, 0], [0, 0, 1])
    upright = projected_columns(atoms.positions)[1]
    assert np.allclose(column_axis(atoms.positions), [0, 0, 1])  # a column along the beam stays exactly so
    atoms.rotate(3.0, "x")
    axis = column_axis(atoms.positions)
    assert np.degrees(np.arccos(axis[2])) == pytest.approx(3.0, abs=0.1)
    merged = projected_columns(atoms.positions)[1]
    along = projected_columns(atoms.positions, axis=axis)[1]
    assert merged.max() > upright.max()  # the leaning columns smear into each other along the beam
    np.testing.assert_array_equal(np.sort(along), np.sort(upright))
    # and the counting's cells follow them
    from refine.analysis.cross_sections import column_cells
    from small_case import as_image

    atoms.positions -= atoms.positions.min(axis=0) - 5.0
    cells = column_cells(atoms, as_image(np.zeros((int(atoms.positions[:, 0].max() / 0.1) + 50,
                                                   int(atoms.positions[:, 1].max() / 0.1) + 50))))
    np.testing.assert_array_equal(np.sort(cells.atoms), np.sort(upright))
