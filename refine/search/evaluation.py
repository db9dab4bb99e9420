"""From a fitness to evaluated individuals: costs, fitness values, α.

* :class:`CostEvaluator` adapts any fitness object to
  ``evaluate(atoms) -> (cost, chi2, energy, dx, dy)`` (cheap to send from a
  worker process).
* :func:`evaluate_individuals` maps it over individuals (``toolbox.map``,
  results assigned by position) and :func:`assign_fitness` stores the result:
  DEAP fitness values, ``info["cost"/"chi2"/"energy"/"alpha"]``, and the
  alignment shift applied to the positions.
* :func:`cost_of`, :func:`best_key`: how individuals are ranked.
* :func:`alpha_of`, :func:`set_alpha`, :func:`reweigh`: the weight α of χ²
  in the cost E + α·χ² (eV per unit χ²).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from surrogate.common import StemRefineError

__all__ = ["CostEvaluator", "evaluate_individuals", "assign_fitness", "cost_of", "best_key", "alpha_of",
           "set_alpha", "reweigh"]


class CostEvaluator:
    """Adapts a fitness object to ``evaluate(atoms) -> (cost, chi2, energy, dx, dy)`` floats.

    ``fitness`` may have an ``evaluate`` method or be callable; its result
    may have ``cost``/``chi2``/``energy`` (and optionally ``shift``, the
    (dx, dy) Å that aligns the atoms on the image) attributes, be a mapping
    with those keys, or be a number (the cost; χ² and E are then NaN). A
    plain tuple comes back, cheap to send from a Dask worker. Picklable when
    ``fitness`` is.
    """

    def __init__(self, fitness):
        if not (hasattr(fitness, "evaluate") or callable(fitness)):
            raise TypeError("fitness must have an evaluate(atoms) method or be callable")
        self.fitness = fitness

    def __call__(self, atoms) -> tuple[float, float, float, float, float]:
        fn = self.fitness.evaluate if hasattr(self.fitness, "evaluate") else self.fitness
        r = fn(atoms)
        if isinstance(r, (int, float, np.floating, np.integer)):
            return float(r), math.nan, math.nan, 0.0, 0.0
        get = r.get if isinstance(r, Mapping) else (lambda k, d=None: getattr(r, k, d))
        shift = get("shift", None)
        dx, dy = (0.0, 0.0) if shift is None else (float(shift[0]), float(shift[1]))
        return float(get("cost")), float(get("chi2", math.nan)), float(get("energy", math.nan)), dx, dy


def evaluate_individuals(toolbox, individuals, settings, alpha) -> int:
    """Evaluate ``individuals`` with ``toolbox.map(toolbox.evaluate, ...)`` and assign the results in place.

    ``settings`` gives the objective mode and whether to align; ``alpha`` is
    recorded in each ``info``. Returns the number of evaluations.
    """
    if not individuals:
        return 0
    values = list(toolbox.map(toolbox.evaluate, individuals))
    for ind, v in zip(individuals, values):
        assign_fitness(ind, v, settings.multi_objective, alpha, settings.align_individuals)
    return len(individuals)


def assign_fitness(ind, values: tuple, multi_objective: bool, alpha, align: bool):
    """Store ``values = (cost, chi2, energy, dx, dy)`` on ``ind``: fitness, ``info``, and the alignment shift (Å)."""
    cost, chi2, energy, dx, dy = values
    if align and (dx or dy):
        # move onto the image (the cost does not change: the fitness aligns anyway), so later
        # evaluations start aligned and parents of a crossover share the image's frame
        pos = np.array(ind.positions)
        pos[:, 0] += dx
        pos[:, 1] += dy
        ind.positions = pos
    if multi_objective:
        if not (math.isfinite(chi2) and math.isfinite(energy)):
            raise StemRefineError("multi-objective mode needs a fitness that returns finite chi2 and energy")
        ind.fitness.values = (chi2, energy)
    else:
        if not math.isfinite(cost):
            cost = math.inf
        ind.fitness.values = (cost,)
    ind.info["cost"] = cost
    ind.info["chi2"] = chi2
    ind.info["energy"] = energy
    if alpha is not None:
        ind.info["alpha"] = float(alpha)
    ind.calc = None  # keep individuals picklable (a calculator may not be)


def cost_of(ind) -> float:
    """The cost E + α·χ² of an evaluated individual (``info["cost"]``); ``inf`` when missing or not finite."""
    c = ind.info.get("cost", math.inf)
    return math.inf if c is None or not math.isfinite(c) else float(c)


def best_key(ind) -> tuple[float, float]:
    """Order for "best": the cost, then χ² (the cost is NaN in a Pareto run without α)."""
    c2 = ind.info.get("chi2", math.inf)
    return cost_of(ind), (math.inf if c2 is None or not math.isfinite(c2) else float(c2))


def alpha_of(fitness) -> float | None:
    """The fitness's α (eV per unit χ²), or None when it has none yet."""
    a = getattr(fitness, "alpha", None)
    return float(a) if isinstance(a, (int, float, np.floating)) else None


def set_alpha(fitness, alpha) -> None:
    """Give the fitness the weight ``alpha`` of χ² (eV per unit χ²)."""
    try:
        fitness.alpha = alpha
    except AttributeError as exc:
        raise StemRefineError(f"cannot set alpha on {type(fitness).__name__}: {exc}") from exc


def reweigh(population, alpha) -> None:
    """Recompute the cost E + α·χ² of evaluated individuals for a new α (no re-evaluation)."""
    for ind in population:
        e, c2 = ind.info.get("energy", math.nan), ind.info.get("chi2", math.nan)
        if e is None or c2 is None or not (math.isfinite(e) and math.isfinite(c2)):
            continue
        cost = float(e) + alpha * float(c2)
        ind.fitness.values = (cost,)
        ind.info["cost"] = cost
        ind.info["alpha"] = float(alpha)
