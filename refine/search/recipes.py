"""Search recipes: named sets of :class:`refine.search.settings.GASettings` fields.

``"anneal"`` is the search the self-consistency benchmark
(``examples/self_consistency.py``) and ``stem-refine demo`` measure: offspring
relaxed on E + α·χ² (image forces), depth-preserving crossover and moves,
image-restrained simulated annealing of two individuals every third
generation, each polished where it was annealed, and a sweep of the best every
fifth (interior vacancies filled with surface atoms; surface atoms moved from
too-bright to too-dark spots of the difference image, up to 16 at a time;
islands of surface atoms carried through the particle under the same columns;
then single-atom depth moves; then wedges of the particle slid along the beam
by one lattice period, the two most promising followed up); the last 15 % of
the run is a finishing stage that selects at the thermal α (k_B·300 K/2, see
:mod:`refine.cost.fitness`) with image-guided moves four times as likely (on case
(b) of the benchmark it turned 0 of 6 moved atoms found into 6 of 6).
``"plain"`` adds nothing to the GA's defaults. A light module (no heavy
imports): the CLI reads it to build its options.
"""

from __future__ import annotations

import json

from surrogate.common import InputError

__all__ = ["SEARCHES", "search_options"]

#: name → GASettings fields
SEARCHES = {
    "plain": {},
    "anneal": {"relax_image": True, "beam_parallel_cuts": 0.8, "anneal_every": 3, "anneal_count": 2,
               "anneal_steps": 20000, "polish_every": 5, "polish_atoms": 60, "polish_patches": 4,
               "polish_image_moves": 16, "polish_annealed": True, "polish_shifts": 2,
               "mutation_weights": {"depth_flip": 1.0, "depth_move": 4.0},
               "finish_fraction": 0.15, "finish_alpha": "thermal", "finish_weights": {"image_guided": 4.0}},
}


def search_options(name: str) -> dict:
    """A fresh copy of the GASettings fields of search recipe ``name`` (see :data:`SEARCHES`)."""
    if name not in SEARCHES:
        raise InputError(f"unknown search {name!r}; choose from {sorted(SEARCHES)}")
    return json.loads(json.dumps(SEARCHES[name]))
