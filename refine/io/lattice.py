"""Do an image's columns form one crystal lattice? The check behind the counted start.

A counted reconstruction (:mod:`refine.search.column_start`) stacks every
column of the image on the two sublattices of one zone axis: it assumes a
single crystal viewed down a zone axis. A twinned (decahedral, icosahedral)
particle, or one whose grains sit in different orientations, gives columns
that lie on several lattices; stacked as one crystal they make a structure
of the wrong shape and energy, and the image cannot say so. Microscopists
see it in the image's Fourier transform (different spot patterns in
different parts of the particle); here it is measured on the column
positions (:func:`fit_lattice`):

1. the two- and three-family neighbour vectors of the bright columns
   (:func:`refine.io.distortion.lattice_families`);
2. for each pair of families as a basis (a₁, a₂) and a few trial origins,
   every column gets the nearest integer (m₁, m₂), and origin and basis are
   refitted by least squares on the columns near their site, first within
   :data:`CAPTURE` and then within :data:`TOLERANCE` nearest-neighbour
   distances (a general linear map, so a linear scan distortion does not
   count against the lattice; a fit whose cell area strays more than
   :data:`MAX_AREA_CHANGE` from the families' is dropped, as a cell shrunk
   far enough puts any point near a site, and so is a lattice vector
   shorter than :data:`SHORTEST` bonds);
3. the fraction of all columns within :data:`TOLERANCE` of a site of the
   best fit is the answer; :data:`ONE_LATTICE` separates one crystal from
   several.

Where they are not one crystal, :func:`lattice_grains` fits the columns
left over again, grain after grain, and says how many lattices hold the
columns (two for a twin whose grains share the beam direction, more for a
multiply twinned particle; a grain off its zone axis shows no columns and
is on none).

Measured on the two real images of ``../shared/data/experimental``: the
StatSTEM Pt–Ir particle (one ⟨110⟩ crystal) 95 % of its columns within
0.15 bond lengths of one lattice, the TEMUL Au particle (its Fourier
transform changes from region to region) 63 % (69 % once resampled to the
Au model's 0.1 Å pixels, and 26 % more on a second lattice: two grains;
docs/benchmarks.md).
Lengths in Å.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["LatticeFit", "fit_lattice", "check_columns", "lattice_grains", "crystal_columns", "ONE_LATTICE",
           "TOLERANCE", "CAPTURE", "MIN_GRAIN", "MIN_GRAIN_FRACTION"]

#: a column within this many nearest-neighbour distances of a lattice site lies on the lattice
TOLERANCE = 0.15
#: the first rounds of the fit take columns this near (nearest-neighbour distances) to a site
CAPTURE = 0.3
#: least fraction of the columns on one lattice for the particle to count as one crystal
ONE_LATTICE = 0.8
#: shortest lattice vector, in nearest-neighbour distances (fcc [100] columns are 0.71 apart, the nearest of the
#: zone axes that resolve columns)
SHORTEST = 0.6
#: largest relative change of the cell's area from the neighbour families' during the fit
MAX_AREA_CHANGE = 0.25
#: columns whose peak is at least this fraction of the highest give the neighbour families
BRIGHT = 0.3
#: fewest columns of a grain (:func:`lattice_grains`): fewer make no lattice one can tell from chance
MIN_GRAIN = 8
#: least fraction of the columns left over that a further grain's lattice must hold (scattered points put ~10 %
#: within :data:`TOLERANCE` of the best lattice by chance)
MIN_GRAIN_FRACTION = 0.3


@dataclass(frozen=True)
class LatticeFit:
    """The lattice that holds the most columns.

    Attributes
    ----------
    origin : ndarray, shape (2,)
        A lattice site, Å.
    basis : ndarray, shape (2, 2)
        Rows a₁, a₂, Å.
    on_lattice : ndarray of bool, shape (m,)
        Which columns lie within ``tolerance`` of a site.
    tolerance : float
        Å.
    rms : float
        RMS distance of the on-lattice columns from their sites, Å.
    """

    origin: np.ndarray
    basis: np.ndarray
    on_lattice: np.ndarray
    tolerance: float
    rms: float

    @property
    def fraction(self) -> float:
        """Fraction of the columns on the lattice (0–1)."""
        return float(self.on_lattice.mean()) if self.on_lattice.size else 0.0

    @property
    def one_crystal(self) -> bool:
        """Whether at least :data:`ONE_LATTICE` of the columns are on it."""
        return self.fraction >= ONE_LATTICE


def _residuals(xy, origin, basis):
    m = np.rint(np.linalg.solve(basis.T, (xy - origin).T).T)
    return np.linalg.norm(xy - (origin + m @ basis), axis=1), m


def _shortest(basis) -> float:
    """Å, the shortest of a₁, a₂, a₁ + a₂, a₁ − a₂."""
    a1, a2 = basis
    return float(min(np.linalg.norm(v) for v in (a1, a2, a1 + a2, a1 - a2)))


def _refine(xy, origin, basis, tolerances, shortest: float):
    area = abs(np.linalg.det(basis))
    for t in tolerances:
        res, m = _residuals(xy, origin, basis)
        near = res < t
        if near.sum() < 4:
            return None
        coef, *_ = np.linalg.lstsq(np.c_[np.ones(near.sum()), m[near]], xy[near], rcond=None)
        origin, basis = coef[0], coef[1:]
        # a cell much smaller (larger) than the neighbours' puts any point near a site (few near one): a
        # lattice whose cell changes by more than a scan distortion's worth is not the columns' lattice
        if not (1 - MAX_AREA_CHANGE) * area <= abs(np.linalg.det(basis)) <= area / (1 - MAX_AREA_CHANGE) or \
                _shortest(basis) < shortest:
            return None
    return origin, basis


def fit_lattice(xy, nn_distance: float, *, heights=None, tolerance: float = TOLERANCE,
                trials: int = 10) -> LatticeFit:
    """The 2-D lattice that holds the most of the columns ``xy`` (module docstring).

    Parameters
    ----------
    xy : array_like, shape (m, 2)
        Column positions, Å (:func:`refine.io.peaks.find_columns`).
    nn_distance : float
        Å, the element's nearest-neighbour distance (the scale of the tolerances).
    heights : array_like, shape (m,), optional
        Peak heights; the families are measured on the columns above :data:`BRIGHT` of the highest.
    tolerance : float
        In nearest-neighbour distances.
    trials : int
        Trial origins (columns spread through ``xy``).

    Raises
    ------
    InputError
        Fewer than 8 columns (no lattice to measure).
    """
    from refine.io.distortion import lattice_families

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    bright = xy if heights is None else xy[np.asarray(heights) >= BRIGHT * np.max(heights)]
    if len(bright) < 8:
        bright = xy
    families = lattice_families(bright, k=3)
    tol = float(tolerance) * float(nn_distance)
    capture = max(CAPTURE * float(nn_distance), tol)
    best = None
    for i, j in itertools.combinations(range(len(families)), 2):
        basis0 = families[[i, j]]
        if abs(np.linalg.det(basis0)) < 0.2 * np.prod(np.linalg.norm(basis0, axis=1)) or \
                _shortest(basis0) < SHORTEST * nn_distance:
            continue  # nearly parallel families make no basis; columns closer than any zone axis's are no lattice
        for start in np.linspace(0, len(xy) - 1, min(int(trials), len(xy))).astype(int):
            fit = _refine(xy, xy[start].copy(), basis0.copy(), (capture, capture, tol, tol, tol),
                          SHORTEST * float(nn_distance))
            if fit is None:
                continue
            res, _ = _residuals(xy, *fit)
            on = res < tol
            if best is None or on.sum() > best[2].sum():
                best = (fit[0], fit[1], on, res)
    if best is None:
        return LatticeFit(np.zeros(2), np.eye(2), np.zeros(len(xy), dtype=bool), tol, float("nan"))
    origin, basis, on, res = best
    rms = float(np.sqrt(np.mean(res[on] ** 2))) if on.any() else float("nan")
    return LatticeFit(np.asarray(origin), np.asarray(basis), on, tol, rms)


def check_columns(xy, nn_distance: float, heights=None) -> LatticeFit | None:
    """:func:`fit_lattice`, or None where there are too few columns to tell (fewer than 8)."""
    if len(np.asarray(xy).reshape(-1, 2)) < 8:
        return None
    try:
        return fit_lattice(xy, nn_distance, heights=heights)
    except InputError:  # no three neighbour directions: not a lattice we can measure
        return None


def lattice_grains(xy, nn_distance: float, heights=None, *, max_grains: int = 5) -> list[np.ndarray]:
    """The columns of each grain: one lattice after another, fitted to the columns not yet on one.

    :func:`fit_lattice` on all columns, then on the columns left off it, and
    so on; a lattice is a grain while it holds at least :data:`MIN_GRAIN`
    columns and :data:`MIN_GRAIN_FRACTION` of the columns it was fitted to
    (the first one too).

    Parameters
    ----------
    xy : array_like, shape (m, 2)
        Column positions, Å.
    nn_distance : float
        Å.
    heights : array_like, shape (m,), optional
        Peak heights (as :func:`fit_lattice`).
    max_grains : int
        Grains at most.

    Returns
    -------
    list of ndarray of int
        Column indices of each grain, largest first; empty where not even the
        first lattice passes the test (fewer than :data:`MIN_GRAIN` columns, or
        scattered points). The columns on none are the rest.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    h = None if heights is None else np.asarray(heights, dtype=float).reshape(-1)
    left = np.arange(len(xy))
    grains = []
    while len(left) >= MIN_GRAIN and len(grains) < int(max_grains):
        try:
            fit = fit_lattice(xy[left], nn_distance, heights=None if h is None else h[left])
        except InputError:
            break
        if fit.on_lattice.sum() < max(MIN_GRAIN, MIN_GRAIN_FRACTION * len(left)):
            break
        grains.append(left[fit.on_lattice])
        left = left[~fit.on_lattice]
    return sorted(grains, key=len, reverse=True)


def crystal_columns(grains, n_columns: int) -> list[np.ndarray]:
    """Where to measure the crystal's lattice: column index arrays, the first to try first.

    All ``n_columns`` columns where they are one crystal (the largest of
    ``grains``, from :func:`lattice_grains`, holds at least
    :data:`ONE_LATTICE` of them) or no grain could be told; otherwise each
    grain, largest first: a twinned particle's grains mix their neighbour
    directions, so a lattice measured on all of them at once is no grain's.
    """
    if grains and len(grains[0]) < ONE_LATTICE * int(n_columns):
        return list(grains)
    return [np.arange(int(n_columns))]
