"""The refine package's exception family."""

__all__ = ["RefineError", "InputError"]


class RefineError(Exception):
    """Base class of the errors raised by :mod:`refine`."""


class InputError(RefineError, ValueError):
    """Bad user input (image, composition, settings) for a refinement."""
