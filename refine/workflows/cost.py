"""Step 2 of a refinement: the cost E + α·χ² of a run, as a :class:`refine.cost.Fitness`.

:func:`make_fitness` builds it from the checked inputs (image term, EMT
energy, α, noise model). With ``alpha_scale`` ≠ 1 it is a
:class:`ScaledAlphaFitness`: the automatic α (the IQR rule of
:mod:`refine.cost.fitness`) times ``alpha_scale``. The subclass is defined
here, at module level, so that its instances pickle by reference for the
annealing workers (process pools, Dask).

This module imports :mod:`refine.cost` (Numba kernels); the refinement
imports it when a run starts.
"""

from __future__ import annotations

import logging

from refine.cost import Fitness

__all__ = ["ScaledAlphaFitness", "make_fitness"]

log = logging.getLogger(__name__)


class ScaledAlphaFitness(Fitness):
    """A :class:`refine.cost.Fitness` whose automatic α is ``alpha_scale`` × the IQR rule's.

    Parameters
    ----------
    *args, **kw
        Those of :class:`refine.cost.Fitness`.
    alpha_scale : float
        Factor on the automatic α (> 1 favours the image).
    """

    def __init__(self, *args, alpha_scale: float = 1.0, **kw):
        super().__init__(*args, **kw)
        self.alpha_scale = float(alpha_scale)

    def alpha_from(self, energies, chi2s) -> float:
        """``alpha_scale`` × :meth:`refine.cost.Fitness.alpha_from` (eV per unit χ²; logged)."""
        alpha = self.alpha_scale * Fitness.alpha_from(energies, chi2s)
        log.info("alpha scaled by %g: %.6g", self.alpha_scale, alpha)
        return alpha


def make_fitness(inputs) -> Fitness:
    """The fitness of a run from its :class:`refine.workflows.inputs.RefinementInputs`.

    α is not calibrated yet with ``alpha="auto"``: the GA does it on the
    starting population (:func:`refine.search.run_ga`).
    """
    fit_kw = dict(inputs.fitness_options)
    fitness_cls = Fitness
    if inputs.alpha_scale != 1.0:
        fitness_cls = ScaledAlphaFitness
        fit_kw["alpha_scale"] = inputs.alpha_scale
    calculator = inputs.calculator
    fit_kw.setdefault("model_error", inputs.model_error)
    fit_kw.setdefault("composition", dict(inputs.composition))
    return fitness_cls(inputs.model, inputs.image, alpha=inputs.alpha, noise=inputs.noise, dose=inputs.dose,
                       calculator=calculator, symbols=list(inputs.composition),
                       mode="pareto" if inputs.multi_objective else "weighted", **fit_kw)
