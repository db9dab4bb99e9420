"""The DEAP toolbox of one refinement: every operator the loop calls, built by :func:`make_toolbox`.

The loop (:func:`refine.search.ga.run_ga`) only calls what is registered
here (DEAP's contract): ``evaluate``, ``mate``, ``mutate``, ``select``,
``survive``, ``map``, ``clone``, ``individual``, ``similar``,
``immigrant``, and optionally ``relax`` and ``anneal``. Every operator
draws from the one :class:`numpy.random.Generator` given to
:func:`make_toolbox`, which the loop shares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np
from deap import base

from refine.search.anneal_tasks import make_anneal_task
from refine.search.evaluation import CostEvaluator
from refine.search.geometry import default_min_distance, nearest_neighbour_distance
from refine.search.individuals import to_individual
from refine.search.operators import (
    CutSpliceCrossover,
    DepthFlipMutation,
    DepthMoveMutation,
    ImageGuidedMutation,
    MirrorMutation,
    MutationSelector,
    PermutationMutation,
    RattleMutation,
    RotationMutation,
    SurfaceMoveMutation,
)
from refine.search.population import random_cluster
from refine.search.relaxation import FitnessAlpha, LocalRelaxation, cost_calculator
from refine.search.selection import ParetoTournament, SimilarityCriterion, Survival, Tournament
from refine.search.settings import DEFAULT_MUTATION_WEIGHTS, GASettings

__all__ = ["make_toolbox"]


class _Immigrant:
    """A fresh random cluster as a new individual (diversity injection)."""

    def __init__(self, composition, rng, min_distance, multi_objective):
        self.composition, self.rng = dict(composition), rng
        self.min_distance, self.multi_objective = min_distance, multi_objective

    def __call__(self):
        atoms = random_cluster(self.composition, self.rng, min_distance=self.min_distance)
        atoms.info["operator"] = "immigrant"
        return to_individual(atoms, self.multi_objective)


def make_toolbox(fitness, composition: Mapping[str, int], settings: GASettings, rng: np.random.Generator, *,
                 difference: Callable | None = None, calculator=None, map_func: Callable = map) -> base.Toolbox:
    """A DEAP toolbox for one refinement.

    Registers ``evaluate`` (a :class:`refine.search.evaluation.CostEvaluator`),
    ``mate`` (:class:`~refine.search.operators.CutSpliceCrossover`),
    ``mutate`` (a :class:`~refine.search.operators.MutationSelector` over
    the weighted mutations), ``select`` (parent selection), ``survive``
    (next population), ``map`` (``map_func``; must preserve order),
    ``clone`` (deep copy), ``individual`` (Atoms → individual), ``similar``
    (duplicate test), ``immigrant`` (a fresh random cluster), with
    ``calculator`` and ``settings.relaxation.steps`` ``relax``
    (:class:`~refine.search.relaxation.LocalRelaxation`) and with
    ``calculator`` and ``settings.annealing.every`` ``anneal``
    (:class:`~refine.search.anneal_tasks.AnnealTask`). Also sets
    ``min_distance`` and ``nn_distance`` (Å) and, with a ``difference``,
    ``difference`` (for the polish).

    Parameters
    ----------
    fitness : object
        See :class:`refine.search.evaluation.CostEvaluator`.
    composition : mapping
        Exact species counts kept by crossover and mirror.
    settings : GASettings
    rng : numpy.random.Generator
        Shared by every operator; :func:`refine.search.ga.run_ga` must get the same one.
    difference : callable, optional
        ``difference(atoms) -> (sim − exp image, ProbeGrid)`` enabling the
        image-guided mutation.
    calculator : str, ase calculator or factory, optional
        For the offspring relaxation; a name goes through
        :func:`refine.cost.energy.make_calculator`.
    map_func : callable
        ``map``-like, e.g. a Dask client's ``lambda f, xs: client.gather(client.map(f, xs))``.
    """
    settings.validate()
    comp = dict(composition)
    d_min = settings.variation.min_distance or default_min_distance(comp)
    d_nn = nearest_neighbour_distance(comp)
    tb = base.Toolbox()
    tb.register("evaluate", CostEvaluator(fitness))
    tb.min_distance, tb.nn_distance = d_min, d_nn
    tb.register("map", map_func)
    tb.register("clone", copy.deepcopy)
    tb.register("individual", to_individual, multi_objective=settings.multi_objective)
    tb.register("mate", CutSpliceCrossover(rng, d_min, comp, beam_parallel=settings.variation.beam_parallel_cuts,
                                           nn_distance=d_nn))
    tb.register("mutate", _mutations(comp, settings, rng, d_min, d_nn, difference))
    if difference is not None:
        tb.difference = difference  # the polish's image-guided sweep
    if settings.multi_objective:
        tb.register("select", ParetoTournament(rng))
    else:
        tb.register("select", Tournament(rng, settings.selection.tournament_size))
    similar = SimilarityCriterion(settings.selection.duplicate_cost_tol, settings.selection.duplicate_fingerprint_tol)
    tb.register("similar", similar)
    tb.register("survive", Survival(settings, similar))
    tb.register("immigrant", _Immigrant(comp, rng, d_min, settings.multi_objective))
    if calculator is not None and settings.relaxation.steps > 0:
        _register_relaxation(tb, fitness, calculator, comp, settings, rng)
    if settings.annealing.every and calculator is not None:
        # the task gets the calculator as given: a name lets it make its calculator where it runs (asap3
        # calculators do not pickle)
        tb.register("anneal", make_anneal_task(fitness, calculator, comp, settings, difference, d_min))
    return tb


def _mutations(comp, settings, rng, d_min, d_nn, difference) -> MutationSelector:
    """The weighted mutations (``DEFAULT_MUTATION_WEIGHTS`` updated by ``settings.variation.mutation_weights``)."""
    kw = {"nn_distance": d_nn}
    v = settings.variation
    weights = {**DEFAULT_MUTATION_WEIGHTS, **v.mutation_weights}
    ops = [
        (weights["rattle"], RattleMutation(rng, d_min, sigma=v.rattle_sigma, **kw)),
        (weights["surface_move"], SurfaceMoveMutation(rng, d_min, **kw)),
        (weights["rotation"], RotationMutation(rng, d_min, max_angle=v.rotation_max_angle, **kw)),
        (weights["mirror"], MirrorMutation(rng, d_min, comp, **kw)),
        (weights["depth_flip"], DepthFlipMutation(rng, d_min, **kw)),
        (weights["depth_move"], DepthMoveMutation(rng, d_min, n_moves=v.image_guided_moves, **kw)),
    ]
    if len(comp) > 1:
        ops.append((weights["permutation"], PermutationMutation(rng, d_min, **kw)))
    if difference is not None:
        guided = ImageGuidedMutation(rng, d_min, difference, n_moves=v.image_guided_moves, **kw)
        ops.append((weights["image_guided"], guided))
    return MutationSelector(rng, ops)


def _register_relaxation(tb, fitness, calculator, comp, settings, rng) -> None:
    """Register ``relax``: FIRE on E, or with ``relax_image`` on E + α·χ² (α from ``tb.relax_alpha``)."""
    if isinstance(calculator, str):  # a name such as "emt" or "auto" (refine.cost.energy)
        from refine.cost import make_calculator

        calculator = make_calculator(calculator, tuple(comp))
    relaxation = settings.relaxation
    if relaxation.image:
        tb.relax_alpha = FitnessAlpha(fitness)
        calculator = cost_calculator(fitness, calculator, tb.relax_alpha)
    tb.register("relax", LocalRelaxation(calculator, steps=relaxation.steps, fmax=relaxation.fmax,
                                         min_distance=tb.min_distance, rng=rng))
