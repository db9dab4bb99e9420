"""Linear scan distortion measured on the crystal lattice of a zone-axis image, and the image corrected for it.

A STEM image is scanned line by line: drift, a fast-scan direction that is
not quite orthogonal to the slow one, and a pixel size that is a few per
cent off all make the image a linearly distorted picture of the specimen.
The surrogate renders an undistorted one, so a refinement of a distorted
image strains the particle to fit it (the StatSTEM Pt–Ir example's nearest
column spacings are 2.30, 2.40 and 2.70 Å where Pt [110] has 2.38, 2.38 and
2.77). Microscopists correct such images against a known lattice; here:

1. **Neighbour families** (:func:`lattice_families`): the vectors from each
   bright column (:func:`refine.io.peaks.find_columns`, peaks above
   :data:`BRIGHT` of the highest: the particle's thin edge is left out) to its
   neighbours within 1.3 column spacings, folded to a half plane (v and −v
   are one), grouped by direction (peaks of a 5° histogram of their angle,
   then the mean vector of each group).
2. **Zone axis** (:data:`ZONE_AXIS_FAMILIES`): the measured families are
   matched to the nearest-neighbour families of a close-packed zone axis
   (fcc [110]: two of 0.866 bonds 70.5° apart and one of 1 bond between
   them; [100]: two of 0.707 bonds at 90°), over all assignments and signs.
3. **Correction** (:func:`measure_distortion`): the linear map G with
   G·mᵢ ≈ uᵢ (least squares over the matched families mᵢ → uᵢ) is split
   into a rotation and a symmetric stretch, G = R·S (polar decomposition);
   S alone is the correction (the particle's orientation in the image is
   the refinement's business, not the preparation's). S is refused when
   it is further than :data:`MAX_STRAIN` from the identity (no lattice, or
   the wrong element).
   (:func:`correct_distortion` measures a twinned particle on the columns
   of one grain, :func:`refine.io.lattice.lattice_grains`: its grains'
   directions together can match no zone axis, or one with the wrong S.)
4. :func:`undistort` resamples the image by S about its centre (cubic
   spline; the mask by nearest neighbour, pixels that come from outside the
   image are excluded) and appends an ``"undistort"`` step, with S, the
   principal stretches and the matched families, to
   ``metadata["preparation"]`` (so ``summary.json`` keeps it).

Lengths in Å; the matrices act on (x, y) = (first, second image axis).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from surrogate.common import InputError

__all__ = ["ZONE_AXIS_FAMILIES", "MAX_STRAIN", "BRIGHT", "Distortion", "lattice_families", "measure_distortion",
           "undistort", "correct_distortion"]

log = logging.getLogger(__name__)

#: nearest-neighbour column vectors of close-packed zone axes, in bond lengths (one of each ±pair)
ZONE_AXIS_FAMILIES = {
    "[110]": np.array([[np.sqrt(0.5), 0.5], [np.sqrt(0.5), -0.5], [0.0, 1.0]]),
    "[100]": np.array([[np.sqrt(0.5), 0.0], [0.0, np.sqrt(0.5)]]),
}
#: largest accepted |S − 1| (any principal stretch): beyond it the image is not this lattice
MAX_STRAIN = 0.15
#: columns whose peak is at least this fraction of the highest measure the lattice
BRIGHT = 0.3


@dataclass(frozen=True)
class Distortion:
    """A measured linear distortion: the correction ``S`` (2×2, symmetric) and how it was found.

    Attributes
    ----------
    matrix : ndarray, shape (2, 2)
        S: corrected (x, y) = S·(measured (x, y) − centre) + centre.
    zone_axis : str
        The :data:`ZONE_AXIS_FAMILIES` key matched.
    measured, ideal : ndarray, shape (k, 2)
        The matched families, Å (measured in the image, ideal for the element).
    residual : float
        RMS of S·R-corrected measured families against the ideal ones, Å.
    """

    matrix: np.ndarray
    zone_axis: str
    measured: np.ndarray
    ideal: np.ndarray
    residual: float

    @property
    def stretches(self) -> np.ndarray:
        """Principal stretches of S (1 = no distortion), ascending."""
        return np.linalg.eigvalsh(self.matrix)

    def record(self) -> dict:
        """JSON-ready summary (for ``summary.json`` and the log)."""
        return {"zone_axis": self.zone_axis, "matrix": self.matrix.round(5).tolist(),
                "principal_stretches": self.stretches.round(5).tolist(),
                "measured_families": self.measured.round(4).tolist(),
                "ideal_families": self.ideal.round(4).tolist(), "residual": round(float(self.residual), 4)}


def lattice_families(xy, *, k: int = 3, bin_degrees: float = 5.0) -> np.ndarray:
    """The ``k`` most common neighbour vectors of the column positions ``xy`` (Å, (m, 2)), shape ``(k, 2)``.

    Each is the mean of the vectors whose direction (mod 180°) falls within
    one bin of a histogram peak; peaks closer than 20° to a stronger one are
    skipped.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) < 8:
        raise InputError(f"only {len(xy)} columns found: too few to measure a lattice")
    from refine.analysis.columns import median_neighbour_distance

    pairs = cKDTree(xy).query_pairs(1.3 * median_neighbour_distance(xy), output_type="ndarray")
    vec = xy[pairs[:, 1]] - xy[pairs[:, 0]]
    angle = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 180.0
    vec[np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 360.0 >= 180.0] *= -1.0  # fold: v and −v are one
    bins = int(round(180.0 / bin_degrees))
    hist, edges = np.histogram(angle, bins=bins, range=(0.0, 180.0))
    centres = 0.5 * (edges[1:] + edges[:-1])
    # smooth over neighbouring bins (circular), so that a family split between two bins is one peak
    smooth = hist + np.roll(hist, 1) + np.roll(hist, -1)
    chosen: list[float] = []
    for b in np.argsort(-smooth, kind="stable"):
        if smooth[b] == 0 or len(chosen) == k:
            break
        if all(min(abs(centres[b] - c), 180.0 - abs(centres[b] - c)) >= 20.0 for c in chosen):
            chosen.append(float(centres[b]))
    if len(chosen) < k:
        raise InputError(f"found {len(chosen)} lattice directions among the columns, need {k}")
    out = []
    for c in chosen:
        diff = (angle - c + 90.0) % 180.0 - 90.0
        sel = np.abs(diff) <= 1.5 * bin_degrees
        v = vec[sel]
        # align the signs with the family's direction before averaging (folding can split a family at 0°/180°)
        ref = np.array([np.cos(np.radians(c)), np.sin(np.radians(c))])
        v = v * np.sign(v @ ref)[:, None]
        out.append(v.mean(axis=0))
    return np.array(out)


def _polar_stretch(g: np.ndarray) -> np.ndarray:
    """S of the polar decomposition G = R·S (S symmetric positive definite)."""
    u, s, vt = np.linalg.svd(g)
    return vt.T @ np.diag(s) @ vt


def measure_distortion(xy, nn_distance: float, *, zone_axes=None) -> Distortion:
    """The linear distortion of the column lattice ``xy`` (Å) against close-packed zone axes (module docstring).

    Raises
    ------
    InputError
        No zone axis matches within :data:`MAX_STRAIN`.
    """
    best = None
    for name in zone_axes or ZONE_AXIS_FAMILIES:
        ideal = ZONE_AXIS_FAMILIES[name] * float(nn_distance)
        measured = lattice_families(xy, k=len(ideal))
        for perm in itertools.permutations(range(len(ideal))):
            for signs in itertools.product((1.0, -1.0), repeat=len(ideal)):
                target = ideal[list(perm)] * np.array(signs)[:, None]
                # G·mᵢ = tᵢ in least squares: G = Tᵀ M (MᵀM)⁻¹ for rows mᵢ, tᵢ
                g = np.linalg.lstsq(measured, target, rcond=None)[0].T
                if np.linalg.det(g) <= 0:
                    continue  # a mirror is no scan distortion
                s = _polar_stretch(g)
                resid = float(np.sqrt(np.mean(np.sum((measured @ g.T - target) ** 2, axis=1))))
                strain = float(np.max(np.abs(np.linalg.eigvalsh(s) - 1.0)))
                key = (resid + 0.1 * strain * nn_distance, strain)
                if best is None or key < best[0]:
                    best = (key, Distortion(s, name, measured, target, resid))
    if best is None or best[0][1] > MAX_STRAIN:
        raise InputError("the image's columns match no close-packed zone axis within "
                         f"{100 * MAX_STRAIN:.0f} % (is the particle on a zone axis, and the element right?)")
    return best[1]


def undistort(image, distortion: Distortion):
    """``image`` (a :class:`refine.io.ExperimentalImage`) resampled by the correction S about its centre.

    Pixel (i, j) of the result is at the same probe position as before;
    its value is the input's at S⁻¹·(r − c) + c (cubic spline, the mask by
    nearest neighbour; pixels from outside the input are excluded).
    """
    from scipy.ndimage import affine_transform

    s_inv = np.linalg.inv(distortion.matrix)
    centre = 0.5 * (np.array(image.shape, dtype=float) - 1.0)
    offset = centre - s_inv @ centre  # in pixel indices (Δ is the same along both axes)
    data = np.where(image.mask, image.data, np.nan)
    fill = float(np.nanmedian(data)) if np.isfinite(data).any() else 0.0
    out = affine_transform(np.nan_to_num(data, nan=fill), s_inv, offset=offset, order=3, mode="nearest")
    inside = affine_transform(np.ones(image.shape), s_inv, offset=offset, order=0, mode="constant", cval=0.0) > 0.5
    mask = affine_transform(image.mask.astype(float), s_inv, offset=offset, order=0, mode="constant",
                            cval=0.0) > 0.5
    meta = dict(image.metadata)
    step = {"step": "undistort", "parameters": {"method": "lattice"}, "values": distortion.record()}
    meta["preparation"] = [*(meta.get("preparation") or []), step]
    return replace(image, data=out, mask=mask & inside, metadata=meta)


def correct_distortion(image, nn_distance: float):
    """``image`` with its linear scan distortion measured on its columns and undone; the :class:`Distortion` too.

    Where the columns are not one crystal (the largest lattice of
    :func:`refine.io.lattice.lattice_grains` holds less than
    :data:`~refine.io.lattice.ONE_LATTICE` of them: a twinned particle, whose
    grains' neighbour directions mix), the distortion is measured on the
    largest grain that matches a zone axis: a scan distorts every grain alike.

    Raises
    ------
    InputError
        Too few columns, or no close-packed zone axis matches, neither all
        columns nor any grain (the image is not a resolved zone-axis image
        of this element).
    """
    from refine.io.lattice import crystal_columns, lattice_grains
    from refine.io.peaks import find_columns

    xy, height = find_columns(image, nn_distance)
    bright = height >= BRIGHT * height.max()
    # a twinned particle's grains mixed can even match a zone axis with the wrong distortion; the scan distorts
    # every grain alike, so it is measured on the largest grain that is a zone axis
    first = None
    for k, columns in enumerate(crystal_columns(lattice_grains(xy, nn_distance, height), len(xy))):
        try:
            distortion = measure_distortion(xy[columns[bright[columns]]], nn_distance)
        except InputError as exc:
            first = first or exc
            continue
        where = (f"the {len(xy)} columns" if len(columns) == len(xy)
                 else f"grain {k + 1} ({len(columns)} of the {len(xy)} columns, on one lattice)")
        break
    else:
        raise first
    a, b = distortion.stretches
    log.info("scan distortion measured on the %s lattice of %s: principal stretches %.4f and %.4f "
             "(residual %.3f Å); image corrected", distortion.zone_axis, where, a, b, distortion.residual)
    return undistort(image, distortion), distortion
