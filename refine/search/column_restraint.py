"""Relax a counted structure on its energy while every atom stays in its image column.

The image fixes where a column is (x, y) and how many atoms it holds; the
energy has to fix the rest. Relaxed freely, a counted crystal stacked from
the image's columns (:mod:`refine.search.column_start`) loses the image:
surface atoms leave their columns, columns drift off the image's peaks, and
the count that the structure and the image agree on falls. Held rigidly in
x, y (moves along the beam only) it keeps every column but cannot take up
the strain of column positions measured on a noisy, scan-distorted image.
In between, each atom is tied to its starting (x, y) by a spring,

    E_restrained = E + ½·k·Σᵢ |(xᵢ, yᵢ) − (x₀ᵢ, y₀ᵢ)|²,

free along the beam (z), so that it can move a fraction of an ångström
sideways where the energy asks for it but not leave its column. This is the
energy minimisation of atom-counting reconstructions (e.g. De Backer et al.
2017, where atoms move only along their columns), softened by the spring.

A relaxation only finds the nearest minimum; which atoms of a column sit
at its top and which at its bottom is a discrete choice. :func:`slide_columns`
makes it by Monte Carlo: a move slides one whole column by one period along
the beam (its count and its projection unchanged, so the image cannot tell),
relaxes in columns, and is accepted by Metropolis on the restrained energy,
annealed from :data:`SLIDE_TEMPERATURES`.

:data:`COLUMN_STIFFNESS` is measured, not guessed: on the abTEM image of an
800-atom ⟨110⟩ Pt particle with known truth and on the Pt–Ir image, a
stiffer spring keeps more counts and a softer one lowers the energy
(docs/benchmarks.md, "A counted reconstruction").

Energies in eV, lengths in Å, stiffness in eV/Å².
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from surrogate.common import InputError

__all__ = ["ColumnRestraint", "relax_in_columns", "slide_columns", "column_period", "COLUMN_STIFFNESS",
           "COLUMN_RELAX_STEPS", "SLIDES_PER_COLUMN", "MIN_SLIDES"]

#: eV/Å² of the spring that ties each atom's (x, y) to its column
COLUMN_STIFFNESS = 1.5
#: FIRE steps of :func:`relax_in_columns` (an 800-atom particle converges in ~1 s with EMT)
COLUMN_RELAX_STEPS = 2000
#: slide attempts per column of :func:`slide_columns` (the energy stops falling after ~3 per column on Pt–Ir)
SLIDES_PER_COLUMN = 4
#: slide attempts at least (a small particle needs more than 4 per column to anneal)
MIN_SLIDES = 200
#: eV; the annealing temperatures (k_B·T) of the slides, first and last
SLIDE_TEMPERATURES = (0.3, 0.01)


class ColumnRestraint(Calculator):
    """``calculator``'s energy plus a spring ½·k·|Δ(x, y)|² per atom to ``anchors`` (free along z).

    Parameters
    ----------
    calculator : ase calculator
        The energy E (eV), e.g. asap3's EMT.
    anchors : array_like, shape (n_atoms, 2)
        Each atom's column position (x, y) in Å.
    stiffness : float
        k in eV/Å² (> 0).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, calculator, anchors, stiffness: float = COLUMN_STIFFNESS):
        super().__init__()
        k = float(stiffness)
        if not (np.isfinite(k) and k > 0):
            raise InputError(f"column stiffness must be a positive number of eV/Å², got {stiffness!r}")
        self.calculator = calculator
        self.anchors = np.asarray(anchors, dtype=float).reshape(-1, 2).copy()
        self.stiffness = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != len(self.anchors):
            raise InputError(f"{len(self.atoms)} atoms but {len(self.anchors)} column anchors")
        inner = self.atoms.copy()
        inner.calc = self.calculator
        energy = float(inner.get_potential_energy())
        forces = np.array(inner.get_forces())
        d = self.atoms.positions[:, :2] - self.anchors
        forces[:, :2] -= self.stiffness * d
        self.results = {"energy": energy + 0.5 * self.stiffness * float((d * d).sum()), "forces": forces}


def relax_in_columns(atoms: Atoms, calculator, *, stiffness: float = COLUMN_STIFFNESS,
                     steps: int = COLUMN_RELAX_STEPS, fmax: float = 0.02) -> Atoms:
    """A copy of ``atoms`` relaxed by FIRE on E + ½·k·Σ|Δ(x, y)|² (module docstring), anchored where it starts.

    Parameters
    ----------
    atoms : ase.Atoms
        In the image's frame (Å), e.g. :func:`refine.search.column_start.counted_structure`.
    calculator : ase calculator
        The energy (eV).
    stiffness : float
        eV/Å².
    steps : int
        Maximum FIRE steps (0: a plain copy).
    fmax : float
        eV/Å, on the restrained forces.

    Returns
    -------
    ase.Atoms
        Same atoms and order, no calculator; ``info`` keeps the input's, plus
        ``column_stiffness`` (eV/Å²) and ``column_shift_max`` (Å, the largest
        sideways move).
    """
    from ase.optimize import FIRE

    out = Atoms(atoms.numbers, positions=atoms.positions.copy())
    out.info = dict(atoms.info)
    if int(steps) < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
    anchors = atoms.positions[:, :2].copy()
    if int(steps) > 0 and len(out):
        work = out.copy()
        work.cell = np.diag(np.ptp(work.positions, axis=0) + 20.0)  # asap3 needs a cell; the particle is isolated
        work.calc = ColumnRestraint(calculator, anchors, stiffness)
        FIRE(work, logfile=None).run(fmax=float(fmax), steps=int(steps))
        out.positions = work.positions
    out.info["column_stiffness"] = float(stiffness)
    out.info["column_shift_max"] = float(np.linalg.norm(out.positions[:, :2] - anchors, axis=1).max()) if len(out) else 0.0
    return out


def column_period(along, label) -> float | None:
    """Å, the median gap between consecutive atoms of a column, over all columns; None with no column of two.

    ``along``: each atom's coordinate along the columns (Å), ``label``: its column.
    """
    along, label = np.asarray(along, dtype=float), np.asarray(label)
    gaps = [np.diff(np.sort(along[label == c])) for c in np.unique(label) if np.count_nonzero(label == c) > 1]
    return float(np.median(np.concatenate(gaps))) if gaps else None


def slide_columns(atoms: Atoms, calculator, rng: np.random.Generator, *, moves: int | None = None,
                  stiffness: float = COLUMN_STIFFNESS, tolerance: float = 0.8, relax_steps: int = 150,
                  temperatures=SLIDE_TEMPERATURES) -> Atoms:
    """A copy of ``atoms`` whose columns were slid along the beam by Monte Carlo (module docstring).

    Parameters
    ----------
    atoms : ase.Atoms
        A structure relaxed in columns (e.g. :func:`relax_in_columns`), beam along z (Å).
    calculator : ase calculator
        The energy (eV).
    rng : numpy.random.Generator
        The moves and their acceptance.
    moves : int, optional
        Slide attempts (default :data:`SLIDES_PER_COLUMN` per column, at least :data:`MIN_SLIDES`).
    stiffness : float
        eV/Å², the spring to each column's centre.
    tolerance : float
        Å; projected atoms this close form one column (single linkage).
    relax_steps : int
        FIRE steps after each slide (fmax 0.05 eV/Å); the result is relaxed to 0.02 eV/Å.
    temperatures : (float, float)
        k_B·T in eV at the first and the last move (geometric in between).

    Returns
    -------
    ase.Atoms
        Same atoms and order, no calculator; ``info["column_slides"]``: the accepted moves.
    """
    from ase.optimize import FIRE

    from refine.analysis.cross_sections import projected_columns

    out = Atoms(atoms.numbers, positions=atoms.positions.copy())
    out.info = dict(atoms.info)
    if len(out) < 2:
        out.info["column_slides"] = 0
        return out
    centres, heights, label = projected_columns(out.positions, tolerance=tolerance)
    period = column_period(out.positions[:, 2], label)  # atoms of a column are one period apart along the beam
    if period is None:
        out.info["column_slides"] = 0
        return out
    moves = max(SLIDES_PER_COLUMN * len(centres), MIN_SLIDES) if moves is None else int(moves)
    t0, t1 = (float(t) for t in temperatures)
    work = out.copy()
    work.cell = np.diag(np.ptp(work.positions, axis=0) + 20.0 + 4.0 * period)
    work.calc = ColumnRestraint(calculator, centres[label], stiffness)
    energy = float(work.get_potential_energy())
    accepted = 0
    for m in range(moves):
        temperature = t0 * (t1 / t0) ** (m / max(moves - 1, 1))
        column = label == rng.integers(len(centres))
        before = work.positions.copy()
        trial = before.copy()
        trial[column, 2] += period * rng.choice([-1.0, 1.0])
        work.positions = trial
        FIRE(work, logfile=None).run(fmax=0.05, steps=int(relax_steps))
        e = float(work.get_potential_energy())
        if e <= energy or rng.random() < np.exp(-(e - energy) / temperature):
            energy, accepted = e, accepted + 1
        else:
            work.positions = before
    FIRE(work, logfile=None).run(fmax=0.02, steps=COLUMN_RELAX_STEPS)
    out.positions = work.positions
    out.info["column_slides"] = accepted
    return out
