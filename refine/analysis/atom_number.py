"""How many atoms the image shows: its integrated intensity over the model's cross-section per atom.

The scattering cross-section of a column grows with its height, but not in
proportion: the surrogate's cross-section per Pt atom is 0.021 Å² for a lone
atom and 0.033 Å² in a straight column of ten (channelling; the model's
nonlinearity). So N = Σ(I − b)·Δ² / σ_atom needs the height the intensity
comes from. A global height from the estimate's own size (a compact particle
of N atoms is ≈ 0.75·D thick) fails for a particle off its zone axis, whose
atoms overlap less than that in projection: it gives −19 % on the shipped
10°-tilted Pt70 and −27 % for an octahedron in a random orientation
(``tests/refine/test_atom_number.py::test_estimator_over_orientations``
prints them). We take the height where it is seen instead:

1. the **library**: isolated straight columns of n = 1..N_max atoms of the
   element through the model, their cross-section σ(n) (the whole image of
   the column above the model's vacuum level) and peak intensity P(n);
2. each valid pixel's **local height** h(p): its neighbourhood's peak
   (maximum of I − b within :data:`PEAK_RADIUS` Å, so a column's tails take
   its peak) placed on P(n), clamped to [1, N_max];
3. N = Σ_p (I_p − b)·Δ² / ρ(h(p)) with ρ(h) = σ(h)/h interpolated; b is the
   image's vacuum level (:func:`refine.analysis.cross_sections.vacuum_level`;
   the image's own intensity is used as it is, without a model of a support);
4. the **uncertainty** (one σ, atoms) adds in quadrature
   * the spread of the per-atom cross-section over the plausible heights:
     half the difference of N with every h(p) lowered and raised by half an
     atom (a peak tells a column's height to ± ½ atom; the spread is ≈ 9 %
     where columns are 1-2 atoms high, where per-atom values change fastest,
     and ≈ 2 % at 4 atoms);
   * the noise: Σ_p var(I_p)·(Δ²/ρ_p)², var from the image's own
     pixel-to-pixel noise (:func:`refine.cost.noise.estimate_signal_dependent_noise`).

The image must be in units of the incident beam, at the model's pixel size,
with the whole particle inside its valid pixels and vacuum at its border.
One element only: the image's intensity cannot tell two elements' shares
apart. Lengths in Å, cross-sections in Å² × fraction of the incident beam.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["AtomNumberEstimate", "PEAK_RADIUS", "column_height_library", "estimate_atom_number"]

log = logging.getLogger(__name__)

#: Å; a pixel's local height comes from the brightest pixel this close (about one PSF width)
PEAK_RADIUS = 0.6
#: Å; the image and the library are blurred this much before their peaks are taken (noise at low dose
#: would otherwise raise every local maximum, and with it the heights)
PEAK_SMOOTHING = 0.1
#: tallest column of the library (atoms)
LIBRARY_HEIGHT = 40
#: Å; the isolated column's image reaches this far (its cross-section is integrated over all of it)
_LIBRARY_HALF_WIDTH = 4.0


@dataclass(frozen=True)
class AtomNumberEstimate:
    """The number of atoms behind an image.

    Attributes
    ----------
    element : str
    n : int
        The estimate, rounded.
    n_exact : float
        Before rounding.
    uncertainty : float
        One standard deviation (atoms): ``sqrt(height_uncertainty² + noise_uncertainty²)``.
    height_uncertainty, noise_uncertainty : float
        Its two parts (atoms).
    integrated_intensity : float
        Σ(I − b)·Δ² over the valid pixels (Å² × fraction of the incident beam).
    background : float
        b, the image's vacuum level (image units).
    mean_height : float
        Intensity-weighted mean local height (atoms).
    per_atom_cross_section : float
        integrated_intensity / n_exact (Å²).
    method : str
    """

    element: str
    n: int
    n_exact: float
    uncertainty: float
    height_uncertainty: float
    noise_uncertainty: float
    integrated_intensity: float
    background: float
    mean_height: float
    per_atom_cross_section: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def column_height_library(model, element: str, n_max: int = LIBRARY_HEIGHT):
    """Cross-section σ(n) (Å²) and peak P(n) (beam fraction, above the model's vacuum) of isolated straight columns.

    Returns
    -------
    (heights, sigma, peak) : ndarrays, shape (n_max,)
        heights = 1..n_max.
    """
    from ase import Atoms

    from surrogate.imaging import ProbeGrid

    dx = float(model.convolution_parameters.pixel_size)
    k = int(math.ceil(_LIBRARY_HALF_WIDTH / dx))
    grid = ProbeGrid(origin=(-k * dx, -k * dx), shape=(2 * k + 1, 2 * k + 1), pixel_size=dx)
    h = model.border
    vacuum = float(np.median(model.predict(np.zeros((2 * h + 3, 2 * h + 3)))))
    heights = np.arange(1, n_max + 1)
    sigma, peak = np.empty(n_max), np.empty(n_max)
    for i, n in enumerate(heights):
        # the convolution image is a projection: n atoms on one (x, y) make a straight column of any spacing
        sim = model.simulate(Atoms(element * int(n), positions=np.zeros((n, 3))), grid) - vacuum
        sigma[i] = float(sim.sum()) * dx * dx
        peak[i] = float(_smoothed(sim, dx).max())
    return heights, sigma, peak


def _smoothed(data: np.ndarray, pixel_size: float) -> np.ndarray:
    """``data`` blurred by a Gaussian of :data:`PEAK_SMOOTHING` Å (so that a peak is not a noise maximum)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(data, PEAK_SMOOTHING / pixel_size, mode="nearest")


def _disc(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px ** 2


def estimate_atom_number(image, model, element: str) -> AtomNumberEstimate:
    """Estimate the number of ``element`` atoms behind ``image`` (see the module docstring).

    Parameters
    ----------
    image : refine.io.ExperimentalImage
        In units of the incident beam, at the model's pixel size (Å).
    model : PolynomialSurrogate
    element : str
        One of the model's elements.

    Returns
    -------
    AtomNumberEstimate
    """
    from scipy.ndimage import maximum_filter

    from refine.analysis.cross_sections import vacuum_level
    from refine.cost.noise import estimate_signal_dependent_noise

    dx = float(model.convolution_parameters.pixel_size)
    if abs(image.pixel_size - dx) > 1e-3 * dx:
        raise InputError(f"image pixel size {image.pixel_size:.6g} Å differs from the model's {dx:.6g} Å")
    model.check_elements([element])
    heights, sigma, peak = column_height_library(model, element)
    # heights are told apart by their peaks only while the peaks grow: the library stops where they do not
    top = int(np.argmax(np.append(np.diff(peak) <= 0, True))) + 1
    if top < 2:
        raise InputError(f"the model's {element} column peaks do not grow with height; give the number of atoms")
    heights, sigma, peak = heights[:top], sigma[:top], peak[:top]
    b = vacuum_level(image)
    signal = np.where(image.mask, image.data - b, 0.0)
    total = float(signal.sum()) * dx * dx
    if not total > 0:
        raise InputError("the image has no intensity above its vacuum level to count atoms from")
    local_peak = maximum_filter(_smoothed(signal, dx), footprint=_disc(max(1, int(round(PEAK_RADIUS / dx)))), mode="nearest")
    h = np.interp(local_peak, peak, heights)  # below one atom's peak: 1, above the library's top: n_max
    per_atom = sigma / heights

    def count(hh):
        rho = np.interp(np.clip(hh, heights[0], heights[-1]), heights, per_atom)
        return float((signal / rho).sum()) * dx * dx, rho

    n_exact, rho = count(h)
    if not n_exact >= 0.5:
        raise InputError(f"the image's intensity above its vacuum level ({b:.4g}, from the edge of its valid pixels) "
                         f"comes to {n_exact:.3g} {element} atoms: is there vacuum around the particle? Give the number")
    n_low, _ = count(h + 0.5)  # taller columns scatter more per atom: fewer atoms
    n_high, _ = count(h - 0.5)
    height_unc = 0.5 * abs(n_high - n_low)
    g, v0, _ = estimate_signal_dependent_noise(image.data, image.mask)
    var = (g * np.clip(signal, 0.0, None) + v0) * image.mask
    noise_unc = float(np.sqrt(np.sum(var * (dx * dx / rho) ** 2)))
    weights = np.clip(signal, 0.0, None)
    mean_height = float((weights * h).sum() / weights.sum())
    est = AtomNumberEstimate(
        element=element, n=max(1, int(round(n_exact))), n_exact=n_exact,
        uncertainty=float(math.hypot(height_unc, noise_unc)), height_uncertainty=height_unc,
        noise_uncertainty=noise_unc, integrated_intensity=total, background=b, mean_height=mean_height,
        per_atom_cross_section=total / n_exact,
        method=("integrated intensity above the vacuum level / the model's cross-section per atom of an isolated "
                f"straight column of each pixel's local height (peak within {PEAK_RADIUS} Å); uncertainty: "
                "heights ± 0.5 atom and pixel noise"))
    log.info("atoms from the image: %s%d ± %.0f (heights ± ½: %.1f, noise: %.1f; mean local height %.1f atoms, "
             "%.4g Å² per atom)", element, est.n, est.uncertainty, height_unc, noise_unc, mean_height,
             est.per_atom_cross_section)
    return est
