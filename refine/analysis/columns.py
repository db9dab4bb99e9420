"""Atom counts of the projected columns along the beam: truth against refined.

:func:`column_counts` clusters the truth's projected (x, y) positions into
columns (single linkage within a tolerance, Å), puts each refined atom into
the nearest truth column within the tolerance, and counts both; refined
atoms near no truth column form columns of their own. Meaningful near a
zone axis. Used by :func:`refine.analysis.comparison.compare_structures`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = ["ColumnCounts", "DEFAULT_COLUMN_TOLERANCE", "column_counts", "neighbour_directions",
           "median_neighbour_distance"]

#: Å; projected atoms closer than this (single linkage) share a column.
DEFAULT_COLUMN_TOLERANCE = 0.5


@dataclass(frozen=True)
class ColumnCounts:
    """Atom counts of the projected columns along the beam (z).

    Columns are single-linkage clusters of the truth's projected (x, y)
    positions within ``tolerance`` Å; each refined atom joins the nearest
    truth column within ``tolerance``, and the refined atoms near no truth
    column form columns of their own (``n_truth`` 0). Meaningful near a zone
    axis; far off-axis almost every atom is its own column.

    Attributes
    ----------
    xy : ndarray, shape (n_columns, 2)
        Column centres (Å), mean projected position of their atoms.
    n_truth, n_refined : ndarray of int, shape (n_columns,)
        Atoms of each structure in each column.
    tolerance : float
        Å.
    """

    xy: np.ndarray
    n_truth: np.ndarray
    n_refined: np.ndarray
    tolerance: float

    @property
    def fraction_equal(self) -> float:
        """Fraction of truth columns whose refined count is the same."""
        t = self.n_truth > 0
        return float(np.mean(self.n_truth[t] == self.n_refined[t])) if t.any() else float("nan")

    @property
    def mean_abs_difference(self) -> float:
        """Mean |n_refined − n_truth| over all columns (atoms)."""
        return float(np.mean(np.abs(self.n_refined - self.n_truth))) if len(self.xy) else 0.0

    def to_dict(self) -> dict:
        return {
            "tolerance": self.tolerance,
            "n_columns_truth": int(np.count_nonzero(self.n_truth)),
            "n_columns_refined": int(np.count_nonzero(self.n_refined)),
            "fraction_equal": self.fraction_equal,
            "mean_abs_difference": self.mean_abs_difference,
            "columns": [
                {"x": float(x), "y": float(y), "n_truth": int(a), "n_refined": int(b)}
                for (x, y), a, b in zip(self.xy, self.n_truth, self.n_refined)
            ],
        }


def median_neighbour_distance(points) -> float | None:
    """Å, the median distance from each point (shape (n, 2) or (n, 3)) to its nearest other; None below two points."""
    pts = np.asarray(points, dtype=float)
    if len(pts) < 2:
        return None
    d, _ = cKDTree(pts).query(pts, k=2)
    return float(np.median(d[:, 1]))


def neighbour_directions(positions, reach: float = 1.55) -> np.ndarray:
    """Unit vectors between atoms closer than ``reach`` nearest-neighbour distances, one of each ± pair (z ≥ 0).

    A crystal's atom columns run along such vectors (fcc [110]: the bond,
    [100]: the second neighbour at 1.41 bonds): the candidate column and
    zone-axis directions of a structure. Shape (m, 3); empty for fewer than
    two atoms.
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    if len(pos) < 2:
        return np.zeros((0, 3))
    pairs = cKDTree(pos).query_pairs(float(reach) * median_neighbour_distance(pos), output_type="ndarray")
    if not len(pairs):
        return np.zeros((0, 3))
    vec = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    vec /= np.linalg.norm(vec, axis=1)[:, None]
    return vec * np.where(vec[:, 2] < 0, -1.0, 1.0)[:, None]


def _clusters(xy: np.ndarray, tol: float) -> np.ndarray:
    if len(xy) == 0:
        return np.zeros(0, dtype=int)
    pairs = cKDTree(xy).query_pairs(tol, output_type="ndarray")
    n = len(xy)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels


def column_counts(truth_xy: np.ndarray, refined_xy: np.ndarray, tolerance: float = DEFAULT_COLUMN_TOLERANCE) -> ColumnCounts:
    """Count the atoms of two projected structures in the truth's columns.

    Parameters
    ----------
    truth_xy, refined_xy : ndarray, shape (n, 2)
        Projected positions (Å) in a common frame, beam along z.
    tolerance : float
        Å; single-linkage distance within a column.
    """
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise InputError(f"column tolerance must be a positive number of Å, got {tolerance!r}")
    truth_xy = np.asarray(truth_xy, dtype=float).reshape(-1, 2)
    refined_xy = np.asarray(refined_xy, dtype=float).reshape(-1, 2)
    lt = _clusters(truth_xy, tolerance)
    nt = lt.max() + 1 if len(lt) else 0
    centres = np.array([truth_xy[lt == c].mean(axis=0) for c in range(nt)]).reshape(-1, 2)
    n_truth = np.bincount(lt, minlength=nt)
    # refined atoms: nearest truth atom within tolerance -> its column
    col = np.full(len(refined_xy), -1)
    if len(truth_xy) and len(refined_xy):
        d, j = cKDTree(truth_xy).query(refined_xy, distance_upper_bound=tolerance)
        ok = np.isfinite(d)
        col[ok] = lt[j[ok]]
    n_refined = np.bincount(col[col >= 0], minlength=nt)
    extra = np.flatnonzero(col < 0)
    if len(extra):
        le = _clusters(refined_xy[extra], tolerance)
        ne = le.max() + 1
        centres = np.concatenate([centres, [refined_xy[extra][le == c].mean(axis=0) for c in range(ne)]])
        n_truth = np.concatenate([n_truth, np.zeros(ne, dtype=int)])
        n_refined = np.concatenate([n_refined, np.bincount(le, minlength=ne)])
    return ColumnCounts(centres, n_truth.astype(int), n_refined.astype(int), float(tolerance))
