"""Image forces (refine.image_forces): χ² gradient and the E + α·χ² calculator."""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Icosahedron

from refine.fitness import Fitness
from refine.image_forces import CostCalculator, ImageTerm
from refine.images import read_image

PIXEL = 0.1


@pytest.fixture(scope="module")
def truth():
    from asap3 import EMT
    from ase.optimize import FIRE

    a = Icosahedron("Pt", 3)  # 55 atoms, EMT-relaxed
    a.center(vacuum=5.0)
    a.calc = EMT()
    FIRE(a, logfile=None).run(fmax=1e-3, steps=500)
    a.calc = None
    a.cell = None
    a.pbc = False
    a.positions -= a.positions.mean(axis=0)
    a.rotate(23, "x")
    a.rotate(17, "z")
    return a


@pytest.fixture(scope="module")
def model(truth):
    """s=3, d=2 with log term and interactions, fitted on a nonlinear stand-in for multislice."""
    from scipy.ndimage import gaussian_filter

    from surrogate.convolution import convolution_image
    from surrogate.grid import ProbeGrid
    from surrogate.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for k in range(3):
        a = truth.copy()
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 3.0))
        convs.append(c)
        ms.append(0.5 * np.sqrt(np.maximum(gaussian_filter(c, 1.0), 0.0)) + 0.01)
    return PolynomialSurrogate(size=3, degree=2).fit(convs, ms, elements=["Pt"])


@pytest.fixture(scope="module")
def image(model, truth):
    from surrogate.grid import ProbeGrid

    grid = ProbeGrid(origin=(-9.0, -8.5), shape=(170, 180), pixel_size=PIXEL)
    clean = model.simulate(truth, grid)
    noisy = 3.0 * clean + 0.2 + np.random.default_rng(1).normal(0, 0.01, clean.shape)
    return read_image(noisy, pixel_size=PIXEL, origin=grid.origin)


@pytest.fixture
def fitness(model, image):
    return Fitness(model, image, alpha=1.0, align="none", calculator=None, noise=0.01)


def test_chi2_equals_the_fitness_chi2_without_alignment(fitness, truth, rng):
    term = ImageTerm(fitness)
    for k in range(3):
        cand = truth.copy()
        cand.positions += rng.normal(0, 0.15, cand.positions.shape)
        chi2, grad = term.chi2_and_gradient(cand.positions, cand.numbers)
        assert chi2 == pytest.approx(fitness.evaluate(cand).chi2, rel=1e-9)
        assert grad.shape == (len(cand), 3)
        assert np.all(grad[:, 2] == 0.0)  # the image does not see z


def test_gradient_matches_finite_differences(fitness, truth, rng):
    term = ImageTerm(fitness)
    cand = truth.copy()
    cand.positions += rng.normal(0, 0.1, cand.positions.shape)
    _, grad = term.chi2_and_gradient(cand.positions, cand.numbers)
    eps = 1e-5
    for k in rng.choice(len(cand), 6, replace=False):
        for ax in (0, 1):
            p = cand.positions.copy()
            p[k, ax] += eps
            cp, _ = term.chi2_and_gradient(p, cand.numbers, gradient=False)
            p[k, ax] -= 2 * eps
            cm, _ = term.chi2_and_gradient(p, cand.numbers, gradient=False)
            assert grad[k, ax] == pytest.approx((cp - cm) / (2 * eps), rel=1e-4, abs=1e-6 * np.abs(grad).max())


def test_gradient_vanishes_at_the_noise_free_truth(model, truth):
    from surrogate.grid import ProbeGrid

    grid = ProbeGrid(origin=(-9.0, -8.5), shape=(170, 180), pixel_size=PIXEL)
    exact = read_image(2.0 * model.simulate(truth, grid) + 0.1, pixel_size=PIXEL, origin=grid.origin)
    term = ImageTerm(Fitness(model, exact, alpha=1.0, align="none", calculator=None, noise=0.01))
    chi2, grad = term.chi2_and_gradient(truth.positions, truth.numbers)
    moved = truth.copy()
    moved.positions[:, 0] += 0.05
    chi2_m, grad_m = term.chi2_and_gradient(moved.positions, moved.numbers)
    assert chi2 < 1e-12 * chi2_m
    assert np.abs(grad).max() < 1e-5 * np.abs(grad_m).max()
    # moved +x: the summed image force (−∂χ²/∂x) pulls the particle back towards −x
    assert grad_m[:, 0].sum() > 0


def test_cost_calculator_forces_are_minus_the_cost_gradient(fitness, truth, rng):
    from asap3 import EMT

    cand = truth.copy()
    cand.positions += rng.normal(0, 0.1, cand.positions.shape)
    cand.cell = np.diag(np.ptp(cand.positions, axis=0) + 20.0)
    calc = CostCalculator(ImageTerm(fitness), EMT(), alpha=lambda: 0.3)
    cand.calc = calc
    f = cand.get_forces()
    e = cand.get_potential_energy()
    assert calc.results["energy_term"] + 0.3 * calc.results["chi2"] == pytest.approx(e)
    eps = 1e-5
    for k in (0, 7, 40):
        for ax in (0, 1, 2):
            p = cand.positions.copy()
            p[k, ax] += eps
            cand.positions = p
            ep = cand.get_potential_energy()
            p[k, ax] -= 2 * eps
            cand.positions = p
            em = cand.get_potential_energy()
            p[k, ax] += eps
            cand.positions = p
            assert f[k, ax] == pytest.approx(-(ep - em) / (2 * eps), rel=1e-3, abs=1e-4)
    # α not known yet (None): energy only
    calc.alpha = lambda: None
    cand.positions = cand.positions + 0.0
    ref = cand.copy()
    ref.calc = EMT()
    assert cand.get_potential_energy() == pytest.approx(ref.get_potential_energy())


def test_relaxing_on_the_cost_moves_atoms_onto_the_image(fitness, truth, rng):
    """FIRE on E + α·χ² from a perturbed truth ends nearer the truth, and at lower χ², than FIRE on E alone."""
    from asap3 import EMT
    from ase.optimize import FIRE

    start = truth.copy()
    start.positions[:, :2] += rng.normal(0, 0.35, (len(start), 2))
    start.cell = np.diag(np.ptp(start.positions, axis=0) + 20.0)
    term = ImageTerm(fitness)
    results = {}
    for name, calc in (("energy", EMT()), ("cost", CostCalculator(term, EMT(), alpha=1e-3))):
        a = start.copy()
        a.calc = calc
        FIRE(a, logfile=None).run(fmax=0.05, steps=150)
        chi2, _ = term.chi2_and_gradient(a.positions, a.numbers, gradient=False)
        rms = float(np.sqrt(np.mean(np.sum((a.positions - truth.positions) ** 2, axis=1))))
        results[name] = (chi2, rms)
    # χ² above the noise floor (≈ one per pixel at the truth)
    floor, _ = term.chi2_and_gradient(truth.positions, truth.numbers, gradient=False)
    assert results["cost"][0] - floor < 0.5 * (results["energy"][0] - floor)
    assert results["cost"][1] < 0.5 * results["energy"][1]
