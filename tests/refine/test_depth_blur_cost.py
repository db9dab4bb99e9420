"""A depth-blur model in the cost: the fitness's render, the image forces (now with z) and the column counts."""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Octahedron

from refine.analysis import column_count_table
from refine.analysis.cross_sections import projected_columns
from refine.cost.fitness import Fitness
from refine.cost.image_forces import ImageTerm
from refine.io.images import read_image
from surrogate.imaging.convolution import ConvolutionParameters, convolution_image
from surrogate.imaging.grid import ProbeGrid
from surrogate.imaging.model import PolynomialSurrogate

PIXEL = 0.1


@pytest.fixture(scope="module")
def crystal():
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    atoms.rotate([1, 1, 0], [0, 0, 1])  # [110]: straight columns of 1..6 atoms
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


@pytest.fixture(scope="module")
def model(crystal):
    """s=3, d=2 on a nonlinear stand-in for multislice, convolution images with a strong depth blur."""
    from scipy.ndimage import gaussian_filter

    params = ConvolutionParameters(sigma=0.38, depth_blur=0.03)
    rng = np.random.default_rng(0)
    convs, ms = [], []
    for _ in range(3):
        a = crystal.copy()
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 3.0), params)
        convs.append(c)
        ms.append(0.5 * np.sqrt(np.maximum(gaussian_filter(c, 1.0), 0.0)) + 0.01)
    return PolynomialSurrogate(size=3, degree=2, convolution=params).fit(convs, ms, elements=["Pt"])


@pytest.fixture(scope="module")
def grid(crystal):
    return ProbeGrid.around(crystal, PIXEL, 4.0)


def test_the_fitness_renders_what_the_model_simulates(model, crystal, grid):
    fitness = Fitness(model, read_image(model.simulate(crystal, grid), pixel_size=PIXEL, origin=grid.origin),
                      alpha=1.0, align="none", calculator=None, noise=0.01)
    fitness.prepare_numbers(crystal.numbers)
    box, i0, j0, _ = fitness.render_box(np.ascontiguousarray(crystal.positions), (0.0, 0.0))
    full = model.simulate(crystal, grid)
    np.testing.assert_allclose(box, full[i0:i0 + box.shape[0], j0:j0 + box.shape[1]], rtol=1e-9, atol=1e-12)
    assert fitness.evaluate(crystal).chi2 == pytest.approx(0.0, abs=1e-12)


def test_image_forces_see_depth_and_match_finite_differences(model, crystal, grid, rng):
    noisy = 2.0 * model.simulate(crystal, grid) + 0.1 + rng.normal(0, 0.005, grid.shape)
    term = ImageTerm(Fitness(model, read_image(noisy, pixel_size=PIXEL, origin=grid.origin), alpha=1.0, align="none",
                             calculator=None, noise=0.01))
    cand = crystal.copy()
    cand.positions += rng.normal(0, 0.1, cand.positions.shape)
    _, grad = term.chi2_and_gradient(cand.positions, cand.numbers)
    assert np.abs(grad[:, 2]).max() > 1e-3 * np.abs(grad[:, :2]).max()  # the image sees z now
    top = int(np.argmin(cand.positions[:, 2]))  # its z moves the entrance plane, which the gradient holds
    eps = 1e-5
    for k in [k for k in rng.choice(len(cand), 7, replace=False) if k != top][:6]:
        for ax in (0, 1, 2):
            p = cand.positions.copy()
            p[k, ax] += eps
            cp, _ = term.chi2_and_gradient(p, cand.numbers, gradient=False)
            p[k, ax] -= 2 * eps
            cm, _ = term.chi2_and_gradient(p, cand.numbers, gradient=False)
            assert grad[k, ax] == pytest.approx((cp - cm) / (2 * eps), rel=1e-4, abs=1e-6 * np.abs(grad).max())


def test_counts_of_its_own_image_are_the_column_heights(model, crystal, grid):
    """Unit check of the depth-aware library: a clean surrogate image counts back to its columns' heights."""
    rng = np.random.default_rng(7)
    atoms = crystal.copy()
    del atoms[rng.choice(len(atoms), 12, replace=False).tolist()]
    image = read_image(model.simulate(atoms, grid), pixel_size=PIXEL, origin=grid.origin)
    table = column_count_table(atoms, image, model)
    _, heights, _ = projected_columns(atoms.positions)
    assert len(np.unique(heights)) >= 4
    assert np.mean(table.atoms_image == table.atoms_3d) >= 0.95


def test_the_counted_start_of_a_depth_blur_model_is_recounted_after_its_slides(model, crystal, tmp_path, caplog):
    """``--start counts`` with a depth-blur model: the slides move counts, so the start is counted again."""
    import csv

    from refine.cli.main import main
    from surrogate.imaging.model import save_model

    rng = np.random.default_rng(3)
    atoms = crystal.copy()
    del atoms[rng.choice(len(atoms), 10, replace=False).tolist()]
    atoms.positions -= atoms.positions.min(axis=0) - 5.0
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(int(atoms.positions[:, 0].max() / PIXEL) + 50,
                                               int(atoms.positions[:, 1].max() / PIXEL) + 50), pixel_size=PIXEL)
    np.save(tmp_path / "image.npy", model.simulate(atoms, grid))
    path = save_model(model, tmp_path / "depth.npz")
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert main(["refine", str(tmp_path / "image.npy"), "-c", f"Pt{len(atoms)}", "-m", str(path),
                     "--pixel-size", str(PIXEL), "--start", "counts", "--generations", "0", "--population", "4",
                     "-o", str(out), "--no-progress"]) == 0
    assert any("recounted after the slides" in r.getMessage() for r in caplog.records)
    rows = list(csv.DictReader(open(out / "counts.csv")))
    equal = np.mean([r["atoms_3d"] == r["atoms_image"] for r in rows])
    assert len(rows) >= 20 and equal >= 0.9


def test_with_no_generations_the_built_start_is_the_answer_not_a_rattled_copy(crystal):
    # the population's other members are the start rattled by 0.1 Å (diversity for a search); a copy can fit a
    # depth-blur model's image better at an energy no search would keep, so --generations 0 answers the start
    from deap import tools

    from refine.search.settings import GAResult
    from refine.workflows.refinement import BUILT_STARTS, _built_start_as_answer

    start = crystal.copy()
    start.info = {"origin": "counts", "columns": 30}
    rattled = crystal.copy()
    rattled.positions += np.random.default_rng(0).normal(0, 0.1, rattled.positions.shape)
    ga = GAResult(best=rattled, population=[start, rattled], hall_of_fame=[rattled, start], pareto_front=[],
                  logbook=tools.Logbook(), generation=0, stop_reason="generations", alpha=0.07, evaluations=2)
    out = _built_start_as_answer(ga, start)
    np.testing.assert_array_equal(out.best.positions, start.positions)
    assert out.best.info == {"origin": "counts", "columns": 30, "generation": 0, "alpha": 0.07}
    assert out.population == ga.population and out.best is not start
    assert "counts" in BUILT_STARTS and "matched+counts" in BUILT_STARTS
