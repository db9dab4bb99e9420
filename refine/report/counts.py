"""A run's ``counts.csv``: atoms per projected column, from the 3-D answer and from the image.

Written into a run folder by the refinement's column counting (one row per
projected column along the beam); columns, exactly:

``x, y``
    Column position in Å, in the image frame (``image[i, j]`` at
    ``(x0 + iΔ, y0 + jΔ)``).
``atoms_3d``
    Atoms of the refined 3-D structure in that column.
``atoms_image``
    Atoms counted from the image: the column's integrated intensity (its
    scattering cross-section) against a library of cross-sections.
``cross_section``
    Å² × fraction of the incident beam.
``disagree``
    ``true`` where the two counts differ, else ``false``.
``resolved`` (optional: files written before it existed lack it)
    ``true`` where the image shows the column as a peak of its own.

The report states agreement as the fraction of columns whose counts are
equal and within ±1 atom, both computed here from the two count columns
(not from ``disagree``, so a stale flag cannot make a run look better).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surrogate.common import InputError

__all__ = ["COUNTS_COLUMNS", "ColumnCountTable", "read_counts"]

#: the columns counts.csv must have (the writer's header, :data:`refine.analysis.count_files.COUNTS_HEADER`,
#: adds ``resolved``, which files written before it lack)
COUNTS_COLUMNS = ("x", "y", "atoms_3d", "atoms_image", "cross_section", "disagree")


@dataclass(frozen=True)
class ColumnCountTable:
    """The rows of ``counts.csv`` as arrays, shape ``(n_columns,)`` each.

    Attributes
    ----------
    x, y : ndarray of float
        Å, image frame.
    atoms_3d, atoms_image : ndarray of int
    cross_section : ndarray of float
        Å² × fraction of the incident beam.
    resolved : ndarray of bool, optional
        Whether the image shows each column as a peak of its own (None: the file does not say).
    """

    x: np.ndarray
    y: np.ndarray
    atoms_3d: np.ndarray
    atoms_image: np.ndarray
    cross_section: np.ndarray
    resolved: np.ndarray | None = None

    @property
    def n_columns(self) -> int:
        return int(len(self.x))

    @property
    def difference(self) -> np.ndarray:
        """``atoms_image − atoms_3d`` per column (atoms)."""
        return self.atoms_image - self.atoms_3d

    @property
    def disagree(self) -> np.ndarray:
        """Boolean, shape ``(n_columns,)``: the two counts differ."""
        return self.difference != 0

    @property
    def fraction_equal(self) -> float:
        """Fraction of columns whose two counts are equal (NaN with no columns)."""
        return float(np.mean(self.difference == 0)) if self.n_columns else float("nan")

    @property
    def fraction_within_1(self) -> float:
        """Fraction of columns whose two counts differ by at most one atom (NaN with no columns)."""
        return float(np.mean(np.abs(self.difference) <= 1)) if self.n_columns else float("nan")

    def difference_histogram(self) -> list[tuple[int, int]]:
        """``[(atoms_image − atoms_3d, number of columns), ...]`` for every difference that occurs, ascending."""
        values, n = np.unique(self.difference, return_counts=True)
        return [(int(v), int(k)) for v, k in zip(values, n)]

    def to_dict(self) -> dict:
        """Summary numbers (no per-column rows): columns, atoms both ways, fractions equal and within ±1.

        With :attr:`resolved`, also ``n_resolved`` and the two fractions over the resolved columns
        (None where none is resolved).
        """
        out = {"n_columns": self.n_columns, "atoms_3d": int(self.atoms_3d.sum()),
               "atoms_image": int(self.atoms_image.sum()), "n_disagree": int(self.disagree.sum()),
               "fraction_equal": self.fraction_equal, "fraction_within_1": self.fraction_within_1,
               "difference_histogram": self.difference_histogram()}
        if self.resolved is not None:
            d = np.abs(self.difference[self.resolved])
            out["n_resolved"] = int(self.resolved.sum())
            out["fraction_equal_resolved"] = float(np.mean(d == 0)) if d.size else None
            out["fraction_within_1_resolved"] = float(np.mean(d <= 1)) if d.size else None
        return out


def _number(text: str, path: Path, line: int, column: str, kind=float):
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{path}, line {line}: {column} should be a number, got {text!r}") from None
    if not np.isfinite(v):
        raise InputError(f"{path}, line {line}: {column} is not finite ({text!r})")
    if kind is int:
        if v != round(v) or v < 0:
            raise InputError(f"{path}, line {line}: {column} should be a whole number of atoms, got {text!r}")
        return int(round(v))
    return v


def read_counts(path) -> ColumnCountTable | None:
    """Read ``counts.csv``; None when the file does not exist.

    Raises
    ------
    InputError
        Unreadable file, a header without the columns of :data:`COUNTS_COLUMNS`,
        or a cell that is not a number (counts: not a whole number ≥ 0).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in COUNTS_COLUMNS if c not in header]
            if missing:
                raise InputError(f"{path} has no column {', '.join(missing)} "
                                 f"(expected the header {','.join(COUNTS_COLUMNS)})")
            rows = []
            for row in reader:
                line = reader.line_num
                rows.append((_number(row["x"], path, line, "x"), _number(row["y"], path, line, "y"),
                             _number(row["atoms_3d"], path, line, "atoms_3d", int),
                             _number(row["atoms_image"], path, line, "atoms_image", int),
                             _number(row["cross_section"], path, line, "cross_section"),
                             _flag(row.get("resolved"), path, line, "resolved") if "resolved" in header else True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    cols = list(zip(*rows)) if rows else [()] * 6
    resolved = None if "resolved" not in header else np.asarray(cols[5], dtype=bool)
    return ColumnCountTable(x=np.asarray(cols[0], dtype=float), y=np.asarray(cols[1], dtype=float),
                            atoms_3d=np.asarray(cols[2], dtype=int), atoms_image=np.asarray(cols[3], dtype=int),
                            cross_section=np.asarray(cols[4], dtype=float), resolved=resolved)


def _flag(text, path: Path, line: int, column: str) -> bool:
    """``true``/``false`` (also 1/0) of a CSV cell."""
    if text is None:
        raise InputError(f"{path}, line {line}: no {column} value (the row is short)")
    value = str(text).strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InputError(f"{path}, line {line}: {column} should be true or false, got {text!r}")
