"""Reading one structure file (any ``ase.io`` format) with one-line :class:`InputError` messages.

The commands that take a structure file (``stem-refine predict``,
``simulate``, ``compare``, ``ensemble``) read it here, so that a missing,
unreadable or empty file is a user error, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from surrogate.common.errors import InputError

__all__ = ["read_structure"]


def read_structure(path, index=None):
    """Read one structure with ``ase.io`` (the last frame of a trajectory), or all frames.

    Parameters
    ----------
    path : str or pathlib.Path
        Structure file in any format ``ase.io.read`` knows (.xyz, .cif, .traj, ...).
    index : str, optional
        ``":"``: every frame, as a list.

    Returns
    -------
    ase.Atoms, or list of ase.Atoms with ``index=":"``
        At least one atom each; positions in Å.

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
        atoms = read(path) if index is None else read(path, index=index)
    except Exception as exc:  # ase raises many types (KeyError for unknown symbols, ...)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = f"unknown element {msg}"
        raise InputError(f"cannot read structure {path}: {msg}") from None
    frames = atoms if isinstance(atoms, list) else [atoms]
    if not frames or any(len(a) == 0 for a in frames):
        raise InputError(f"structure {path} has no atoms")
    if index is None:
        return frames[-1]
    return frames
