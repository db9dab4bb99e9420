"""The DEAP genetic algorithm: individual types, toolbox factory, loop, checkpoints.

Usage
-----
::

    rng = np.random.default_rng(seed)
    population = make_population("Pt309", 20, rng)
    result = run_ga(fitness, population, GASettings(generations=200), "out/", rng=rng)
    result.best            # ase.Atoms, info: cost, chi2, energy, alpha
    result.logbook         # deap.tools.Logbook, also out/logbook.csv

``fitness`` is any object with ``evaluate(atoms)`` (or a plain callable)
returning a result with ``.cost``, ``.chi2`` and ``.energy`` (a mapping with
those keys, or a bare float cost, also work). When ``settings.alpha`` is
``"auto"`` and the object has ``calibrate_alpha(population)``, that is
called once on the evaluated-to-be starting population; a numeric
``settings.alpha`` is assigned to ``fitness.alpha``. The α in use (read from
``fitness.alpha``) is logged, checkpointed and restored on resume.

The loop
--------
Generation 0 evaluates the starting population. Each generation then makes
λ offspring (``offspring_size``): with probability ``crossover_probability``
two tournament-selected parents are cloned and cut-and-spliced, each child
then mutated with probability ``mutation_probability``; otherwise one parent
is cloned and mutated (one mutation drawn by weight). Every offspring is
repaired to the minimum distance (inside the operators) and optionally
relaxed (FIRE, few steps). Offspring are evaluated with ``toolbox.map`` in
list order (results are assigned by position, so a Dask map gives the same
run). Survival: duplicates (:class:`refine.search.operators.SimilarityCriterion`)
are removed from parents + offspring, then the best μ survive
(``replacement="plus"``), or the ``elite`` hall-of-fame members plus the
best μ − elite offspring (``"generational"``). Multi-objective mode
minimises (χ², E) with NSGA-II survival and a (rank, crowding) tournament
and keeps a Pareto front.

Stopping: ``generations``, ``stagnation`` (generations without a relative
improvement of the best cost beyond ``stagnation_tol``; in multi-objective
mode, without a new member of the Pareto front) or ``time_limit`` seconds of
wall time (summed over resumed segments).

Checkpoints (``checkpoint.pkl`` in ``out_dir`` every ``checkpoint_every``
generations and at the end): population, hall of fame, logbook,
generation, the stagnation state, α, Python's ``random`` state and the
NumPy generator's ``bit_generator.state``; pickled to a temporary file and
moved into place with :func:`os.replace`. With ``resume=True`` the run
continues from it exactly: the same seed gives the same best structure
whether or not the run was killed in between.

All randomness comes from the one :class:`numpy.random.Generator` given to
:func:`run_ga` (and shared with the toolbox's operators).
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import pickle
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from deap import base, creator, tools

from surrogate.common import atomic_write_bytes

from surrogate.common import InputError, StemRefineError
from refine.search.operators import (
    CutSpliceCrossover,
    DepthFlipMutation,
    DepthMoveMutation,
    ImageGuidedMutation,
    LocalRelaxation,
    MirrorMutation,
    MutationSelector,
    PermutationMutation,
    RattleMutation,
    RotationMutation,
    SimilarityCriterion,
    SurfaceMoveMutation,
    composition_of,
    default_min_distance,
    diversity,
    fill_vacancies,
    image_guided_sweep,
    shift_sectors,
    nearest_neighbour_distance,
    repair_min_distance,
    transfer_patches,
)

__all__ = [
    "StemFitnessMin",
    "StemFitnessPareto",
    "StemIndividual",
    "StemParetoIndividual",
    "GASettings",
    "GAResult",
    "CostEvaluator",
    "FitnessDifference",
    "make_toolbox",
    "to_individual",
    "as_atoms",
    "run_ga",
    "load_checkpoint",
    "LOGBOOK_COLUMNS",
    "CHECKPOINT_NAME",
    "LOGBOOK_NAME",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pkl"
LOGBOOK_NAME = "logbook.csv"
_CHECKPOINT_VERSION = 1

#: columns of the logbook (and of logbook.csv), in order
LOGBOOK_COLUMNS = (
    "gen", "nevals", "best_cost", "best_chi2", "best_energy",
    "min_cost", "mean_cost", "min_chi2", "mean_chi2", "min_energy", "mean_energy",
    "diversity", "n_unique", "alpha", "elapsed_s",
)

# --- DEAP types: created once, here. -------------------------------------------------
# DEAP >= 1.4 pickles creator classes by value (deap.creator.meta_create re-creates
# them on unpickling), so individuals load in a process that never imported this
# module (a Dask worker). Such a re-created class is a distinct class object of the
# same name, weights and base: code here never relies on isinstance checks against
# StemIndividual. For older DEAP, the classes are also bound here under their own
# names with __module__ = "refine.search.ga", so pickle can find them by reference.


def _create_types():
    if not hasattr(creator, "StemFitnessMin"):
        creator.create("StemFitnessMin", base.Fitness, weights=(-1.0,))
    if not hasattr(creator, "StemFitnessPareto"):
        creator.create("StemFitnessPareto", base.Fitness, weights=(-1.0, -1.0))
    if not hasattr(creator, "StemIndividual"):
        creator.create("StemIndividual", Atoms, fitness=creator.StemFitnessMin)
    if not hasattr(creator, "StemParetoIndividual"):
        creator.create("StemParetoIndividual", Atoms, fitness=creator.StemFitnessPareto)
    for name in ("StemFitnessMin", "StemFitnessPareto", "StemIndividual", "StemParetoIndividual"):
        getattr(creator, name).__module__ = __name__


_create_types()
#: single-objective fitness, minimising the cost E + α·χ²
StemFitnessMin = creator.StemFitnessMin
#: two-objective fitness, minimising (χ², E)
StemFitnessPareto = creator.StemFitnessPareto
#: an ``ase.Atoms`` with a ``fitness`` (StemFitnessMin)
StemIndividual = creator.StemIndividual
#: an ``ase.Atoms`` with a ``fitness`` (StemFitnessPareto)
StemParetoIndividual = creator.StemParetoIndividual


def to_individual(atoms: Atoms, multi_objective: bool = False):
    """A GA individual (Atoms subclass with an empty fitness) holding a copy of ``atoms``.

    Keeps numbers, positions and ``info``; drops cell, calculator and other arrays.
    """
    cls = StemParetoIndividual if multi_objective else StemIndividual
    ind = cls(numbers=np.array(atoms.numbers), positions=np.array(atoms.positions, dtype=float))
    ind.info = {k: v for k, v in atoms.info.items()}
    return ind


def as_atoms(ind) -> Atoms:
    """A plain :class:`ase.Atoms` copy of an individual (numbers, positions, info)."""
    atoms = Atoms(numbers=np.array(ind.numbers), positions=np.array(ind.positions, dtype=float))
    atoms.info = dict(ind.info)
    return atoms


# --- settings and result ---------------------------------------------------------------

_DEFAULT_WEIGHTS = {"rattle": 1.0, "permutation": 1.0, "surface_move": 1.0, "image_guided": 1.0,
                    "rotation": 1.0, "mirror": 0.5, "depth_flip": 0.0,
                    "depth_move": 0.0}


@dataclass
class GASettings:
    """Settings of :func:`run_ga` (all keyword, with defaults).

    Parameters
    ----------
    population_size : int
        μ, individuals kept per generation.
    offspring_size : int, optional
        λ, offspring made per generation; default μ.
    generations : int
        Maximum number of generations after generation 0.
    crossover_probability, mutation_probability : float
        See the module docstring.
    mutation_weights : dict
        Relative weights of ``rattle``, ``permutation`` (alloys only),
        ``surface_move``, ``image_guided`` (only with a ``difference``
        function), ``rotation``, ``mirror``, ``depth_flip``, ``depth_move``.
    tournament_size : int
        Parent tournament size (single objective).
    hall_of_fame_size : int
        Best distinct structures kept over the run.
    replacement : {"plus", "generational"}
        (μ+λ) truncation, or offspring replacing the parents except ``elite``.
    elite : int
        Hall-of-fame members carried over in ``"generational"`` replacement.
    stagnation : int, optional
        Stop after this many generations without improvement.
    stagnation_tol : float
        Relative improvement of the best cost that counts.
    time_limit : float, optional
        Wall-time limit in seconds (over all resumed segments).
    checkpoint_every : int
        Checkpoint period in generations (needs an ``out_dir``).
    multi_objective : bool
        NSGA-II on (χ², E); the result has a Pareto front.
    alpha : "auto", float or None
        ``"auto"``: ``fitness.calibrate_alpha(population)`` before generation 0;
        a number: set ``fitness.alpha``; ``None``: leave the fitness as is.
    min_distance : float, optional
        Minimum interatomic distance in Å; default 0.75 × the composition's
        nearest-neighbour distance.
    rattle_sigma : float
        Rattle displacement σ in Å.
    rotation_max_angle : float
        Largest rotation of the rotation mutation, radians.
    relax_steps : int
        FIRE steps on each offspring (0: none; only with a calculator).
        Relaxing offspring close to their local minimum (Deaven–Ho's
        "Lamarckian" GA) is what makes random starts work: on a toy
        Pt55 icosahedron image (tests/refine/ga_toy.py, μ = 20), 100
        steps found the structure exactly within 100 generations in 1 of
        3 seeds, whereas 10 steps or none reached ≤ 36 % of the atoms
        within 0.5 Å even after 1500 generations.
    relax_fmax : float
        FIRE force criterion, eV/Å.
    anneal_every : int
        Every this many generations (0: never), ``anneal_count`` individuals
        chosen by the parent selection go through image-restrained simulated
        annealing (:class:`refine.search.anneal.Annealing`: Langevin MD on
        E + α·χ² from ``anneal_temperature`` K down to 300 K over
        ``anneal_steps`` steps of 5 fs, then a FIRE quench) and join that
        generation's offspring. Local moves cannot crystallise an amorphous
        300-atom cluster; the annealing can, while the image holds its
        projection. The annealings of one generation go through the
        toolbox ``map`` (a process pool runs them in parallel); each has its
        own seed drawn from the GA's generator. With a ``time_limit``, a
        round that would end past it (judged by the last round's duration)
        is skipped.
    polish_every : int
        Every this many generations (0: never), the best individual gets a
        deterministic sweep that fills its interior vacancies with surface
        atoms (:func:`refine.search.operators.fill_vacancies`, each fill kept when
        the cost drops), moves surface atoms from too-bright to too-dark
        spots of the difference image (:func:`refine.search.operators.image_guided_sweep`,
        with ``polish_image_moves`` > 0 and a ``difference`` function), moves
        whole surface patches to the other side of the particle
        (:func:`refine.search.operators.transfer_patches`, with ``polish_patches``
        > 0), then a sweep of depth moves (:meth:`refine.search.operators.DepthMoveMutation.polish`):
        each of its ``polish_atoms`` least-coordinated atoms in turn is
        moved to the far end of its line of sight, relaxed and evaluated,
        and kept when the cost drops; the result joins the offspring. Needs
        the offspring relaxation (``relax_steps`` and a calculator).
    polish_patches : int
        Seeds of the polish's patch sweep (0: no patch sweep). Each seed
        (a least-coordinated surface atom) grows patches of 3, 5, 7, 10 and
        14 atoms on its side along the beam; each patch is moved to the
        empty lattice sites under the same x, y on the other side, relaxed
        and evaluated, and the best is kept when the cost drops. One
        projection shows an island of atoms on the top and on the bottom
        facet alike; single-atom depth moves cannot carry an island over,
        because each atom moved alone becomes an adatom.
    polish_image_moves : int
        Largest number of atoms moved in one trial of the polish's
        image-guided sweep (trials move 1, 2, 4, … up to it; 0: no sweep;
        needs a ``difference`` function). With 10 surface atoms of case (a)
        of the self-consistency benchmark moved from the top facet to the
        far bottom, the sweep takes the truth-relaxed structure from 95.3 to
        98.7 % of the atoms within 0.5 Å in 12 trials, 8 s
        (``python examples/image_guided_sweep.py``).
    polish_shifts : int
        With > 0, the polish of the best ends with a column-shift sweep
        (:func:`refine.search.operators.shift_sectors`): wedges about the column
        axis and caps at the particle's edges slide by ± one lattice period
        along the columns (:func:`refine.search.operators.beam_column`, tilted
        with the particle), the candidates are ranked by their unrelaxed
        cost, and this many of the best are relaxed, cleaned up
        (image-guided sweep, depth moves of their 20 least-coordinated
        atoms) and kept when the cost drops. It repairs a grain, or the
        edge of one, that sits one period too high: right projection,
        stepped facets.
    polish_annealed : bool
        Every annealed structure also goes through the polish's sweeps
        (vacancies, image-guided moves, patches, depth moves, as set by the
        ``polish_*`` fields) in the process that annealed it, before it
        joins the offspring; the evaluations count. Needs the offspring
        relaxation (``relax_steps`` and a calculator).
    beam_parallel_cuts : float
        Probability that a crossover's cut plane contains the beam direction
        (:class:`refine.search.operators.CutSpliceCrossover` ``beam_parallel``).
    relax_image : bool
        Relax offspring on the full cost E + α·χ² instead of E alone: the
        image force −α·∂χ²/∂r (:mod:`refine.cost.image_forces`, from the
        surrogate's adjoint) slides atoms in x, y onto the image while the
        energy places them along the beam. Needs a fitness with a surrogate
        model and an image (:class:`refine.cost.fitness.Fitness`); α is read
        from the fitness at every step (energy only until it is calibrated).
    finish_fraction : float
        Length of a finishing stage at the end of the run, as a fraction of
        ``time_limit`` (or of ``generations`` without one); 0: none. In it
        the selection weighs the image by ``finish_alpha`` instead of the
        search's α, annealing stops, and the mutations get
        ``finish_weights``. The offspring relaxation keeps the search's α:
        a large α in the relaxation strains the particle to fit the noise,
        whereas in the selection it only decides between discrete
        alternatives (an atom on this site or on that one).
    finish_alpha : float or "thermal", optional
        α of the finishing stage, eV per unit χ²; ``"thermal"`` asks the
        fitness (``fitness.thermal_alpha()``, k_B·T/2: χ² is −2 ln
        likelihood and E/k_BT the Boltzmann prior). Needed when
        ``finish_fraction`` > 0.
    finish_weights : dict
        Mutation weights that replace ``mutation_weights`` entries in the
        finishing stage.
    duplicate_cost_tol, duplicate_fingerprint_tol : float
        See :class:`refine.search.operators.SimilarityCriterion`.
    image_guided_moves : int
        Atoms moved per image-guided mutation
        (:class:`refine.search.operators.ImageGuidedMutation` ``n_moves``) and
        per depth move (:class:`refine.search.operators.DepthMoveMutation`).
    immigrants : int
        Fresh random clusters added to the offspring every generation
        (diversity against premature convergence).
    align_individuals : bool
        Move each evaluated individual by the fitness result's ``shift``
        (xy, Å) onto the image, when the result has one.
    progress : bool
        Show a tqdm bar on stderr.
    """

    population_size: int = 20
    offspring_size: int | None = None
    generations: int = 100
    crossover_probability: float = 0.5
    mutation_probability: float = 0.3
    mutation_weights: dict = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    tournament_size: int = 3
    hall_of_fame_size: int = 10
    replacement: str = "plus"
    elite: int = 2
    stagnation: int | None = None
    stagnation_tol: float = 1e-6
    time_limit: float | None = None
    checkpoint_every: int = 1
    multi_objective: bool = False
    alpha: object = "auto"
    min_distance: float | None = None
    rattle_sigma: float = 0.25
    rotation_max_angle: float = math.pi / 12
    relax_steps: int = 100
    relax_fmax: float = 0.05
    relax_image: bool = False
    beam_parallel_cuts: float = 0.0
    anneal_every: int = 0
    anneal_count: int = 1
    anneal_steps: int = 8000
    anneal_temperature: float = 1500.0
    polish_every: int = 0
    polish_atoms: int = 60
    polish_patches: int = 0
    polish_image_moves: int = 0
    polish_annealed: bool = False
    polish_shifts: int = 0
    finish_fraction: float = 0.0
    finish_alpha: object = None
    finish_weights: dict = field(default_factory=dict)
    duplicate_cost_tol: float = 1e-4
    duplicate_fingerprint_tol: float = 0.03
    align_individuals: bool = True
    immigrants: int = 0
    image_guided_moves: int = 1
    progress: bool = True

    def validate(self) -> "GASettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        def positive_int(name, minimum=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise InputError(f"{name} must be an integer ≥ {minimum}, got {v!r}")

        positive_int("population_size", 1)
        positive_int("generations", 0)
        positive_int("tournament_size", 1)
        positive_int("hall_of_fame_size", 1)
        positive_int("checkpoint_every", 1)
        positive_int("elite", 0)
        positive_int("immigrants", 0)
        positive_int("image_guided_moves", 1)
        positive_int("anneal_every", 0)
        positive_int("anneal_count", 1)
        positive_int("anneal_steps", 0)
        positive_int("polish_every", 0)
        positive_int("polish_atoms", 1)
        positive_int("polish_patches", 0)
        positive_int("polish_image_moves", 0)
        positive_int("polish_shifts", 0)
        positive_int("relax_steps", 0)
        if not (isinstance(self.relax_fmax, (int, float)) and math.isfinite(self.relax_fmax) and self.relax_fmax > 0):
            raise InputError(f"relax_fmax must be a positive number of eV/Å, got {self.relax_fmax!r}")
        if not isinstance(self.polish_annealed, (bool, np.bool_)):
            raise InputError(f"polish_annealed must be true or false, got {self.polish_annealed!r}")
        if not (isinstance(self.anneal_temperature, (int, float)) and math.isfinite(self.anneal_temperature)
                and self.anneal_temperature > 0):
            raise InputError(f"anneal_temperature must be a positive number of K, got {self.anneal_temperature!r}")
        if self.relax_image and self.relax_steps == 0:
            raise InputError("relaxing on the image cost (relax_image / --image-forces) needs relax steps > 0")
        if not 0.0 <= self.beam_parallel_cuts <= 1.0:
            raise InputError(f"beam_parallel_cuts must be in [0, 1], got {self.beam_parallel_cuts!r}")
        if self.offspring_size is not None:
            positive_int("offspring_size", 1)
        if self.stagnation is not None:
            positive_int("stagnation", 1)
        for name in ("crossover_probability", "mutation_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {v!r}")
        if self.replacement not in ("plus", "generational"):
            raise InputError(f"replacement must be 'plus' or 'generational', got {self.replacement!r}")
        if self.replacement == "generational" and self.lam + self.elite < self.population_size:
            raise InputError("generational replacement needs offspring_size + elite ≥ population_size")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InputError(f"time limit must be a positive number of seconds, got {self.time_limit!r}")
        if not (self.alpha is None or self.alpha == "auto"
                or (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0)):
            raise InputError(f"alpha must be 'auto' or a non-negative number, got {self.alpha!r}")
        if not (isinstance(self.finish_fraction, (int, float)) and 0.0 <= self.finish_fraction < 1.0):
            raise InputError(f"finish_fraction must be in [0, 1), got {self.finish_fraction!r}")
        if self.finish_fraction > 0:
            if self.multi_objective:
                raise InputError("a finishing stage (finish_fraction) needs the single-objective mode")
            a = self.finish_alpha
            if not (a == "thermal" or (isinstance(a, (int, float)) and not isinstance(a, bool)
                                       and math.isfinite(a) and a >= 0)):
                raise InputError(f"finish_alpha must be 'thermal' or a non-negative number, got {a!r}")
        unknown = (set(self.mutation_weights) | set(self.finish_weights)) - set(_DEFAULT_WEIGHTS)
        if unknown:
            raise InputError(f"unknown mutation(s) {sorted(unknown)}; known: {sorted(_DEFAULT_WEIGHTS)}")
        return self

    @property
    def lam(self) -> int:
        return self.offspring_size or self.population_size


@dataclass
class GAResult:
    """What :func:`run_ga` returns.

    Attributes
    ----------
    best : ase.Atoms
        Lowest-cost structure found (in multi-objective mode: the lowest
        cost on the Pareto front); ``info`` has ``cost``, ``chi2``,
        ``energy``, ``alpha``, ``generation``.
    population : list of ase.Atoms
        The final population.
    hall_of_fame : list of ase.Atoms
        Best distinct structures, best first (single objective), or the
        Pareto front sorted by χ² (multi-objective).
    pareto_front : list of ase.Atoms
        Non-dominated (χ², E) structures sorted by χ²; empty in single-objective mode.
    logbook : deap.tools.Logbook
        One record per generation, columns :data:`LOGBOOK_COLUMNS`.
    generation : int
        Last completed generation.
    stop_reason : str
        ``"generations"``, ``"stagnation"`` or ``"time_limit"``.
    alpha : float or None
        α in use.
    evaluations : int
        Fitness evaluations over the whole run (all segments).
    """

    best: Atoms
    population: list
    hall_of_fame: list
    pareto_front: list
    logbook: tools.Logbook
    generation: int
    stop_reason: str
    alpha: float | None
    evaluations: int


# --- evaluation ------------------------------------------------------------------------

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


class FitnessDifference:
    """``difference(atoms) -> (sim − exp, grid)`` for the image-guided mutation, from a Fitness.

    Uses :meth:`refine.cost.fitness.Fitness.image_terms` (for the alignment shift
    d, Å, that puts the atoms on the image) and
    :meth:`~refine.cost.fitness.Fitness.difference_image` (exp − aligned sim, NaN
    where masked). The returned grid is the image's grid moved by −d, i.e.
    in the atoms' own frame. Picklable when the fitness is.
    """

    def __init__(self, fitness):
        self.fitness = fitness

    def __call__(self, atoms):
        from surrogate.imaging import ProbeGrid

        _, _, _, shift = self.fitness.image_terms(atoms)
        diff = -np.asarray(self.fitness.difference_image(atoms), dtype=float)
        g = self.fitness.image.grid
        grid = ProbeGrid(origin=(g.origin[0] - shift[0], g.origin[1] - shift[1]), shape=g.shape,
                         pixel_size=g.pixel_size)
        return diff, grid


def _assign(ind, values: tuple, multi_objective: bool, alpha, align: bool):
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
    ind.calc = None  # keep individuals picklable


def _cost(ind) -> float:
    c = ind.info.get("cost", math.inf)
    return math.inf if c is None or not math.isfinite(c) else float(c)


def _best_key(ind) -> tuple[float, float]:
    """Order for "best": the cost, then χ² (the cost is NaN in a Pareto run without α)."""
    c2 = ind.info.get("chi2", math.inf)
    return _cost(ind), (math.inf if c2 is None or not math.isfinite(c2) else float(c2))


# --- selection -------------------------------------------------------------------------

class _Tournament:
    """Tournament selection on the cost with the injected generator (DEAP's uses ``random``)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, int(size)

    def __call__(self, population, k):
        costs = np.array([_cost(ind) for ind in population])
        chosen = []
        for _ in range(k):
            idx = self.rng.integers(len(population), size=self.size)
            chosen.append(population[int(idx[np.argmin(costs[idx])])])
        return chosen


class _ParetoTournament:
    """Binary tournament on (non-domination rank, −crowding distance), NSGA-II style."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, population, k):
        rank, crowd = _rank_and_crowding(population)
        chosen = []
        for _ in range(k):
            a, b = (int(v) for v in self.rng.integers(len(population), size=2))
            if (rank[a], -crowd[a]) <= (rank[b], -crowd[b]):
                chosen.append(population[a])
            else:
                chosen.append(population[b])
        return chosen


def _rank_and_crowding(population):
    fronts = tools.sortNondominated(population, len(population))
    pos = {id(ind): i for i, ind in enumerate(population)}
    rank = np.zeros(len(population), dtype=int)
    crowd = np.zeros(len(population))
    for r, front in enumerate(fronts):
        # crowding distance on copies of the fitnesses, so nothing is stored on individuals
        fits = [copy.deepcopy(ind.fitness) for ind in front]
        _crowding(fits)
        for ind, fit in zip(front, fits):
            rank[pos[id(ind)]] = r
            crowd[pos[id(ind)]] = fit.crowding_dist
    return rank, crowd


def _crowding(fitnesses):
    n = len(fitnesses)
    dist = [0.0] * n
    values = [f.values for f in fitnesses]
    for m in range(len(values[0]) if n else 0):
        order = sorted(range(n), key=lambda i: values[i][m])
        dist[order[0]] = dist[order[-1]] = math.inf
        span = values[order[-1]][m] - values[order[0]][m]
        if span == 0:
            continue
        for a, b, c in zip(order[:-2], order[1:-1], order[2:]):
            dist[b] += (values[c][m] - values[a][m]) / span
    for f, d in zip(fitnesses, dist):
        f.crowding_dist = d


def _unique(individuals, similar) -> tuple[list, list]:
    """Split into (distinct, duplicates), scanning in cost order (the best copy is kept)."""
    order = sorted(range(len(individuals)), key=lambda i: _cost(individuals[i]))
    kept, dups = [], []
    for i in order:
        ind = individuals[i]
        if any(similar(ind, other) for other in kept):
            dups.append(ind)
        else:
            kept.append(ind)
    return kept, dups


class _Survival:
    """Next population from parents + offspring (see the module docstring)."""

    def __init__(self, settings: GASettings, similar):
        self.settings, self.similar = settings, similar

    def __call__(self, parents, offspring, hall_of_fame):
        s = self.settings
        mu = s.population_size
        if s.multi_objective:
            distinct, dups = _unique(list(parents) + list(offspring), self.similar)
            pool = distinct if len(distinct) >= mu else distinct + dups[: mu - len(distinct)]
            return tools.selNSGA2(pool, mu)
        if s.replacement == "generational":
            elites = [copy.deepcopy(h) for h in list(hall_of_fame)[: s.elite]]
            distinct, dups = _unique(offspring, self.similar)
            rest = [ind for ind in distinct if not any(self.similar(ind, e) for e in elites)]
            pool = elites + rest + dups
            return pool[:mu]
        distinct, dups = _unique(list(parents) + list(offspring), self.similar)
        return (distinct + dups)[:mu]


# --- toolbox ---------------------------------------------------------------------------

class _Immigrant:
    """A fresh random cluster as a new individual (diversity injection)."""

    def __init__(self, composition, rng, min_distance, multi_objective):
        self.composition, self.rng = dict(composition), rng
        self.min_distance, self.multi_objective = min_distance, multi_objective

    def __call__(self):
        from refine.search.population import random_cluster

        atoms = random_cluster(self.composition, self.rng, min_distance=self.min_distance)
        atoms.info["operator"] = "immigrant"
        return to_individual(atoms, self.multi_objective)


def make_toolbox(fitness, composition: Mapping[str, int], settings: GASettings, rng: np.random.Generator, *,
                 difference: Callable | None = None, calculator=None, map_func: Callable = map) -> base.Toolbox:
    """A DEAP toolbox for one refinement.

    Registers ``evaluate`` (a :class:`CostEvaluator`), ``mate``
    (:class:`~refine.search.operators.CutSpliceCrossover`), ``mutate`` (a
    :class:`~refine.search.operators.MutationSelector` over the weighted
    mutations), ``select`` (parent selection), ``survive`` (next
    population), ``map`` (``map_func``; must preserve order), ``clone``
    (deep copy), ``individual`` (Atoms → individual), ``similar``
    (duplicate test) and, with ``calculator`` and ``settings.relax_steps``,
    ``relax`` (:class:`~refine.search.operators.LocalRelaxation`).

    Parameters
    ----------
    fitness : object
        See :class:`CostEvaluator`.
    composition : mapping
        Exact species counts kept by crossover and mirror.
    settings : GASettings
    rng : numpy.random.Generator
        Shared by every operator; :func:`run_ga` must get the same one.
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
    d_min = settings.min_distance or default_min_distance(comp)
    d_nn = nearest_neighbour_distance(comp)
    kw = {"nn_distance": d_nn}
    tb = base.Toolbox()
    tb.register("evaluate", CostEvaluator(fitness))
    tb.min_distance, tb.nn_distance = d_min, d_nn
    tb.register("map", map_func)
    tb.register("clone", copy.deepcopy)
    tb.register("individual", to_individual, multi_objective=settings.multi_objective)
    tb.register("mate", CutSpliceCrossover(rng, d_min, comp, beam_parallel=settings.beam_parallel_cuts, **kw))
    weights = {**_DEFAULT_WEIGHTS, **settings.mutation_weights}
    ops = [
        (weights["rattle"], RattleMutation(rng, d_min, sigma=settings.rattle_sigma, **kw)),
        (weights["surface_move"], SurfaceMoveMutation(rng, d_min, **kw)),
        (weights["rotation"], RotationMutation(rng, d_min, max_angle=settings.rotation_max_angle, **kw)),
        (weights["mirror"], MirrorMutation(rng, d_min, comp, **kw)),
        (weights["depth_flip"], DepthFlipMutation(rng, d_min, **kw)),
        (weights["depth_move"], DepthMoveMutation(rng, d_min, n_moves=settings.image_guided_moves, **kw)),
    ]
    if len(comp) > 1:
        ops.append((weights["permutation"], PermutationMutation(rng, d_min, **kw)))
    if difference is not None:
        guided = ImageGuidedMutation(rng, d_min, difference, n_moves=settings.image_guided_moves, **kw)
        ops.append((weights["image_guided"], guided))
        tb.difference = difference  # the polish's image-guided sweep
    tb.register("mutate", MutationSelector(rng, ops))
    if settings.multi_objective:
        tb.register("select", _ParetoTournament(rng))
    else:
        tb.register("select", _Tournament(rng, settings.tournament_size))
    similar = SimilarityCriterion(settings.duplicate_cost_tol, settings.duplicate_fingerprint_tol)
    tb.register("similar", similar)
    tb.register("survive", _Survival(settings, similar))
    tb.register("immigrant", _Immigrant(comp, rng, d_min, settings.multi_objective))
    # a name lets the annealing make its calculator where it runs (asap3 calculators do not pickle)
    anneal_calculator = calculator
    if calculator is not None and settings.relax_steps > 0:
        if isinstance(calculator, str):  # a name such as "emt" or "auto" (refine.cost.energy)
            from refine.cost import make_calculator

            calculator = make_calculator(calculator, tuple(comp))
        if settings.relax_image:
            tb.relax_alpha = _FitnessAlpha(fitness)
            calculator = _cost_calculator(fitness, calculator, tb.relax_alpha)
        tb.register("relax", LocalRelaxation(calculator, steps=settings.relax_steps, fmax=settings.relax_fmax,
                                             min_distance=d_min, rng=rng))
    if settings.anneal_every and anneal_calculator is not None:
        from refine.search.anneal import AnnealSchedule, Annealing

        schedule = AnnealSchedule(start_temperature=float(settings.anneal_temperature),
                                  end_temperature=min(300.0, float(settings.anneal_temperature)),
                                  steps=int(settings.anneal_steps))
        polish = None
        if settings.polish_annealed and settings.relax_steps > 0:
            polish = _AnnealPolish(fitness, anneal_calculator, comp, settings, difference)
        tb.register("anneal", _AnnealTask(Annealing(fitness, anneal_calculator, schedule), polish, min_distance=d_min))
    return tb


class _AnnealTask:
    """``task = (atoms, seed) -> annealed atoms``: one argument, for any ``map``.

    With a ``polish`` (:class:`_AnnealPolish`) the annealed structure also
    goes through the polish's sweeps where it was annealed (a pool worker),
    and ``info["polish_evaluations"]`` says how many evaluations they took.
    With ``min_distance`` (Å) the annealed structure is repaired to it, as
    every offspring is (a quench from a hot melt may leave a close pair);
    the repair draws from the task's seed only when there is one.
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


class _AnnealPolish:
    """The polish's sweeps (:func:`_polish_sweeps`) for an annealed structure, in the process that annealed it.

    A quenched melt keeps vacancies, misplaced atoms and islands that the
    sweeps remove in half a minute; unpolished, it loses the selection to
    a population that has been polished many times, whatever its basin. The
    relaxation, evaluation and difference image are made in the worker
    (asap3 calculators do not pickle); the overlap repairs draw from the
    task's seed, so a run stays reproducible. Picklable.
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
        if s.relax_image:
            calc = _cost_calculator(self.fitness, calc)
        d_min = s.min_distance or default_min_distance(comp)
        relax = LocalRelaxation(calc, steps=s.relax_steps, fmax=s.relax_fmax, min_distance=d_min,
                                rng=np.random.default_rng(0))
        return relax, CostEvaluator(self.fitness), d_min, nearest_neighbour_distance(comp)

    def __call__(self, atoms, seed):
        if self._tools is None:
            self._tools = self._make_tools()
        relax, evaluator, d_min, d_nn = self._tools
        relax.rng = np.random.default_rng([int(seed) % 2**63, 1])

        def evaluate(a):
            cost, _, _, dx, dy = evaluator(a)
            if self.settings.align_individuals and (dx or dy):
                a.positions = a.positions + np.array([dx, dy, 0.0])
            return cost if math.isfinite(cost) else math.inf

        out, _, n = _polish_sweeps(atoms, relax, evaluate, self.difference, d_nn, d_min, self.settings)
        return out, n


def _anneal(toolbox, population, settings, rng, anneal_map=None) -> tuple[list, int]:
    """Anneal ``anneal_count`` selected individuals; returns (new individuals, evaluations of their polish)."""
    picks = toolbox.select(population, settings.anneal_count)
    seeds = rng.integers(0, 2**63 - 1, size=len(picks))
    tasks = [(as_atoms(p), int(s)) for p, s in zip(picks, seeds)]
    done = list((anneal_map or toolbox.map)(toolbox.anneal, tasks))
    n = sum(int(a.info.pop("polish_evaluations", 0)) for a in done)
    return [toolbox.individual(a) for a in done], n


#: depth moves tried on each wedge-shift candidate of the polish (its least-coordinated atoms: the wedge's edges)
SHIFT_FINISH_ATOMS = 20


def shift_finish(relax, evaluate, difference, nn_distance, min_distance):
    """The clean-up of a column-shift candidate (``finish`` of :func:`refine.search.operators.shift_sectors`).

    A shifted region's edges rarely match a grain's: an image-guided sweep
    (when ``difference`` is given) and depth moves of the
    ``SHIFT_FINISH_ATOMS`` least-coordinated atoms put the atoms left on the
    wrong side right before the cost decides. Returns ``finish(atoms, cost)
    -> (atoms, cost, n_evaluations)``.
    """
    mover = DepthMoveMutation(np.random.default_rng(0), min_distance, nn_distance=nn_distance)

    def finish(trial, trial_cost):
        n1 = 0
        if difference is not None:
            trial, trial_cost, n1, _ = image_guided_sweep(trial, relax, evaluate, difference, nn_distance,
                                                          min_distance=min_distance, cost=trial_cost)
        trial, trial_cost, n2, _ = mover.polish(trial, relax, evaluate, max_atoms=SHIFT_FINISH_ATOMS,
                                                cost=trial_cost)
        return trial, trial_cost, n1 + n2

    return finish


def _polish_sweeps(atoms, relax, evaluate, difference, nn_distance, min_distance, settings, *, shifts: int = 0,
                   energy=None):
    """Vacancy, image-guided, patch, depth-move and wedge-shift sweeps of ``atoms``; returns (atoms, cost, evaluations).

    ``relax(atoms)`` relaxes in place, ``evaluate(atoms) -> cost`` scores
    (and may align) in place; ``difference`` enables the image-guided sweep
    (with ``settings.polish_image_moves``); ``shifts`` > 0 adds
    :func:`refine.search.operators.shift_sectors` with that many candidates
    followed up, ranked by ``energy(atoms)`` (eV) when given.
    """
    # interior vacancies first (a surface atom into each, when the cost drops), then atoms moved from too-bright to
    # too-dark spots of the difference image, islands carried to the other side along the beam, and single-atom
    # depth moves
    atoms, cost, n_fill, n_filled = fill_vacancies(atoms, relax, evaluate, nn_distance)
    n_image = n_imaged = 0
    if settings.polish_image_moves and difference is not None:
        m = settings.polish_image_moves
        sizes = [2 ** k for k in range(m.bit_length()) if 2 ** k < m] + [m]
        atoms, cost, n_image, n_imaged = image_guided_sweep(atoms, relax, evaluate, difference, nn_distance,
                                                            min_distance=min_distance, sizes=sizes, cost=cost)
    n_patch = n_moved = 0
    if settings.polish_patches:
        atoms, cost, n_patch, n_moved = transfer_patches(atoms, relax, evaluate, nn_distance,
                                                         min_distance=min_distance, seeds=settings.polish_patches,
                                                         cost=cost)
    # its generator only feeds the overlap repair: a fixed seed keeps the sweep deterministic
    mover = DepthMoveMutation(np.random.default_rng(0), min_distance, nn_distance=nn_distance)
    atoms, cost, n_trials, n_accepted = mover.polish(atoms, relax, evaluate, max_atoms=settings.polish_atoms,
                                                     cost=cost)
    n_shift = n_shifted = 0
    if shifts:
        atoms, cost, n_shift, n_shifted = shift_sectors(
            atoms, relax, evaluate, nn_distance, min_distance=min_distance, keep=shifts, cost=cost, rank=energy,
            finish=shift_finish(relax, evaluate, difference, nn_distance, min_distance))
    log.debug("polish: %d of %d vacancy fills, %d of %d image-guided moves, %d of %d patch transfers, %d of %d "
              "depth moves and %d wedge shift (%d evaluations) accepted, cost %.6g", n_filled, n_fill, n_imaged,
              n_image, n_moved, n_patch, n_accepted, n_trials, n_shifted, n_shift, cost)
    return atoms, cost, 1 + n_fill + n_image + n_patch + n_trials + n_shift


def _polish(toolbox, population, settings, alpha):
    """The polish's sweeps (:func:`_polish_sweeps`) of the best individual; returns (individual, evaluations)."""
    best = min(population, key=_best_key)
    last = {}  # the energy of the last evaluation, eV

    def evaluate(atoms):
        ind = toolbox.individual(atoms)
        _evaluate(toolbox, [ind], settings, alpha)
        atoms.positions = ind.positions  # aligned on the image
        last["energy"] = ind.info.get("energy")
        return _cost(ind)

    def energy(atoms):  # ranks the column shifts (refine.search.operators.shift_sectors)
        evaluate(atoms)
        e = last["energy"]
        return math.inf if e is None or not math.isfinite(e) else float(e)

    atoms, _, n = _polish_sweeps(as_atoms(best), toolbox.relax, evaluate, getattr(toolbox, "difference", None),
                                 toolbox.nn_distance, toolbox.min_distance, settings, shifts=settings.polish_shifts,
                                 energy=energy)
    return toolbox.individual(atoms), n


def _cost_calculator(fitness, calculator, alpha=None):
    """E + α·χ² calculator (refine.cost.image_forces) for the offspring relaxation; α: the fitness's by default.

    The image force comes from the float32 adjoint (1.49× faster; ~1e-6 relative error, far below the
    relaxation's force criterion)."""
    from refine.cost import CostCalculator, ImageTerm

    if not all(hasattr(fitness, k) for k in ("model", "image", "weights", "exp", "grid")):
        raise InputError("relax_image needs a refine.cost.fitness.Fitness (a surrogate model and an image)")
    return CostCalculator(ImageTerm(fitness, single_precision=True), calculator,
                          alpha=alpha or _FitnessAlpha(fitness))


class _FitnessAlpha:
    """The fitness's current α (None until calibrated), or ``pinned`` when set; picklable, unlike a lambda."""

    def __init__(self, fitness):
        self.fitness = fitness
        self.pinned = None

    def __call__(self):
        return self.pinned if self.pinned is not None else _alpha_of(self.fitness)


def _enter_finish(toolbox, settings, search_alpha) -> None:
    """Finishing stage: the relaxation keeps the search's α; the mutations get ``finish_weights``."""
    if hasattr(toolbox, "relax_alpha"):
        toolbox.relax_alpha.pinned = search_alpha
    selector = getattr(getattr(toolbox, "mutate", None), "func", None)
    if settings.finish_weights and hasattr(selector, "reweighted"):
        toolbox.register("mutate", selector.reweighted(settings.finish_weights))


def _finish_alpha(fitness, settings) -> float:
    a = settings.finish_alpha
    if a == "thermal":
        if not hasattr(fitness, "thermal_alpha"):
            raise InputError(f"finish_alpha='thermal' needs a fitness with thermal_alpha(); {type(fitness).__name__} "
                             "has none: give a number")
        return float(fitness.thermal_alpha())
    return float(a)


def _reweigh(population, alpha) -> None:
    """Recompute the cost E + α·χ² of evaluated individuals for a new α (no re-evaluation)."""
    for ind in population:
        e, c2 = ind.info.get("energy", math.nan), ind.info.get("chi2", math.nan)
        if e is None or c2 is None or not (math.isfinite(e) and math.isfinite(c2)):
            continue
        cost = float(e) + alpha * float(c2)
        ind.fitness.values = (cost,)
        ind.info["cost"] = cost
        ind.info["alpha"] = float(alpha)


# --- checkpoints and logbook files -----------------------------------------------------

def _write_logbook_csv(path: Path, logbook):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LOGBOOK_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in logbook:
        writer.writerow({k: rec.get(k) for k in LOGBOOK_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`run_ga` (a dict; see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except FileNotFoundError:
        raise InputError(f"no checkpoint at {str(path)!r}") from None
    except Exception as exc:
        raise InputError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != _CHECKPOINT_VERSION:
        raise InputError(f"{str(path)!r} is not a checkpoint of this version of stem-refine")
    return state


# --- the loop --------------------------------------------------------------------------

def _record(gen, nevals, population, alpha, elapsed, similar) -> dict:
    costs = np.array([_cost(i) for i in population])
    chi2 = np.array([i.info.get("chi2", math.nan) for i in population], dtype=float)
    energy = np.array([i.info.get("energy", math.nan) for i in population], dtype=float)
    b = min(range(len(population)), key=lambda k: _best_key(population[k]))

    def nanstat(f, a):
        return float(f(a)) if np.isfinite(a).any() else math.nan

    distinct, _ = _unique(population, similar)
    return {
        "gen": gen, "nevals": nevals,
        "best_cost": float(costs[b]), "best_chi2": float(chi2[b]), "best_energy": float(energy[b]),
        "min_cost": float(costs.min()) if np.isfinite(costs).any() else math.nan, "mean_cost": nanstat(np.nanmean, np.where(np.isfinite(costs), costs, np.nan)),
        "min_chi2": nanstat(np.nanmin, chi2), "mean_chi2": nanstat(np.nanmean, chi2),
        "min_energy": nanstat(np.nanmin, energy), "mean_energy": nanstat(np.nanmean, energy),
        "diversity": diversity(population), "n_unique": len(distinct),
        "alpha": math.nan if alpha is None else float(alpha), "elapsed_s": round(elapsed, 3),
    }


def _alpha_of(fitness):
    a = getattr(fitness, "alpha", None)
    return float(a) if isinstance(a, (int, float, np.floating)) else None


def _set_alpha(fitness, alpha):
    try:
        fitness.alpha = alpha
    except AttributeError as exc:
        raise StemRefineError(f"cannot set alpha on {type(fitness).__name__}: {exc}") from exc


def _restore_domain_count(fitness, n_before: int) -> None:
    """Carry the checkpointed count of out-of-training-range evaluations into a resumed run.

    The warning is given again (once) so that the resumed run's log has it too.
    """
    if n_before <= 0 or not hasattr(fitness, "n_out_of_domain"):
        return
    fitness.n_out_of_domain += n_before
    if not getattr(fitness, "out_of_domain", False):
        fitness.out_of_domain = True
        log.warning("%d evaluations before the resume had convolution images outside the model's training "
                    "range: the surrogate was extrapolating for them", n_before)


def _evaluate(toolbox, individuals, settings, alpha) -> int:
    if not individuals:
        return 0
    values = list(toolbox.map(toolbox.evaluate, individuals))
    for ind, v in zip(individuals, values):
        _assign(ind, v, settings.multi_objective, alpha, settings.align_individuals)
    return len(individuals)


def _vary(toolbox, population, settings: GASettings, rng: np.random.Generator) -> list:
    offspring = []
    lam = settings.lam
    while len(offspring) < lam:
        if len(population) >= 2 and lam - len(offspring) >= 1 and rng.random() < settings.crossover_probability:
            p1, p2 = toolbox.select(population, 2)
            c1, c2 = toolbox.clone(p1), toolbox.clone(p2)
            c1, c2 = toolbox.mate(c1, c2)
            children = [c1, c2][: lam - len(offspring)]
            for k, c in enumerate(children):
                if rng.random() < settings.mutation_probability:
                    (children[k],) = toolbox.mutate(c)
        else:
            (p,) = toolbox.select(population, 1)
            (c,) = toolbox.mutate(toolbox.clone(p))
            children = [c]
        for c in children:
            del c.fitness.values
            for key in ("cost", "chi2", "energy"):
                c.info.pop(key, None)
            if hasattr(toolbox, "relax"):
                toolbox.relax(c)
        offspring.extend(children)
    for _ in range(settings.immigrants):
        c = toolbox.immigrant()
        if hasattr(toolbox, "relax"):
            toolbox.relax(c)
        offspring.append(c)
    return offspring


def run_ga(fitness, population: Sequence[Atoms] | None, settings: GASettings | None = None, out_dir=None, *,
           rng: np.random.Generator, composition: Mapping[str, int] | None = None, difference: Callable | None = None,
           calculator=None, map_func: Callable = map, resume: bool = False,
           toolbox: base.Toolbox | None = None, anneal_map: Callable | None = None) -> GAResult:
    """Run the genetic algorithm (see the module docstring for the loop).

    Parameters
    ----------
    fitness : object
        ``evaluate(atoms)`` (or callable) → result with ``cost``, ``chi2``,
        ``energy``; optional ``calibrate_alpha(population)`` and ``alpha``.
    population : sequence of ase.Atoms or None
        Starting structures (μ of them are used; fewer are cycled). May be
        ``None`` only when resuming from an existing checkpoint.
    settings : GASettings, optional
    out_dir : path, optional
        Where ``logbook.csv`` and ``checkpoint.pkl`` go (created). Without
        it nothing is written and resume is impossible.
    rng : numpy.random.Generator
        The run's only source of randomness (shared with the toolbox).
    composition : mapping, optional
        Default: the first starting structure's.
    difference, calculator, map_func
        See :func:`make_toolbox`.
    resume : bool
        Continue from ``out_dir/checkpoint.pkl`` if it exists (else start
        fresh, with a log message).
    toolbox : deap.base.Toolbox, optional
        A custom toolbox (built with the same ``rng``) instead of :func:`make_toolbox`'s.
    anneal_map : callable, optional
        ``map``-like used for the annealings only (default: the toolbox's
        ``map``), e.g. a process pool's ``map``: annealings take minutes and
        pickle cheaply, evaluations take a millisecond.

    Returns
    -------
    GAResult
    """
    settings = (settings or GASettings()).validate()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    state = None
    if resume:
        if ckpt_path is None:
            raise InputError("resuming needs the output directory of the earlier run")
        if ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            old = state["settings"]
            if old.get("multi_objective") != settings.multi_objective:
                raise InputError("cannot resume: the checkpoint was written in the other objective mode")
        else:
            log.info("no checkpoint in %s; starting a new run", out)
    if state is None and not population:
        raise InputError("need a starting population (or a checkpoint to resume from)")
    if composition is None:
        composition = composition_of(state["population"][0] if state else population[0])
    comp = dict(composition)
    if toolbox is None:
        toolbox = make_toolbox(fitness, comp, settings, rng, difference=difference, calculator=calculator,
                               map_func=map_func)
    mo = settings.multi_objective
    similar = toolbox.similar if hasattr(toolbox, "similar") else SimilarityCriterion()

    t_start = time.perf_counter()
    if state is not None:
        pop = state["population"]
        hof = state["hall_of_fame"]
        logbook = state["logbook"]
        gen = state["generation"]
        best_cost, stale = state["best_cost"], state["stale"]
        evaluations = state["evaluations"]
        elapsed0 = state["elapsed"]
        alpha = state["alpha"]
        if alpha is not None and _alpha_of(fitness) != alpha:
            _set_alpha(fitness, alpha)
        finishing, search_alpha = state.get("finishing", False), state.get("search_alpha")
        if finishing:
            _enter_finish(toolbox, settings, search_alpha)
        if state.get("operators") != repr(getattr(toolbox, "mutate", None)):
            log.warning("resuming with other mutations than the checkpointed run (%s, now %s): the run will "
                        "not repeat an uninterrupted one", state.get("operators"), getattr(toolbox, "mutate", None))
        if old != asdict(settings):
            changed = sorted(k for k in old if old[k] != asdict(settings).get(k))
            log.info("resuming with changed settings: %s", ", ".join(changed))
        rng.bit_generator.state = state["rng_state"]
        random.setstate(state["py_random_state"])
        _restore_domain_count(fitness, int(state.get("n_out_of_domain", 0)))
        log.info("resumed from %s at generation %d (best cost %.6g)", ckpt_path, gen, best_cost)
    else:
        comp_total = sum(comp.values())
        starts = [population[k % len(population)] for k in range(settings.population_size)]
        for k, a in enumerate(starts):
            if composition_of(a) != comp or len(a) != comp_total:
                raise InputError(f"starting structure {k} has composition {composition_of(a)}, expected {comp}")
        pop = [toolbox.individual(a) for a in starts]
        if settings.alpha == "auto" and hasattr(fitness, "calibrate_alpha"):
            fitness.calibrate_alpha([as_atoms(i) for i in pop])
        elif isinstance(settings.alpha, (int, float)) and not isinstance(settings.alpha, bool):
            _set_alpha(fitness, float(settings.alpha))
        alpha = _alpha_of(fitness)
        if alpha is not None:
            log.info("alpha = %.6g", alpha)
        hof = tools.ParetoFront(similar=similar) if mo else tools.HallOfFame(settings.hall_of_fame_size,
                                                                             similar=similar)
        logbook = tools.Logbook()
        logbook.header = list(LOGBOOK_COLUMNS)
        gen = 0
        elapsed0 = 0.0
        finishing, search_alpha = False, None
        evaluations = _evaluate(toolbox, pop, settings, alpha)
        if mo:
            pop = toolbox.survive(pop, [], hof)
        hof.update(pop)
        best_cost = min(_cost(i) for i in pop)
        stale = 0
        logbook.record(**_record(0, evaluations, pop, alpha, 0.0, similar))

    # durations of the last round of annealings and of the last polish (s): they decide whether
    # another one still fits in the time limit, so a resumed run needs them to repeat the original
    anneal_seconds = float(state.get("anneal_seconds", 0.0)) if state is not None else 0.0
    polish_seconds = float(state.get("polish_seconds", 0.0)) if state is not None else 0.0

    def elapsed():
        return elapsed0 + time.perf_counter() - t_start

    def checkpoint():
        if ckpt_path is None:
            return
        data = {
            "version": _CHECKPOINT_VERSION, "generation": gen, "population": pop, "hall_of_fame": hof,
            "logbook": logbook, "best_cost": best_cost, "stale": stale, "evaluations": evaluations,
            "elapsed": elapsed(), "alpha": alpha, "rng_state": rng.bit_generator.state,
            "py_random_state": random.getstate(), "settings": asdict(settings), "composition": comp,
            "operators": repr(getattr(toolbox, "mutate", None)), "finishing": finishing,
            "search_alpha": search_alpha, "anneal_seconds": anneal_seconds, "polish_seconds": polish_seconds,
            "n_out_of_domain": int(getattr(fitness, "n_out_of_domain", 0)),
        }
        atomic_write_bytes(ckpt_path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        _write_logbook_csv(out / LOGBOOK_NAME, logbook)

    if state is None:
        checkpoint()

    from tqdm.auto import tqdm

    # In a log file (stderr not a terminal) every redraw is a new line: redraw rarely there.
    bar = tqdm(total=settings.generations, initial=min(gen, settings.generations), desc="GA", unit="gen",
               file=sys.stderr, disable=not settings.progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)

    def postfix():
        rec = logbook[-1]
        bar.set_postfix_str(f"χ²={rec['best_chi2']:.4g} E={rec['best_energy']:.4g} α={rec['alpha']:.3g}",
                            refresh=False)

    postfix()
    stop_reason = "generations"
    f = settings.finish_fraction
    # where the search ends and the finishing stage begins (s, or a generation without a time limit)
    search_end = None if f == 0 else (settings.time_limit * (1.0 - f) if settings.time_limit is not None
                                      else math.floor(settings.generations * (1.0 - f)))
    try:
        while True:
            if gen >= settings.generations:
                stop_reason = "generations"
                break
            if settings.stagnation is not None and stale >= settings.stagnation:
                stop_reason = "stagnation"
                break
            if settings.time_limit is not None and elapsed() >= settings.time_limit:
                stop_reason = "time_limit"
                break
            if search_end is not None and not finishing and \
                    (elapsed() if settings.time_limit is not None else gen) >= search_end:
                finishing, search_alpha = True, alpha
                alpha = _finish_alpha(fitness, settings)
                _set_alpha(fitness, alpha)
                _enter_finish(toolbox, settings, search_alpha)
                hof_members = list(hof)
                _reweigh(pop + hof_members, alpha)
                hof = tools.HallOfFame(settings.hall_of_fame_size, similar=similar)
                hof.update(hof_members + pop)
                best_cost, stale = min(_cost(i) for i in pop), 0
                log.info("finishing stage from generation %d: selection α %.6g → %.6g (relaxation keeps %.6g)",
                         gen, search_alpha, alpha, search_alpha)
            gen += 1
            offspring = _vary(toolbox, pop, settings, rng)
            if hasattr(toolbox, "anneal") and not finishing and gen % settings.anneal_every == 0:
                # a round of annealings takes minutes: skip one that would end past the time limit
                end = search_end if search_end is not None else settings.time_limit
                if settings.time_limit is None or elapsed() + anneal_seconds <= end:
                    t_anneal = time.perf_counter()
                    annealed, n_polish = _anneal(toolbox, pop, settings, rng, anneal_map)
                    offspring.extend(annealed)
                    evaluations += n_polish
                    anneal_seconds = time.perf_counter() - t_anneal
            if settings.polish_every and hasattr(toolbox, "relax") and gen % settings.polish_every == 0 and not mo:
                # a polish with its column shifts takes a minute: skip one that would end past the time limit
                if settings.time_limit is None or elapsed() + polish_seconds <= settings.time_limit:
                    t_polish = time.perf_counter()
                    polished, n_polish = _polish(toolbox, pop, settings, alpha)
                    evaluations += n_polish
                    offspring.append(polished)
                    polish_seconds = time.perf_counter() - t_polish
            nevals = _evaluate(toolbox, offspring, settings, alpha)
            evaluations += nevals
            pop = toolbox.survive(pop, offspring, hof)
            before = {id(h) for h in hof}
            hof.update(pop)
            new_best = min(_cost(i) for i in pop)
            if mo:  # progress = the Pareto front gained a member
                improved = any(id(h) not in before for h in hof)
            else:
                improved = new_best < best_cost - settings.stagnation_tol * max(1.0, abs(best_cost))
            stale = 0 if improved else stale + 1
            best_cost = min(best_cost, new_best)
            logbook.record(**_record(gen, nevals, pop, alpha, elapsed(), similar))
            log.debug("generation %d: best cost %.6g", gen, best_cost)
            bar.update(1)
            postfix()
            if out is not None:
                if gen % settings.checkpoint_every == 0:
                    checkpoint()
                else:
                    _write_logbook_csv(out / LOGBOOK_NAME, logbook)
    finally:
        bar.close()
    checkpoint()
    log.info("GA stopped after generation %d (%s); best cost %.6g", gen, stop_reason, best_cost)

    if mo:
        front = sorted(hof, key=lambda i: (i.fitness.values[0], i.fitness.values[1]))
        pareto = [as_atoms(i) for i in front]
        best_ind = min(front, key=_best_key)
        fame = pareto
    else:
        pareto = []
        fame = [as_atoms(i) for i in hof]
        best_ind = hof[0]
    best = as_atoms(best_ind)
    best.info["generation"] = gen
    if alpha is not None:
        best.info["alpha"] = alpha
    return GAResult(best=best, population=[as_atoms(i) for i in pop], hall_of_fame=fame, pareto_front=pareto,
                    logbook=logbook, generation=gen, stop_reason=stop_reason, alpha=alpha, evaluations=evaluations)
