"""The surrogate's own error, as a noise term: calibrated once from cross-validation residuals.

The polynomial surrogate reproduces multislice to 1 − R² ≈ 0.01, but its
residual (≈ 5–10 % of a column's intensity) is larger than the shot noise of
any image recorded at a high dose. A χ² that weighs pixels by the shot noise
alone treats that residual as signal, and a refinement then bends the
particle to fit the surrogate's error. The likelihood that stays right adds
the model's error to the noise:

    σ²_total(I) = σ²_noise(I) + A · σ²_model(I),

with I the intensity (fraction of the incident beam), σ_model(I) the RMS
residual of pixels of intensity I (a table over intensity bins: it grows as
≈ I^0.7, from 1e-4 in vacuum to ≈ 7 % of the brightest columns) and A the
*correlation area*: the model's error is smooth (correlated over ≈ an
atom column, ρ = 0.5 at ≈ 0.5 Å), so an atom-sized difference between two
structures carries A times less information against it than against white
noise of the same variance. For the difference image d of one atom (a
Gaussian of the model's σ) and the power spectrum S(k) of the whitened
residuals r/σ_model (S = 1 for white noise),

    A = Σ_k |d̂(k)|² / Σ_k |d̂(k)|² / S(k),

the ratio of d's χ² under white noise to its χ² under the correlated error
(a stationary Gaussian process). The diagonal σ²_total keeps χ² a sum over
pixels (the fitness's closed-form intensity fit and the adjoint image forces
are unchanged) while atom-sized differences weigh what the correlated
likelihood says.

:func:`residual_images` makes the out-of-fold residual images of an
image-based cross-validation; :func:`calibrate_discrepancy` fits
:class:`surrogate.imaging.ModelDiscrepancy` to them. The model file stores it
(:attr:`surrogate.imaging.PolynomialSurrogate.discrepancy_`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.base import clone

from surrogate.common import InputError
from surrogate.imaging import ModelDiscrepancy
from surrogate.training.validation import _interior, _splits

__all__ = ["calibrate_discrepancy", "residual_images"]


def residual_images(template, convolution_images, multislice_images, *, folds: int = 2, repeats: int = 1,
                    seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Out-of-fold (prediction, residual) image pairs of an image-based cross-validation.

    Each image is predicted by a clone of ``template`` fitted on the other
    folds' images (as :func:`surrogate.training.cross_validate` with
    ``scheme="image"``), so its residual (multislice − prediction, fraction
    of the incident beam) is the model's error on a particle it has not
    seen. Images are the interiors (``template.border`` pixels trimmed).
    """
    conv, ms = list(convolution_images), list(multislice_images)
    if len(conv) != len(ms) or len(conv) < 2:
        raise InputError(f"need ≥ 2 pairs of convolution and multislice images, got {len(conv)} and {len(ms)}")
    if not 2 <= folds <= len(conv):
        raise InputError(f"folds must be between 2 and the number of images ({len(conv)}), got {folds}")
    h = template.border
    rng = np.random.default_rng(seed)
    predictions, residuals = [], []
    # the image scheme's folds of cross_validate, drawn the same way
    for _, _, test in _splits(len(conv), None, h, "image", folds, repeats, None, None, rng):
        test = [int(i) for i in test]
        train = [i for i in range(len(conv)) if i not in test]
        model = clone(template).fit([conv[i] for i in train], [ms[i] for i in train])
        for i in test:
            p = model.predict(conv[i])
            predictions.append(p)
            residuals.append(_interior(np.asarray(ms[i], dtype=float), h) - p)
    return predictions, residuals


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest to ``values`` in weighted least squares (pool adjacent violators)."""
    blocks = []  # [mean, weight, length]
    for v, w in zip(values, weights):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(n, v) for v, _, n in blocks])


def _sigma_table(predictions, residuals, bins: int) -> tuple[tuple, tuple]:
    """RMS residual over ``bins`` intensity bins of equal pixel count: (mean intensities, sigmas).

    Bins closer than 1 % of the intensity range are merged, and the binned
    variances made non-decreasing in intensity (isotonic regression): half
    of a particle image is vacuum, whose bins are only 1e-5 apart in
    intensity, and their scatter would otherwise make σ jump threefold
    between neighbouring intensities.
    """
    p = np.concatenate([np.ravel(a) for a in predictions])
    r = np.concatenate([np.ravel(a) for a in residuals])
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(idx).astype(float)
    total_i, total_r2 = np.bincount(idx, weights=p), np.bincount(idx, weights=r * r)
    # bins closer than 1 % of the intensity range are one: the vacuum of many images is one intensity
    spacing = 0.01 * float(np.quantile(p, 0.99) - p.min())
    merged = []  # [count, Σ I, Σ r²]
    for n, si, sr in zip(count, total_i, total_r2):
        if n == 0:
            continue
        if merged and si / n - merged[-1][1] / merged[-1][0] < spacing:
            merged[-1] = [merged[-1][0] + n, merged[-1][1] + si, merged[-1][2] + sr]
        else:
            merged.append([n, si, sr])
    m = np.array(merged)
    i_mean = m[:, 1] / m[:, 0]
    var = _isotonic(m[:, 2] / m[:, 0], m[:, 0])
    floor = max(float(np.sqrt(var.max())) * 1e-6, 1e-12)
    return tuple(float(v) for v in i_mean), tuple(float(max(np.sqrt(v), floor)) for v in var)


def _correlation_area(whitened, atom_sigma_px: float, smooth: float) -> tuple[float, float]:
    """A for an atom-sized Gaussian difference of σ ``atom_sigma_px``, and the ρ = 1/2 radius in pixels."""
    white_info = correlated_info = 0.0
    half_radii = []
    for w in whitened:
        m, n = w.shape
        w = w - w.mean()
        spectrum = np.abs(np.fft.fft2(w)) ** 2 / w.size  # = 1 everywhere for white noise of variance 1
        spectrum = np.fft.ifftshift(gaussian_filter(np.fft.fftshift(spectrum), smooth))
        yy, xx = np.indices((m, n))
        yy, xx = yy - m // 2, xx - n // 2
        atom = np.fft.ifftshift(np.exp(-(yy ** 2 + xx ** 2) / (2.0 * atom_sigma_px ** 2)))
        power = np.abs(np.fft.fft2(atom)) ** 2 / atom.size
        white_info += float(np.sum(atom ** 2))
        correlated_info += float(np.sum(power / np.maximum(spectrum, 1e-6)))
        acf = np.fft.fftshift(np.fft.ifft2(np.abs(np.fft.fft2(w)) ** 2).real)
        acf /= acf[m // 2, n // 2]
        r = np.hypot(yy, xx).ravel()
        below = r[acf.ravel() < 0.5]
        half_radii.append(float(below.min()) if below.size else float(r.max()))
    return max(white_info / correlated_info, 1.0), float(np.median(half_radii))


def calibrate_discrepancy(predictions, residuals, *, atom_sigma: float, pixel_size: float, bins: int = 20,
                          smooth: float = 2.0, source: str = "cross-validation") -> ModelDiscrepancy:
    """Fit :class:`ModelDiscrepancy` to residual images (e.g. from :func:`residual_images`).

    Parameters
    ----------
    predictions, residuals : sequences of 2-D arrays
        The model's image and multislice − model, fraction of the incident beam, pairwise of one shape.
    atom_sigma : float
        Å, σ of the Gaussian that stands for one atom's image (the model's convolution σ).
    pixel_size : float
        Å per pixel.
    bins : int
        Intensity bins of the σ_model(I) table.
    smooth : float
        Pixels of Gaussian smoothing of the residuals' power spectrum (a periodogram is noisy).
    """
    if len(predictions) != len(residuals) or not len(predictions):
        raise InputError("need one residual image per prediction, and at least one")
    for p, r in zip(predictions, residuals):
        if np.shape(p) != np.shape(r) or np.ndim(p) != 2:
            raise InputError("predictions and residuals must be pairs of 2-D arrays of one shape")
    intensities, sigmas = _sigma_table(predictions, residuals, bins)
    sigma = ModelDiscrepancy(intensities, sigmas, 1.0, 0.0, 0)
    whitened = [np.asarray(r, float) / sigma.sigma(p) for p, r in zip(predictions, residuals)]
    area, half_radius = _correlation_area(whitened, atom_sigma / pixel_size, smooth)
    return ModelDiscrepancy(intensities=intensities, sigmas=sigmas, correlation_area=area,
                            correlation_length=half_radius * pixel_size,
                            n_pixels=int(sum(np.size(r) for r in residuals)), source=source)
