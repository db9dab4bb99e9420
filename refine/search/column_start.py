"""A starting structure built from the image's own atom counts: columns found, counted, stacked about a mid-plane.

Microscopists turn a zone-axis HAADF image into a first 3-D model by
counting the atoms of every column from its scattering cross-section and
stacking them symmetrically about a central plane (the starting point of
atom-counting reconstructions, e.g. Bals et al. and De Backer et al.,
refined afterwards by energy minimisation). For a particle of several
hundred atoms a random start cannot crystallise in a 15-minute search; this
start is already a crystal with the image's columns and counts, and the
search only has to settle the surfaces. Steps (:func:`counted_structure`):

1. **Columns** (:func:`refine.io.peaks.find_columns`): the local maxima
   of the smoothed image above the vacuum level, and the columns missing
   among them (:func:`refine.io.peaks.missing_columns`: a hole inside the
   particle the size of a column, which a stack of the peaks alone would
   leave as a channel of vacancies through the particle).
2. **Counts**: a first guess proportional to each peak's height above
   vacuum, then :data:`COUNT_ROUNDS` rounds of the cross-section count of
   :mod:`refine.analysis.cross_sections` on the structure built from the
   previous counts (the library needs neighbours to be right), with the
   library scaled so that the counts add up to the composition's number of
   atoms (``scale="total"``: the image's units then do not matter); the
   last few atoms are added to (taken from) the columns most above (below)
   their library value.
3. **Stacking** (:func:`stack_columns`): a column of n atoms is n atoms one
   column period d apart along the beam, centred on the mid-plane z = 0 and
   snapped to its sublattice. In a zone-axis projection of a close-packed
   crystal the nearest columns (projected distance p) belong to sublattices
   offset by d/2 along the beam, so that sqrt(p² + (d/2)²) is a bond
   ([110] fcc: p = 2.40 Å, d = 2.77 Å; [100]: p = 1.96 Å, d = 3.92 Å for
   Pt; :data:`ZONE_AXES`, the nearest to the measured p wins). The
   sublattices are a two-colouring of the graph of nearest columns
   (breadth first; where the graph is not two-colourable, e.g. [111], the
   first colour wins and the relaxation sorts it out).

Where the number of atoms is not given (``-c Pt``), :func:`column_count_total`
takes it from the same counts with the model's own cross-section scale:
the total that the counted structure and the image's ``counts.csv`` agree
on (the integrated-intensity estimate of :mod:`refine.analysis.atom_number`
differs from it by 3–9 % on the Pt–Ir image, and a structure forced to that
total disagrees with the image's count on a quarter of its columns).

Species are assigned at random from the composition. Lengths in Å; the
structure is in the image's frame (x, y as the image's probe positions).
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from surrogate.common import InputError
from refine.analysis.columns import median_neighbour_distance
from refine.io.peaks import find_columns, missing_columns
from refine.search.geometry import nearest_neighbour_distance
from refine.search.population import validate_composition

__all__ = ["column_sublattices", "stack_columns", "counted_structure", "column_count_total", "image_counts",
           "COUNT_ROUNDS", "CALIBRATION_ERROR", "RELAXED_COUNT_ROUNDS", "ZONE_AXES"]

log = logging.getLogger(__name__)

#: rounds of cross-section counting, each on the structure of the previous round's counts
COUNT_ROUNDS = 2
#: rounds at most when each round's structure is relaxed first (they stop once the counts repeat)
RELAXED_COUNT_ROUNDS = 4
#: relative error of the model's cross-sections behind the uncertainty of :func:`column_count_total`
CALIBRATION_ERROR = 0.02
#: close-packed (fcc) zone axes with two sublattices: nearest projected column distance and column period, in
#: bond lengths (sqrt(p² + (d/2)²) = 1)
ZONE_AXES = {"[110]": (np.sqrt(3.0) / 2.0, 1.0), "[100]": (1.0 / np.sqrt(2.0), np.sqrt(2.0))}


def column_sublattices(xy, nn_distance: float) -> tuple[np.ndarray, float]:
    """Sublattice (0 or 1) of each column and the column period d along the beam (Å).

    The nearest-column distance p is the median over columns; columns
    within (p + nn)/2 are neighbours (on fcc [110] and [100] the nearest
    columns of the same sublattice are a bond apart), and neighbours get different sublattices
    (breadth first). d is the period of the :data:`ZONE_AXES` entry whose
    nearest-column distance is nearest p.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return np.zeros(len(xy), dtype=int), float(nn_distance)
    tree = cKDTree(xy)
    d, _ = tree.query(xy, k=2)
    p = float(np.median(d[:, 1]))
    # the zone axis whose nearest-column distance is nearest the measured one sets the period: the formula
    # d = 2·sqrt(nn² − p²) alone is too steep near [110] (0.07 Å of error in p is 0.2 Å in d)
    ratios = np.array(list(ZONE_AXES.values()))
    period = float(ratios[np.argmin(np.abs(ratios[:, 0] - p / nn_distance)), 1] * nn_distance)
    # opposite sublattices are p apart, the same sublattice's nearest columns a bond (both axes): cut in between
    neighbours = tree.query_ball_point(xy, 0.5 * (p + nn_distance))
    colour = np.full(len(xy), -1, dtype=int)
    for start in range(len(xy)):
        if colour[start] >= 0:
            continue
        colour[start] = 0
        queue = deque([start])
        while queue:
            a = queue.popleft()
            for b in neighbours[a]:
                if colour[b] < 0:
                    colour[b] = 1 - colour[a]
                    queue.append(b)
    return colour, float(period)


def stack_columns(xy, counts, period: float, sublattice) -> np.ndarray:
    """Positions (Å, shape (Σ counts, 3)) of columns of ``counts`` atoms ``period`` apart, centred on z = 0.

    Column c's atoms sit at z = (sublattice_c/2 + m)·period for n_c
    consecutive integers m, the ones whose centre is nearest z = 0.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    counts = np.asarray(counts, dtype=int)
    out = []
    for (x, y), n, s in zip(xy, counts, sublattice):
        if n <= 0:
            continue
        offset = 0.5 * s
        m0 = int(np.round(-(n - 1) / 2.0 - offset))
        z = (offset + m0 + np.arange(n)) * period
        out.append(np.c_[np.full(n, x), np.full(n, y), z])
    return np.vstack(out) if out else np.zeros((0, 3))


def _adjust_total(counts: np.ndarray, excess: np.ndarray, total: int) -> np.ndarray:
    """Add (take) atoms to (from) the columns with the largest (smallest) ``excess`` until Σ counts = total."""
    counts = counts.copy()
    order = np.argsort(-excess, kind="stable")
    k = 0
    while counts.sum() < total:
        counts[order[k % len(order)]] += 1
        k += 1
    k = 0
    while counts.sum() > total:
        c = order[::-1][k % len(order)]
        if counts[c] > 0:
            counts[c] -= 1
        k += 1
    return counts


def _columns(image, comp: dict, total: int, *, check_lattice: bool = False):
    """The image's columns (at most ``total``), their sublattices, the period and a first count ∝ peak height.

    The columns are the image's peaks and the columns missing among them
    (:func:`refine.io.peaks.missing_columns`); a missing column's first
    count is its neighbours' smallest (the count rounds then read it).
    Last, with ``check_lattice``, whether the peaks are one crystal
    (:func:`_check_one_crystal`'s fit; otherwise None).
    """
    nn = nearest_neighbour_distance(comp)
    xy, height = find_columns(image, nn)
    if len(xy) > total:
        xy, height = xy[:total], height[:total]  # the faintest peaks would be columns of less than one atom
    lattice = _check_one_crystal(xy, nn) if check_lattice else None
    missing = missing_columns(xy, nn)
    if len(missing):
        _, near = cKDTree(xy).query(missing, k=min(4, len(xy)))
        height = np.r_[height, height[near].min(axis=1)]  # a hole has ≥ 3 columns around it: near is (k, ≥3)
        xy = np.vstack([xy, missing])
        log.info("start from the image's counts: %d columns added where the peaks leave a hole the size of a "
                 "column inside the particle (a column the image does not resolve as a peak of its own)",
                 len(missing))
    sublattice, period = column_sublattices(xy, nn)
    # every peak found holds at least one atom to begin with: a column left empty here would never be counted
    counts = _adjust_total(np.maximum(np.floor(total * height / height.sum()), 1).astype(int), height, total)
    return xy, sublattice, period, counts, lattice


def image_counts(table, xy, total: int | None = None, *, present=None) -> np.ndarray:
    """The image's count (int, shape (m,)) of the columns at ``xy`` (Å, shape (m, 2)), from a count table.

    ``table``: a :class:`~refine.analysis.cross_sections.CountTable` of a
    structure whose columns are (near) ``xy``; each position takes the count
    of the table's nearest column. With ``total``, the counts are made to
    add up to it: the last atoms go to (come from) the columns most above
    (below) their library value. Positions not ``present`` (boolean, shape
    (m,)) count 0 and never take an atom.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    present = np.ones(len(xy), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    _, where = cKDTree(table.xy).query(xy)
    n_img = np.where(present, table.atoms_image[where], 0).astype(int)
    if total is None:
        return n_img
    distance = table.distance_in_atoms()[where]
    excess = np.where(present, distance[np.arange(len(xy)), np.clip(n_img, 0, distance.shape[1] - 1)], -np.inf)
    return _adjust_total(n_img, excess, int(total))


def _count_rounds(image, model, symbol: str, xy, sublattice, period: float, counts, rounds: int, scale,
                  relax=None):
    """Up to ``rounds`` cross-section counts, each on the structure stacked from the previous counts.

    ``scale="total"`` keeps Σ counts (the last atoms go to the columns most
    above their library value); ``"model"`` (or a number) lets the total
    follow the image. With ``relax`` (Atoms → Atoms) each stacked structure
    is relaxed before it is counted, so that the counts are those of the
    structure that will be used; the rounds stop early once the counts no
    longer change. Returns the counts and the last round's
    :class:`~refine.analysis.cross_sections.CountTable` (None when ``rounds`` is 0).
    """
    from refine.analysis.cross_sections import column_count_table

    table = None
    for _ in range(max(0, int(rounds))):
        total = int(counts.sum())
        if total <= 0:
            raise InputError("no atoms counted in the image's columns (is the image in units of the incident beam, "
                             "with the particle in view?)")
        guess = Atoms(f"{symbol}{total}", positions=stack_columns(xy, counts, period, sublattice))
        if relax is not None:
            guess = relax(guess)
        table = column_count_table(guess, image, model, scale=scale)
        # a column counted empty is not in the structure and stays empty (its nearest match is a neighbour)
        new = image_counts(table, xy, total if scale == "total" else None, present=counts > 0)
        if relax is not None and np.array_equal(new, counts):
            break
        counts = new
    return counts, table


def counted_structure(image, model, composition, rng: np.random.Generator, *, rounds: int = COUNT_ROUNDS,
                      relax=None) -> Atoms:
    """A structure of exactly ``composition`` with the image's columns and counts (see the module docstring).

    Parameters
    ----------
    image : refine.io.ExperimentalImage
        At the model's pixel size (a zone-axis image: the columns must be resolved).
    model : PolynomialSurrogate
        For the cross-section library.
    composition : str or mapping
    rng : numpy.random.Generator
        Species assignment only.
    rounds : int
        Counting rounds (at most, with ``relax``).
    relax : callable, optional
        Atoms → Atoms, e.g. :func:`refine.search.column_restraint.relax_in_columns` with a
        calculator: every round counts the relaxed structure, and the result is relaxed.

    Returns
    -------
    ase.Atoms
        In the image's frame (Å), no cell; ``info["origin"] = "counts"`` and ``info["columns"]``.
    """
    comp = validate_composition(composition)
    total = sum(comp.values())
    symbol = max(comp, key=comp.get)
    xy, sublattice, period, counts, lattice = _columns(image, comp, total, check_lattice=True)
    counts, _ = _count_rounds(image, model, symbol, xy, sublattice, period, counts, rounds, "total", relax)
    atoms = Atoms(f"{symbol}{total}", positions=stack_columns(xy, counts, period, sublattice))
    species = np.repeat([s for s in comp], [comp[s] for s in comp])
    atoms.numbers = Atoms("".join(rng.permutation(species))).numbers if len(comp) > 1 else atoms.numbers
    log.info("start from the image's counts: %d columns (nearest %.2f Å apart), period %.2f Å along the beam, "
             "%d to %d atoms per column", len(xy), median_neighbour_distance(xy) or 0.0, period, int(counts[counts > 0].min()), int(counts.max()))
    atoms.info = {"origin": "counts", "columns": int(np.count_nonzero(counts))}
    if lattice is not None:
        atoms.info["on_one_lattice"] = lattice.fraction
    if relax is not None:
        info = dict(atoms.info)
        atoms = relax(atoms)
        atoms.info.update(info)
    return atoms


def _check_one_crystal(xy, nn_distance: float):
    """The columns' :class:`~refine.io.lattice.LatticeFit` (None: too few to tell); warns where they are not one crystal."""
    from refine.io.lattice import ONE_LATTICE, check_columns, lattice_grains

    fit = check_columns(xy, nn_distance)
    if fit is not None and fit.one_crystal:
        log.info("start from the image's counts: %.0f %% of the %d columns lie on one lattice (one crystal)",
                 100 * fit.fraction, len(xy))
    elif fit is not None:
        grains = [len(g) / len(xy) for g in lattice_grains(xy, nn_distance)]
        held = (f"; {len(grains)} lattices hold {100 * sum(grains):.0f} % of them ("
                + ", ".join(f"{100 * f:.0f} %" for f in grains) + ")") if len(grains) > 1 else ""
        log.warning("start from the image's counts: only %.0f %% of the %d columns lie on one lattice (%.0f %% "
                    "expected of one crystal)%s: a twinned particle, or grains in several orientations; the counted "
                    "start is right for twins that share the zone axis and wrong for a grain off it (--start "
                    "matched fits twinned shapes)",
                    100 * fit.fraction, len(xy), 100 * ONE_LATTICE, held)
    return fit


def column_count_total(image, model, element: str, guess: int, *, rounds: int = COUNT_ROUNDS,
                       calibration: float = CALIBRATION_ERROR, relax=None) -> tuple[int, float]:
    """The number of atoms as the sum of the image's column counts, and its one-σ uncertainty (atoms).

    The columns are counted as :func:`counted_structure` does, with the
    model's own cross-section scale (the image in units of the incident
    beam) instead of a given total; ``guess`` (e.g. the integrated-intensity
    estimate) only seeds the first round. This is the total that a counted
    structure and the image's own ``counts.csv`` agree on. The uncertainty is
    half the change of the sum when the model's cross-sections are scaled by
    1 ± ``calibration`` (its error on tall columns against abTEM is ~1 % in
    the mean, 4 % rms: docs/benchmarks.md). ``relax`` as in :func:`counted_structure`.
    """
    comp = {element: int(guess)}
    xy, sublattice, period, counts, _ = _columns(image, comp, int(guess))
    counts, table = _count_rounds(image, model, element, xy, sublattice, period, counts, max(1, int(rounds)), "model",
                                  relax)
    low, high = (int(table.counts_at(1.0 + d).sum()) for d in (calibration, -calibration))
    return int(counts.sum()), 0.5 * abs(high - low)
