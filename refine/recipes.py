"""Search recipes: named sets of :class:`refine.ga.GASettings` fields.

``"anneal"`` is the search the self-consistency benchmark
(``examples/self_consistency.py``) and ``stem-refine demo`` measure: offspring
relaxed on E + α·χ² (image forces), depth-preserving crossover and moves,
image-restrained simulated annealing of two individuals every third
generation and a depth-move sweep of the best every fifth. ``"plain"`` adds
nothing to the GA's defaults. A light module (no heavy imports): the CLI
reads it to build its options.
"""

from __future__ import annotations

import json

from .exceptions import InputError

__all__ = ["SEARCHES", "search_options"]

#: name → GASettings fields
SEARCHES = {
    "plain": {},
    "anneal": {"relax_image": True, "beam_parallel_cuts": 0.8, "anneal_every": 3, "anneal_count": 2,
               "anneal_steps": 20000, "polish_every": 5, "polish_atoms": 60,
               "mutation_weights": {"depth_flip": 1.0, "depth_move": 4.0}},
}


def search_options(name: str) -> dict:
    """A fresh copy of the GASettings fields of search recipe ``name`` (see :data:`SEARCHES`)."""
    if name not in SEARCHES:
        raise InputError(f"unknown search {name!r}; choose from {sorted(SEARCHES)}")
    return json.loads(json.dumps(SEARCHES[name]))
