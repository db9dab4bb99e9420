"""The ``stem-refine`` command-line interface (see :mod:`refine.cli.main`)."""
