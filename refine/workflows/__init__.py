"""refine.workflows: one refinement end to end, and many of them on Dask.

One refinement (:func:`refine_image`, what ``stem-refine refine`` and
``demo`` call), module by module in the order of the data flow:

- :mod:`~refine.workflows.settings` — what :func:`refine_image` is told:
  the search (:class:`refine.search.GASettings`), :class:`CostSettings`,
  :class:`ImageSettings`, :class:`StartSettings`, :class:`RunSettings`;
  :func:`refinement_settings` makes them from the flat keywords of the CLI
  and of manifests; :mod:`~refine.workflows.defaults` — the defaults every
  entry point shares (search recipe, α rule, noise model, population).
- :mod:`~refine.workflows.inputs` — check every input before anything is
  written (model, composition, image, start, noise, output folder, GA
  settings) into one :class:`~refine.workflows.inputs.RefinementInputs`;
  :mod:`~refine.workflows.resume` — ``inputs.json`` and the checks of a
  resumed run against it.
- :mod:`~refine.workflows.cost` — the run's :class:`refine.cost.Fitness`
  (E + α·χ²; :class:`~refine.workflows.cost.ScaledAlphaFitness` for
  ``alpha_scale``).
- :mod:`~refine.workflows.refinement` — :func:`refine_image`: validate →
  cost → starting population → GA (:func:`refine.search.run_ga`) → outputs.
- :mod:`~refine.workflows.outputs` — ``best.xyz``, the hall of fame,
  the images, ``summary.json``; :mod:`~refine.workflows.figures` — the
  two PNG figures; :mod:`~refine.workflows.runlog` — ``refine.log``.

Many refinements (``stem-refine batch``):

- :mod:`~refine.workflows.manifest` — :func:`read_manifest`: a TOML or CSV
  manifest → one :class:`~refine.workflows.manifest.RunSpec` per image and seed.
- :mod:`~refine.workflows.batch` — :func:`run_batch`: each run a Dask task
  (resumable, skipped once finished), the results table ``results.csv`` /
  ``results.json`` (:func:`read_results`).
"""

from refine.workflows.batch import read_results, run_batch
from refine.workflows.inputs import load_model_or_default
from refine.workflows.manifest import RunSpec, read_manifest
from refine.workflows.refinement import RefinementResult, refine_image
from refine.workflows.settings import CostSettings, ImageSettings, RunSettings, StartSettings, refinement_settings

__all__ = ["CostSettings", "ImageSettings", "RefinementResult", "RunSettings", "RunSpec", "StartSettings",
           "load_model_or_default", "read_manifest", "read_results", "refine_image", "refinement_settings",
           "run_batch"]
