"""GA individuals: ``ase.Atoms`` with a DEAP fitness.

The DEAP ``creator`` classes are created once, here, at import:
:data:`StemIndividual` (one objective, the cost E + α·χ²) and
:data:`StemParetoIndividual` (two, χ² and E). :func:`to_individual` turns
an ``Atoms`` into one, :func:`as_atoms` back. Individuals travel between
processes (Dask workers, a process pool) by pickle; checkpoints do not
pickle them (:mod:`refine.search.checkpoint`).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from deap import base, creator

__all__ = ["StemFitnessMin", "StemFitnessPareto", "StemIndividual", "StemParetoIndividual", "to_individual",
           "as_atoms"]

# DEAP >= 1.4 pickles creator classes by value (deap.creator.meta_create re-creates
# them on unpickling), so individuals load in a process that never imported this
# module (a Dask worker). Such a re-created class is a distinct class object of the
# same name, weights and base: code here never relies on isinstance checks against
# StemIndividual. For older DEAP, the classes are also bound here under their own
# names with __module__ = "refine.search.individuals", so pickle can find them by reference.


def _create_types():
    """Create the fitness and individual classes in ``deap.creator`` unless they exist (a second import)."""
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
