"""Structure comparison: a refined particle against the truth.

:func:`compare_structures` finds the rigid motion (rotation, optional mirror,
translation) and the one-to-one assignment of atoms that bring a refined
structure closest to a reference, then reports how far each atom is from its
partner (RMSD, maximum displacement, fraction within 0.3 / 0.5 / 1.0 Å),
the atom count of every projected column along the beam, and coordination
numbers. :func:`refine.analysis.plots.plot_comparison` draws both
projections on top of each other.

The motion and assignment come from :func:`refine.analysis.align.align_structures`
(robust by default; rotations ``"full"``, ``"beam"`` or ``"none"``; mirror
image z → −z allowed), the column counts from
:func:`refine.analysis.columns.column_counts`.

Conventions: lengths in Å; the beam travels along z, so "projected" means the
(x, y) coordinates in the *truth's* frame, into which the refined structure is
moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from refine.analysis.align import Alignment, align_structures, check_composition, validate_atoms
from refine.analysis.columns import DEFAULT_COLUMN_TOLERANCE, ColumnCounts, column_counts
from surrogate.common import InputError, geometry

__all__ = ["Comparison", "CoordinationHistograms", "DEFAULT_CUTOFF_MULT", "DEFAULT_THRESHOLDS", "compare_structures",
           "coordination_numbers"]

#: Å; the distances whose "fraction of atoms within" is reported.
DEFAULT_THRESHOLDS = (0.3, 0.5, 1.0)
#: neighbours when d < mult · (r_cov,i + r_cov,j); 1.2 puts the Pt cutoff at
#: 3.26 Å, between the first (2.77 Å) and second (3.92 Å) fcc shells.
DEFAULT_CUTOFF_MULT = 1.2


def coordination_numbers(atoms: Atoms, *, cutoff: float | None = None, mult: float = DEFAULT_CUTOFF_MULT) -> np.ndarray:
    """Number of neighbours of each atom (non-periodic).

    Two atoms are neighbours when closer than ``cutoff`` Å, or, when
    ``cutoff`` is None, than ``mult · (r_i + r_j)`` with ASE's covalent radii
    (``ase.neighborlist.natural_cutoffs`` scaled by ``mult``). Counted by
    :func:`surrogate.common.geometry.coordination_numbers`.

    Returns
    -------
    ndarray of int, shape (n_atoms,)
    """
    if cutoff is not None:
        return geometry.coordination_numbers(atoms.positions, cutoff)
    return geometry.coordination_numbers(atoms.positions, radii=mult * covalent_radii[atoms.numbers])


@dataclass(frozen=True)
class CoordinationHistograms:
    """Coordination numbers of both structures.

    Attributes
    ----------
    truth, refined : ndarray of int
        Per-atom coordination numbers, in each structure's own atom order.
    cutoff : str
        How neighbours were defined.
    fraction_same : float
        Fraction of matched pairs whose coordination numbers agree.
    """

    truth: np.ndarray
    refined: np.ndarray
    cutoff: str
    fraction_same: float

    def histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts of atoms with coordination 0, 1, …, max for truth and refined (same length)."""
        n = int(max(self.truth.max(initial=0), self.refined.max(initial=0))) + 1
        return np.bincount(self.truth, minlength=n), np.bincount(self.refined, minlength=n)

    def to_dict(self) -> dict:
        ht, hr = self.histograms()
        return {"cutoff": self.cutoff, "truth": ht.tolist(), "refined": hr.tolist(), "fraction_same": self.fraction_same}


@dataclass(frozen=True)
class Comparison:
    """A refined structure compared with the truth (see :func:`compare_structures`).

    Attributes
    ----------
    alignment : Alignment
        Motion and assignment of the refined atoms onto the truth.
    aligned : ase.Atoms
        The refined structure moved into the truth's frame, in the refined
        atom order, with ``arrays["displacement"]`` (Å, NaN when unmatched)
        and ``arrays["truth_index"]`` (−1 when unmatched).
    truth : ase.Atoms
    within : dict of float to float
        Threshold (Å) → fraction of *truth* atoms whose partner is closer
        than the threshold (unmatched truth atoms count as not within).
    columns : ColumnCounts
    coordination : CoordinationHistograms
    """

    alignment: Alignment
    aligned: Atoms
    truth: Atoms
    within: dict
    columns: ColumnCounts
    coordination: CoordinationHistograms
    settings: dict = field(default_factory=dict)

    @property
    def rmsd(self) -> float:
        """RMS distance over matched pairs (Å)."""
        return self.alignment.rmsd

    @property
    def max_displacement(self) -> float:
        """Largest distance of a matched pair (Å)."""
        d = self.displacements[self.alignment.matched]
        return float(d.max()) if len(d) else float("nan")

    @property
    def displacements(self) -> np.ndarray:
        """Distance of each refined atom to its partner (Å), shape (n_refined,); NaN when unmatched."""
        return self.alignment.displacements

    @property
    def truth_index(self) -> np.ndarray:
        """Truth atom matched to each refined atom, shape (n_refined,); −1 when unmatched."""
        return self.alignment.reference_index

    @property
    def mirrored(self) -> bool:
        return self.alignment.mirrored

    @property
    def unmatched_refined(self) -> np.ndarray:
        """Indices of refined atoms without a partner."""
        return np.flatnonzero(self.truth_index < 0)

    @property
    def unmatched_truth(self) -> np.ndarray:
        """Indices of truth atoms without a partner."""
        mask = np.ones(len(self.truth), dtype=bool)
        mask[self.truth_index[self.truth_index >= 0]] = False
        return np.flatnonzero(mask)

    def displaced(self, threshold: float = 0.5) -> np.ndarray:
        """Indices of refined atoms farther than ``threshold`` Å from their partner."""
        d = self.displacements
        return np.flatnonzero(np.isfinite(d) & (d > threshold))

    def to_dict(self, per_atom: bool = False) -> dict:
        """JSON-ready summary; ``within_<threshold>`` keys are fractions."""
        out = {
            "rmsd": self.rmsd,
            "max_displacement": self.max_displacement,
        }
        for thr, frac in self.within.items():
            out[f"within_{float(thr)!r}"] = frac  # within_0.3, within_0.5, within_1.0
        out.update(
            {
                "n_refined": len(self.aligned),
                "n_truth": len(self.truth),
                "n_matched": int(np.count_nonzero(self.alignment.matched)),
                "unmatched_refined": self.unmatched_refined.tolist(),
                "unmatched_truth": self.unmatched_truth.tolist(),
                "mirrored": self.mirrored,
                "rotation_matrix": self.alignment.rotation.tolist(),
                "translation": self.alignment.translation.tolist(),
                "columns": self.columns.to_dict(),
                "coordination": self.coordination.to_dict(),
                "settings": dict(self.settings),
            }
        )
        if not per_atom:
            out["columns"].pop("columns")
        else:
            out["displacements"] = [None if not np.isfinite(v) else float(v) for v in self.displacements]
            out["truth_index"] = self.truth_index.tolist()
        return out


def compare_structures(
    refined: Atoms,
    truth: Atoms,
    *,
    mirror: bool = True,
    rotation: str = "full",
    allow_unmatched: bool = False,
    robust: bool = True,
    thresholds=DEFAULT_THRESHOLDS,
    column_tolerance: float = DEFAULT_COLUMN_TOLERANCE,
    cutoff: float | None = None,
    cutoff_mult: float = DEFAULT_CUTOFF_MULT,
) -> Comparison:
    """Align ``refined`` onto ``truth`` and measure how far every atom is from its partner.

    Parameters
    ----------
    refined, truth : ase.Atoms
        Structures (Å); the truth's z axis is the beam.
    mirror : bool
        Allow the mirror image z → −z (one projection cannot tell them apart).
    rotation : {"full", "beam", "none"}
        Allowed rotations: any 3-D rotation (default), about the beam only,
        or none (see module docstring).
    allow_unmatched : bool
        Compare structures of different compositions by matching the common
        atoms and reporting the rest as unmatched; otherwise a different
        composition raises :class:`InputError`.
    robust : bool
        Robust alignment and assignment (default; see the module docstring),
        or plain least squares (the motion and assignment of minimum RMSD).
    thresholds : sequence of float
        Å; report the fraction of truth atoms within each.
    column_tolerance : float
        Å; single-linkage distance of projected atoms in one column.
    cutoff, cutoff_mult : float
        Neighbour definition for coordination numbers (see
        :func:`coordination_numbers`).

    Returns
    -------
    Comparison
    """
    validate_atoms(refined, "refined structure")
    validate_atoms(truth, "truth structure")
    check_composition(refined, truth, allow_unmatched)
    thresholds = tuple(float(t) for t in thresholds)
    if not all(np.isfinite(t) and t > 0 for t in thresholds):
        raise InputError(f"thresholds must be positive numbers of Å, got {thresholds!r}")
    al = align_structures(refined, truth, mirror=mirror, rotation=rotation, allow_unmatched=allow_unmatched,
                          robust=robust)
    aligned = Atoms(refined)  # a plain Atoms (Cluster.copy fails on sliced clusters)
    aligned.calc = None
    aligned.positions = al.positions
    aligned.arrays["displacement"] = al.displacements.copy()
    aligned.arrays["truth_index"] = al.reference_index.copy()
    aligned.info["mirrored"] = al.mirrored
    d = al.displacements[al.matched]
    within = {t: float(np.count_nonzero(d < t)) / len(truth) for t in thresholds}
    columns = column_counts(truth.positions[:, :2], al.positions[:, :2], column_tolerance)
    cn_t = coordination_numbers(truth, cutoff=cutoff, mult=cutoff_mult)
    cn_r = coordination_numbers(aligned, cutoff=cutoff, mult=cutoff_mult)
    m = al.matched
    same = float(np.mean(cn_r[m] == cn_t[al.reference_index[m]])) if m.any() else float("nan")
    desc = f"{cutoff:g} Å" if cutoff is not None else f"{cutoff_mult:g} x (sum of covalent radii)"
    settings = {
        "mirror": bool(mirror),
        "rotation": rotation,
        "allow_unmatched": bool(allow_unmatched),
        "robust": bool(robust),
        "column_tolerance": float(column_tolerance),
    }
    return Comparison(al, aligned, truth, within, columns, CoordinationHistograms(cn_t, cn_r, desc, same), settings)
