"""The offspring relaxation: a short FIRE on E, or on the full cost E + α·χ².

* :class:`LocalRelaxation`: FIRE with a given calculator, in place (DEAP's
  ``relax`` in the toolbox; Deaven–Ho's "Lamarckian" step).
* :func:`cost_calculator`: E + α·χ² as an ASE calculator (the image force
  from :mod:`refine.cost.image_forces`), α read at every step through a
  :class:`FitnessAlpha`.

Forces in eV/Å.
"""

from __future__ import annotations

import numpy as np

from surrogate.common import InputError
from refine.search.evaluation import alpha_of
from refine.search.geometry import repair_min_distance

__all__ = ["LocalRelaxation", "FitnessAlpha", "cost_calculator"]


class LocalRelaxation:
    """A short FIRE relaxation of an individual with a given calculator (in place).

    Parameters
    ----------
    calculator : ase calculator or callable
        A calculator instance (re-attached to each structure; asap3's EMT
        allows this) or a zero-argument factory returning one.
    steps : int
        Maximum FIRE steps.
    fmax : float
        Force convergence criterion, eV/Å.
    min_distance : float, optional
        When given, the result is repaired to this minimum distance again.
    rng : numpy.random.Generator, optional
        Needed for that repair.

    The structure keeps its (absent) cell: a large enough box is set only
    while relaxing (asap3 needs a non-zero cell), and the calculator is
    detached afterwards so that individuals stay picklable.
    """

    name = "relax"

    def __init__(self, calculator, *, steps: int = 10, fmax: float = 0.05, min_distance: float | None = None,
                 rng: np.random.Generator | None = None):
        self.calculator = calculator
        self.steps = int(steps)
        self.fmax = float(fmax)
        self.min_distance = min_distance
        self.rng = rng

    def _calc(self):
        c = self.calculator
        if isinstance(c, type) or (callable(c) and not hasattr(c, "calculate")):
            return c()  # a class or a factory function
        return c

    def __call__(self, ind):
        from ase.optimize import FIRE

        if self.steps <= 0:
            return (ind,)
        cell, pbc = ind.cell.copy(), ind.pbc.copy()
        if ind.cell.rank < 3:
            span = np.ptp(ind.positions, axis=0) + 20.0
            ind.cell = np.diag(span)
            ind.pbc = False
        ind.calc = self._calc()
        try:
            FIRE(ind, logfile=None).run(fmax=self.fmax, steps=self.steps)
        finally:
            ind.calc = None
            ind.cell, ind.pbc = cell, pbc
        if self.min_distance is not None and self.rng is not None:
            repair_min_distance(ind, self.min_distance, self.rng)
        return (ind,)


class FitnessAlpha:
    """The fitness's current α (None until calibrated), or ``pinned`` when set; picklable, unlike a lambda."""

    def __init__(self, fitness):
        self.fitness = fitness
        self.pinned = None

    def __call__(self):
        return self.pinned if self.pinned is not None else alpha_of(self.fitness)


def cost_calculator(fitness, calculator, alpha=None):
    """An E + α·χ² calculator (:class:`refine.cost.image_forces.CostCalculator`) for the offspring relaxation.

    Parameters
    ----------
    fitness : refine.cost.fitness.Fitness
        Model, image and noise weights of the χ² term.
    calculator : ase calculator
        The energy E (eV).
    alpha : callable, optional
        ``alpha() -> float or None``, read at every step (eV per unit χ²);
        default: the fitness's current α (:class:`FitnessAlpha`).

    The image force comes from the float32 adjoint (1.49× faster; ~1e-6
    relative error, far below the relaxation's force criterion).
    """
    from refine.cost import CostCalculator, ImageTerm

    if not all(hasattr(fitness, k) for k in ("model", "image", "weights", "exp", "grid")):
        raise InputError("relax_image needs a refine.cost.fitness.Fitness (a surrogate model and an image)")
    return CostCalculator(ImageTerm(fitness, single_precision=True), calculator,
                          alpha=alpha or FitnessAlpha(fitness))
