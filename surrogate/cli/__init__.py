"""The surrogate's ``stem-refine`` commands, one module per subcommand (registered in :mod:`refine.cli.main`).

In data-flow order:

- :mod:`~surrogate.cli.dataset`  ``dataset build``: particles → simulated image pairs → dataset file
- :mod:`~surrogate.cli.simulate` ``simulate``: convolution or multislice image of one structure
- :mod:`~surrogate.cli.fit`      ``fit``: training pairs → model file
- :mod:`~surrogate.cli.cv`       ``cv``: cross-validated error of one model
- :mod:`~surrogate.cli.sweep`    ``sweep``: cross-validated error over hyper-parameters
- :mod:`~surrogate.cli.predict`  ``predict``: surrogate image of a convolution image or a structure

Shared by them: :mod:`~surrogate.cli.options` (the options every subcommand
spells the same way: ``-o/--out``, ``--json``, ``--no-progress``, ``--seed``,
``--workers``, ``--pixel-size``, ``--sampling``, ``-m/--model``) and
:mod:`~surrogate.cli.training_options` (training data and polynomial options
of fit, cv and sweep). Nothing here imports from :mod:`refine`.
"""
