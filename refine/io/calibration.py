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
   factor, their mean: the pixel size times it is the one the lattice says.

:func:`check_pixel_size` logs a warning where the factor is further than
:data:`PIXEL_SIZE_TOLERANCE` from 1, with the pixel size it implies; it
never changes the image (an alloy's or a strained particle's lattice
differs from the element's by a per cent or two, and ``--undistort``
corrects scale and shear together). Lengths in Å.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["FAMILY_LENGTHS", "SCALE_SPREAD", "PIXEL_SIZE_TOLERANCE", "LatticeScale", "lattice_scale",
           "check_pixel_size"]

log = logging.getLogger(__name__)

#: the three shortest neighbour-vector families of close-packed zone axes, in bond lengths, sorted
FAMILY_LENGTHS = {"[110]": (np.sqrt(3.0) / 2.0, np.sqrt(3.0) / 2.0, 1.0),
                  "[100]": (np.sqrt(0.5), np.sqrt(0.5), 1.0)}
#: largest relative spread (std/mean) of the ideal/measured ratios for the families to be that zone axis, scaled
SCALE_SPREAD = 0.04
#: a lattice this far (relative) from the element's is worth a warning: more than a scan distortion's few per cent
PIXEL_SIZE_TOLERANCE = 0.05


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
    """

    factor: float
    zone_axis: str
    spread: float
    n_columns: int


def lattice_scale(xy, nn_distance: float, heights=None) -> LatticeScale | None:
    """The length scale of the column lattice ``xy`` (Å, shape (m, 2)) against close-packed zone axes.

    None where the columns are too few (fewer than 8 on one lattice) or
    their families are no zone axis up to a scale.
    """
    from refine.io.distortion import BRIGHT, lattice_families
    from refine.io.lattice import crystal_columns, lattice_grains

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
    return best if best.spread <= SCALE_SPREAD else None


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
    from refine.io.peaks import find_columns

    try:
        xy, height = find_columns(image, nn_distance)
    except InputError:
        return None
    if len(xy) < 8:
        return None
    scale = lattice_scale(xy, nn_distance, height)
    if scale is None or abs(scale.factor - 1.0) <= tolerance:
        return scale
    read_at = (image.metadata.get("resampled") or {}).get("from_pixel_size", image.pixel_size)
    log.warning("pixel size: the columns are spaced %.1f %% %s than %s %s's (%d columns): if the particle is that "
                "crystal, the image's pixel size is %.4g Å, not %.4g; give --pixel-size, or --undistort to correct "
                "scale and shear from the lattice", 100 * abs(1.0 - 1.0 / scale.factor),
                "closer" if scale.factor > 1 else "wider", element or "the element", scale.zone_axis,
                scale.n_columns, float(read_at) * scale.factor, float(read_at))
    return scale
