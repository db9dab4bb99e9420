"""What a GA run is told and what it returns: :class:`GASettings` and its parts, :class:`GAResult`.

:class:`GASettings` holds every setting of :func:`refine.search.ga.run_ga`,
grouped by concern into small dataclasses, each with its own ``validate``:

* :class:`StoppingSettings` — generations, stagnation, time limit;
* :class:`SelectionSettings` — tournaments, survival, the hall of fame, duplicates;
* :class:`VariationSettings` — crossover and mutations, immigrants, the minimum distance;
* :class:`RelaxationSettings` — the offspring's FIRE relaxation;
* :class:`AnnealingSettings` — image-restrained simulated annealing;
* :class:`PolishSettings` — the deterministic sweeps of the best;
* :class:`FinishingSettings` — the finishing stage at another α.

The parts are defined in :mod:`refine.search.setting_parts`; the search
recipes (:mod:`refine.search.recipes`) compose them. Outside
the code a setting has one flat name (:data:`FLAT_NAMES`: ``polish_atoms``
is ``settings.polish.atoms``): the CLI's options, ``ga_options`` in a
manifest, ``summary.json`` and the checkpoint's header use it
(:meth:`GASettings.from_flat`, :meth:`GASettings.to_flat`).

Lengths in Å, energies in eV, temperatures in K, times in s, angles in radians.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from refine.search.setting_parts import (
    DEFAULT_MUTATION_WEIGHTS,
    AnnealingSettings,
    Checks,
    FinishingSettings,
    PolishSettings,
    RelaxationSettings,
    SelectionSettings,
    StoppingSettings,
    VariationSettings,
)
from surrogate.common import InputError

if TYPE_CHECKING:  # annotations only: the CLI imports this module to build its options
    from ase import Atoms
    from deap import tools

__all__ = ["DEFAULT_MUTATION_WEIGHTS", "FLAT_NAMES", "flat_name", "GASettings", "GAResult", "StoppingSettings",
           "SelectionSettings", "VariationSettings", "RelaxationSettings", "AnnealingSettings", "PolishSettings",
           "FinishingSettings"]

#: flat name → (part of :class:`GASettings`, field); part None: a field of GASettings itself. In the
#: order of summary.json's "settings" (the order of the flat GASettings these parts were cut from)
FLAT_NAMES = {
    "population_size": (None, "population_size"),
    "offspring_size": (None, "offspring_size"),
    "generations": ("stopping", "generations"),
    "crossover_probability": ("variation", "crossover_probability"),
    "mutation_probability": ("variation", "mutation_probability"),
    "mutation_weights": ("variation", "mutation_weights"),
    "tournament_size": ("selection", "tournament_size"),
    "hall_of_fame_size": ("selection", "hall_of_fame_size"),
    "replacement": ("selection", "replacement"),
    "elite": ("selection", "elite"),
    "stagnation": ("stopping", "stagnation"),
    "stagnation_tol": ("stopping", "stagnation_tol"),
    "time_limit": ("stopping", "time_limit"),
    "checkpoint_every": (None, "checkpoint_every"),
    "multi_objective": (None, "multi_objective"),
    "alpha": (None, "alpha"),
    "min_distance": ("variation", "min_distance"),
    "rattle_sigma": ("variation", "rattle_sigma"),
    "rotation_max_angle": ("variation", "rotation_max_angle"),
    "relax_steps": ("relaxation", "steps"),
    "relax_fmax": ("relaxation", "fmax"),
    "relax_image": ("relaxation", "image"),
    "beam_parallel_cuts": ("variation", "beam_parallel_cuts"),
    "anneal_every": ("annealing", "every"),
    "anneal_count": ("annealing", "count"),
    "anneal_steps": ("annealing", "steps"),
    "anneal_temperature": ("annealing", "temperature"),
    "anneal_image_weight": ("annealing", "image_weight"),
    "polish_every": ("polish", "every"),
    "polish_atoms": ("polish", "atoms"),
    "polish_patches": ("polish", "patches"),
    "polish_image_moves": ("polish", "image_moves"),
    "polish_dark_sites": ("polish", "dark_sites"),
    "polish_adatom_flips": ("polish", "adatom_flips"),
    "polish_annealed": ("polish", "annealed"),
    "polish_shifts": ("polish", "shifts"),
    "polish_seed": ("polish", "seed"),
    "finish_fraction": ("finishing", "fraction"),
    "finish_alpha": ("finishing", "alpha"),
    "finish_weights": ("finishing", "weights"),
    "duplicate_cost_tol": ("selection", "duplicate_cost_tol"),
    "duplicate_fingerprint_tol": ("selection", "duplicate_fingerprint_tol"),
    "align_individuals": (None, "align_individuals"),
    "immigrants": ("variation", "immigrants"),
    "image_guided_moves": ("variation", "image_guided_moves"),
    "progress": (None, "progress"),
}
_FLAT_OF = {where: name for name, where in FLAT_NAMES.items()}


def flat_name(part: str | None, attr: str) -> str:
    """The flat name of field ``attr`` of part ``part`` (None: of GASettings itself)."""
    return _FLAT_OF[(part, attr)]


# --------------------------------------------------------------------------- the whole

_PARTS = {"stopping": StoppingSettings, "selection": SelectionSettings, "variation": VariationSettings,
          "relaxation": RelaxationSettings, "annealing": AnnealingSettings, "polish": PolishSettings,
          "finishing": FinishingSettings}


@dataclass
class GASettings(Checks):
    """Settings of :func:`refine.search.ga.run_ga`: a few of its own, the rest by concern.

    Parameters
    ----------
    population_size : int
        μ, individuals kept per generation.
    offspring_size : int, optional
        λ, offspring made per generation; default μ.
    alpha : "auto", float or None
        ``"auto"``: ``fitness.calibrate_alpha(population)`` before generation 0;
        a number (eV per unit χ²): set ``fitness.alpha``; ``None``: leave the
        fitness as is.
    multi_objective : bool
        NSGA-II on (χ², E); the result has a Pareto front.
    align_individuals : bool
        Move each evaluated individual by the fitness result's ``shift``
        (x, y in Å) onto the image, when the result has one.
    checkpoint_every : int
        Checkpoint period in generations (needs an ``out_dir``).
    progress : bool
        Show a tqdm bar on stderr.
    stopping, selection, variation, relaxation, annealing, polish, finishing
        The parts: :class:`StoppingSettings`, :class:`SelectionSettings`,
        :class:`VariationSettings`, :class:`RelaxationSettings`,
        :class:`AnnealingSettings`, :class:`PolishSettings`,
        :class:`FinishingSettings`.

    Examples
    --------
    >>> s = GASettings(population_size=16, stopping=StoppingSettings(time_limit=90.0),
    ...                polish=PolishSettings(every=5, atoms=40))
    >>> s.polish.atoms, s.to_flat()["polish_atoms"]
    (40, 40)
    """

    population_size: int = 20
    offspring_size: int | None = None
    alpha: object = "auto"
    multi_objective: bool = False
    align_individuals: bool = True
    checkpoint_every: int = 1
    progress: bool = True
    stopping: StoppingSettings = field(default_factory=StoppingSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    variation: VariationSettings = field(default_factory=VariationSettings)
    relaxation: RelaxationSettings = field(default_factory=RelaxationSettings)
    annealing: AnnealingSettings = field(default_factory=AnnealingSettings)
    polish: PolishSettings = field(default_factory=PolishSettings)
    finishing: FinishingSettings = field(default_factory=FinishingSettings)

    def validate(self) -> "GASettings":
        """Check every value, the parts' included; raise :class:`InputError` with what was expected."""
        self._int("population_size", 1)
        if self.offspring_size is not None:
            self._int("offspring_size", 1)
        self._int("checkpoint_every", 1)
        # before the parts: in multi-objective mode a finishing stage is the mistake to report, not its α
        f = self.finishing.fraction
        if self.multi_objective and isinstance(f, (int, float)) and f > 0:
            raise InputError("a finishing stage (finish_fraction) needs the single-objective mode")
        for name in _PARTS:
            getattr(self, name).validate()
        if self.selection.replacement == "generational" and self.lam + self.selection.elite < self.population_size:
            raise InputError("generational replacement needs offspring_size + elite ≥ population_size")
        if not (self.alpha is None or self.alpha == "auto"
                or (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0)):
            raise InputError(f"alpha must be 'auto' or a non-negative number, got {self.alpha!r}")
        return self

    @property
    def lam(self) -> int:
        """λ, the offspring made per generation (``offspring_size``, default μ)."""
        return self.offspring_size or self.population_size

    # ---- the flat names

    def to_flat(self) -> dict:
        """Every setting by its flat name (:data:`FLAT_NAMES`, in its order); values copied."""
        return {name: copy.deepcopy(getattr(self if part is None else getattr(self, part), attr))
                for name, (part, attr) in FLAT_NAMES.items()}

    @classmethod
    def from_flat(cls, flat: Mapping) -> "GASettings":
        """Settings from flat names (:data:`FLAT_NAMES`); the ones not given keep their defaults.

        Raises :class:`InputError` for an unknown name. Values are copied, not checked (see :meth:`validate`).
        """
        return cls().with_flat(flat)

    def with_flat(self, flat: Mapping) -> "GASettings":
        """A copy with the settings named in ``flat`` (flat names) replaced; ``self`` is left as it is."""
        unknown = [name for name in flat if name not in FLAT_NAMES]
        if unknown:
            raise InputError(f"unknown GA option(s) {', '.join(map(repr, unknown))}; known: {', '.join(FLAT_NAMES)}")
        new = copy.deepcopy(self)  # shares no dict with self
        own, parts = {}, {}
        for name, value in flat.items():
            part, attr = FLAT_NAMES[name]
            (own if part is None else parts.setdefault(part, {}))[attr] = copy.deepcopy(value)
        for part, changes in parts.items():
            own[part] = replace(getattr(new, part), **changes)
        return replace(new, **own)


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
