"""Reading structure files for the CLI with one-line errors."""

from __future__ import annotations

from pathlib import Path

from surrogate.common import InputError

__all__ = ["read_structure"]


def read_structure(path):
    """Read one structure with ase.io; :class:`InputError` for missing, unreadable or empty files."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise InputError(f"structure file {path} does not exist")
    try:
        atoms = read(path)
    except Exception as exc:  # ase raises many types (KeyError for unknown symbols, ...)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = f"unknown element {msg}"
        raise InputError(f"cannot read structure {path}: {msg}") from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise InputError(f"structure {path} has no atoms")
    return atoms
