"""Noise models: the per-pixel weights w = 1/σ² of the fitness's χ² = Σ w·(I_exp − a·I − b)².

``noise`` of :func:`noise_weights` (and of :class:`refine.cost.fitness.Fitness`):

- ``<float>``: uniform σ (image units);
- ``<array>``: a σ map of the image's shape (see :func:`refine.io.read_sigma_map`);
- ``"poisson"`` with ``dose`` (e/Å²): the image is a fraction of the
  incident beam (as the surrogate's), so the counts are I·dose·Δ² and
  σ² = max(I_exp, 1/(dose·Δ²)) / (dose·Δ²) (Neyman's χ²: the variance from
  the data, which keeps the fit in closed form); without ``dose`` the image
  is taken as counts, σ² = max(I_exp, 1);
- ``"estimate"`` (default): uniform σ estimated from the image by
  Immerkær's Laplacian estimator (Comput. Vis. Image Underst. 64, 300,
  1996, :func:`estimate_noise`) over the valid pixels, logged.

Excluded (masked) pixels get weight 0. Under a correct noise model
χ² / (number of valid pixels) ≈ 1 for a perfect structure.
"""

from __future__ import annotations

import logging

import numpy as np

from refine.io import ExperimentalImage
from surrogate.common import InputError

__all__ = ["estimate_noise", "noise_weights"]

log = logging.getLogger(__name__)


def estimate_noise(data: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Uniform Gaussian noise σ of an image (Immerkær 1996), image units.

    σ = √(π/2) · mean|L ⊛ I| / 6 with L = [[1,−2,1],[−2,4,−2],[1,−2,1]], over
    pixels whose 3×3 neighbourhood is entirely valid.

    Parameters
    ----------
    data : ndarray, shape (M, N)
    mask : ndarray of bool, shape (M, N), optional
        True where a pixel is used.
    """
    d = np.asarray(data, dtype=float)
    lap = (d[:-2, :-2] - 2 * d[:-2, 1:-1] + d[:-2, 2:]
           - 2 * d[1:-1, :-2] + 4 * d[1:-1, 1:-1] - 2 * d[1:-1, 2:]
           + d[2:, :-2] - 2 * d[2:, 1:-1] + d[2:, 2:])
    if mask is not None and not np.all(mask):
        from scipy.ndimage import binary_erosion

        ok = binary_erosion(mask, structure=np.ones((3, 3), bool))[1:-1, 1:-1]
        lap = lap[ok]
    if lap.size == 0:
        raise InputError("too few valid pixels to estimate the noise; give noise=σ")
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(lap)) / 6.0)


def noise_weights(image: ExperimentalImage, noise="estimate", dose: float | None = None) -> tuple[np.ndarray, dict]:
    """Per-pixel χ² weights of an image under a noise model.

    Parameters
    ----------
    image : ExperimentalImage
    noise : "estimate", "poisson", float or ndarray of shape ``image.shape``
        The noise model (see the module docstring); σ in image units.
    dose : float, optional
        e/Å², for ``noise="poisson"``.

    Returns
    -------
    weights : ndarray, shape ``image.shape``
        mask/σ² (C-contiguous; 0 on excluded pixels).
    info : dict
        What was used (``model``, σ, dose…), for the run summary.
    """
    data, mask = image.data, image.mask
    info: dict = {}
    if isinstance(noise, str):
        key = noise.lower()
        if key == "estimate":
            sigma = estimate_noise(data, mask)
            span = float(np.ptp(data[mask]))
            floor = 1e-9 * span
            if sigma <= floor:
                log.warning("estimated noise σ=%g is ~0 (noiseless image?); using %g", sigma, floor)
                sigma = floor
            log.info("noise: uniform σ = %.6g (estimated from the image)", sigma)
            var = np.full(data.shape, sigma * sigma)
            info = {"model": "uniform", "sigma": sigma, "estimated": True}
        elif key == "poisson":
            if dose is not None:
                dose = float(dose)
                if not (np.isfinite(dose) and dose > 0):
                    raise InputError(f"dose must be a positive number of e/Å², got {dose!r}")
                per_pixel = dose * image.pixel_size ** 2
                var = np.maximum(data, 1.0 / per_pixel) / per_pixel
                info = {"model": "poisson", "dose": dose, "electrons_per_pixel": per_pixel}
            else:
                var = np.maximum(data, 1.0)
                info = {"model": "poisson", "dose": None, "units": "counts"}
        else:
            raise InputError(f"noise must be 'estimate', 'poisson', a σ or a σ map, got {noise!r}")
    elif np.ndim(noise) == 0:
        sigma = float(noise)
        if not (np.isfinite(sigma) and sigma > 0):
            raise InputError(f"noise σ must be a positive number, got {noise!r}")
        var = np.full(data.shape, sigma * sigma)
        info = {"model": "uniform", "sigma": sigma}
    else:
        s = np.asarray(noise, dtype=float)
        if s.shape != data.shape:
            raise InputError(f"σ map shape {s.shape} does not match the image shape {data.shape}")
        if not np.all(np.isfinite(s[mask])) or np.any(s[mask] <= 0):
            raise InputError("σ map must be positive and finite on every valid pixel")
        var = np.where(mask, s, 1.0) ** 2
        info = {"model": "map"}
    w = np.where(mask, 1.0 / var, 0.0)
    return np.ascontiguousarray(w), info
