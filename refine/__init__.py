"""Structure refinement of nanoparticles from HAADF-STEM images.

Data flow: experimental image (:mod:`refine.io.images`) → fitness (surrogate
image χ² + energy, :mod:`refine.cost.fitness`, :mod:`refine.cost.energy`) → DEAP
genetic algorithm (:mod:`refine.search.population`, :mod:`refine.search.operators`,
:mod:`refine.search.ga`) → one refinement end to end (:mod:`refine.workflows.refinement`) → many on
Dask (:mod:`refine.workflows.batch`) → consensus (:mod:`refine.analysis.ensemble`) and
comparison with the truth or multislice (:mod:`refine.analysis.compare`,
:mod:`refine.analysis.image_comparison`).

The public names below are imported lazily, so that ``stem-refine --help``
does not pay for DEAP, Dask and abTEM.
"""

from importlib import import_module

_EXPORTS = {
    "read_image": "io.images", "ExperimentalImage": "io.images",
    "make_calculator": "cost.energy", "Energy": "cost.energy",
    "Fitness": "cost.fitness", "FitnessResult": "cost.fitness", "fit_intensity_map": "cost.fitness",
    "parse_composition": "search.population", "make_population": "search.population",
    "GASettings": "search.ga", "GAResult": "search.ga", "run_ga": "search.ga", "make_toolbox": "search.ga",
    "refine_image": "workflows.refinement", "RefinementResult": "workflows.refinement",
    "read_manifest": "workflows.manifest", "run_batch": "workflows.batch",
    "compare_structures": "analysis", "align_structures": "analysis",
    "compare_with_image": "analysis.image_comparison",
    "build_ensemble": "analysis.ensemble", "write_ensemble": "analysis.ensemble",
    "StemRefineError": "surrogate.common.errors", "InputError": "surrogate.common.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(import_module(module if module.startswith("surrogate.") else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
