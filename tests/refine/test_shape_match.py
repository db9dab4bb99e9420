"""The matched start (refine.search.shape_match): zone axes of a shape, its orientation and shape from an image.

Images here are the shipped surrogate's: a unit check of the matching, not a measure of accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Octahedron
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from small_case import PIXEL, as_image

from refine.search.shape_match import match_orientation, matched_structure, zone_axes


@pytest.fixture(scope="module")
def model():
    from surrogate import default_model

    return default_model()


def _on_grid(atoms, margin=12.0):
    """``atoms`` moved into the first quadrant and an all-zero image that holds them with ``margin`` Å round."""
    atoms = atoms.copy()
    atoms.positions -= atoms.positions.min(axis=0) - margin
    shape = tuple(int((atoms.positions[:, k].max() + margin) / PIXEL) for k in range(2))
    return atoms, as_image(np.zeros(shape))


def _image_of(atoms, model):
    atoms, blank = _on_grid(atoms)
    return atoms, as_image(model.simulate(atoms, blank.grid))


def test_an_fcc_shapes_most_columnar_axes_are_its_110_and_100_directions():
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    axes = zone_axes(atoms, 6)
    folded = np.sort(np.abs(axes), axis=1)  # cubic symmetry: the sorted absolute components name the family
    # ⟨110⟩ columns repeat every bond, the shortest period: fewest columns, first
    np.testing.assert_allclose(folded[0], [0.0, np.sqrt(0.5), np.sqrt(0.5)], atol=0.02)
    assert any(np.allclose(f, [0.0, 0.0, 1.0], atol=0.02) for f in folded)
    assert np.allclose(np.linalg.norm(axes, axis=1), 1.0)


def test_a_known_zone_axis_orientation_is_recovered(model):
    from refine.cost.fitness import Fitness

    atoms = Octahedron("Pt", 5, 1, latticeconstant=3.92)
    atoms.positions -= atoms.positions.mean(axis=0)
    truth = atoms.copy()
    # [110] along the beam, then turned 37° about it: columns the image resolves
    turn = Rotation.from_euler("z", 37.0, degrees=True) * Rotation.align_vectors([[0, 0, 1]], [[1, 1, 0]])[0]
    truth.positions = turn.apply(atoms.positions)
    truth, image = _image_of(truth, model)
    fitness = Fitness(model, image, alpha=1.0, calculator=None, noise=1e-3)
    # started 1.5 Å off the particle's centre, from the shape in its own frame
    centre = truth.positions[:, :2].mean(axis=0) + [1.0, -1.1]
    m = match_orientation(atoms, fitness, centre, zone_axes(atoms, 4))
    placed = m.place(atoms)
    # every atom of the match sits on an atom of the truth (the octahedron's symmetry makes the labels free;
    # the image cannot tell the height, so both are centred along the beam)
    t, p = truth.positions.copy(), placed.positions.copy()
    t[:, 2] -= t[:, 2].mean()
    p[:, 2] -= p[:, 2].mean()
    d, _ = cKDTree(t).query(p)
    assert np.sqrt(np.mean(d ** 2)) < 0.25
    # the truth's own χ² is 0 (its image is the surrogate's); 5° away about the beam is far worse than the match
    off = Rotation.from_euler("z", 5.0, degrees=True).apply(truth.positions - truth.positions.mean(axis=0))
    _, _, chi2_off, _ = fitness.image_terms(off + truth.positions.mean(axis=0), truth.numbers)
    assert m.chi2 < 0.01 * chi2_off


def test_the_matched_start_picks_the_shape_in_the_image(model):
    from refine.cost import make_calculator
    from refine.search.population import shape_cluster

    n = 75
    deca = shape_cluster({"Pt": n}, "decahedron", np.random.default_rng(0))
    deca.rotate(24.0, "z")
    deca, image = _image_of(deca, model)
    start = matched_structure(image, model, {"Pt": n}, make_calculator("auto", ("Pt",)),
                              shapes=("octahedron", "decahedron"), n_axes=4)
    assert start.info["origin"] == "matched" and start.info["shape"] == "decahedron"
    chi2 = start.info["chi2_per_pixel"]
    assert chi2["decahedron"] < 0.5 * chi2["octahedron"]
    assert len(start) == n
    # in the image's frame, on the particle
    assert np.linalg.norm(start.positions[:, :2].mean(axis=0) - deca.positions[:, :2].mean(axis=0)) < 0.5


def test_refine_from_the_matched_start_answers_with_the_shape(model, tmp_path):
    from ase.io import read

    from refine.cli.main import main

    atoms = Octahedron("Pt", 5, 1, latticeconstant=3.92)
    atoms.rotate([1, 1, 0], [0, 0, 1])
    atoms, image = _image_of(atoms, model)
    path = tmp_path / "image.npy"
    np.save(path, image.data)
    out = tmp_path / "run"
    assert main(["refine", str(path), "-c", f"Pt{len(atoms)}", "--pixel-size", str(PIXEL), "--start", "matched",
                 "--generations", "0", "--population", "4", "-o", str(out), "--no-progress"]) == 0
    best = read(out / "best.xyz")
    d, _ = cKDTree(atoms.positions[:, :2]).query(best.positions[:, :2])
    assert len(best) == len(atoms) and np.median(d) < 0.3


def test_a_templates_columns_take_the_image_counts(model):
    """counted_template: the ideal shape, given an image of the same shape with atoms moved between columns."""
    from refine.analysis.cross_sections import projected_columns
    from refine.search.template_counts import counted_template

    template = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    template.rotate([1, 1, 0], [0, 0, 1])
    template, blank = _on_grid(template)
    # the truth: the top atom of four columns of 3+ atoms moved onto the bottoms of four others
    xy, n, label = projected_columns(template.positions)
    tall = np.flatnonzero(n >= 3)
    rng = np.random.default_rng(4)
    losers, gainers = rng.choice(tall, 8, replace=False).reshape(2, 4)
    truth = template.copy()
    for lose, gain in zip(losers, gainers):
        top = np.flatnonzero(label == lose)[np.argmax(truth.positions[label == lose, 2])]
        members = truth.positions[label == gain]
        gaps = np.diff(np.sort(members[:, 2]))
        truth.positions[top] = members[np.argmin(members[:, 2])] - [0.0, 0.0, float(np.median(gaps))]
    image = as_image(model.simulate(truth, blank.grid))

    def agreement(a):
        c_xy, c_n, _ = projected_columns(a.positions)
        t_xy, t_n, _ = projected_columns(truth.positions)
        d, k = cKDTree(c_xy).query(t_xy)
        return float(np.mean((d < 0.5) & (c_n[k] == t_n)))

    counted = counted_template(template, image, model)
    assert len(counted) == len(template) and counted.info["origin"] == "matched+counts"
    assert agreement(template) <= 1 - 8 / len(xy) + 1e-9  # the eight changed columns differ
    assert agreement(counted) >= 0.95
