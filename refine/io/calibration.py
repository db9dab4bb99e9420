"""Is the image's pixel size right? The crystal lattice of its columns says.

A HAADF image's pixel size comes from the microscope's calibration, which
can be several per cent off (the TEMUL Au example's file says 0.075 Å; its
README says the lattice fringes suggest ~0.0825). Every column-based step
works in ångström: a counted reconstruction stacks the image's columns
where the image puts them, so a pixel size 10 % too small packs a particle
10 % too tight, and the relaxation cannot take that strain (the Au counted
reconstruction: +0.202 eV/atom above the best shape at the file's pixel
size, +0.143 at 0.0825; docs/benchmarks.md). Microscopists check the
calibration against a known lattice spacing; here (:func:`lattice_scale`):

1. the image's columns (:func:`refine.io.peaks.find_columns`), and of a
   particle that is not one crystal the largest grain
   (:func:`refine.io.lattice.lattice_grains`);
2. their three most common neighbour vectors
   (:func:`refine.io.distortion.lattice_families`), sorted by length;
3. against each close-packed zone axis's three shortest families
   (:data:`FAMILY_LENGTHS`), the ratios ideal/measured; the zone axis whose
   ratios agree best (relative spread below :data:`SCALE_SPREAD`) gives the
   factor, their mean: the pixel size times it is the one the lattice says;
4. the columns' fitted lattice cell (:func:`refine.io.lattice.fit_lattice`,
   reduced to its two shortest vectors) must be that zone axis's cell up to
   a scale: the two principal stretches of the map between them may differ
   by at most :data:`MAX_ANISOTROPY` (:func:`cell_anisotropy`). Three
   neighbour lengths alone are matched by blurred, tilted or partly
   crystalline particles at a wrong scale (abTEM images of
   ``tests/benchmarks/independent``: a recrystallised particle read +6.8 %,
   one with atoms moved to the far side +14 %); their cells are 10–19 %
   anisotropic, zone-axis crystals' 0.1–4.3 % (the Pt–Ir and Au images
   included; ``tests/benchmarks/bench_pixel_calibration.py``).

:func:`check_pixel_size` logs a warning where the factor is further than
:data:`PIXEL_SIZE_TOLERANCE` from 1, with the pixel size it implies; it
never changes the image. :func:`calibrate_pixel_size` (``--pixel-size-from-lattice``)
applies it: the image is read again at the implied pixel size and measured
again, until a round changes it by less than :data:`CONVERGED` (the columns
are found on the element's spacing, so the second round, at about the right
scale, is the better measurement). It is an isotropic scale only (an alloy's or a strained particle's lattice
differs from the element's by a per cent or two, and ``--undistort``
corrects scale and shear together). Lengths in Å.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from surrogate.common import InputError

__all__ = ["FAMILY_LENGTHS", "SCALE_SPREAD", "MAX_ANISOTROPY", "PIXEL_SIZE_TOLERANCE", "CALIBRATION_ROUNDS",
           "CONVERGED", "MAX_CORRECTION", "LatticeScale", "cell_anisotropy", "lattice_scale", "check_pixel_size",
           "calibrate_pixel_size"]

log = logging.getLogger(__name__)

#: the three shortest neighbour-vector families of close-packed zone axes, in bond lengths, sorted
FAMILY_LENGTHS = {"[110]": (np.sqrt(3.0) / 2.0, np.sqrt(3.0) / 2.0, 1.0),
                  "[100]": (np.sqrt(0.5), np.sqrt(0.5), 1.0)}
#: largest relative spread (std/mean) of the ideal/measured ratios for the families to be that zone axis, scaled
SCALE_SPREAD = 0.04
#: largest anisotropy (ratio of principal stretches − 1) of the columns' cell against the zone axis's, up to a
#: scale: zone-axis crystals measured 0.1–4.3 % (a scan distortion's few per cent), false lattices 10–19 %
MAX_ANISOTROPY = 0.06
#: a lattice this far (relative) from the element's is worth a warning: more than a scan distortion's few per cent
PIXEL_SIZE_TOLERANCE = 0.05
#: measure → read again rounds of :func:`calibrate_pixel_size` at most
CALIBRATION_ROUNDS = 3
#: a round whose factor is this close to 1 ends the calibration (relative)
CONVERGED = 0.005
#: a lattice that says the pixel size is further off than this (relative) is more likely the wrong element or
#: no lattice than a calibration error: refused
MAX_CORRECTION = 0.3


@dataclass(frozen=True)
class LatticeScale:
    """What the columns' lattice says about the image's length scale.

    Attributes
    ----------
    factor : float
        Ideal / measured spacing: the image's pixel size times this is the one the lattice implies.
    zone_axis : str
        The zone axis whose families matched (``"[110]"`` or ``"[100]"``).
    spread : float
        Relative spread of the three ratios (how well the families are that zone axis, up to a scale).
    n_columns : int
        Columns the families were measured on (one grain's, where the particle is not one crystal).
    anisotropy : float
        Of the columns' fitted cell against the zone axis's (:func:`cell_anisotropy`).
    """

    factor: float
    zone_axis: str
    spread: float
    n_columns: int
    anisotropy: float = 0.0


def _reduced(basis) -> np.ndarray:
    """The two shortest vectors of the 2-D lattice with rows ``basis`` (Gauss reduction), at an acute angle."""
    b1, b2 = (np.asarray(v, dtype=float) for v in basis)
    for _ in range(100):  # converges in a few steps; the bound guards degenerate input
        if b2 @ b2 < b1 @ b1:
            b1, b2 = b2, b1
        mu = round(float(b1 @ b2) / float(b1 @ b1))
        if mu == 0:
            break
        b2 = b2 - mu * b1
    return np.array([b1, b2 if b1 @ b2 >= 0 else -b2])


def cell_anisotropy(basis, zone_axis: str) -> float:
    """How far the lattice cell ``basis`` (rows a₁, a₂, any length unit) is from ``zone_axis``'s, up to a scale.

    The linear map taking the reduced cell onto the zone axis's
    (:data:`refine.io.distortion.ZONE_AXIS_FAMILIES`, its two shortest
    vectors), over both assignments that keep the handedness: its principal
    stretches s₁ ≤ s₂ give s₂/s₁ − 1 (0 for the same shape at any size and
    rotation).
    """
    from refine.io.distortion import ZONE_AXIS_FAMILIES

    cell = _reduced(basis)
    ideal = np.asarray(ZONE_AXIS_FAMILIES[zone_axis][:2], dtype=float)
    if ideal[0] @ ideal[1] < 0:
        ideal = np.array([ideal[0], -ideal[1]])
    best = np.inf
    for target in (ideal, ideal[::-1]):
        g = np.linalg.solve(cell, target).T  # g·aᵢ = tᵢ for the rows aᵢ, tᵢ
        if np.linalg.det(g) <= 0:
            continue  # a mirror image: the other assignment keeps the handedness
        s = np.linalg.svd(g, compute_uv=False)
        best = min(best, float(s.max() / s.min() - 1.0))
    return best


def lattice_scale(xy, nn_distance: float, heights=None) -> LatticeScale | None:
    """The length scale of the column lattice ``xy`` (Å, shape (m, 2)) against close-packed zone axes.

    None where the columns are too few (fewer than 8 on one lattice), their
    families are no zone axis up to a scale, or their fitted cell is not that
    zone axis's up to a scale (module docstring, step 4).
    """
    from refine.io.distortion import BRIGHT, lattice_families
    from refine.io.lattice import crystal_columns, fit_lattice, lattice_grains

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    h = np.ones(len(xy)) if heights is None else np.asarray(heights, dtype=float).reshape(-1)
    grains = lattice_grains(xy, nn_distance, h)
    if not grains:
        return None
    columns = crystal_columns(grains, len(xy))[0]  # all of one crystal's, or the largest grain's
    columns = columns[h[columns] >= BRIGHT * h.max()]
    try:
        measured = np.sort(np.linalg.norm(lattice_families(xy[columns], k=3), axis=1))
    except InputError:
        return None
    best = None
    for name, lengths in FAMILY_LENGTHS.items():
        ratio = np.asarray(lengths) * float(nn_distance) / measured
        spread = float(np.std(ratio) / np.mean(ratio))
        if best is None or spread < best.spread:
            best = LatticeScale(float(np.mean(ratio)), name, spread, int(len(columns)))
    if best.spread > SCALE_SPREAD:
        return None
    cell = fit_lattice(xy[columns], nn_distance, heights=h[columns])
    if not cell.on_lattice.any():
        return None
    anisotropy = cell_anisotropy(cell.basis, best.zone_axis)
    if anisotropy > MAX_ANISOTROPY:
        return None
    return LatticeScale(best.factor, best.zone_axis, best.spread, best.n_columns, anisotropy)


def check_pixel_size(image, nn_distance: float, *, tolerance: float = PIXEL_SIZE_TOLERANCE,
                     element: str = "") -> LatticeScale | None:
    """Log a warning where the image's column lattice says its pixel size is off by more than ``tolerance``.

    Parameters
    ----------
    image : refine.io.ExperimentalImage
        Prepared (at any pixel size); ``metadata["resampled"]`` gives the pixel size it was read at.
    nn_distance : float
        Å, the element's bond length.
    tolerance : float
        Relative.
    element : str
        For the message.

    Returns
    -------
    LatticeScale or None
        None where the image shows no zone-axis lattice (nothing is said then).
    """
    scale = _measure(image, nn_distance)
    if scale is None or abs(scale.factor - 1.0) <= tolerance:
        return scale
    read_at = _read_pixel_size(image)
    log.warning("pixel size: the columns are spaced %.1f %% %s than %s %s's (%d columns): if the particle is that "
                "crystal, the image's pixel size is %.4g Å, not %.4g; give --pixel-size or --pixel-size-from-lattice, "
                "or --undistort to correct scale and shear from the lattice", 100 * abs(1.0 - 1.0 / scale.factor),
                "closer" if scale.factor > 1 else "wider", element or "the element", scale.zone_axis,
                scale.n_columns, read_at * scale.factor, read_at)
    return scale


def _measure(image, nn_distance: float) -> LatticeScale | None:
    """:func:`lattice_scale` of the columns found in ``image`` (None: too few columns, or no zone axis)."""
    from refine.io.peaks import find_columns

    try:
        xy, height = find_columns(image, nn_distance)
    except InputError:
        return None
    return lattice_scale(xy, nn_distance, height) if len(xy) >= 8 else None


def _read_pixel_size(image) -> float:
    """Å: the pixel size ``image`` was read at (before any resampling to the model's)."""
    return float((image.metadata.get("resampled") or {}).get("from_pixel_size", image.pixel_size))


def calibrate_pixel_size(image, read_at, nn_distance: float, *, element: str = ""):
    """``image`` read again at the pixel size its column lattice implies.

    Parameters
    ----------
    image : refine.io.ExperimentalImage
        Prepared at the starting pixel size (the file's, or the one given).
    read_at : callable
        ``read_at(pixel_size)`` (Å) → the same file prepared the same way at that pixel size.
    nn_distance : float
        Å, the element's bond length.
    element : str
        For the messages.

    Returns
    -------
    refine.io.ExperimentalImage
        Read at the implied pixel size; ``metadata["preparation"]`` ends with a
        ``"pixel size from lattice"`` step (the start, the pixel size, the zone
        axis, the columns, the cell's anisotropy and each round's factor).

    Raises
    ------
    InputError
        The image shows no zone-axis lattice of the element (too few
        columns, families of no zone axis, a cell of no zone axis), or one
        that says the pixel size is more than :data:`MAX_CORRECTION` off.
    """
    start = _read_pixel_size(image)
    pixel = start
    rounds = []
    current = image
    scale = None
    for _ in range(CALIBRATION_ROUNDS):
        found = _measure(current, nn_distance)
        if found is None:
            if scale is None:
                raise InputError(f"--pixel-size-from-lattice: the image shows no zone-axis lattice of "
                                 f"{element or 'the element'} to calibrate against (too few columns, or they are "
                                 "no close-packed zone axis up to a scale); give --pixel-size")
            break  # the last good round's pixel size stands
        scale = found
        pixel *= scale.factor
        rounds.append(round(scale.factor, 5))
        if abs(pixel / start - 1.0) > MAX_CORRECTION:
            raise InputError(f"--pixel-size-from-lattice: the columns' lattice says the pixel size is {pixel:.4g} Å, "
                             f"{100 * abs(pixel / start - 1):.0f} % from the {start:.4g} Å it was read at: is the "
                             f"element ({element or '?'}) right? Give --pixel-size")
        current = read_at(pixel)
        if abs(scale.factor - 1.0) <= CONVERGED:
            break
    log.info("pixel size from the lattice: %.5g Å (read at %.5g; %s %s, %d columns, cell anisotropy %.1f %%, "
             "rounds %s)", pixel, start, element or "the element", scale.zone_axis, scale.n_columns,
             100 * scale.anisotropy, ", ".join(f"{f:.4f}" for f in rounds))
    step = {"step": "pixel size from lattice", "parameters": {"method": "lattice", "start": start},
            "values": {"pixel_size": round(pixel, 6), "zone_axis": scale.zone_axis, "n_columns": scale.n_columns,
                       "anisotropy": round(scale.anisotropy, 4), "rounds": rounds}}
    meta = dict(current.metadata)
    meta["preparation"] = [*(meta.get("preparation") or []), step]
    return replace(current, metadata=meta)
