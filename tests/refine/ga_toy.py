"""A small stand-in fitness for the GA tests: EMT energy + α·χ² to a target convolution image.

Not a test module (no ``test_`` prefix); imported by test_ga.py and by the
subprocess script of the kill-and-resume test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from surrogate import ConvolutionParameters, ProbeGrid, convolution_image


@dataclass
class ToyResult:
    cost: float
    chi2: float
    energy: float


class ToyFitness:
    """cost = E_EMT (eV) + α·χ², χ² = mean(((I − I_target)/σ)²) per pixel, σ = 2 % of the target's peak.

    The candidate is centred on the target's centroid before imaging (a crude
    translation alignment). ``delay`` seconds are slept per evaluation (to
    make a run slow enough to kill).
    """

    def __init__(self, target: Atoms, alpha: float = 1.0, delay: float = 0.0, pixel_size: float = 0.3):
        self.params = ConvolutionParameters(pixel_size=pixel_size, cross_section=None)
        self.centre = target.positions.mean(axis=0)
        self.grid = ProbeGrid.around(target, pixel_size=pixel_size, margin=3.0)
        self.target = convolution_image(target, self.grid, self.params)
        self.sigma = 0.02 * self.target.max()
        self.alpha = alpha
        self.delay = delay
        self._buf = np.empty(self.grid.shape)
        self.calls = 0

    def _centred(self, atoms):
        return Atoms(numbers=atoms.numbers, positions=atoms.positions - atoms.positions.mean(axis=0) + self.centre)

    def energy(self, atoms) -> float:
        from asap3 import EMT

        work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=[200.0] * 3, pbc=False)
        work.positions += 100.0 - work.positions.mean(axis=0)
        work.calc = EMT()
        return float(work.get_potential_energy())

    def chi2(self, atoms) -> float:
        img = convolution_image(self._centred(atoms), self.grid, self.params, out=self._buf)
        return float(np.mean(((img - self.target) / self.sigma) ** 2))

    def difference(self, atoms):
        c = self._centred(atoms)
        shift = atoms.positions.mean(axis=0) - self.centre
        img = convolution_image(c, self.grid, self.params)
        grid = ProbeGrid(origin=(self.grid.origin[0] + shift[0], self.grid.origin[1] + shift[1]),
                         shape=self.grid.shape, pixel_size=self.grid.pixel_size)
        return img - self.target, grid

    def evaluate(self, atoms) -> ToyResult:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        chi2 = self.chi2(atoms)
        energy = self.energy(atoms)
        return ToyResult(cost=energy + self.alpha * chi2, chi2=chi2, energy=energy)

    def calibrate_alpha(self, population) -> float:
        """α = spread of E / spread of χ² over the population (both terms of the same order)."""
        e = np.array([self.energy(a) for a in population])
        c = np.array([self.chi2(a) for a in population])
        self.alpha = float(np.std(e) / max(np.std(c), 1e-12))
        return self.alpha
