"""The polish: the deterministic sweeps (:mod:`refine.search.sweeps`) chained on one structure.

* :func:`polish_sweeps`: vacancy fills, image-guided moves, dark-site
  fills, the adatom flip, island transfers, depth moves and (optionally)
  column shifts, in that order.
* :func:`polish_best`: that chain on the best individual of a generation,
  evaluated like any offspring (every ``polish.every`` generations).
* :class:`AnnealPolish`: that chain on an annealed structure, in the pool
  worker that annealed it (``polish.annealed``).
* :func:`shift_finish`: the clean-up of each column-shift candidate.

Randomness: the sweeps only draw to repair overlaps, each from a fresh
``numpy.random.default_rng(settings.polish.seed)`` (see
:class:`refine.search.settings.PolishSettings` ``seed``): restarting from the
same seed makes a sweep's repairs independent of whatever ran before it, so
the polish is the same in a worker as in the main process and a resumed run
repeats it with no extra generator state in the checkpoint.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from refine.search.evaluation import CostEvaluator, best_key, cost_of, evaluate_individuals
from refine.search.geometry import default_min_distance, nearest_neighbour_distance
from refine.search.individuals import as_atoms
from refine.search.operators import DepthMoveMutation
from refine.search.relaxation import LocalRelaxation, cost_calculator
from refine.search.sweeps import (
    adatom_flip,
    dark_site_sweep,
    fill_vacancies,
    image_guided_sweep,
    shift_sectors,
    transfer_patches,
)

__all__ = ["SHIFT_FINISH_ATOMS", "shift_finish", "polish_sweeps", "polish_best", "AnnealPolish"]

log = logging.getLogger(__name__)

#: depth moves tried on each wedge-shift candidate of the polish (its least-coordinated atoms: the wedge's edges)
SHIFT_FINISH_ATOMS = 20


def shift_finish(relax, evaluate, difference, nn_distance, min_distance, *, seed: int = 0):
    """The clean-up of a column-shift candidate (``finish`` of :func:`refine.search.sweeps.shift_sectors`).

    A shifted region's edges rarely match a grain's: an image-guided sweep
    (when ``difference`` is given) and depth moves of the
    ``SHIFT_FINISH_ATOMS`` least-coordinated atoms put the atoms left on the
    wrong side right before the cost decides. Returns ``finish(atoms, cost)
    -> (atoms, cost, n_evaluations)``. Overlap repairs: the image-guided
    sweep of each candidate starts a fresh generator from ``seed``; the
    depth moves of all candidates share one made from ``seed`` here.
    """
    mover = DepthMoveMutation(np.random.default_rng(seed), min_distance, nn_distance=nn_distance)

    def finish(trial, trial_cost):
        n1 = 0
        if difference is not None:
            trial, trial_cost, n1, _ = image_guided_sweep(trial, relax, evaluate, difference, nn_distance,
                                                          min_distance=min_distance, cost=trial_cost,
                                                          rng=np.random.default_rng(seed))
        trial, trial_cost, n2, _ = mover.polish(trial, relax, evaluate, max_atoms=SHIFT_FINISH_ATOMS,
                                                cost=trial_cost)
        return trial, trial_cost, n1 + n2

    return finish


def polish_sweeps(atoms, relax, evaluate, difference, nn_distance, min_distance, polish, *, shifts: int = 0,
                  energy=None):
    """Vacancy, image-guided, dark-site, adatom-flip, patch, depth-move and wedge-shift sweeps of ``atoms``; returns (atoms, cost, evaluations).

    ``relax(atoms)`` relaxes in place, ``evaluate(atoms) -> cost`` scores
    (and may align) in place; ``difference`` enables the image-guided and
    dark-site sweeps (with ``polish.image_moves``, ``polish.dark_sites``; the
    adatom flip, ``polish.adatom_flips``, follows up with dark sites); ``shifts`` > 0 adds
    :func:`refine.search.sweeps.shift_sectors` with that many candidates
    followed up, ranked by ``energy(atoms)`` (eV) when given. ``polish``
    (a :class:`refine.search.settings.PolishSettings`) sets the sweeps.
    Each sweep repairs from a fresh generator seeded with ``polish.seed``
    (see the module docstring).
    """
    seed = polish.seed
    # interior vacancies first (a surface atom into each, when the cost drops), then atoms moved from too-bright to
    # too-dark spots of the difference image, islands carried to the other side along the beam, and single-atom
    # depth moves
    atoms, cost, n_fill, n_filled = fill_vacancies(atoms, relax, evaluate, nn_distance)
    n_image = n_imaged = 0
    if polish.image_moves and difference is not None:
        m = polish.image_moves
        sizes = [2 ** k for k in range(m.bit_length()) if 2 ** k < m] + [m]
        atoms, cost, n_image, n_imaged = image_guided_sweep(atoms, relax, evaluate, difference, nn_distance,
                                                            min_distance=min_distance, sizes=sizes, cost=cost,
                                                            rng=np.random.default_rng(seed))
    n_dark = n_darkened = 0
    if polish.dark_sites and difference is not None:
        atoms, cost, n_dark, n_darkened = dark_site_sweep(atoms, relax, evaluate, difference, nn_distance,
                                                          min_distance=min_distance, sites=polish.dark_sites,
                                                          cost=cost, rng=np.random.default_rng(seed))
    n_flip = n_flipped = 0
    if polish.adatom_flips:
        atoms, cost, n_flip, n_flipped = adatom_flip(atoms, relax, evaluate, nn_distance, min_distance=min_distance,
                                                     difference=difference, dark_sites=polish.dark_sites, cost=cost,
                                                     rng=np.random.default_rng(seed))
    n_patch = n_moved = 0
    if polish.patches:
        atoms, cost, n_patch, n_moved = transfer_patches(atoms, relax, evaluate, nn_distance,
                                                         min_distance=min_distance, seeds=polish.patches,
                                                         cost=cost, rng=np.random.default_rng(seed))
    mover = DepthMoveMutation(np.random.default_rng(seed), min_distance, nn_distance=nn_distance)
    atoms, cost, n_trials, n_accepted = mover.polish(atoms, relax, evaluate, max_atoms=polish.atoms,
                                                     cost=cost)
    n_shift = n_shifted = 0
    if shifts:
        atoms, cost, n_shift, n_shifted = shift_sectors(
            atoms, relax, evaluate, nn_distance, min_distance=min_distance, keep=shifts, cost=cost, rank=energy,
            finish=shift_finish(relax, evaluate, difference, nn_distance, min_distance, seed=seed),
            rng=np.random.default_rng(seed))
    log.debug("polish: %d of %d vacancy fills, %d of %d image-guided moves, %d dark-site fills (%d evaluations), "
              "%d adatom flip (%d evaluations), %d of %d patch transfers, %d of %d depth moves and %d wedge shift "
              "(%d evaluations) accepted, cost %.6g", n_filled, n_fill, n_imaged, n_image, n_darkened, n_dark,
              n_flipped, n_flip, n_moved, n_patch, n_accepted, n_trials, n_shifted, n_shift, cost)
    return atoms, cost, 1 + n_fill + n_image + n_dark + n_flip + n_patch + n_trials + n_shift


def polish_best(toolbox, population, settings, alpha):
    """The polish's sweeps (:func:`polish_sweeps`) of the best individual; returns (individual, evaluations).

    Trials are relaxed with ``toolbox.relax`` and evaluated as offspring are
    (:func:`refine.search.evaluation.evaluate_individuals`, at ``alpha``);
    the column shifts (``settings.polish.shifts``) are ranked by energy.
    """
    best = min(population, key=best_key)
    last = {}  # the energy of the last evaluation, eV

    def evaluate(atoms):
        ind = toolbox.individual(atoms)
        evaluate_individuals(toolbox, [ind], settings, alpha)
        atoms.positions = ind.positions  # aligned on the image
        last["energy"] = ind.info.get("energy")
        return cost_of(ind)

    def energy(atoms):  # ranks the column shifts (refine.search.sweeps.shift_sectors)
        evaluate(atoms)
        e = last["energy"]
        return math.inf if e is None or not math.isfinite(e) else float(e)

    atoms, _, n = polish_sweeps(as_atoms(best), toolbox.relax, evaluate, getattr(toolbox, "difference", None),
                                toolbox.nn_distance, toolbox.min_distance, settings.polish,
                                shifts=settings.polish.shifts, energy=energy)
    return toolbox.individual(atoms), n


class AnnealPolish:
    """The polish's sweeps (:func:`polish_sweeps`) for an annealed structure, in the process that annealed it.

    A quenched melt keeps vacancies, misplaced atoms and islands that the
    sweeps remove in half a minute; unpolished, it loses the selection to
    a population that has been polished many times, whatever its basin. The
    relaxation, evaluation and difference image are made in the worker
    (asap3 calculators do not pickle); the relaxation's overlap repairs
    draw from the task's seed, so a run stays reproducible. Picklable.
    ``polish(atoms, seed) -> (atoms, evaluations)``.
    """

    def __init__(self, fitness, calculator, composition, settings, difference=None):
        self.fitness = fitness
        self.calculator = calculator
        self.composition = dict(composition)
        self.settings = settings
        self.difference = difference
        self._tools = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tools"] = None
        return state

    def _make_tools(self):
        from refine.cost import make_calculator

        s, comp = self.settings, self.composition
        calc = self.calculator
        if isinstance(calc, str):
            calc = make_calculator(calc, tuple(comp))
        elif isinstance(calc, type) or (callable(calc) and not hasattr(calc, "calculate")):
            calc = calc()
        if s.relaxation.image:
            calc = cost_calculator(self.fitness, calc)
        d_min = s.variation.min_distance or default_min_distance(comp)
        return calc, CostEvaluator(self.fitness), d_min, nearest_neighbour_distance(comp)

    def __call__(self, atoms, seed):
        if self._tools is None:
            self._tools = self._make_tools()
        calc, evaluator, d_min, d_nn = self._tools
        s = self.settings
        relax = LocalRelaxation(calc, steps=s.relaxation.steps, fmax=s.relaxation.fmax, min_distance=d_min,
                                rng=np.random.default_rng([int(seed) % 2**63, 1]))

        def evaluate(a):
            cost, _, _, dx, dy = evaluator(a)
            if s.align_individuals and (dx or dy):
                a.positions = a.positions + np.array([dx, dy, 0.0])
            return cost if math.isfinite(cost) else math.inf

        out, _, n = polish_sweeps(atoms, relax, evaluate, self.difference, d_nn, d_min, s.polish)
        return out, n
