"""The project's one exception family, shared by :mod:`surrogate` and :mod:`refine`.

* :class:`InputError`: the user's input cannot be used as given (a bad value,
  file, image, composition or flag). It is also a :class:`ValueError`. The CLI
  prints its first line and exits with status 2.
* :class:`StemRefineError`: the base class, raised directly for a state the
  program should not reach (e.g. a cost used before α is calibrated). The CLI
  treats it, like any other exception that is not an :class:`InputError`, as a
  bug: a short message with a pointer to ``--debug`` and exit status 1.
* :class:`NotFittedError`: a model used before :meth:`fit` or loading.
"""

__all__ = ["StemRefineError", "InputError", "NotFittedError"]


class StemRefineError(Exception):
    """Base class of the errors raised on purpose by :mod:`surrogate` and :mod:`refine`."""


class InputError(StemRefineError, ValueError):
    """Bad user input: a value, file, image or setting that cannot be used as given."""


class NotFittedError(StemRefineError, AttributeError):
    """A model was used before :meth:`fit` (or loading) gave it coefficients."""
