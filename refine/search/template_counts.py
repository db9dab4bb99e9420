"""A matched shape given the image's atom counts: columns lengthened or shortened at their ends, relaxed in place.

The matched start (:mod:`refine.search.shape_match`) is an ideal shape; a
real particle is not, and its columns count differently from the image
(`counts.csv`). Atom-counting reconstructions of twinned particles start
from such a template and give each of its columns the image's count
(e.g. the decahedra of Van Aert, De Backer et al.): here
:func:`counted_template` does it in rounds:

1. the template's columns (along its own column axis, step 2) are counted from the
   image's cross-sections (:func:`refine.analysis.column_count_table`,
   scale ``"total"``: the counts add up to the template's atoms, so that
   the image's units do not matter; the last few atoms go to the columns
   most above their library value, :func:`refine.search.column_start.image_counts`);
2. a column (along the structure's own column axis,
   :func:`refine.analysis.cross_sections.column_axis`: a matched shape may
   lean a degree or two off its zone axis) short of its count grows by one
   atom at a time, one column period beyond whichever end has more
   neighbours there (a surface site
   that continues the crystal); a column over its count loses its end atoms
   with the fewest neighbours; a column counted empty is removed;
3. the structure is relaxed with every atom tied to its column
   (:func:`refine.search.column_restraint.relax_in_columns`), and counted
   again, until the counts repeat (at most :data:`TEMPLATE_ROUNDS`).

Columns that the image shows beyond the template's outline are not added:
the template decides which columns exist. Lengths in Å.
"""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from refine.search.column_restraint import column_period

__all__ = ["counted_template", "TEMPLATE_ROUNDS"]

log = logging.getLogger(__name__)

#: counting rounds at most (each on the previous round's relaxed structure)
TEMPLATE_ROUNDS = 4
#: Å; atoms this near are neighbours when a column's end is chosen
NEIGHBOUR_RADIUS = 3.3


def _recount(positions: np.ndarray, label: np.ndarray, target: dict, default_period: float,
             axis=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Positions with column c holding ``target[c]`` atoms (ends grown or trimmed, module docstring step 2);
    the columns run along ``axis`` (unit vector)."""
    axis = np.asarray(axis, dtype=float)
    pos = [p for p in positions]
    col = list(label)
    for c, want in target.items():
        for _ in range(10_000):  # a column changes by one atom per pass; the guard only stops a runaway
            members = [i for i, k in enumerate(col) if k == c]
            have = len(members)
            if have == want:
                break
            arr = np.array(pos)
            tree = cKDTree(arr)
            if have < want:
                z = arr[members] @ axis
                d = column_period(z, np.zeros(len(z)))  # this column's own period, where it has two atoms
                d = default_period if d is None else d
                ends = [members[int(np.argmax(z))], members[int(np.argmin(z))]]
                sites = [arr[ends[0]] + d * axis, arr[ends[1]] - d * axis]
                # the end with more neighbours at its new site continues the crystal
                n_nb = [len(tree.query_ball_point(s, NEIGHBOUR_RADIUS)) for s in sites]
                pos.append(np.asarray(sites[int(np.argmax(n_nb))]))
                col.append(c)
            else:
                z = arr[members] @ axis
                ends = [members[int(np.argmax(z))], members[int(np.argmin(z))]]
                n_nb = [len(tree.query_ball_point(arr[e], NEIGHBOUR_RADIUS)) for e in ends]
                drop = ends[int(np.argmin(n_nb))]
                del pos[drop]
                del col[drop]
    return np.array(pos).reshape(-1, 3)


def counted_template(template: Atoms, image, model, *, relax=None, rounds: int = TEMPLATE_ROUNDS,
                     tolerance: float | None = None) -> Atoms:
    """``template`` with each projected column holding the image's count (module docstring).

    Parameters
    ----------
    template : ase.Atoms
        In the image's frame (Å), a zone axis along z (e.g. :func:`refine.search.shape_match.matched_structure`).
        Its composition is kept (species stay in the template's order; the moved atoms are anonymous).
    image : refine.io.ExperimentalImage
    model : PolynomialSurrogate
        For the cross-section library.
    relax : callable, optional
        Atoms → Atoms after each round (e.g. :func:`refine.search.column_restraint.relax_in_columns` with a
        calculator).
    rounds : int
        Counting rounds at most; they stop once the counts repeat.
    tolerance : float, optional
        Å; projected atoms this near are one column (default: the counting's own).

    Returns
    -------
    ase.Atoms
        As many atoms as ``template``, no cell; ``info`` keeps the template's, with ``"origin": "matched+counts"``
        and ``"columns"``.
    """
    from refine.analysis.cross_sections import (DEFAULT_COUNT_TOLERANCE, column_axis, column_count_table,
                                                projected_columns)
    from refine.search.column_start import image_counts

    tol = DEFAULT_COUNT_TOLERANCE if tolerance is None else float(tolerance)
    total = len(template)
    atoms = Atoms(template.numbers, positions=template.positions.copy())
    for _ in range(max(1, int(rounds))):
        axis = column_axis(atoms.positions)  # the counting's own: a template off its zone axis leans
        centres, heights, label = projected_columns(atoms.positions, tolerance=tol, axis=axis)
        table = column_count_table(atoms, image, model, scale="total", tolerance=tol)
        counts = image_counts(table, centres, total)
        if np.array_equal(heights, counts):
            break  # the structure already holds the image's counts
        # a column of one atom grows by the typical column period
        default_period = column_period(atoms.positions @ axis, label)
        default_period = 2.5 if default_period is None else default_period
        positions = _recount(atoms.positions, label, dict(enumerate(counts.tolist())), default_period, axis)
        atoms = Atoms(template.numbers, positions=positions)  # as many atoms: the composition is kept
        if relax is not None:
            atoms = relax(atoms)
    atoms.info = dict(template.info)
    atoms.info.update(origin="matched+counts", columns=int(len(
        projected_columns(atoms.positions, tol, axis=column_axis(atoms.positions))[0])))
    log.info("matched start given the image's counts: %d columns, %d atoms", atoms.info["columns"], len(atoms))
    return atoms
