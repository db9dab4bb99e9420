"""Noise models: the per-pixel weights w = 1/σ² of the fitness's χ² = Σ w·(I_exp − a·I − b)².

``noise`` of :func:`noise_weights` (and of :class:`refine.cost.fitness.Fitness`):

- ``<float>``: uniform σ (image units);
- ``<array>``: a σ map of the image's shape (see :func:`refine.io.read_sigma_map`);
- ``"poisson"`` with ``dose`` (e/Å²): the image is a fraction of the
  incident beam (as the surrogate's), so the counts are I·dose·Δ² and
  σ² = max(I_exp, 1/(dose·Δ²)) / (dose·Δ²) (Neyman's χ²: the variance from
  the data, which keeps the fit in closed form); without ``dose`` the image
  is taken as counts, σ² = max(I_exp, 1);
- ``"estimate"`` (default): a variance that grows with intensity,
  σ²(I) = g·max(I − b, g) + σ₀² (shot noise on a read-out floor; b the
  vacuum level), with g and σ₀² fitted to the image's own pixel-to-pixel
  noise (:func:`estimate_signal_dependent_noise`), logged;
- ``"uniform"``: one σ estimated from the image by Immerkær's Laplacian
  estimator (Comput. Vis. Image Underst. 64, 300, 1996,
  :func:`estimate_noise`), wrong for Poisson data (bright columns are
  noisier than vacuum).

**The model's own error.** With a ``discrepancy``
(:class:`surrogate.imaging.ModelDiscrepancy`, from the model file) the
variance of each pixel gains the surrogate's error, A·σ²_model(I), in image
units through ``beam_scale`` (image units per fraction of the incident beam,
and the vacuum level: (1, 0) for an image in beam units). The surrogate's
residual is larger than the shot noise of a high-dose image; without this
term χ² counts it as signal and the refinement bends the particle to fit
it. ``info["n_effective"]`` = Σ (σ²_noise + s²σ²_model)/σ²_total over the
valid pixels is χ²'s expectation for a perfect structure (the model error
is correlated over A pixels, so counts A times less per pixel), and the
fitness's χ²/px divides by it: ≈ 1 for the truth at any dose.

Excluded (masked) pixels get weight 0.
"""

from __future__ import annotations

import logging

import numpy as np

from refine.io import ExperimentalImage
from surrogate.common import InputError

__all__ = ["estimate_noise", "estimate_signal_dependent_noise", "noise_weights"]

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
    lap, ok = _laplacian(np.asarray(data, dtype=float), mask)
    if ok is not None:
        lap = lap[ok]
    if lap.size == 0:
        raise InputError("too few valid pixels to estimate the noise; give noise=σ")
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(lap)) / 6.0)


def _laplacian(d: np.ndarray, mask: np.ndarray | None):
    """L ⊛ d on the interior, shape (M−2, N−2), and where its 3×3 neighbourhood is all valid (None: everywhere)."""
    lap = (d[:-2, :-2] - 2 * d[:-2, 1:-1] + d[:-2, 2:]
           - 2 * d[1:-1, :-2] + 4 * d[1:-1, 1:-1] - 2 * d[1:-1, 2:]
           + d[2:, :-2] - 2 * d[2:, 1:-1] + d[2:, 2:])
    if mask is None or np.all(mask):
        return lap, None
    from scipy.ndimage import binary_erosion

    return lap, binary_erosion(mask, structure=np.ones((3, 3), bool))[1:-1, 1:-1]


def _local_mean_and_noise(d: np.ndarray, mask: np.ndarray | None):
    """Per pixel: the 3×3 mean and a noise sample (the Laplacian residual scaled to unit gain), valid pixels only."""
    lap, ok = _laplacian(d, mask)
    mean = sum(d[i:i + d.shape[0] - 2, j:j + d.shape[1] - 2] for i in range(3) for j in range(3)) / 9.0
    if ok is None:
        ok = np.ones(lap.shape, bool)
    # the kernel's weights square-sum to 36: lap/6 has the pixel noise's variance for white noise
    return mean[ok], lap[ok] / 6.0


def estimate_signal_dependent_noise(data: np.ndarray, mask: np.ndarray | None = None, *,
                                    bins: int = 16) -> tuple[float, float, float]:
    """Fit σ²(I) = g·max(I − b, 0) + σ₀² to an image's own noise: ``(g, σ₀², b)``, image units.

    Each pixel's noise sample is its Laplacian residual (which removes
    smooth structure; a HAADF image is smooth on the pixel scale where the
    probe is several pixels wide); the samples' variance is taken in bins
    of the local 3×3 mean, as 1.4826·median|·| squared (robust to the
    structure the Laplacian leaves at sharp peaks), and a straight line is
    fitted to variance against intensity. b is the 2nd percentile of the
    image (the vacuum level where there is vacuum). g, σ₀² ≥ 0 (σ₀² at least
    1e-6 of the largest binned variance).
    """
    d = np.asarray(data, dtype=float)
    mean, sample = _local_mean_and_noise(d, mask)
    if mean.size < 4 * bins:
        raise InputError("too few valid pixels to estimate the noise; give --noise σ or --dose")
    b = float(np.percentile(mean, 2.0))
    edges = np.unique(np.quantile(mean, np.linspace(0.0, 1.0, bins + 1)))
    idx = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, max(len(edges) - 2, 0))
    xs, vs = [], []
    for k in range(len(edges) - 1):
        sel = idx == k
        if sel.sum() >= 16:
            xs.append(max(float(np.mean(mean[sel])) - b, 0.0))
            vs.append((1.4826 * float(np.median(np.abs(sample[sel])))) ** 2)
    xs, vs = np.array(xs), np.array(vs)
    if xs.size < 2 or np.ptp(xs) <= 0:
        v = float(np.mean(vs)) if vs.size else 0.0
        return 0.0, max(v, 1e-30), b
    g, v0 = np.polyfit(xs, vs, 1, w=1.0 / np.maximum(vs, 1e-30))
    floor = 1e-6 * float(vs.max())
    return max(float(g), 0.0), max(float(v0), floor, 1e-30), b


def noise_weights(image: ExperimentalImage, noise="estimate", dose: float | None = None, *,
                  discrepancy=None, beam_scale: tuple[float, float] | None = None) -> tuple[np.ndarray, dict]:
    """Per-pixel χ² weights of an image under a noise model.

    Parameters
    ----------
    image : ExperimentalImage
    noise : "estimate", "uniform", "poisson", float or ndarray of shape ``image.shape``
        The noise model (see the module docstring); σ in image units.
    dose : float, optional
        e/Å², for ``noise="poisson"``.
    discrepancy : surrogate.imaging.ModelDiscrepancy, optional
        The model's own error, added to the variance.
    beam_scale : (float, float), optional
        (image units per fraction of the incident beam, vacuum level in image
        units), needed with ``discrepancy``; (1, 0) for an image in beam units.

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
            gain, var0, level = estimate_signal_dependent_noise(data, mask)
            # at least one count's variance (g² where I = g·counts): Poisson vacuum holds exact zeros
            var = gain * np.maximum(data - level, gain) + var0
            log.info("noise: σ² = %.4g·(I − %.4g) + %.4g (estimated from the image)", gain, level, var0)
            info = {"model": "signal-dependent", "gain": gain, "variance_floor": var0, "vacuum_level": level,
                    "estimated": True}
        elif key == "uniform":
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
            raise InputError(f"noise must be 'estimate', 'uniform', 'poisson', a σ or a σ map, got {noise!r}")
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
    if discrepancy is not None:
        if beam_scale is None:
            raise InputError("the model error needs the image's scale (beam_scale)")
        scale, level = (float(v) for v in beam_scale)
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(level)):
            raise InputError(f"beam scale must be a positive number of image units per beam fraction, got {scale!r}")
        model2 = scale * scale * discrepancy.sigma((data - level) / scale) ** 2
        total = var + discrepancy.correlation_area * model2
        n_effective = float(np.sum(((var + model2) / total)[mask]))
        var = total
        info["model_error"] = {"correlation_area": discrepancy.correlation_area, "beam_scale": scale,
                               "vacuum_level": level, "source": discrepancy.source}
    else:
        n_effective = float(image.n_valid)
    info["n_effective"] = n_effective
    w = np.where(mask, 1.0 / var, 0.0)
    return np.ascontiguousarray(w), info


def integrated_beam_scale(image: ExperimentalImage, model, symbols) -> tuple[float, float]:
    """(image units per fraction of the incident beam, vacuum level) of an image not in beam units.

    The integrated intensity of a HAADF image grows with the number of atoms
    (the scattering cross-sections that atom counting uses), so the image's
    Σ(I − b) over its valid pixels against the model's for a compact fcc
    cluster of the same atoms (``symbols``, one per atom, at their bulk
    nearest-neighbour distance) gives the scale; b
    is the image's 2nd-percentile level (vacuum). Good to ≈ 10 % for a
    particle of the expected size inside the valid pixels (channelling makes
    the cross-section per atom depend a little on the shape).
    """
    from ase import Atoms

    from surrogate.imaging import ProbeGrid

    from refine.search.geometry import nearest_neighbour_distance

    symbols = list(symbols)
    data, mask = image.data, image.mask
    level = float(np.percentile(data[mask], 2.0))
    signal = float(np.sum(data[mask] - level))
    nn = nearest_neighbour_distance(symbols)  # bulk, Å: 2.77 for Pt, 2.88 for Au
    r = np.arange(-12, 13)
    lattice = np.array(np.meshgrid(r, r, r, indexing="ij")).reshape(3, -1).T
    lattice = lattice[lattice.sum(axis=1) % 2 == 0] * (nn / np.sqrt(2))  # fcc: even coordinate sums
    order = np.argsort(np.linalg.norm(lattice, axis=1), kind="stable")
    cluster = Atoms(symbols, positions=lattice[order[:len(symbols)]])
    sim = model.simulate(cluster, ProbeGrid.around(cluster, pixel_size=image.pixel_size, margin=6.0))
    reference = float(np.sum(sim - sim.min()))
    if not (signal > 0 and reference > 0):
        raise InputError("the image has no intensity above its vacuum level to scale the model's error by")
    scale = signal / reference
    log.info("image scale from its integrated intensity: %.4g image units per beam fraction (vacuum %.4g)",
             scale, level)
    return scale, level
