"""The parts of :class:`refine.search.settings.GASettings`, one dataclass per concern.

:class:`StoppingSettings`, :class:`SelectionSettings`,
:class:`VariationSettings`, :class:`RelaxationSettings`,
:class:`AnnealingSettings`, :class:`PolishSettings`,
:class:`FinishingSettings`: each documents its fields and checks them in
``validate``, naming a setting in a message by its flat name
(:data:`refine.search.settings.FLAT_NAMES`: ``polish_atoms``, not ``atoms``),
as the user gave it.

Lengths in Å, energies in eV, temperatures in K, times in s, angles in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from refine.search.anneal import AnnealSchedule
from surrogate.common import InputError

__all__ = ["DEFAULT_MUTATION_WEIGHTS", "StoppingSettings", "SelectionSettings", "VariationSettings",
           "RelaxationSettings", "AnnealingSettings", "PolishSettings", "FinishingSettings"]


#: relative weights of the mutations (:attr:`VariationSettings.mutation_weights` entries replace these)
DEFAULT_MUTATION_WEIGHTS = {"rattle": 1.0, "permutation": 1.0, "surface_move": 1.0, "image_guided": 1.0,
                            "rotation": 1.0, "mirror": 0.5, "depth_flip": 0.0, "depth_move": 0.0}


# --------------------------------------------------------------------------- checks shared by the parts

class Checks:
    """Value checks whose messages name a setting by its flat name (what the user typed)."""

    part: ClassVar[str | None] = None

    def _name(self, name: str) -> str:
        from refine.search.settings import flat_name  # the table lives with GASettings, which imports this

        return flat_name(self.part, name)

    def _int(self, name: str, minimum: int) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise InputError(f"{self._name(name)} must be an integer ≥ {minimum}, got {v!r}")

    def _fraction(self, name: str) -> None:
        v = getattr(self, name)
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{self._name(name)} must be in [0, 1], got {v!r}")

    def _positive(self, name: str, unit: str) -> None:
        v = getattr(self, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InputError(f"{self._name(name)} must be a positive number of {unit}, got {v!r}")


def _check_mutations(*weights: dict) -> None:
    unknown = set().union(*weights) - set(DEFAULT_MUTATION_WEIGHTS)
    if unknown:
        raise InputError(f"unknown mutation(s) {sorted(unknown)}; known: {sorted(DEFAULT_MUTATION_WEIGHTS)}")


# --------------------------------------------------------------------------- the parts

@dataclass
class StoppingSettings(Checks):
    """When the run stops.

    Parameters
    ----------
    generations : int
        Maximum number of generations after generation 0 (counted over resumed runs).
    stagnation : int, optional
        Stop after this many generations without improvement.
    stagnation_tol : float
        Relative improvement of the best cost that counts.
    time_limit : float, optional
        Wall-time limit in s (over all resumed segments).
    """

    part: ClassVar[str] = "stopping"

    generations: int = 100
    stagnation: int | None = None
    stagnation_tol: float = 1e-6
    time_limit: float | None = None

    def validate(self) -> "StoppingSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("generations", 0)
        if self.stagnation is not None:
            self._int("stagnation", 1)
        if self.time_limit is not None and not self.time_limit > 0:
            raise InputError(f"time limit must be a positive number of seconds, got {self.time_limit!r}")
        return self


@dataclass
class SelectionSettings(Checks):
    """Parents, survivors, the hall of fame and what counts as a duplicate.

    Parameters
    ----------
    tournament_size : int
        Parent tournament size (single objective).
    hall_of_fame_size : int
        Best distinct structures kept over the run.
    replacement : {"plus", "generational"}
        (μ+λ) truncation, or offspring replacing the parents except ``elite``.
    elite : int
        Hall-of-fame members carried over in ``"generational"`` replacement.
    duplicate_cost_tol, duplicate_fingerprint_tol : float
        See :class:`refine.search.selection.SimilarityCriterion` (relative
        cost; fingerprint distance in Å).
    """

    part: ClassVar[str] = "selection"

    tournament_size: int = 3
    hall_of_fame_size: int = 10
    replacement: str = "plus"
    elite: int = 2
    duplicate_cost_tol: float = 1e-4
    duplicate_fingerprint_tol: float = 0.03

    def validate(self) -> "SelectionSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("tournament_size", 1)
        self._int("hall_of_fame_size", 1)
        self._int("elite", 0)
        if self.replacement not in ("plus", "generational"):
            raise InputError(f"replacement must be 'plus' or 'generational', got {self.replacement!r}")
        return self


@dataclass
class VariationSettings(Checks):
    """How offspring are made.

    Parameters
    ----------
    crossover_probability, mutation_probability : float
        Each offspring comes from a crossover of two parents with the first
        probability (each child then mutated with the second), else from one
        mutated parent (see :mod:`refine.search.ga`).
    mutation_weights : dict
        Relative weights of ``rattle``, ``permutation`` (alloys only),
        ``surface_move``, ``image_guided`` (only with a ``difference``
        function), ``rotation``, ``mirror``, ``depth_flip``, ``depth_move``;
        the entries given replace those of :data:`DEFAULT_MUTATION_WEIGHTS`.
    rattle_sigma : float
        Rattle displacement σ in Å.
    rotation_max_angle : float
        Largest rotation of the rotation mutation, radians.
    beam_parallel_cuts : float
        Probability that a crossover's cut plane contains the beam direction
        (:class:`refine.search.operators.CutSpliceCrossover` ``beam_parallel``).
    image_guided_moves : int
        Atoms moved per image-guided mutation
        (:class:`refine.search.operators.ImageGuidedMutation` ``n_moves``) and
        per depth move (:class:`refine.search.operators.DepthMoveMutation`).
    immigrants : int
        Fresh random clusters added to the offspring every generation
        (diversity against premature convergence).
    min_distance : float, optional
        Minimum interatomic distance in Å; default 0.75 × the composition's
        nearest-neighbour distance.
    """

    part: ClassVar[str] = "variation"

    crossover_probability: float = 0.5
    mutation_probability: float = 0.3
    mutation_weights: dict = field(default_factory=lambda: dict(DEFAULT_MUTATION_WEIGHTS))
    rattle_sigma: float = 0.25
    rotation_max_angle: float = math.pi / 12
    beam_parallel_cuts: float = 0.0
    image_guided_moves: int = 1
    immigrants: int = 0
    min_distance: float | None = None

    def validate(self) -> "VariationSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("immigrants", 0)
        self._int("image_guided_moves", 1)
        self._fraction("beam_parallel_cuts")
        self._fraction("crossover_probability")
        self._fraction("mutation_probability")
        _check_mutations(self.mutation_weights)
        return self


@dataclass
class RelaxationSettings(Checks):
    """The FIRE relaxation of every offspring.

    Parameters
    ----------
    steps : int
        FIRE steps on each offspring (0: none; only with a calculator).
        Relaxing offspring close to their local minimum (Deaven–Ho's
        "Lamarckian" GA) is what makes random starts work: on a toy
        Pt55 icosahedron image (tests/refine/ga_toy.py, μ = 20), 100
        steps found the structure exactly within 100 generations in 1 of
        3 seeds, whereas 10 steps or none reached ≤ 36 % of the atoms
        within 0.5 Å even after 1500 generations.
    fmax : float
        FIRE force criterion, eV/Å.
    image : bool
        Relax on the full cost E + α·χ² instead of E alone: the image force
        −α·∂χ²/∂r (:mod:`refine.cost.image_forces`, from the surrogate's
        adjoint) slides atoms in x, y onto the image while the energy places
        them along the beam. Needs a fitness with a surrogate model and an
        image (:class:`refine.cost.fitness.Fitness`); α is read from the
        fitness at every step (energy only until it is calibrated).
    """

    part: ClassVar[str] = "relaxation"

    steps: int = 100
    fmax: float = 0.05
    image: bool = False

    def validate(self) -> "RelaxationSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("steps", 0)
        self._positive("fmax", "eV/Å")
        if self.image and self.steps == 0:
            raise InputError("relaxing on the image cost (relax_image / --image-forces) needs relax steps > 0")
        return self


@dataclass
class AnnealingSettings(Checks):
    """Image-restrained simulated annealing of selected individuals.

    Every ``every`` generations (0: never), ``count`` individuals chosen by
    the parent selection go through image-restrained simulated annealing
    (:class:`refine.search.anneal.Annealing`: Langevin MD on E + α·χ² from
    ``temperature`` K down to 300 K over ``steps`` steps of 5 fs, then a
    FIRE quench) and join that generation's offspring. Local moves cannot
    crystallise an amorphous 300-atom cluster; the annealing can, while the
    image holds its projection. The annealings of one generation go through
    the toolbox ``map`` (a process pool runs them in parallel); each has its
    own seed drawn from the GA's generator. With a time limit, a round that
    would end past it (judged by the last round's duration) is skipped.

    Parameters
    ----------
    every : int
        Period in generations (0: no annealing).
    count : int
        Annealings per round.
    steps : int
        MD steps of 5 fs per annealing.
    temperature : float
        Start temperature in K, cooled linearly to 300 K.
    image_weight : float
        Fraction of α on χ² during the MD ramp, in (0, 1]; the quench uses
        the full α (:class:`refine.search.anneal.AnnealSchedule`).
    """

    part: ClassVar[str] = "annealing"

    every: int = 0
    count: int = 1
    steps: int = 8000
    temperature: float = 1500.0
    image_weight: float = AnnealSchedule.image_weight

    def validate(self) -> "AnnealingSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("every", 0)
        self._int("count", 1)
        self._int("steps", 0)
        self._positive("temperature", "K")
        self._positive("image_weight", "α")
        self._fraction("image_weight")
        return self


@dataclass
class PolishSettings(Checks):
    """The polish: deterministic sweeps of the best individual (:mod:`refine.search.polish`).

    Every ``every`` generations (0: never), the best individual gets a
    sweep that fills its interior vacancies with surface atoms
    (:func:`refine.search.sweeps.fill_vacancies`, each fill kept when the
    cost drops), moves surface atoms from too-bright to too-dark spots of
    the difference image (:func:`refine.search.sweeps.image_guided_sweep`,
    with ``image_moves`` > 0 and a ``difference`` function), moves whole
    surface patches to the other side of the particle
    (:func:`refine.search.sweeps.transfer_patches`, with ``patches`` > 0),
    then a sweep of depth moves (:meth:`refine.search.operators.DepthMoveMutation.polish`):
    each of its ``atoms`` least-coordinated atoms in turn is moved to the
    far end of its line of sight, relaxed and evaluated, and kept when the
    cost drops; the result joins the offspring. Needs the offspring
    relaxation (:class:`RelaxationSettings` ``steps`` and a calculator).

    Parameters
    ----------
    every : int
        Period in generations (0: no polish of the best).
    atoms : int
        Least-coordinated atoms tried by the depth-move sweep.
    patches : int
        Seeds of the patch sweep (0: no patch sweep). Each seed (a
        least-coordinated surface atom) grows patches of 3, 5, 7, 10 and 14
        atoms on its side along the beam; each patch is moved to the empty
        lattice sites under the same x, y on the other side, relaxed and
        evaluated, and the best is kept when the cost drops. One projection
        shows an island of atoms on the top and on the bottom facet alike;
        single-atom depth moves cannot carry an island over, because each
        atom moved alone becomes an adatom.
    image_moves : int
        Largest number of atoms moved in one trial of the image-guided sweep
        (trials move 1, 2, 4, … up to it; 0: no sweep; needs a
        ``difference`` function). With 10 surface atoms of case (a) of the
        self-consistency benchmark moved from the top facet to the far
        bottom, the sweep takes the truth-relaxed structure from 95.3 to
        98.7 % of the atoms within 0.5 Å in 12 trials, 8 s
        (``python examples/image_guided_sweep.py``).
    dark_sites : int
        Dark spots of the difference image filled by the dark-site sweep
        (:func:`refine.search.sweeps.dark_site_sweep`, after the
        image-guided sweep; 0: no sweep; needs a ``difference`` function):
        for each, every surface atom is tried unrelaxed at both ends of its
        line of sight, and the 3 best moves are relaxed and kept when the
        cost drops. It finds the misplaced atoms that the image-guided
        sweep misses because they are not bright (on top of a thick
        column).
    adatom_flips : bool
        After the dark-site sweep, one joint move
        (:func:`refine.search.sweeps.adatom_flip`): every adatom (≤ 5
        neighbours) to the best hollow at the other end of its line of
        sight, all at once, then dark sites filled (when ``dark_sites``);
        kept when the cost drops. An island of near-side adatoms whose
        far-side places pay only together (each single move breaks bonds
        the last one pays back) is out of reach of the single-atom sweeps.
    annealed : bool
        Every annealed structure also goes through the sweeps (vacancies,
        image-guided moves, patches, depth moves, as set here) in the
        process that annealed it, before it joins the offspring; the
        evaluations count. Needs the offspring relaxation.
    shifts : int
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
    seed : int
        Seed of the generator that feeds the overlap repairs of the sweeps.
        Each sweep of each polish starts a fresh
        ``numpy.random.default_rng(seed)``, so that a sweep's repairs depend
        on nothing that ran before it (the same in a pool worker as in the
        main process), and a resumed run repeats them without checkpointing
        another generator's state. (The relaxation of each trial repairs
        with the run's generator, or, in an annealing task, with a generator
        from the task's seed.)
    """

    part: ClassVar[str] = "polish"

    every: int = 0
    atoms: int = 60
    patches: int = 0
    image_moves: int = 0
    dark_sites: int = 0
    adatom_flips: bool = False
    annealed: bool = False
    shifts: int = 0
    seed: int = 0

    def validate(self) -> "PolishSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        self._int("every", 0)
        self._int("atoms", 1)
        self._int("patches", 0)
        self._int("image_moves", 0)
        self._int("dark_sites", 0)
        self._int("shifts", 0)
        self._int("seed", 0)
        for name in ("adatom_flips", "annealed"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"polish_{name} must be true or false, got {getattr(self, name)!r}")
        return self


@dataclass
class FinishingSettings(Checks):
    """A finishing stage at the end of the run that selects at another α.

    In it the selection weighs the image by ``alpha`` instead of the
    search's α, annealing stops, and the mutations get ``weights``. The
    offspring relaxation keeps the search's α: a large α in the relaxation
    strains the particle to fit the noise, whereas in the selection it only
    decides between discrete alternatives (an atom on this site or on that one).

    Parameters
    ----------
    fraction : float
        Length of the stage as a fraction of the time limit (or of the
        generations without one); 0: no finishing stage.
    alpha : float or "thermal", optional
        α of the stage, eV per unit χ²; ``"thermal"`` asks the fitness
        (``fitness.thermal_alpha()``, k_B·T/2: χ² is −2 ln likelihood and
        E/k_BT the Boltzmann prior). Needed when ``fraction`` > 0.
    weights : dict
        Mutation weights that replace :attr:`VariationSettings.mutation_weights`
        entries in the stage.
    """

    part: ClassVar[str] = "finishing"

    fraction: float = 0.0
    alpha: object = None
    weights: dict = field(default_factory=dict)

    def validate(self) -> "FinishingSettings":
        """Check the values; raise :class:`InputError` with what was expected."""
        if not (isinstance(self.fraction, (int, float)) and 0.0 <= self.fraction < 1.0):
            raise InputError(f"finish_fraction must be in [0, 1), got {self.fraction!r}")
        if self.fraction > 0:
            a = self.alpha
            if not (a == "thermal" or (isinstance(a, (int, float)) and not isinstance(a, bool)
                                       and math.isfinite(a) and a >= 0)):
                raise InputError(f"finish_alpha must be 'thermal' or a non-negative number, got {a!r}")
        _check_mutations(self.weights)
        return self

