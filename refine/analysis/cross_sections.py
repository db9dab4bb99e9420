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
   column spacing of an fcc zone axis ([111]: 1.6 Å).
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
   c replaced by n atoms, integrated over c's cell. The n atoms lie on c's
   axis (the principal axis of its atoms; for a one-atom column the mean
   axis of the others) at the structure's spacing along its columns,
   centred on c. Why not one library of isolated columns along the beam:
   the surrogate is strongly nonlinear in the local projected density (its
   per-atom cross-section grows from 0.021 Å² for one Pt atom to 0.033 Å² for
   a straight column of ten), so a column 10° off the beam, whose atoms
   spread over 0.5 Å steps, has per-atom cross-sections a third lower than a
   straight column of the same height; the column's own geometry and
   neighbours (their tails spill into its cell) are what the image shows.
   ``context=False`` leaves the other columns out (an isolated column).
5. **Count** = the n whose scale·σ_c(n) is nearest to the measured σ, among
   the heights up to where σ_c(n) stops growing (the model extrapolates
   beyond its training range, where σ(n) of a tall column can fall again).
   ``scale`` is 1 (the model's calibration, trusted: the image is in beam
   units) or ``"total"``: one factor for all columns, chosen so that the
   counts add up to the structure's number of atoms (the composition is
   known); this absorbs a global error of the model's intensity (e.g. a
   detector calibration a few per cent off), as StatSTEM's fitted mixture
   does, without fitting column by column.

Lengths in Å, cross-sections in Å² × fraction of the incident beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from refine.analysis.columns import _clusters
from surrogate.common import InputError

__all__ = ["DEFAULT_COUNT_TOLERANCE", "ColumnCells", "CountTable", "projected_columns", "column_cells",
           "vacuum_level", "cross_sections", "column_library", "column_count_table"]

#: Å; single-linkage tolerance of the counted columns (see the module docstring)
DEFAULT_COUNT_TOLERANCE = 1.0
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
    """

    xy: np.ndarray
    atoms: np.ndarray
    atom_column: np.ndarray
    labels: np.ndarray
    radius: float
    tolerance: float

    def __len__(self) -> int:
        return len(self.xy)


def projected_columns(positions, tolerance: float = DEFAULT_COUNT_TOLERANCE):
    """The projected columns (beam along z) of atoms at ``positions`` (Å, shape (n, 3)).

    Returns
    -------
    (xy, atoms, atom_column)
        Centres (Å, shape (n_columns, 2)), atoms per column (n_columns,) and the
        column of each atom (n,), columns numbered as in :func:`refine.analysis.column_counts`.
    """
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise InputError(f"column tolerance must be a positive number of Å, got {tolerance!r}")
    xy = np.asarray(positions, dtype=float).reshape(-1, 3)[:, :2]
    labels = _clusters(xy, float(tolerance))
    n = int(labels.max()) + 1 if len(labels) else 0
    atoms = np.bincount(labels, minlength=n)
    centres = np.array([xy[labels == c].mean(axis=0) for c in range(n)]).reshape(-1, 2)
    return centres, atoms.astype(int), labels.astype(int)


def _default_radius(xy: np.ndarray, symbols) -> float:
    """Half the median distance (Å) from a column centre to its nearest neighbour column."""
    if len(xy) >= 2:
        d, _ = cKDTree(xy).query(xy, k=2)
        return 0.5 * float(np.median(d[:, 1]))
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
    xy, atoms, atom_column = projected_columns(structure.positions, tolerance)
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
    return ColumnCells(xy, atoms, atom_column, labels, float(radius), float(tolerance))


def vacuum_level(image) -> float:
    """The image's vacuum level: mean of the valid pixels within :data:`VACUUM_BORDER` Å of its edge.

    Assumes the particle is inside the image with vacuum around it (as the
    refinement does). The mean, not the median: at a low dose the vacuum
    holds less than one electron per pixel, and the median of such Poisson
    counts is 0. Units of the image.
    """
    w = max(1, int(round(VACUUM_BORDER / image.pixel_size)))
    border = np.zeros(image.shape, dtype=bool)
    border[:w], border[-w:], border[:, :w], border[:, -w:] = True, True, True, True
    values = image.data[border & image.mask]
    if values.size == 0:
        values = image.data[image.mask]
    return float(np.mean(values))


def cross_sections(data, labels, n_columns: int, pixel_size: float, background: float = 0.0) -> np.ndarray:
    """σ_c = Σ_{cell c} (data − background)·Δ² for every column (Å² × the image's units), shape (n_columns,)."""
    inside = labels >= 0
    sums = np.bincount(labels[inside], weights=np.asarray(data, dtype=float)[inside] - background,
                       minlength=n_columns)
    return sums * pixel_size * pixel_size


def _axis(points: np.ndarray) -> np.ndarray:
    """Unit principal axis of ``points`` (shape (k, 3), k ≥ 2), pointing along +z."""
    _, _, vt = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)
    u = vt[0]
    return u if u[2] >= 0 else -u


def _column_geometry(positions: np.ndarray, atom_column: np.ndarray, n_columns: int, symbols):
    """Per column: centroid (3,), axis (3,); and the structure's spacing along its columns (Å)."""
    from refine.search import nearest_neighbour_distance

    centroids = np.array([positions[atom_column == c].mean(axis=0) for c in range(n_columns)])
    axes = np.zeros((n_columns, 3))
    steps, weights = [], []
    for c in range(n_columns):
        p = positions[atom_column == c]
        if len(p) >= 2:
            axes[c] = _axis(p)
            t = np.sort((p - p.mean(axis=0)) @ axes[c])
            steps.append((t[-1] - t[0]) / (len(p) - 1))
            weights.append(len(p))
    multi = np.linalg.norm(axes, axis=1) > 0
    if multi.any():
        mean_axis = (axes[multi] * np.asarray(weights)[:, None]).sum(axis=0)
        mean_axis /= np.linalg.norm(mean_axis)
        spacing = float(np.median(steps))
    else:  # no column with two atoms: along the beam at the crystal's nearest-neighbour distance
        mean_axis = np.array([0.0, 0.0, 1.0])
        spacing = nearest_neighbour_distance(symbols)
    axes[~multi] = mean_axis
    return centroids, axes, spacing


def column_library(structure, cells: ColumnCells, model, image, n_max: int, *, context: bool = True
                   ) -> np.ndarray:
    """σ_c(n) for every column c and n = 0..n_max, from the surrogate (see the module docstring).

    Parameters
    ----------
    structure : ase.Atoms
        Single-element along a column: the n atoms take the element of the
        column's most common one.
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
    from ase import Atoms

    from surrogate.imaging import ProbeGrid

    g = image.grid
    dx = g.pixel_size
    vacuum = _model_vacuum(model)
    pos = np.asarray(structure.positions, dtype=float)
    numbers = np.asarray(structure.numbers)
    centroids, axes, spacing = _column_geometry(pos, cells.atom_column, len(cells), structure.get_chemical_symbols())
    library = np.zeros((len(cells), n_max + 1))
    for c in range(len(cells)):
        ii, jj = np.nonzero(cells.labels == c)
        if ii.size == 0:
            continue  # masked out: σ = 0 for every n, like the image's
        i0, i1, j0, j1 = ii.min(), ii.max() + 1, jj.min(), jj.max() + 1
        window = ProbeGrid(origin=(g.origin[0] + i0 * dx, g.origin[1] + j0 * dx), shape=(i1 - i0, j1 - j0),
                           pixel_size=dx)
        lo = np.array(window.origin) - _REACH
        hi = np.array(window.origin) + dx * (np.array(window.shape) - 1) + _REACH
        near = np.all((pos[:, :2] >= lo) & (pos[:, :2] <= hi), axis=1) & (cells.atom_column != c)
        others = Atoms(numbers=numbers[near], positions=pos[near]) if context else Atoms()
        members = numbers[cells.atom_column == c]
        z = int(np.bincount(members).argmax())
        cell = (ii - i0, jj - j0)
        for n in range(n_max + 1):
            offsets = (np.arange(n) - (n - 1) / 2.0) * spacing
            column = Atoms(numbers=np.full(n, z), positions=centroids[c] + offsets[:, None] * axes[c])
            atoms = others + column
            if len(atoms) == 0:
                continue  # nothing at all: σ = 0
            sim = model.simulate(atoms, window)
            library[c, n] = float((sim[cell] - vacuum).sum()) * dx * dx
    return library


def _model_vacuum(model) -> float:
    """The surrogate's image of no atoms (its vacuum level), in its units."""
    h = model.border
    return float(np.median(model.predict(np.zeros((2 * h + 3, 2 * h + 3)))))


def _nearest(sigma: np.ndarray, library: np.ndarray, scale: float) -> np.ndarray:
    """The n of the library value nearest each σ, among each column's heights up to where σ(n) stops growing.

    Beyond its training range the surrogate's σ(n) of a tall column can fall
    again (extrapolation); a falling σ(n) would make two heights equally near.
    """
    growing = np.cumprod(np.c_[np.ones((len(library), 1), dtype=bool), np.diff(library, axis=1) > 0], axis=1) > 0
    distance = np.where(growing, np.abs(sigma[:, None] - scale * library), np.inf)
    return np.argmin(distance, axis=1)


def _total_scale(sigma: np.ndarray, library: np.ndarray, n_atoms: int) -> float:
    """The scale (near 1) whose counts add up to ``n_atoms``; the middle of the range that does, or the closest."""
    grid = np.linspace(0.7, 1.3, 601)
    totals = np.array([_nearest(sigma, library, s).sum() for s in grid])
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
    """

    xy: np.ndarray
    atoms_3d: np.ndarray
    atoms_image: np.ndarray
    cross_section: np.ndarray
    library: np.ndarray
    scale: float
    info: dict = field(default_factory=dict)

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
    def rows(self) -> list[dict]:
        """One dict per column: x, y (Å), atoms_3d, atoms_image, cross_section, disagree."""
        return [{"x": float(x), "y": float(y), "atoms_3d": int(a), "atoms_image": int(b), "cross_section": float(s),
                 "disagree": bool(a != b)}
                for (x, y), a, b, s in zip(self.xy, self.atoms_3d, self.atoms_image, self.cross_section)]

    def summary(self) -> dict:
        """n_columns, fraction_equal, fraction_within_1 and the library (median σ(n) over columns, per n)."""
        lib = self.scale * self.library
        return {"n_columns": int(len(self.xy)), "fraction_equal": self.fraction_equal,
                "fraction_within_1": self.fraction_within_1,
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
    library = column_library(structure, cells, model, image, n_max, context=context)
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
    info = {"method": "surrogate image of the structure with each column replaced by n atoms along its axis"
                      + ("" if context else " (the column alone)") + ", integrated over its cell",
            "scale_rule": scale if isinstance(scale, str) else "given", "tolerance": float(tolerance),
            "radius": cells.radius, "n_max": n_max, "image_vacuum_level": background,
            "model_vacuum_level": _model_vacuum(model)}
    return CountTable(cells.xy, cells.atoms, counts.astype(int), sigma, library, s, info)
