"""The effective source size of an image, from the width of its atom columns.

A HAADF image is the image of a point source blurred by the source size, a
Gaussian of FWHM s (Combs et al. 2019 blur their multislice images by one of
88 pm). Where s is unknown — an image without metadata, such as the Pt–Ir
text image — it can be read off the image itself, because the blur widens
every atom column:

1. **Column width.** :func:`column_width` finds the columns (local maxima
   of the image smoothed by 0.2 Å, at least ``min_separation`` Å apart,
   above 30 % of the way from background to the brightest) and fits the
   pixels within ``window`` Å of the brightest ones by a constant plus one
   Gaussian per column, A_j·exp(−|r − r_j|²/2w²), all with one width w
   (amplitudes by linear least squares, w by a bounded scalar search).
   Modelling every column keeps a neighbour's tail out of a column's width;
   the standard error comes from fitting four disjoint groups of columns.
2. **Trial blurs.** A *reference* image — the same microscope with a known
   source size s₀, of a zone-axis particle of the same element (the
   surrogate model's own image, or an abTEM image at s₀ = 0) — is blurred by
   trial Gaussians of FWHM b = 0, 0.1, … Å and its width measured
   the same way. The b whose width matches the image's gives the source
   size s = √(s₀² + b²) (Gaussian blurs add in quadrature).

Because the image and the reference go through one estimator, its biases
(probe tails, neighbouring columns inside the window, pixelation) cancel to
first order; what does not cancel is any difference between the particles'
columns (thickness, zone axis, composition) and any blur the reference
lacks (scan noise, drift, vibration, which the estimate absorbs: it is an
*effective* source size). An image *sharper* than the reference (b < 0) is
extrapolated in quadrature and flagged. On convolution images of other
particle shapes with 2 % noise it recovers blurs of 0.5 and 1.0 Å FWHM to
±0.05 Å; on real images expect ±0.1–0.2 Å. Blurs above ≈ 1.5 Å merge the
columns of a zone-axis Pt particle and are not measurable this way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage, optimize

from surrogate.common import InputError

__all__ = ["read_image_for_fit", "column_width", "SourceFit", "fit_source_size", "FWHM_PER_SIGMA"]

logger = logging.getLogger(__name__)

#: FWHM = FWHM_PER_SIGMA · σ for a Gaussian.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _gaussian_blur(image: np.ndarray, pixel_size: float, fwhm: float) -> np.ndarray:
    # as surrogate.groundtruth.multislice.apply_source_size: embedded in its border's median
    if fwhm <= 0:
        return image
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return ndimage.gaussian_filter(image, fwhm / FWHM_PER_SIGMA / pixel_size, mode="constant",
                                   cval=float(np.median(border)), truncate=4.0)


def _peaks(image: np.ndarray, pixel_size: float, min_separation: float, window: float, max_peaks: int):
    smooth = ndimage.gaussian_filter(image, 0.2 / pixel_size)  # against noise maxima; keeps columns 1.2 Å apart
    size = max(3, int(round(min_separation / pixel_size)) | 1)
    is_max = smooth == ndimage.maximum_filter(smooth, size=size, mode="nearest")
    lo, hi = np.percentile(smooth, [10, 99.5])
    is_max &= smooth > lo + 0.3 * (hi - lo)
    r = int(np.ceil(window / pixel_size)) + 1
    is_max[:r] = is_max[-r:] = False
    is_max[:, :r] = is_max[:, -r:] = False
    ij = np.argwhere(is_max)
    if len(ij) > max_peaks:  # the brightest: the particle's columns, not noise in thin regions
        ij = ij[np.argsort(smooth[is_max])[::-1][:max_peaks]]
    return ij, r


def _centres(img: np.ndarray, ij: np.ndarray) -> np.ndarray:
    """Sub-pixel centres (pixel units) of maxima: centroid of each 3×3 neighbourhood above its minimum."""
    dy, dx = np.mgrid[-1:2, -1:2]
    patches = img[ij[:, 0, None, None] + dy, ij[:, 1, None, None] + dx]
    w = np.clip(patches - patches.min(axis=(1, 2), keepdims=True), 0, None) + 1e-300
    total = w.sum(axis=(1, 2))
    return ij + np.stack([(w * dy).sum(axis=(1, 2)) / total, (w * dx).sum(axis=(1, 2)) / total], axis=1)


def _shared_width(y: np.ndarray, d2: np.ndarray) -> float:
    """σ (Å) of c + Σ_j A_j exp(−d²_j/2σ²) fitted to pixels ``y`` at squared distances ``d2`` (pixels × columns)."""
    def residual(sigma):
        a = np.exp(-d2 / (2 * sigma * sigma))
        a = np.hstack([a, np.ones((len(y), 1))])
        gram = a.T @ a
        coef = np.linalg.lstsq(gram, a.T @ y, rcond=1e-12)[0]
        return float(np.sum((a @ coef - y) ** 2))

    return float(optimize.minimize_scalar(residual, bounds=(0.05, 1.6), method="bounded",
                                          options={"xatol": 5e-4}).x)


def column_width(image, pixel_size: float, *, window: float = 0.6, min_separation: float = 1.2,
                 max_columns: int = 80, groups: int = 0) -> tuple[float, int, float]:
    """The Gaussian width σ (Å) shared by the atom columns of an image.

    Every column found (local maxima, module docstring) is a Gaussian of its
    own amplitude at its sub-pixel centre; one σ and a constant background are
    fitted to the pixels within ``window`` Å of the ``max_columns`` brightest
    (amplitudes by linear least squares for each σ; σ by a bounded scalar
    search). Fitting all columns at once keeps a neighbour's tail out of a
    column's width.

    Parameters
    ----------
    image : array_like, shape (M, N)
        Any intensity units and offset.
    pixel_size : float
        Å per pixel.
    groups : int
        If ≥ 2, also fit σ on that many disjoint groups of the columns and
        return the standard error of their mean (else 0).

    Returns
    -------
    sigma : float
        Å.
    n_columns : int
        Columns fitted.
    standard_error : float
        Å (0 unless ``groups`` ≥ 2).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise InputError("column widths need a finite 2-D image")
    if not pixel_size > 0:
        raise InputError(f"pixel size must be > 0 Å, got {pixel_size!r}")
    if window / pixel_size < 2:
        raise InputError(f"pixels of {pixel_size:g} Å are too coarse to measure column widths "
                         f"(need at least 2 per {window:g} Å)")
    ij, r = _peaks(img, pixel_size, min_separation, window, 4 * max_columns)
    if len(ij) == 0:
        return float("nan"), 0, 0.0
    centres = _centres(img, ij) * pixel_size  # Å, every maximum found: neighbours are modelled too
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = (dx * dx + dy * dy) * pixel_size**2 <= window**2
    offsets = np.stack([dy[inside], dx[inside]], axis=1)

    def fit(chosen):
        pix = np.unique((ij[chosen, None, :] + offsets[None]).reshape(-1, 2), axis=0)
        xy = pix * pixel_size
        d2 = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        keep = (d2 < (window + 2.5) ** 2).any(axis=0)  # columns that can reach a fitted pixel
        return _shared_width(img[pix[:, 0], pix[:, 1]], d2[:, keep])

    n = min(len(ij), max_columns)
    sigma = fit(np.arange(n))
    se = 0.0
    if groups >= 2 and n >= 2 * groups:
        parts = [fit(np.arange(g, n, groups)) for g in range(groups)]
        se = float(np.std(parts, ddof=1) / np.sqrt(groups))
    return sigma, n, se


@dataclass
class SourceFit:
    """An effective source size fitted to an image.

    Attributes
    ----------
    source_size : float
        FWHM in Å of the Gaussian source-size blur.
    low, high : float
        Å; the estimate at the image's column width ∓ one standard error.
    extra_blur : float
        FWHM in Å of the blur added to the reference (negative: the image is
        sharper than the reference and the estimate is extrapolated).
    reference_source_size : float
        s₀, the reference's own source size (Å FWHM).
    image_width, reference_width : float
        Column σ (Å) of the image and of the unblurred reference.
    n_columns, n_reference_columns : int
    extrapolated : bool
        True where the image is sharper than the reference.
    """

    source_size: float
    low: float
    high: float
    extra_blur: float
    reference_source_size: float
    image_width: float
    reference_width: float
    n_columns: int
    n_reference_columns: int
    extrapolated: bool

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def fit_source_size(image, pixel_size: float, reference, reference_pixel_size: float, *,
                    reference_source_size: float = 0.0, max_blur: float = 2.0, step: float = 0.1,
                    window: float = 0.6, min_separation: float = 1.2) -> SourceFit:
    """Fit the effective source size of ``image`` by blurring ``reference`` (module docstring).

    Parameters
    ----------
    image : array_like, shape (M, N)
        The image whose source size is unknown.
    pixel_size : float
        Å per pixel of ``image``.
    reference : array_like, shape (K, L)
        An image of a zone-axis particle with the same microscope and element,
        made with source size ``reference_source_size`` (Å FWHM).
    reference_pixel_size : float
        Å per pixel of ``reference``.
    max_blur, step : float
        Å; the trial blurs (FWHM) are 0, step, … up to ``max_blur``, stopping
        once the blurred reference is wider than the image; widths between
        trials are interpolated.

    Raises
    ------
    InputError
        Fewer than 5 columns found in the image or the reference.
    """
    w_img, n_img, se = column_width(image, pixel_size, window=window, min_separation=min_separation, groups=4)
    if n_img < 5:
        raise InputError(f"found {n_img} atom columns in the image; need at least 5 to fit the source size "
                         "(is it an atomic-resolution image of a particle, with the right pixel size?)")
    ref = np.asarray(reference, dtype=np.float64)
    blurs, ref_w, n_ref = [], [], 0
    for b in np.arange(0.0, max_blur + step / 2, step):
        wb, nb, _ = column_width(_gaussian_blur(ref, reference_pixel_size, b), reference_pixel_size, window=window,
                                 min_separation=min_separation)
        if nb < 5:
            if b == 0:
                raise InputError(f"found {nb} atom columns in the reference; need at least 5")
            break  # blurred so far that the columns merge: the trials end here
        n_ref = n_ref or nb
        blurs.append(float(b))
        ref_w.append(wb)
        if wb > w_img + 3 * se + 0.01:
            break
    blurs = np.array(blurs)
    ref_w = np.maximum.accumulate(np.array(ref_w))  # a blur never narrows a column: remove estimator jitter
    s0 = float(reference_source_size)

    def source(width: float) -> tuple[float, float]:
        if width <= ref_w[0]:  # sharper than the reference: quadrature on the widths (σ² adds)
            extra2 = -(ref_w[0] ** 2 - width**2) * FWHM_PER_SIGMA**2
        else:
            if width > ref_w[-1]:
                logger.warning("the image's columns are wider than the reference blurred by %g Å", blurs[-1])
            extra2 = float(np.interp(width, ref_w, blurs)) ** 2
        return float(np.sqrt(max(s0 * s0 + extra2, 0.0))), float(np.sign(extra2) * np.sqrt(abs(extra2)))

    s, extra = source(w_img)
    return SourceFit(source_size=s, low=source(w_img - se)[0], high=source(w_img + se)[0], extra_blur=extra,
                     reference_source_size=s0, image_width=w_img, reference_width=float(ref_w[0]),
                     n_columns=n_img, n_reference_columns=n_ref, extrapolated=bool(w_img <= ref_w[0]))


def read_image_for_fit(path, pixel_size: float | None = None) -> tuple[np.ndarray, float]:
    """An image file's array (float64) and pixel size (Å) for :func:`fit_source_size`.

    ``pixel_size`` overrides the file's calibration and is required where it
    has none. Text, ``.npy``, ``.npz`` and TIFF files are read by
    :func:`surrogate.common.read_image_file`; microscope formats (EMD, DM3/DM4,
    …) by :func:`refine.io.readers.read_file`, imported here lazily: the
    project's one reader of those formats lives with the experimental images.
    """
    from pathlib import Path

    from surrogate.common import read_image_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    if path.suffix.lower() in (".npy", ".npz", ".txt", ".csv", ".dat", ".asc", ".tif", ".tiff"):
        f = read_image_file(path)
    else:
        from refine.io.readers import read_file

        f = read_file(path)
    pixel = pixel_size if pixel_size is not None else f.pixel_size
    if pixel is None:
        raise InputError(f"{path} records no pixel size; give it with --pixel-size (Å)")
    data = np.asarray(f.data, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"{path}: need a 2-D image, got shape {data.shape}")
    return data, float(pixel)
