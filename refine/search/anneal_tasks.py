"""Annealing in the GA: picklable tasks for a process pool, and one round of them per generation.

* :func:`make_anneal_task`: the toolbox's ``anneal``, an :class:`AnnealTask`
  around :class:`refine.search.anneal.Annealing` (schedule from the
  settings) and, with ``settings.polish.annealed``, a
  :class:`refine.search.polish.AnnealPolish`.
* :class:`AnnealTask`: ``task((atoms, seed)) -> annealed atoms``, repaired
  to the minimum distance and optionally polished, in whichever process
  runs it.
* :func:`anneal_round`: selects ``settings.annealing.count`` individuals, draws a seed
  for each from the run's generator and maps the tasks.

Temperatures in K, lengths in Å.
"""

from __future__ import annotations

import numpy as np

from refine.search.anneal import AnnealSchedule, Annealing
from refine.search.geometry import repair_min_distance
from refine.search.individuals import as_atoms
from refine.search.polish import AnnealPolish

__all__ = ["AnnealTask", "make_anneal_task", "anneal_round"]


class AnnealTask:
    """``task = (atoms, seed) -> annealed atoms``: one argument, for any ``map``.

    With a ``polish`` (:class:`refine.search.polish.AnnealPolish`) the
    annealed structure also goes through the polish's sweeps where it was
    annealed (a pool worker), and ``info["polish_evaluations"]`` says how
    many evaluations they took. With ``min_distance`` (Å) the annealed
    structure is repaired to it, as every offspring is (a quench from a hot
    melt may leave a close pair); the repair draws from the task's seed only
    when there is one.
    """

    def __init__(self, annealing, polish=None, min_distance: float | None = None):
        self.annealing = annealing
        self.polish = polish
        self.min_distance = min_distance

    def __call__(self, task):
        atoms, seed = task
        out = self.annealing(atoms, seed)
        if self.min_distance is not None:
            repair_min_distance(out, self.min_distance, np.random.default_rng([int(seed), 1]))
        if self.polish is not None:
            out, n = self.polish(out, seed)
            out.info["polish_evaluations"] = int(n)
        return out


def make_anneal_task(fitness, calculator, composition, settings, difference, min_distance: float) -> AnnealTask:
    """The annealing task of a run: ``settings.annealing`` schedule down to 300 K, polished if ``polish.annealed``.

    ``calculator`` is best a name (``"emt"``, ``"auto"``): the task then
    makes its calculator where it runs (asap3 calculators do not pickle).
    """
    annealing = settings.annealing
    schedule = AnnealSchedule(start_temperature=float(annealing.temperature),
                              end_temperature=min(300.0, float(annealing.temperature)),
                              steps=int(annealing.steps), image_weight=float(annealing.image_weight))
    polish = None
    if settings.polish.annealed and settings.relaxation.steps > 0:
        polish = AnnealPolish(fitness, calculator, composition, settings, difference)
    return AnnealTask(Annealing(fitness, calculator, schedule), polish, min_distance=min_distance)


def anneal_round(toolbox, population, settings, rng, anneal_map=None) -> tuple[list, int]:
    """Anneal ``settings.annealing.count`` selected individuals; returns (new individuals, evaluations of their polish).

    Parents come from ``toolbox.select``; each task gets a seed drawn from
    ``rng`` (the run's generator), so the result does not depend on which
    worker runs which task. ``anneal_map`` (default ``toolbox.map``) maps
    ``toolbox.anneal`` over the tasks in order.
    """
    picks = toolbox.select(population, settings.annealing.count)
    seeds = rng.integers(0, 2**63 - 1, size=len(picks))
    tasks = [(as_atoms(p), int(s)) for p, s in zip(picks, seeds)]
    done = list((anneal_map or toolbox.map)(toolbox.anneal, tasks))
    n = sum(int(a.info.pop("polish_evaluations", 0)) for a in done)
    return [toolbox.individual(a) for a in done], n
