"""Reading one structure file (any ``ase.io`` format) with one-line :class:`InputError` messages.

The commands that take a structure file (``stem-refine predict``,
``simulate``, ``compare``, ``ensemble``) read it here, so that a missing,
unreadable or empty file is a user error, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from surrogate.common.errors import InputError

__all__ = ["read_structure"]


def read_structure(path):
    """Read one structure with ``ase.io`` (the last frame of a trajectory).

    Parameters
    ----------
    path : str or pathlib.Path
        Structure file in any format ``ase.io.read`` knows (.xyz, .cif, .traj, ...).

    Returns
    -------
    ase.Atoms
        At least one atom; positions in Å.

    Raises
    ------
    InputError
        The file does not exist, cannot be read (unknown elements included) or holds no atoms.
    """
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
