"""A counted structure as whole columns on their lattice: annealed depths, and counts where the image is unsure.

A counted reconstruction (:mod:`refine.search.column_start`) stacks each of
the image's columns with the image's count, one column period d apart
along the beam. Two discrete choices are left that a relaxation cannot
make:

* **depths**: which stretch of its line along the beam each column
  occupies (the image sees only the projection);
* **counts, where the image cannot tell**: a column whose cross-section
  lies half-way between the library values of n and n + 1 atoms is as well
  n as n + 1 for the image, and one of the two makes a much rougher
  surface. Noise of ±1 atom on a count is a one-atom step or an ad-atom on
  the particle's top or bottom facet, the costliest atoms there are.

Here a structure is a set of columns ("stacks"), each a contiguous run of
``n`` sites ``a, a+1, …, a+n−1`` on its line, z = (k + f)·d with a fixed
fraction f (its sublattice). Two kinds of Metropolis move keep every
column whole and the number of atoms fixed: a **slide** (a column's end
atom taken to its other end: the column moves by one period) and a
**transfer** (an end atom of one column put at an end of another). They
are judged on

    E = −Σᵢ √CNᵢ  +  w·Σ_c ((σ_c − s·L_c(n_c)) / Δ_c)²

* the first term is a coordination proxy of the energy, with CNᵢ the
  occupied sites within 1.2 bond lengths of atom i: the second-moment
  (Finnis–Sinclair) form, in which a bond broken at a poorly coordinated
  atom costs more, as in EMT; evaluated in microseconds per move, so that
  ~500 moves per column anneal in seconds where an EMT relaxation per move
  would take minutes (:func:`refine.search.column_restraint.slide_columns`
  makes ~4 per column);
* the second is the image's count evidence
  (:func:`count_evidence`): σ_c is the column's measured cross-section,
  s·L_c(n) the library's value for n atoms in that column and Δ_c the
  library's step per atom, so that the term is w times the squared
  distance from the image's reading in atoms. ``w`` (:data:`COUNT_WEIGHT`)
  is the exchange rate between a count the image contradicts and the
  energy; w = ∞ keeps every count (slides only).

Annealed from :data:`TEMPERATURES` (in units of √CN), the result is turned
back into atoms and relaxed in columns
(:func:`refine.search.column_restraint.relax_in_columns`) by
:func:`settle_columns`, in :data:`SETTLE_ROUNDS` rounds: the library of
a column's cross-section depends on its neighbours, so each round reads the
evidence off the structure the previous round left (as the counting rounds
of :mod:`refine.search.column_start` count the structure they built), and
the count that the answer's ``counts.csv`` reads is that of the structure
it describes. Lengths in Å.
"""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = ["ColumnStacks", "count_evidence", "anneal_stacks", "settle_columns", "COUNT_WEIGHT", "MOVES_PER_COLUMN",
           "TEMPERATURES", "BOND_REACH", "TRANSFER_FRACTION", "SETTLE_ROUNDS"]

log = logging.getLogger(__name__)

#: w, the count evidence's weight, in √CN units per (atom of disagreement)²; set on abTEM images with known
#: truth (docs/benchmarks.md, "Counts where the image is unsure")
COUNT_WEIGHT = 3.0
#: Metropolis moves per column
MOVES_PER_COLUMN = 500
#: the annealing's temperatures (√CN units), first and last move (geometric in between)
TEMPERATURES = (1.0, 0.01)
#: sites within this many nearest-neighbour distances are bonded (between the first and the second shell)
BOND_REACH = 1.2
#: fraction of the moves that are transfers when counts may change
TRANSFER_FRACTION = 0.5
#: rounds of :func:`settle_columns`, each with the evidence of the structure the last one left (set on abTEM
#: truths: docs/benchmarks.md, "Columns the peaks miss")
SETTLE_ROUNDS = 2


class ColumnStacks:
    """Columns of a structure as contiguous runs of sites on their lines along the beam (z).

    Parameters
    ----------
    centres : array_like, shape (m, 2)
        Column positions (x, y), Å.
    fraction : array_like, shape (m,)
        Each column's sites are at z = (k + fraction)·period.
    first, counts : array_like of int, shape (m,)
        The first occupied site k of each column and its number of atoms (≥ 1).
    period : float
        d, Å.
    nn_distance : float
        Bond length, Å.
    room : int
        Empty sites kept below and above each column's run and its largest count (slides and growth).
    """

    def __init__(self, centres, fraction, first, counts, period: float, nn_distance: float, room: int | None = None):
        self.centres = np.asarray(centres, dtype=float).reshape(-1, 2)
        m = len(self.centres)
        self.fraction = np.asarray(fraction, dtype=float).reshape(m)
        self.first = np.asarray(first, dtype=int).reshape(m).copy()
        self.counts = np.asarray(counts, dtype=int).reshape(m).copy()
        self.period = float(period)
        if m == 0 or np.any(self.counts < 1):
            raise InputError("column stacks need at least one column, each of at least one atom")
        if not (self.period > 0 and nn_distance > 0):
            raise InputError(f"period and bond length must be positive Å, got {period!r}, {nn_distance!r}")
        room = int(self.counts.max()) + 4 if room is None else int(room)
        self.low = self.first - room
        self.high = self.first + self.counts + room
        self.start = np.concatenate([[0], np.cumsum(self.high - self.low)])
        n_sites = int(self.start[-1])
        column = np.repeat(np.arange(m), self.high - self.low)
        k = np.concatenate([np.arange(lo, hi) for lo, hi in zip(self.low, self.high)])
        sites = np.c_[self.centres[column], (k + self.fraction[column]) * self.period]
        pairs = cKDTree(sites).query_pairs(BOND_REACH * float(nn_distance), output_type="ndarray")
        # neighbour table padded with a dummy site (index n_sites) that is never occupied
        degree = np.bincount(pairs.ravel(), minlength=n_sites)
        self.neighbours = np.full((n_sites + 1, max(int(degree.max()) if len(pairs) else 0, 1)), n_sites, dtype=int)
        fill = np.zeros(n_sites, dtype=int)
        for i, j in pairs:
            self.neighbours[i, fill[i]] = j
            fill[i] += 1
            self.neighbours[j, fill[j]] = i
            fill[j] += 1
        self.occupied = np.zeros(n_sites + 1, dtype=int)
        for c in range(m):
            s = self.site(c, self.first[c])
            self.occupied[s:s + self.counts[c]] = 1
        self.coordination = self.occupied[self.neighbours].sum(axis=1)
        self.coordination[-1] = 0

    @classmethod
    def from_atoms(cls, atoms: Atoms, nn_distance: float, *, tolerance: float = 0.8, room: int | None = None):
        """The stacks of a structure whose columns are along z with atoms one period apart (e.g. a counted start).

        Columns are grouped within ``tolerance`` Å in projection; the period is the median gap along a column.
        """
        from refine.analysis.cross_sections import projected_columns
        from refine.search.column_restraint import column_period

        pos = atoms.positions
        centres, counts, label = projected_columns(pos, tolerance=tolerance)
        period = column_period(pos[:, 2], label)
        if period is None:
            raise InputError("column stacks need a column of at least two atoms")
        zmin = np.array([pos[label == c, 2].min() for c in range(len(counts))])
        fraction = (zmin / period) % 1.0
        first = np.round(zmin / period - fraction).astype(int)
        return cls(centres, fraction, first, counts, period, nn_distance, room=room)

    def site(self, column: int, k: int) -> int:
        """Index of site ``k`` of ``column``."""
        return int(self.start[column] + k - self.low[column])

    def proxy_energy(self) -> float:
        """−Σᵢ √CNᵢ over the occupied sites (√CN units)."""
        occ = self.occupied[:-1].astype(bool)
        return -float(np.sqrt(self.coordination[:-1][occ]).sum())

    def positions(self) -> np.ndarray:
        """Atom positions (Å, shape (Σ counts, 3)), column after column, bottom to top."""
        out = []
        for c in range(len(self.counts)):
            k = np.arange(self.first[c], self.first[c] + self.counts[c])
            out.append(np.c_[np.tile(self.centres[c], (len(k), 1)), (k + self.fraction[c]) * self.period])
        return np.concatenate(out)

    def move_end_atom(self, src: int, from_top: bool, dst: int, to_top: bool) -> float | None:
        """Take the top (or bottom) atom of column ``src`` to the top (or bottom) of column ``dst``.

        ``src == dst`` with opposite ends is a slide (the column moves one period); otherwise a transfer.
        The reverse move, ``move_end_atom(dst, to_top, src, from_top)``, undoes it exactly. Returns the
        change of :meth:`proxy_energy`, or None (nothing done) where ``dst`` has no room left on that side.
        """
        k_new = self.first[dst] + self.counts[dst] if to_top else self.first[dst] - 1
        if not self.low[dst] <= k_new < self.high[dst]:
            return None
        k_old = self.first[src] + self.counts[src] - 1 if from_top else self.first[src]
        off, on = self.site(src, k_old), self.site(dst, k_new)
        region = np.unique(np.r_[off, on, self.neighbours[off], self.neighbours[on]])
        region = region[region < len(self.occupied) - 1]
        before = -(self.occupied[region] * np.sqrt(self.coordination[region])).sum()
        self.occupied[off], self.occupied[on] = 0, 1
        self.coordination[self.neighbours[off]] -= 1
        self.coordination[self.neighbours[on]] += 1
        self.coordination[-1] = 0
        self.first[src] += 0 if from_top else 1
        self.counts[src] -= 1
        self.first[dst] -= 0 if to_top else 1
        self.counts[dst] += 1
        return float(-(self.occupied[region] * np.sqrt(self.coordination[region])).sum() - before)


def count_evidence(table, centres, weight: float) -> np.ndarray:
    """w·((σ_c − s·L_c(n)) / Δ_c)² for every column at ``centres`` and count n (module docstring).

    Parameters
    ----------
    table : refine.analysis.cross_sections.CountTable
        The counts of a structure with (about) these columns on the image.
    centres : array_like, shape (m, 2)
        Column positions (Å); each takes the table's nearest column.
    weight : float
        w (√CN units per atom²).

    Returns
    -------
    ndarray, shape (m, n_max + 1)
    """
    _, where = cKDTree(table.xy).query(np.asarray(centres, dtype=float).reshape(-1, 2))
    return float(weight) * table.distance_in_atoms()[where] ** 2


def anneal_stacks(stacks: ColumnStacks, rng: np.random.Generator, *, evidence=None, moves: int | None = None,
                  temperatures=TEMPERATURES, transfer: float = TRANSFER_FRACTION) -> dict:
    """Anneal ``stacks`` in place by slides and (with ``evidence``) transfers (module docstring).

    Parameters
    ----------
    stacks : ColumnStacks
    rng : numpy.random.Generator
    evidence : ndarray, shape (m, n_max + 1), optional
        :func:`count_evidence`; None keeps every count (slides only).
    moves : int, optional
        Default :data:`MOVES_PER_COLUMN` per column.
    temperatures : (float, float)
        First and last, √CN units.
    transfer : float
        Fraction of transfer moves (with ``evidence``).

    Returns
    -------
    dict
        ``slides``, ``transfers`` (accepted), ``proxy_energy`` (before, after) and ``evidence`` (before, after).
    """
    m = len(stacks.counts)
    moves = MOVES_PER_COLUMN * m if moves is None else int(moves)
    t0, t1 = (float(t) for t in temperatures)
    if evidence is not None:
        evidence = np.asarray(evidence, dtype=float)
        if evidence.shape[0] != m or np.any(stacks.counts >= evidence.shape[1]):
            raise InputError(f"count evidence of shape {evidence.shape} does not cover {m} columns of up to "
                             f"{int(stacks.counts.max())} atoms")
    e_start = stacks.proxy_energy()
    img_start = float(evidence[np.arange(m), stacks.counts].sum()) if evidence is not None else 0.0
    slides = transfers = 0
    for i in range(moves):
        temperature = t0 * (t1 / t0) ** (i / max(moves - 1, 1))
        if evidence is not None and rng.random() < transfer:
            src, dst = (int(c) for c in rng.integers(m, size=2))
            from_top, to_top = rng.random() < 0.5, rng.random() < 0.5
            if src == dst or stacks.counts[src] <= 1 or stacks.counts[dst] + 1 >= evidence.shape[1]:
                continue
            d_img = (evidence[src, stacks.counts[src] - 1] - evidence[src, stacks.counts[src]]
                     + evidence[dst, stacks.counts[dst] + 1] - evidence[dst, stacks.counts[dst]])
        else:
            src = dst = int(rng.integers(m))
            to_top = rng.random() < 0.5  # bottom atom to the top (the column moves up one period), or the reverse
            from_top, d_img = not to_top, 0.0
        d_e = stacks.move_end_atom(src, from_top, dst, to_top)
        if d_e is None:
            continue
        if d_e + d_img <= 0 or rng.random() < np.exp(-(d_e + d_img) / temperature):
            if src == dst:
                slides += 1
            else:
                transfers += 1
        else:
            stacks.move_end_atom(dst, to_top, src, from_top)
    img_end = float(evidence[np.arange(m), stacks.counts].sum()) if evidence is not None else 0.0
    return {"slides": slides, "transfers": transfers, "proxy_energy": (e_start, stacks.proxy_energy()),
            "evidence": (img_start, img_end)}


def settle_columns(atoms: Atoms, image, model, rng: np.random.Generator, *, weight: float = COUNT_WEIGHT,
                   relax=None, nn_distance: float | None = None, rounds: int = SETTLE_ROUNDS) -> Atoms:
    """A counted structure's depths (and, for finite ``weight``, its unsure counts) annealed, then relaxed.

    Parameters
    ----------
    atoms : ase.Atoms
        A counted structure (columns along z, atoms one period apart), in the image's frame (Å).
    image : refine.io.ExperimentalImage
        For the count evidence (at the model's pixel size).
    model : PolynomialSurrogate
        For the cross-section library.
    rng : numpy.random.Generator
        The moves, and the species' order over the new sites.
    weight : float
        w (:data:`COUNT_WEIGHT`); ``inf`` keeps every count (slides only, one round).
    relax : callable, optional
        Atoms → Atoms, e.g. :func:`refine.search.column_restraint.relax_in_columns` with a calculator.
    nn_distance : float, optional
        Bond length (Å); default from the composition (:func:`refine.search.geometry.nearest_neighbour_distance`).
    rounds : int
        Annealings (and relaxations), each with the count evidence of the structure the last one left
        (:data:`SETTLE_ROUNDS`; ≥ 1).

    Returns
    -------
    ase.Atoms
        Same number and kinds of atoms, ``info`` as the input's plus ``column_settle`` (the moves accepted over
        all rounds, the columns whose count differs from the input's, and the rounds).
    """
    from refine.analysis.cross_sections import column_count_table
    from refine.search.geometry import nearest_neighbour_distance

    w = float(weight)
    if not (w > 0):
        raise InputError(f"count weight must be a positive number or inf, got {weight!r}")
    if int(rounds) < 1 or int(rounds) != rounds:
        raise InputError(f"settle rounds must be a positive integer, got {rounds!r}")
    if nn_distance is None:
        symbols = atoms.get_chemical_symbols()
        nn_distance = nearest_neighbour_distance({s: symbols.count(s) for s in set(symbols)})
    stacks = ColumnStacks.from_atoms(atoms, float(nn_distance))
    centres_before, counts_before = stacks.centres.copy(), stacks.counts.copy()
    done = int(rounds) if np.isfinite(w) else 1  # without evidence a second annealing has nothing new to read
    current, slides, transfers, proxy = atoms, 0, 0, []
    for r in range(done):
        if r:  # the columns of the structure the last round relaxed
            stacks = ColumnStacks.from_atoms(current, float(nn_distance))
        evidence = None
        if np.isfinite(w):
            table = column_count_table(current, image, model, scale="total")
            evidence = count_evidence(table, stacks.centres, w)
        moves = anneal_stacks(stacks, rng, evidence=evidence)
        slides, transfers = slides + moves["slides"], transfers + moves["transfers"]
        proxy.append(moves["proxy_energy"])
        out = Atoms(rng.permutation(current.numbers), positions=stacks.positions())
        current = relax(out) if relax is not None else out
    out = current
    # the relaxation in columns keeps every count, so the last annealed stacks hold the answer's
    changed = _columns_recounted(centres_before, counts_before, stacks, float(nn_distance))
    out.info = {**atoms.info, **out.info,  # the relaxation's own notes (stiffness, largest shift) kept
                "column_settle": {"slides": slides, "transfers": transfers, "columns_recounted": changed,
                                  "weight": w, "rounds": done}}
    log.info("counted start settled on its columns (count weight %g, %d round%s): %d slides, %d transfers, %d of "
             "%d columns changed their count; proxy energy %.1f -> %.1f", w, done, "" if done == 1 else "s",
             slides, transfers, changed, len(counts_before), proxy[0][0], proxy[-1][1])
    return out


def _columns_recounted(centres, counts, after: ColumnStacks, nn_distance: float) -> int:
    """How many of the columns at ``centres`` (Å, (m, 2)) that held ``counts`` hold another number in ``after``
    (matched by their (x, y); a column with no match within half a bond holds none)."""
    if not len(counts):
        return 0
    counts_after = np.zeros(len(counts), dtype=int)
    if len(after.counts):
        d, k = cKDTree(after.centres).query(centres)
        near = d < 0.5 * nn_distance
        counts_after[near] = after.counts[k[near]]
    return int(np.count_nonzero(counts_after != counts))
