"""The ``stem-refine`` command-line interface: the entry point and the refinement's commands.

- :mod:`~refine.cli.main`     ``stem-refine``: parser of every subcommand, error handling, ``--version``
- :mod:`~refine.cli.demo`     ``demo``: a short refinement of the shipped image
- :mod:`~refine.cli.refine`   ``refine``: image + composition → structure (the GA)
- :mod:`~refine.cli.batch`    ``batch``: many refinements as Dask tasks
- :mod:`~refine.cli.ensemble` ``ensemble``: consensus and spread of several refinements
- :mod:`~refine.cli.compare`  ``compare``: a refined structure against the truth or its image

The surrogate's commands (dataset, simulate, fit, cv, sweep, predict) are in
:mod:`surrogate.cli`, and so are the options every subcommand shares
(:mod:`surrogate.cli.options`).
"""
