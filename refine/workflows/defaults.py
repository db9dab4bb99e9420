"""The defaults every way of running a refinement shares.

``stem-refine refine``, :func:`refine.workflows.refine_image`, batch
manifests (``stem-refine batch``) and ``stem-refine demo`` take the search
recipe, the α rule, the noise model, the population and the generations from
here unless told otherwise; ``tests/refine/test_defaults.py`` checks that
they agree. The demo keeps a budget of its own (a 90 s time limit and a
search scaled to it, see :mod:`refine.cli.demo`).

Also shared: the worker processes for the annealings (results do not depend
on them, the time a run takes does). Not shared: the run log file (the CLI
writes ``refine.log``).
"""

from __future__ import annotations

__all__ = ["SEARCH", "POPULATION", "GENERATIONS", "ALPHA", "ALPHA_SCALE", "NOISE", "MODEL_ERROR", "START", "WORKERS",
           "search_settings"]

#: search recipe (:mod:`refine.search.recipes`)
SEARCH = "anneal"
#: μ, individuals per generation
POPULATION = 20
#: most generations after generation 0, counted over resumed runs
GENERATIONS = 100
#: α rule: "auto" (IQR(E)/IQR(χ²) over the starting population), "thermal" (k_B·300 K/2) or eV per unit χ²
ALPHA = "auto"
#: factor on the automatic α (> 1 weighs the image more)
ALPHA_SCALE = 1.0
#: noise model of χ² when none is given: "estimate" (a variance growing with intensity, fitted to the image,
#: :mod:`refine.cost.noise`); a dose always means Poisson noise (:func:`refine.workflows.inputs.validate_noise`)
NOISE = "estimate"
#: add the surrogate's own error (calibrated in the model file) to the noise of χ² (:mod:`refine.cost.noise`)
MODEL_ERROR = True
#: starting population: random compact clusters
START = "random"
#: the counted start's count evidence weight (:data:`refine.search.column_stacks.COUNT_WEIGHT`; None: columns
#: left as counted)
COUNT_WEIGHT = 3.0
#: processes for the image-restrained annealings (2: the cores of a laptop-class machine; a run's result does
#: not depend on it, its wall time does)
WORKERS = 2


def search_settings(name: str | None = None, **overrides):
    """Search recipe ``name`` (default :data:`SEARCH`) with the default population and generations, then ``overrides``.

    ``overrides`` by flat names; see :func:`refine.search.recipes.search_settings`.
    Returns a :class:`refine.search.GASettings`.
    """
    from refine.search.recipes import search_settings as recipe

    return recipe(SEARCH if name is None else name,
                  **{"population_size": POPULATION, "generations": GENERATIONS, **overrides})
