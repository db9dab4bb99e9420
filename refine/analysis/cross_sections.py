"""Atom counts of the projected columns from the image's scattering cross-sections (StatSTEM-style).

Microscopists count atoms in a column by its *scattering cross-section*: the
image intensity integrated over the column's cell (Van Aert et al. 2009,
De Backer et al. 2013, StatSTEM). Unlike a peak intensity it hardly depends on
probe size, blur or small defocus, because it conserves the scattered
electrons. Here:

1. **Columns** are the projected columns of a structure (single-linkage
   clusters of its projected atoms within ``tolerance`` Å, as in
   :mod:`refine.analysis.columns`). The default tolerance (1.0 Å) is larger
   than :data:`~refine.analysis.columns.DEFAULT_COLUMN_TOLERANCE` because
   a column that is a few degrees off the beam projects as a streak of atoms
   0.5 Å apart that the image shows as one spot; it stays below the closest
   column spacing of an fcc zone axis ([111]: 1.6 Å). A crystal that leans
   further (a 40 Å column 2° off the beam is a 1.4 Å streak, which single
   linkage joins to its neighbours) is grouped along its own column axis
   (:func:`column_axis`: the mean neighbour direction within
   :data:`MAX_COLUMN_TILT` of the beam; z itself below 0.5°).
2. **Cells**: every valid pixel belongs to the column of its nearest projected
   atom (a Voronoi tessellation of the atoms, merged by column: for a column
   along the beam this is the Voronoi cell of its position; a tilted column's
   cell follows its streak), if that atom is within ``radius`` Å. The
   default radius is half the typical column spacing (median distance from
   a column centre to the nearest other one), so that vacuum does not
   inflate the cells of edge columns.
3. **Cross-section** σ = Σ_cell (I − b)·Δ² in Å² × fraction of the incident
   beam, with the image in units of the incident beam and b its vacuum level
   (:func:`vacuum_level`: the mean of the valid pixels of the image's
   outer 0.5 Å; vacuum reads ≈ 0 in a calibrated image but a detector offset
   or a model's intercept would otherwise add b·area to every cell).
4. **Library** σ_c(n), n = 0..N_max, for every column c, from the model: the
   surrogate image (minus its own vacuum level) of the structure with column
   c's atoms each weighted n/n_c (n_c its atoms), integrated over c's cell.
   The convolution image is linear in the atoms' weights, so this is column
   c's own projected footprint carrying n atoms: exactly the image of n atoms
   stacked on one (x, y) for a column along the beam, and for a tilted
   column's streak (or a cluster of overlapping columns) n atoms spread
   over the streak the cell was cut around. Rendering the rest of the
   structure matters: the surrogate is strongly nonlinear in the local
   projected density (its per-atom cross-section grows from 0.021 Å² for one
   Pt atom to 0.033 Å² for a straight column of ten), and the neighbours'
   tails spill into c's cell. ``context=False`` leaves the other columns out.

   An earlier library placed n atoms along the column's axis at the
   structure's spacing. For a column 10° off the beam each atom moves the
   streak 0.48 Å (2.77 Å · sin 10°), so from n ≈ 9 the added atoms fell
   outside the cell (the cell is cut around the structure's own atoms):
   σ_c(n) went flat (median 0.116 Å² from n = 9 on the tilted Pt300
   decahedron) and taller columns could not be counted. For a cluster of
   overlapping columns (tilted particles project whole atomic planes as one
   streak) the principal axis was not even the streak's. The surrogate does
   not clip: its degree-2 polynomial is evaluated beyond the training range
   of its convolution pixels (``input_range_``; the shipped model saw at most
   7 stacked Pt atoms) and there it bends over (σ(n) of a 3-atom streak
   scaled up fell to half its top by n = 25). So from the first n whose
   convolution image exceeds that range anywhere in the cell, σ_c(n)
   continues with its last in-range step (linear: no channelling saturation
   is assumed beyond the model's data, so counts of columns far beyond it
   are lower bounds). ``info["beyond_training_range"]`` says how many
   columns leave the range at their own height (a warning is logged).
5. **Count** = the n whose scale·σ_c(n) is nearest to the measured σ, among
   the heights up to the largest σ_c(n) (a model extrapolated far beyond
   its training range could make σ(n) of a tall column fall again).
   ``scale`` is 1 (the model's calibration, trusted: the image is in beam
   units) or ``"total"``: one factor for all columns, chosen so that the
   counts add up to the structure's number of atoms (the composition is
   known); this absorbs a global error of the model's intensity (e.g. a
   detector calibration a few per cent off), as StatSTEM's fitted mixture
   does, without fitting column by column.

How far to trust a count: the step σ_c(n+1) − σ_c(n) is ≈ σ_c(n)/n, so a
column of n atoms needs the model's cross-section right to better than
1/(2n); ``tests/benchmarks/bench_counts.py`` measures the counts on
independent multislice images by column height.

Lengths in Å, cross-sections in Å² × fraction of the incident beam.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from refine.analysis.columns import _clusters, median_neighbour_distance, neighbour_directions
from surrogate.common import InputError

__all__ = ["DEFAULT_COUNT_TOLERANCE", "MAX_COLUMN_TILT", "ColumnCells", "CountTable", "projected_columns",
           "column_axis", "column_cells",
           "vacuum_level", "cross_sections", "column_library", "column_count_table"]

#: Å; single-linkage tolerance of the counted columns (see the module docstring)
DEFAULT_COUNT_TOLERANCE = 1.0
log = logging.getLogger(__name__)

#: degrees; a structure's columns may lean this far from the beam and still be counted along their own axis
MAX_COLUMN_TILT = 5.0
#: degrees; columns leaning less than this are taken along the beam itself
_UPRIGHT = 0.5
#: the library runs to this many atoms above the structure's highest column
EXTRA_HEIGHT = 5
#: Å; width of the image border whose median is the vacuum level
VACUUM_BORDER = 0.5
#: Å; atoms this far outside a cell's bounding box still reach it (7σ of the 0.38 Å PSF plus the model's border)
_REACH = 3.2


@dataclass(frozen=True)
class ColumnCells:
    """The projected columns of a structure and their cells on an image grid.

    Attributes
    ----------
    xy : ndarray, shape (n_columns, 2)
        Column centres (Å): mean projected position of their atoms.
    atoms : ndarray of int, shape (n_columns,)
        Atoms of the structure in each column.
    atom_column : ndarray of int, shape (n_atoms,)
        The column of each atom.
    labels : ndarray of int, shape = image shape
        The column whose cell holds each pixel; −1 outside every cell or masked.
    radius : float
        Å; a cell holds no pixel farther than this from the column's atoms.
    tolerance : float
        Å; single-linkage distance within a column.
    axis : ndarray, shape (3,)
        The direction the columns run along (:func:`column_axis`; z unless the structure leans).
    """

    xy: np.ndarray
    atoms: np.ndarray
    atom_column: np.ndarray
    labels: np.ndarray
    radius: float
    tolerance: float
    axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))

    def __len__(self) -> int:
        return len(self.xy)


def column_axis(positions, max_tilt: float = MAX_COLUMN_TILT) -> np.ndarray:
    """The direction of a structure's atom columns nearest the beam (unit vector; z when none leans 0.5–5°).

    A crystal's columns run along an interatomic vector (fcc [110]: the
    bond, [100]: the second neighbour's). A particle a degree or two off its
    zone axis has columns leaning by as much; grouped by their projection
    along z, a leaning column of 40 Å smears into its neighbours and the
    columns merge. The axis is the mean direction of the first- and
    second-neighbour vectors within ``max_tilt`` degrees of z; below
    0.5° it is z itself (a column stacked along the beam stays exactly so).
    """
    z = np.array([0.0, 0.0, 1.0])
    vec = neighbour_directions(positions)
    near = vec[vec[:, 2] >= np.cos(np.radians(float(max_tilt)))]
    if not len(near):
        return z
    axis = near.mean(axis=0)
    axis /= np.linalg.norm(axis)
    return z if np.degrees(np.arccos(min(1.0, axis[2]))) < _UPRIGHT else axis


def projected_columns(positions, tolerance: float = DEFAULT_COUNT_TOLERANCE, axis=None):
    """The projected columns (beam along z) of atoms at ``positions`` (Å, shape (n, 3)).

    ``axis`` (a unit vector, e.g. :func:`column_axis`): the atoms are grouped
    into columns along it instead of along z; the centres are still the
    mean (x, y) of each column's atoms in the image's frame.

    Returns
    -------
    (xy, atoms, atom_column)
        Centres (Å, shape (n_columns, 2)), atoms per column (n_columns,) and the
        column of each atom (n,), columns numbered as in :func:`refine.analysis.column_counts`.
    """
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise InputError(f"column tolerance must be a positive number of Å, got {tolerance!r}")
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    xy = pos[:, :2]
    grouped = xy
    if axis is not None and not np.allclose(axis, [0.0, 0.0, 1.0]):
        from scipy.spatial.transform import Rotation

        to_beam, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [np.asarray(axis, dtype=float)])
        grouped = to_beam.apply(pos)[:, :2]
    labels = _clusters(grouped, float(tolerance))
    n = int(labels.max()) + 1 if len(labels) else 0
    atoms = np.bincount(labels, minlength=n)
    centres = np.array([xy[labels == c].mean(axis=0) for c in range(n)]).reshape(-1, 2)
    return centres, atoms.astype(int), labels.astype(int)


def _default_radius(xy: np.ndarray, symbols) -> float:
    """Half the median distance (Å) from a column centre to its nearest neighbour column."""
    spacing = median_neighbour_distance(xy)
    if spacing is not None:
        return 0.5 * spacing
    from refine.search import nearest_neighbour_distance

    return 0.5 * nearest_neighbour_distance(symbols)  # a lone column: the crystal's own spacing


def column_cells(structure, image, *, tolerance: float = DEFAULT_COUNT_TOLERANCE, radius: float | None = None
                 ) -> ColumnCells:
    """The columns of ``structure`` and their cells over the valid pixels of ``image``.

    Parameters
    ----------
    structure : ase.Atoms
        In the image's frame (Å), beam along z.
    image : refine.io.ExperimentalImage
    tolerance : float
        Å, see :func:`projected_columns`.
    radius : float, optional
        Å; default half the typical column spacing.
    """
    if len(structure) == 0:
        raise InputError("the structure has no atoms to count")
    axis = column_axis(structure.positions)
    xy, atoms, atom_column = projected_columns(structure.positions, tolerance, axis=axis)
    if radius is None:
        radius = _default_radius(xy, structure.get_chemical_symbols())
    if not (np.isfinite(radius) and radius > 0):
        raise InputError(f"cell radius must be a positive number of Å, got {radius!r}")
    g = image.grid
    px = g.origin[0] + g.pixel_size * np.arange(g.shape[0])
    py = g.origin[1] + g.pixel_size * np.arange(g.shape[1])
    ii, jj = np.nonzero(image.mask)
    d, k = cKDTree(structure.positions[:, :2]).query(np.c_[px[ii], py[jj]], distance_upper_bound=radius)
    labels = np.full(g.shape, -1, dtype=int)
    inside = np.isfinite(d)
    labels[ii[inside], jj[inside]] = atom_column[k[inside]]
    return ColumnCells(xy, atoms, atom_column, labels, float(radius), float(tolerance), axis)


def vacuum_level(image) -> float:
    """The image's vacuum level: mean of the valid pixels within :data:`VACUUM_BORDER` Å of the valid region's edge.

    The edge of the valid region is the image's edge or an excluded pixel
    (a file's zero padding around the particle, an automatic mask), so the
    band is the vacuum around the particle as long as the particle is inside
    the valid pixels with vacuum around it (as the refinement assumes). The
    mean, not the median: at a low dose the vacuum holds less than one
    electron per pixel, and the median of such Poisson counts is 0. Units of
    the image.
    """
    from scipy.ndimage import binary_erosion

    w = max(1, int(round(VACUUM_BORDER / image.pixel_size)))
    inner = binary_erosion(image.mask, structure=np.ones((3, 3), bool), iterations=w, border_value=0)
    values = image.data[image.mask & ~inner]
    if values.size == 0:
        values = image.data[image.mask]
    return float(np.mean(values))


def cross_sections(data, labels, n_columns: int, pixel_size: float, background: float = 0.0) -> np.ndarray:
    """σ_c = Σ_{cell c} (data − background)·Δ² for every column (Å² × the image's units), shape (n_columns,)."""
    inside = labels >= 0
    sums = np.bincount(labels[inside], weights=np.asarray(data, dtype=float)[inside] - background,
                       minlength=n_columns)
    return sums * pixel_size * pixel_size


def column_library(structure, cells: ColumnCells, model, image, n_max: int, *, context: bool = True
                   ) -> np.ndarray:
    """σ_c(n) for every column c and n = 0..n_max, from the surrogate (see the module docstring).

    Parameters
    ----------
    structure : ase.Atoms
        The columns' atoms, in the image's frame (Å).
    cells : ColumnCells
        Of ``structure`` on ``image``.
    model : PolynomialSurrogate
        At the image's pixel size.
    image : refine.io.ExperimentalImage
        Only its grid is used.
    n_max : int
    context : bool
        Render the other columns too (their tails in c's cell), or column c alone.

    Returns
    -------
    ndarray, shape (n_columns, n_max + 1)
        Å² × fraction of the incident beam (the model's units), above the model's vacuum level.
    """
    return _library(structure, cells, model, image, n_max, context)[0]


def _library(structure, cells: ColumnCells, model, image, n_max: int, context: bool):
    """:func:`column_library` and, per column, whether its convolution image at its own height leaves
    the model's training range (bool array, shape (n_columns,))."""
    from surrogate.imaging import ProbeGrid
    from surrogate.imaging.convolution import atom_weights, convolution_from_positions

    g = image.grid
    dx = g.pixel_size
    h = model.border
    params = model.convolution_parameters
    vacuum = _model_vacuum(model)
    top = float(model.input_range_[1])
    pos = np.asarray(structure.positions, dtype=float)
    weights = atom_weights(structure.numbers, params.exponent, params.weights)
    if params.cross_section is not None:
        weights = weights * params.cross_section
    # with a depth-blur model each atom has the PSF width of its depth in the whole structure, and a column's
    # n atoms are real atoms at their depths (_DepthColumn), not n times its mean footprint
    sigmas = params.sigmas(pos[:, 2]) if hasattr(params, "sigmas") else None
    library = np.zeros((len(cells), n_max + 1))
    beyond = np.zeros(len(cells), dtype=bool)
    for c in range(len(cells)):
        ii, jj = np.nonzero(cells.labels == c)
        if ii.size == 0:
            continue  # masked out: σ = 0 for every n, like the image's
        i0, i1, j0, j1 = ii.min(), ii.max() + 1, jj.min(), jj.max() + 1
        window = ProbeGrid(origin=(g.origin[0] + i0 * dx, g.origin[1] + j0 * dx), shape=(i1 - i0, j1 - j0),
                           pixel_size=dx)
        padded = window.padded(h)
        lo = np.array(window.origin) - _REACH
        hi = np.array(window.origin) + dx * (np.array(window.shape) - 1) + _REACH
        near = np.all((pos[:, :2] >= lo) & (pos[:, :2] <= hi), axis=1)
        mine = cells.atom_column == c
        others = near & ~mine if context else np.zeros(len(pos), dtype=bool)
        if sigmas is None:
            base = convolution_from_positions(pos[others, :2], weights[others], padded, params.sigma)
            column = convolution_from_positions(pos[mine, :2], weights[mine], padded, params.sigma)
            column /= np.count_nonzero(mine)  # one atom's share of the column's footprint
        else:
            base = convolution_from_positions(pos[others, :2], weights[others], padded, sigmas[others])
            column = None
            depth_column = _DepthColumn(pos[mine], weights[mine], padded, params, float(pos[:, 2].min()))
        cell = (ii - i0, jj - j0)
        sim = np.empty(window.shape)
        inner = (slice(h, h + window.shape[0]), slice(h, h + window.shape[1]))
        def conv_of(n):  # the window's convolution image with column c at n atoms
            return base + (depth_column.image(n) if column is None else n * column)

        beyond[c] = float(conv_of(cells.atoms[c])[inner][cell].max()) > top
        for n in range(n_max + 1):
            conv = conv_of(n)
            if n >= 2 and float(conv[inner][cell].max()) > top:
                step = library[c, n - 1] - library[c, n - 2]
                if step > 0:  # beyond the training range: continue the last step (see the module docstring)
                    library[c, n:] = library[c, n - 1] + step * np.arange(1, n_max - n + 2)
                    break
            model.predict_into(np.ascontiguousarray(conv), sim)
            library[c, n] = float((sim[cell] - vacuum).sum()) * dx * dx
    return library, beyond


class _DepthColumn:
    """The convolution image of one column at n atoms for a depth-blur model (each atom at its own depth).

    n ≤ its height: the n atoms of the column nearest its middle (along the beam); above its height, atoms
    are added one column period (the median spacing of its atoms; 2.8 Å for a single atom) beyond its ends,
    below first, then above, at the column's mean x, y, as the counted start stacks columns about their
    middle. Each atom has the PSF width of its depth below ``z_top`` (the whole structure's first atom
    plane; atoms added above it are at depth 0).
    """

    def __init__(self, positions, weights, grid, params, z_top: float):
        order = np.argsort(positions[:, 2])
        self.pos = np.asarray(positions, dtype=float)[order]
        self.weights = np.asarray(weights, dtype=float)[order]
        gaps = np.diff(self.pos[:, 2])
        self.period = float(np.median(gaps)) if len(gaps) else 2.8
        self.grid, self.params, self.z_top = grid, params, z_top
        self._cache = {}

    def _atoms(self, n: int):
        k = len(self.pos)
        if n <= k:
            lo = (k - n) // 2
            return self.pos[lo:lo + n], self.weights[lo:lo + n]
        xy = self.pos[:, :2].mean(axis=0)
        extra = []
        below, above = self.pos[-1, 2], self.pos[0, 2]
        for j in range(n - k):
            if j % 2 == 0:
                below += self.period
                extra.append((xy[0], xy[1], below))
            else:
                above -= self.period
                extra.append((xy[0], xy[1], above))
        return (np.vstack([self.pos, np.array(extra)]),
                np.concatenate([self.weights, np.full(n - k, float(self.weights.mean()))]))

    def image(self, n: int) -> np.ndarray:
        """The column's convolution image on the window's padded grid at ``n`` atoms."""
        if n not in self._cache:
            from surrogate.imaging.convolution import atom_sigmas, convolution_from_positions

            if n == 0:
                self._cache[n] = np.zeros(self.grid.shape)
            else:
                xyz, w = self._atoms(n)
                sig = atom_sigmas(xyz[:, 2], self.params.sigma, self.params.depth_blur, z_top=self.z_top)
                self._cache[n] = convolution_from_positions(xyz[:, :2], w, self.grid, sig)
        return self._cache[n]


def _model_vacuum(model) -> float:
    """The surrogate's image of no atoms (its vacuum level), in its units."""
    h = model.border
    return float(np.median(model.predict(np.zeros((2 * h + 3, 2 * h + 3)))))


def _nearest(sigma: np.ndarray, library: np.ndarray, scale: float) -> np.ndarray:
    """The n of the library value nearest each σ, among each column's heights up to its largest σ(n).

    A model extrapolated far beyond its training range could make σ(n) of a
    tall column fall again, which would make two heights equally near. Below
    the largest value σ(n) may wiggle by a fraction of a step where one atom
    spread over a long streak barely changes a pixel (the polynomial is not
    monotonic at the faintest intensities); that does not stop the search.
    """
    upto = np.argmax(library, axis=1)
    allowed = np.arange(library.shape[1])[None, :] <= upto[:, None]
    distance = np.where(allowed, np.abs(sigma[:, None] - scale * library), np.inf)
    return np.argmin(distance, axis=1)


def _total_scale(sigma: np.ndarray, library: np.ndarray, n_atoms: int) -> float:
    """The scale whose counts add up to ``n_atoms``; the middle of the range that does, or the closest.

    Searched within ±30 % of 1 (an image in units of the incident beam,
    whose detector is a little off); where no scale there reaches
    ``n_atoms`` (an image in detector counts: thousands of units per beam),
    within ±30 % of the scale found by bisection on its logarithm (the total
    falls as the scale grows).
    """
    def window(centre: float):
        grid = centre * np.linspace(0.7, 1.3, 601)
        totals = np.array([_nearest(sigma, library, s).sum() for s in grid])
        return grid, totals

    grid, totals = window(1.0)
    if not totals.min() <= n_atoms <= totals.max() and np.any(sigma > 0):
        lo, hi = -12.0, 12.0  # log10 of the scale
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if _nearest(sigma, library, 10.0 ** mid).sum() > n_atoms:
                lo = mid
            else:
                hi = mid
        grid, totals = window(10.0 ** (0.5 * (lo + hi)))
    miss = np.abs(totals - n_atoms)
    best = grid[miss == miss.min()]
    return float(0.5 * (best.min() + best.max()))


@dataclass(frozen=True)
class CountTable:
    """Atom counts of the columns: the 3-D structure's and the image's.

    Attributes
    ----------
    xy : ndarray, shape (n_columns, 2)
        Column centres (Å).
    atoms_3d, atoms_image : ndarray of int, shape (n_columns,)
        Atoms of the structure in the column; count from the image.
    cross_section : ndarray, shape (n_columns,)
        Measured σ (Å² × fraction of the incident beam).
    library : ndarray, shape (n_columns, n_max + 1)
        σ_c(n) of the model, before ``scale``.
    scale : float
        Factor applied to the library.
    info : dict
        Tolerance, radius (Å), vacuum levels, how the library and the scale were made.
    resolved : ndarray of bool, shape (n_columns,), optional
        Whether the image shows the column as a peak of its own
        (:func:`refine.io.peaks.resolved_columns`); None: not checked.
    """

    xy: np.ndarray
    atoms_3d: np.ndarray
    atoms_image: np.ndarray
    cross_section: np.ndarray
    library: np.ndarray
    scale: float
    info: dict = field(default_factory=dict)
    resolved: np.ndarray | None = None

    @property
    def disagree(self) -> np.ndarray:
        return self.atoms_3d != self.atoms_image

    @property
    def fraction_equal(self) -> float:
        return float(np.mean(~self.disagree)) if len(self.xy) else float("nan")

    @property
    def fraction_within_1(self) -> float:
        return float(np.mean(np.abs(self.atoms_3d - self.atoms_image) <= 1)) if len(self.xy) else float("nan")

    @property
    def is_resolved(self) -> np.ndarray:
        """Boolean, shape (n_columns,): :attr:`resolved`, or all True where it was not checked."""
        return np.ones(len(self.xy), dtype=bool) if self.resolved is None else np.asarray(self.resolved, dtype=bool)

    def fractions_resolved(self) -> tuple[float | None, float | None]:
        """(fraction equal, fraction within ±1) over the resolved columns only (None with none resolved)."""
        r = self.is_resolved
        if not r.any():
            return None, None
        d = np.abs(self.atoms_3d[r] - self.atoms_image[r])
        return float(np.mean(d == 0)), float(np.mean(d <= 1))

    @property
    def rows(self) -> list[dict]:
        """One dict per column: x, y (Å), atoms_3d, atoms_image, cross_section, disagree, resolved."""
        return [{"x": float(x), "y": float(y), "atoms_3d": int(a), "atoms_image": int(b), "cross_section": float(s),
                 "disagree": bool(a != b), "resolved": bool(r)}
                for (x, y), a, b, s, r in zip(self.xy, self.atoms_3d, self.atoms_image, self.cross_section,
                                              self.is_resolved)]

    def distance_in_atoms(self) -> np.ndarray:
        """(σ_c − s·L_c(n)) / Δ_c, shape (n_columns, n_max + 1): how far each column's cross-section lies from
        the library's value for n atoms, in units of the column's mean library step per atom Δ_c."""
        lib = self.scale * np.asarray(self.library, dtype=float)
        step = np.maximum(np.diff(lib, axis=1).mean(axis=1), 1e-12)
        return (np.asarray(self.cross_section, dtype=float)[:, None] - lib) / step[:, None]

    def counts_at(self, scale: float) -> np.ndarray:
        """The image's counts (int, shape (n_columns,)) had the library been scaled by ``scale`` instead."""
        return _nearest(self.cross_section, self.library, float(scale)).astype(int)

    def summary(self) -> dict:
        """n_columns, fraction_equal, fraction_within_1 (all columns and the resolved ones) and the library.

        The library entry: median σ(n) over columns, per n.
        """
        lib = self.scale * self.library
        equal_resolved, within_1_resolved = self.fractions_resolved()
        return {"n_columns": int(len(self.xy)), "fraction_equal": self.fraction_equal,
                "fraction_within_1": self.fraction_within_1, "n_resolved": int(self.is_resolved.sum()),
                "fraction_equal_resolved": equal_resolved, "fraction_within_1_resolved": within_1_resolved,
                "atoms_3d": int(self.atoms_3d.sum()), "atoms_image": int(self.atoms_image.sum()),
                "library": dict(self.info, scale=self.scale, n=list(range(lib.shape[1])),
                                median_cross_section=[float(v) for v in np.median(lib, axis=0)]
                                if len(lib) else [])}


def column_count_table(structure, image, model, *, tolerance: float = DEFAULT_COUNT_TOLERANCE,
                       radius: float | None = None, n_max: int | None = None, scale="model",
                       context: bool = True) -> CountTable:
    """Count the atoms of every projected column of ``structure`` from ``image``'s cross-sections.

    Parameters
    ----------
    structure : ase.Atoms
        The 3-D answer, in the image's frame (Å; e.g. a run's ``best.xyz``).
    image : refine.io.ExperimentalImage
        In units of the incident beam, at the model's pixel size.
    model : PolynomialSurrogate
    tolerance, radius : float
        Å; the columns (:func:`projected_columns`) and their cells (:func:`column_cells`).
    n_max : int, optional
        Highest count in the library (default: the highest column + :data:`EXTRA_HEIGHT`).
    scale : "model", "total" or float
        The library's factor: 1, the one that makes the counts add up to
        ``len(structure)``, or a given number.
    context : bool
        See :func:`column_library`.

    Returns
    -------
    CountTable
        ``.rows`` for the CSV, ``.summary()`` for summary.json.
    """
    dx = float(model.convolution_parameters.pixel_size)
    if abs(image.pixel_size - dx) > 1e-3 * dx:
        raise InputError(f"image pixel size {image.pixel_size:.6g} Å differs from the model's {dx:.6g} Å")
    model.check_elements(structure.get_chemical_symbols())
    cells = column_cells(structure, image, tolerance=tolerance, radius=radius)
    top = int(cells.atoms.max())
    n_max = top + EXTRA_HEIGHT if n_max is None else int(n_max)
    if n_max < 1:
        raise InputError(f"n_max must be a positive number of atoms, got {n_max}")
    background = vacuum_level(image)
    sigma = cross_sections(image.data, cells.labels, len(cells), image.pixel_size, background)
    library, beyond = _library(structure, cells, model, image, n_max, context)
    if scale == "model":
        s = 1.0
    elif scale == "total":
        s = _total_scale(sigma, library, len(structure))
    else:
        try:
            s = float(scale)
        except (TypeError, ValueError):
            raise InputError(f"scale must be 'model', 'total' or a positive number, got {scale!r}") from None
        if not (np.isfinite(s) and s > 0):
            raise InputError(f"scale must be 'model', 'total' or a positive number, got {scale!r}")
    counts = _nearest(sigma, library, s)
    info = {"method": "surrogate image of the structure with each column's atoms weighted n/(its atoms)"
                      + ("" if context else " (the column alone)") + ", integrated over its cell",
            "scale_rule": scale if isinstance(scale, str) else "given", "tolerance": float(tolerance),
            "radius": cells.radius, "column_tilt_deg": float(np.degrees(np.arccos(min(1.0, cells.axis[2])))),
            "n_max": n_max, "image_vacuum_level": background,
            "model_vacuum_level": _model_vacuum(model), "beyond_training_range": int(beyond.sum())}
    if beyond.any():
        log.warning("%d of %d columns are denser than the model's training images (%.4g in convolution units): "
                    "their cross-sections are the polynomial's extrapolation", int(beyond.sum()), len(cells),
                    float(model.input_range_[1]))
    from refine.io.peaks import RESOLVED_DISTANCE, resolved_columns

    resolved = resolved_columns(cells.xy, image, _bond_length(structure))
    info["resolved_distance"] = RESOLVED_DISTANCE
    return CountTable(cells.xy, cells.atoms, counts.astype(int), sigma, library, s, info, resolved)


def _bond_length(structure) -> float:
    """Å, the median distance from an atom to its nearest neighbour (the elements' bond length below two atoms)."""
    bond = median_neighbour_distance(structure.positions)
    if bond is None:
        from refine.search.geometry import nearest_neighbour_distance

        return float(nearest_neighbour_distance(structure.get_chemical_symbols() or ["Pt"]))
    return bond
