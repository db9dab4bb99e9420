"""The surrogate package's exception family.

Every error a user can cause (bad files, bad values, mismatched images) is an
:class:`InputError`, which is also a :class:`ValueError`; the CLI turns it into
a one-line message and a non-zero exit status.
"""

__all__ = ["SurrogateError", "InputError", "NotFittedError"]


class SurrogateError(Exception):
    """Base class of the errors raised by :mod:`surrogate`."""


class InputError(SurrogateError, ValueError):
    """Bad user input: a value, file or image that cannot be used as given."""


class NotFittedError(SurrogateError, AttributeError):
    """A model was used before :meth:`fit` (or loading) gave it coefficients."""
