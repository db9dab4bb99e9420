"""Structure refinement of nanoparticles from HAADF-STEM images.

Data flow: experimental image (:mod:`refine.images`) → fitness (surrogate
image χ² + energy, :mod:`refine.fitness`, :mod:`refine.energy`) → DEAP
genetic algorithm (:mod:`refine.population`, :mod:`refine.operators`,
:mod:`refine.ga`) → one refinement end to end (:mod:`refine.run`) → many on
Dask (:mod:`refine.batch`) → consensus (:mod:`refine.ensemble`) and
comparison with the truth or multislice (:mod:`refine.compare`,
:mod:`refine.compare_image`).

The public names below are imported lazily, so that ``stem-refine --help``
does not pay for DEAP, Dask and abTEM.
"""

from importlib import import_module

_EXPORTS = {
    "read_image": "images", "ExperimentalImage": "images",
    "make_calculator": "energy", "Energy": "energy",
    "Fitness": "fitness", "FitnessResult": "fitness", "fit_intensity_map": "fitness",
    "parse_composition": "population", "make_population": "population",
    "GASettings": "ga", "GAResult": "ga", "run_ga": "ga", "make_toolbox": "ga",
    "refine_image": "run", "RefinementResult": "run",
    "read_manifest": "batch", "run_batch": "batch",
    "compare_structures": "compare", "align_structures": "compare",
    "compare_with_image": "compare_image",
    "build_ensemble": "ensemble", "write_ensemble": "ensemble",
    "RefineError": "exceptions", "InputError": "exceptions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
