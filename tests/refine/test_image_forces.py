"""Image forces (refine.cost.image_forces): χ² gradient and the E + α·χ² calculator."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from refine.cost.fitness import Fitness
from refine.cost.image_forces import CostCalculator, ImageTerm
from refine.io.images import read_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_case import image, model, truth  # noqa: E402,F401  (module fixtures)

PIXEL = 0.1


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
    from surrogate.imaging.grid import ProbeGrid

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


def test_cost_calculator_forces_are_minus_the_cost_gradient(fitness, truth, rng, numerical_force):
    from asap3 import EMT

    cand = truth.copy()
    cand.positions += rng.normal(0, 0.1, cand.positions.shape)
    cand.cell = np.diag(np.ptp(cand.positions, axis=0) + 20.0)
    calc = CostCalculator(ImageTerm(fitness), EMT(), alpha=lambda: 0.3)
    cand.calc = calc
    f = cand.get_forces()
    e = cand.get_potential_energy()
    assert calc.results["energy_term"] + 0.3 * calc.results["chi2"] == pytest.approx(e)
    for k in (0, 7, 40):
        for ax in (0, 1, 2):
            assert f[k, ax] == pytest.approx(numerical_force(cand, k, ax), rel=1e-3, abs=1e-4)
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
