"""Neighbours of atoms in a finite (non-periodic) particle: one implementation for every package."""

from __future__ import annotations

import numpy as np

from surrogate.common.errors import InputError

__all__ = ["coordination_numbers"]


def coordination_numbers(positions, cutoff: float | None = None, *, radii=None) -> np.ndarray:
    """Number of neighbours of each atom of a finite particle.

    Parameters
    ----------
    positions : array_like, shape (n, 3)
        Atom positions in Å.
    cutoff : float, optional
        Two atoms are neighbours when at most ``cutoff`` Å apart.
    radii : array_like, shape (n,), optional
        Instead of ``cutoff``: atoms i and j are neighbours when closer than
        ``radii[i] + radii[j]`` Å (e.g. scaled covalent radii).

    Returns
    -------
    ndarray of int, shape (n,)
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    if (cutoff is None) == (radii is None):
        raise InputError("coordination numbers need either a cutoff or per-atom radii")
    if radii is None:
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise InputError(f"coordination cutoff must be a positive number of Å, got {cutoff!r}")
        pairs = cKDTree(pos).query_pairs(cutoff, output_type="ndarray")
    else:
        r = np.asarray(radii, dtype=float)
        pairs = cKDTree(pos).query_pairs(2 * r.max(), output_type="ndarray") if len(pos) else np.empty((0, 2), int)
        if len(pairs):
            d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
            pairs = pairs[d < r[pairs[:, 0]] + r[pairs[:, 1]]]
    if not len(pairs):
        return np.zeros(len(pos), dtype=int)
    return np.bincount(pairs.ravel(), minlength=len(pos))
