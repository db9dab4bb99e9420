"""Search recipes: named :class:`refine.search.settings.GASettings`, composed by concern.

``"anneal"`` (:func:`anneal`) is the search the self-consistency benchmark
(``examples/self_consistency.py``) and ``stem-refine demo`` measure: offspring
relaxed on E + α·χ² (image forces), depth-preserving crossover and moves,
image-restrained simulated annealing of two individuals every third
generation, each polished where it was annealed, and a sweep of the best every
fifth (interior vacancies filled with surface atoms; surface atoms moved from
too-bright to too-dark spots of the difference image, up to 16 at a time;
the 6 darkest spots each filled by whichever surface atom fits best;
every adatom moved at once to the other end of its line of sight;
islands of surface atoms carried through the particle under the same columns;
then single-atom depth moves; then wedges of the particle slid along the beam
by one lattice period, the two most promising followed up); the last 15 % of
the run is a finishing stage that selects at the thermal α (k_B·300 K/2, see
:mod:`refine.cost.fitness`) with image-guided moves four times as likely (on case
(b) of the benchmark it turned 0 of 6 moved atoms found into 6 of 6).
``"plain"`` (:func:`plain`) is the GA's defaults without the offspring
relaxation. :func:`search_settings` gives a recipe with settings changed by
their flat names (what the CLI's options and manifests set). A light module
(no heavy imports): the CLI reads it to build its options.
"""

from __future__ import annotations

import logging

from refine.search.settings import (
    AnnealingSettings,
    FinishingSettings,
    GASettings,
    PolishSettings,
    RelaxationSettings,
    VariationSettings,
)
from surrogate.common import InputError

__all__ = ["IMAGE_RELAX_STEPS", "SEARCHES", "anneal", "plain", "search_settings"]

log = logging.getLogger(__name__)

#: FIRE steps on every offspring of a search that relaxes on the image cost, unless told otherwise
IMAGE_RELAX_STEPS = 20


def plain() -> GASettings:
    """The GA's defaults; offspring are not relaxed unless relax steps are given."""
    return GASettings(relaxation=RelaxationSettings(steps=0))


def anneal() -> GASettings:
    """Image forces, depth moves, annealing, polish sweeps and a finishing stage (see the module docstring)."""
    return GASettings(
        variation=VariationSettings(beam_parallel_cuts=0.8,
                                    # entries replacing the defaults (DEFAULT_MUTATION_WEIGHTS)
                                    mutation_weights={"depth_flip": 1.0, "depth_move": 4.0}),
        relaxation=RelaxationSettings(steps=IMAGE_RELAX_STEPS, image=True),
        annealing=AnnealingSettings(every=3, count=2, steps=20000),
        polish=PolishSettings(every=5, atoms=60, patches=4, image_moves=16, dark_sites=6, adatom_flips=True,
                              annealed=True, shifts=2),
        finishing=FinishingSettings(fraction=0.15, alpha="thermal", weights={"image_guided": 4.0}),
    )


#: name → function making the recipe's settings
SEARCHES = {"plain": plain, "anneal": anneal}


def search_settings(name: str, **overrides) -> GASettings:
    """Search recipe ``name`` with the settings in ``overrides`` changed (by flat names, see ``FLAT_NAMES``).

    Two settings carry a rule of the recipes:

    * ``relax_image`` given without ``relax_steps`` (or with None) sets
      the relax steps to :data:`IMAGE_RELAX_STEPS` when true, else 0 — the
      steps of a recipe go with its relaxation.
    * ``multi_objective=True`` drops the recipe's finishing stage: it chooses
      one answer at one α, whereas NSGA-II keeps the whole (χ², E) front.
      A finishing stage given in ``overrides`` stays, and
      :meth:`GASettings.validate` refuses it.

    The result is not validated (:func:`refine.search.run_ga` does that).

    Raises
    ------
    InputError
        Unknown recipe or setting name.
    """
    if name not in SEARCHES:
        raise InputError(f"unknown search {name!r}; choose from {sorted(SEARCHES)}")
    settings = SEARCHES[name]()
    overrides = dict(overrides)
    if overrides.get("relax_steps", None) is None:
        overrides.pop("relax_steps", None)
        if "relax_image" in overrides:
            overrides["relax_steps"] = IMAGE_RELAX_STEPS if overrides["relax_image"] else 0
    if overrides.get("multi_objective") and settings.finishing != FinishingSettings():
        settings.finishing = FinishingSettings()
        log.info("multi-objective mode: the %r search's finishing stage is off", name)
    return settings.with_flat(overrides)
