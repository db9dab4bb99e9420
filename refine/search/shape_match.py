"""A starting structure matched to the image: the cluster shape, zone axis and in-plane angle that fit it best.

Small gold and platinum particles are often twinned: decahedra and
icosahedra, whose grains show different lattices in one image (the column
check of :mod:`refine.io.lattice` tells). A counted reconstruction stacks one
crystal and cannot make them; a search from random clusters of ~1000 atoms
does not find them in minutes. Microscopists match such images against
simulated images of model shapes in their zone-axis orientations (template
matching); :func:`matched_structure` does that with the surrogate, in
seconds:

1. **Shapes**: each :data:`refine.search.population.SHAPES` cluster of the
   composition's number of atoms, relaxed (FIRE on the calculator's energy).
2. **Zone axes** (:func:`zone_axes`): a zone-axis image shows columns, and a
   column runs along a short interatomic vector; the candidate beam
   directions are the directions of each shape's nearest- and
   second-nearest-neighbour vectors (one of each ± pair, merged within
   2° and averaged), one of each set that projects the same columns (equivalent by the
   shape's symmetry), ranked by how few columns the shape projects into
   along them, the best :data:`AXES_PER_SHAPE` kept. For an fcc shape they are ⟨110⟩, ⟨100⟩
   (and ⟨111⟩'s neighbours); for a decahedron its five-fold axis among them.
3. **Angle** (:func:`match_orientation`): the shape, turned so that the axis
   is the beam, is rotated about the beam in :data:`ANGLE_STEP` steps and
   scored by χ² of its surrogate image (aligned in x, y and scaled a·I + b
   by the fitness); the best angle of the best axes is refined by a local
   search over all three rotation angles (Nelder–Mead), tilts of the zone
   axis up to 4° included: particles sit a degree or two off their zone
   axis, and the counting follows leaning columns
   (:func:`refine.analysis.cross_sections.column_axis`).
4. The shape with the lowest χ² is the start, in the image's frame at its
   best-fitting position; the log has a line per shape.

χ² is the fitness's (:meth:`refine.cost.Fitness.image_terms`): the energy
plays no part in the choice (every shape is relaxed; they differ by a few
meV/atom, their images by far more). Lengths in Å, angles in degrees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from refine.search.population import SHAPES, shape_cluster, validate_composition

__all__ = ["zone_axes", "match_orientation", "matched_structure", "ShapeMatch", "AXES_PER_SHAPE", "ANGLE_STEP"]

log = logging.getLogger(__name__)

#: candidate zone axes tried per shape
AXES_PER_SHAPE = 6
#: degrees between the in-plane angles of the scan
ANGLE_STEP = 2.0
#: degrees; directions closer than this are one candidate axis
MERGE_ANGLE = 2.0
#: Å; atoms projected closer than this are one column when the axes are ranked
COLUMN_TOLERANCE = 0.5


@dataclass(frozen=True)
class ShapeMatch:
    """The best orientation of one shape: χ², the rotation (applied about the shape's centre) and the shift.

    Attributes
    ----------
    shape : str
    chi2 : float
        The fitness's χ² at the best orientation and position.
    rotation : scipy.spatial.transform.Rotation
        Shape frame → image frame (beam along z).
    axis : ndarray, shape (3,)
        The zone axis (unit vector, shape frame) that the rotation puts along the beam.
    centre : ndarray, shape (3,)
        Å, where the shape's centre goes in the image's frame (the alignment's shift included).
    """

    shape: str
    chi2: float
    rotation: Rotation
    axis: np.ndarray
    centre: np.ndarray

    def place(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` (the shape, any frame) turned and moved into the image's frame."""
        out = atoms.copy()
        out.positions = self.rotation.apply(atoms.positions - atoms.positions.mean(axis=0)) + self.centre
        return out


def _columns_along(positions: np.ndarray, axis: np.ndarray, tolerance: float) -> tuple:
    """The atoms of each column ``positions`` project into along ``axis``, sorted (greedy clustering)."""
    rot = _to_beam(axis)
    xy = rot.apply(positions)[:, :2]
    tree = cKDTree(xy)
    seen = np.zeros(len(xy), dtype=bool)
    sizes = []
    for i in range(len(xy)):
        if not seen[i]:
            members = [j for j in tree.query_ball_point(xy[i], tolerance) if not seen[j]]
            seen[members] = True
            sizes.append(len(members))
    return tuple(sorted(sizes))


def _to_beam(axis) -> Rotation:
    """A rotation taking unit vector ``axis`` to +z."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [axis])
    return rot


def zone_axes(atoms: Atoms, n_axes: int = AXES_PER_SHAPE) -> np.ndarray:
    """Candidate beam directions of ``atoms``: its neighbour-vector directions, most columnar first, shape (k, 3).

    Parameters
    ----------
    atoms : ase.Atoms
    n_axes : int
        How many to keep.
    """
    from refine.analysis.columns import neighbour_directions

    pos = atoms.positions - atoms.positions.mean(axis=0)
    vec = neighbour_directions(pos)
    cos_merge = np.cos(np.radians(MERGE_ANGLE))
    seeds, sums, weights = [], [], []
    for v in vec:
        for k, a in enumerate(seeds):
            dot = v @ a
            if abs(dot) >= cos_merge:
                sums[k] += np.sign(dot) * v
                weights[k] += 1
                break
        else:
            seeds.append(v)
            sums.append(v.copy())
            weights.append(1)
    # each candidate is the mean of the vectors merged into it: the crystal's direction, not one bond's
    axes = np.array(sums) / np.linalg.norm(sums, axis=1)[:, None]
    # the common directions first (a few hundred at most), then ranked by how columnar the projection is
    common = axes[np.argsort(-np.array(weights), kind="stable")[:max(8 * n_axes, 24)]]
    # axes that the shape's symmetry makes equivalent project the same columns: one of each is enough
    distinct = {}
    for a in common:
        distinct.setdefault(_columns_along(pos, a, COLUMN_TOLERANCE), a)
    ranked = sorted(distinct.items(), key=lambda kv: len(kv[0]))
    return np.array([a for _, a in ranked[:n_axes]])


def match_orientation(atoms: Atoms, fitness, centre, axes, *, angle_step: float = ANGLE_STEP,
                      shape: str = "") -> ShapeMatch:
    """The orientation of ``atoms`` (a shape, any frame) whose surrogate image best fits ``fitness``'s image.

    Parameters
    ----------
    atoms : ase.Atoms
    fitness : refine.cost.Fitness
        Its :meth:`~refine.cost.Fitness.image_terms` scores each orientation (χ², shift fitted).
    centre : (float, float)
        Å, where the shape's centre is put first (e.g. the image's intensity centroid).
    axes : array_like, shape (k, 3)
        Candidate zone axes (:func:`zone_axes`).
    angle_step : float
        Degrees between the in-plane angles scanned.
    shape : str
        A label for the result.
    """
    pos0 = atoms.positions - atoms.positions.mean(axis=0)
    numbers = atoms.numbers
    c = np.array([float(centre[0]), float(centre[1]), 0.0])

    def chi2_of(rot: Rotation):
        _, _, chi2, shift = fitness.image_terms(rot.apply(pos0) + c, numbers)
        return float(chi2), shift

    angles = np.arange(0.0, 360.0, float(angle_step))
    best = (np.inf, None, None)
    for axis in np.asarray(axes, dtype=float).reshape(-1, 3):
        to_beam = _to_beam(axis)
        for angle in angles:
            rot = Rotation.from_euler("z", angle, degrees=True) * to_beam
            chi2, _ = chi2_of(rot)
            if chi2 < best[0]:
                best = (chi2, rot, axis)
    # the best angle refined, small tilts included (a particle sits a degree or two off its zone axis); the
    # counting follows leaning columns (refine.analysis.cross_sections.column_axis) up to MAX_COLUMN_TILT
    from refine.analysis.cross_sections import MAX_COLUMN_TILT

    chi2_0, rot_0, axis = best
    beam = np.array([0.0, 0.0, 1.0])

    def objective(delta):
        rot = Rotation.from_rotvec(np.radians(delta)) * rot_0
        tilt = np.degrees(np.arccos(np.clip(rot.apply(axis) @ beam, -1.0, 1.0)))
        return chi2_of(rot)[0] if tilt <= 0.8 * MAX_COLUMN_TILT else np.inf

    res = minimize(objective, np.zeros(3), method="Nelder-Mead",
                   options={"initial_simplex": np.vstack([np.zeros(3), np.eye(3) * angle_step]), "xatol": 0.05,
                            "fatol": 1e-4 * max(abs(chi2_0), 1.0), "maxfev": 200})
    rot = Rotation.from_rotvec(np.radians(res.x)) * rot_0 if res.fun < chi2_0 else rot_0
    chi2, shift = chi2_of(rot)
    return ShapeMatch(shape, chi2, rot, np.asarray(axis), c + np.array([shift[0], shift[1], 0.0]))


def matched_structure(image, model, composition, calculator, *, shapes=SHAPES, relax_steps: int = 1000,
                      noise="estimate", n_axes: int = AXES_PER_SHAPE) -> Atoms:
    """The relaxed cluster shape, zone axis and angle whose surrogate image best fits ``image`` (module docstring).

    Parameters
    ----------
    image : refine.io.ExperimentalImage
        At the model's pixel size.
    model : PolynomialSurrogate
    composition : str or mapping
        Its number of atoms makes every shape (species at random, seed 0).
    calculator : ase calculator
        Relaxes each shape (FIRE to 0.05 eV/Å or ``relax_steps``).
    shapes : iterable of str
    noise
        The noise model of the χ² that scores the orientations (:class:`refine.cost.Fitness`).

    Returns
    -------
    ase.Atoms
        In the image's frame (Å), no cell; ``info``: origin "matched", the shape, its zone axis (shape frame),
        χ²/pixel of every shape tried.
    """
    from ase.optimize import FIRE

    from refine.cost.fitness import Fitness

    comp = validate_composition(composition)
    fitness = Fitness(model, image, alpha=1.0, calculator=None, noise=noise)
    centre = image.centroid()
    matches, built = {}, {}
    for shape in shapes:
        atoms = shape_cluster(comp, shape, np.random.default_rng(0))
        atoms.pbc = False
        atoms.cell = np.diag(np.ptp(atoms.positions, axis=0) + 20.0)  # asap3 needs a cell; the particle is isolated
        atoms.calc = calculator
        FIRE(atoms, logfile=None).run(fmax=0.05, steps=int(relax_steps))
        energy = float(atoms.get_potential_energy()) / len(atoms)
        atoms = Atoms(atoms.numbers, positions=atoms.positions)
        axes = zone_axes(atoms, n_axes)
        m = match_orientation(atoms, fitness, centre, axes, shape=shape)
        matches[shape], built[shape] = m, atoms
        log.info("matched start: %-22s E/atom %.4f eV, χ²/px %.4g along its %s axis", shape, energy,
                 m.chi2 / fitness.n_valid, np.round(m.axis, 3).tolist())
    best = min(matches.values(), key=lambda m: m.chi2)
    out = best.place(built[best.shape])
    out.info = {"origin": "matched", "shape": best.shape, "zone_axis": np.round(best.axis, 4).tolist(),
                "chi2_per_pixel": {s: m.chi2 / fitness.n_valid for s, m in matches.items()}}
    log.info("matched start: the %s, χ²/px %.4g", best.shape, best.chi2 / fitness.n_valid)
    return out
