"""What a GA run is told and what it returns: :class:`GASettings`, :class:`GAResult`.

:class:`GASettings` holds every setting of :func:`refine.search.ga.run_ga`
(population, variation, selection, stopping, checkpoints, annealing, the
polish, the finishing stage) and checks them in :meth:`GASettings.validate`;
the search recipes (:mod:`refine.search.recipes`) are named sets of its
fields. Lengths in Å, energies in eV, times in s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from deap import tools

from surrogate.common import InputError

__all__ = ["DEFAULT_MUTATION_WEIGHTS", "GASettings", "GAResult"]

#: relative weights of the mutations (:attr:`GASettings.mutation_weights` entries replace these)
DEFAULT_MUTATION_WEIGHTS = {"rattle": 1.0, "permutation": 1.0, "surface_move": 1.0, "image_guided": 1.0,
                            "rotation": 1.0, "mirror": 0.5, "depth_flip": 0.0, "depth_move": 0.0}


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
        Each offspring comes from a crossover of two parents with the first
        probability (each child then mutated with the second), else from one
        mutated parent (see :mod:`refine.search.ga`).
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
        atoms (:func:`refine.search.sweeps.fill_vacancies`, each fill kept when
        the cost drops), moves surface atoms from too-bright to too-dark
        spots of the difference image (:func:`refine.search.sweeps.image_guided_sweep`,
        with ``polish_image_moves`` > 0 and a ``difference`` function), moves
        whole surface patches to the other side of the particle
        (:func:`refine.search.sweeps.transfer_patches`, with ``polish_patches``
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
        (:func:`refine.search.sweeps.shift_sectors`): wedges about the column
        axis and caps at the particle's edges slide by ± one lattice period
        along the columns (:func:`refine.search.sites.beam_column`, tilted
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
    polish_seed : int
        Seed of the generator that feeds the overlap repairs of the polish's
        sweeps. Each sweep of each polish starts a fresh
        ``numpy.random.default_rng(polish_seed)``, so that a sweep's repairs
        depend on nothing that ran before it (the same in a pool worker as
        in the main process), and a resumed run repeats them without
        checkpointing another generator's state. (The relaxation of each
        trial repairs with the run's generator, or, in an annealing task,
        with a generator from the task's seed.)
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
        See :class:`refine.search.selection.SimilarityCriterion`.
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
    mutation_weights: dict = field(default_factory=lambda: dict(DEFAULT_MUTATION_WEIGHTS))
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
    polish_seed: int = 0
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
        positive_int("polish_seed", 0)
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
        unknown = (set(self.mutation_weights) | set(self.finish_weights)) - set(DEFAULT_MUTATION_WEIGHTS)
        if unknown:
            raise InputError(f"unknown mutation(s) {sorted(unknown)}; known: {sorted(DEFAULT_MUTATION_WEIGHTS)}")
        return self

    @property
    def lam(self) -> int:
        """λ, the offspring made per generation (``offspring_size``, default μ)."""
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
        One record per generation, columns :data:`refine.search.logbook.LOGBOOK_COLUMNS`.
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
