"""Experimental images: reading, calibration, mask, crop and resampling.

:func:`read_image` turns what a user brings (a TIFF, a ``.npy`` array, a text
array, or a microscope file such as DM3/DM4, Velox EMD, TIA SER, MRC, HSPY
read through rosettasciio: :mod:`refine.io.readers`) into an
:class:`ExperimentalImage` on the model's probe grid:

1. **Read** the 2-D array (a 3-D stack needs ``frame=``; several signals in
   one file, e.g. an EMD with HAADF and DF4, are chosen by ``signal=``, by
   default the one titled HAADF, else the first 2-D one).
2. **Calibrate**: the pixel size comes from the file's axes (units converted
   to Å: m, µm, nm, Å, pm) or from an explicit ``pixel_size`` (which wins,
   with a log message when the two disagree); neither gives :class:`InputError`.
3. **Check**: NaN/inf, empty, non-2-D and constant images are refused
   (:func:`validate_image_array`).
4. **Offset** (optional): ``offset`` subtracts a constant (a number,
   ``"min"`` or ``"median"`` of the valid pixels). The fitness fits
   ``a·I_sim + b`` in closed form, so a constant background never needs
   removing for the image term; it matters only for a Poisson noise model,
   whose variance is the intensity *above* the detector offset.
5. **Mask**: ``mask`` is a boolean array or file of the image's shape, or
   ``"zeros"`` (pixels exactly 0 are excluded: the StatSTEM convention for
   "outside the particle region"). **True marks pixels that are used**;
   False pixels are left out of χ² (note: the opposite of ``numpy.ma``).
6. **Crop** (optional): ``crop=(i0, i1, j0, j1)`` in pixels of the file,
   half-open, first axis first.
7. **Resample** to ``target_pixel_size`` (the model's Δ) when it differs by
   more than ``rtol``: cubic B-spline interpolation (``scipy.ndimage.
   map_coordinates``) at the new probe positions, so pixel (0, 0) keeps its
   position and the new step is exactly the target (:func:`resample`).
   Down-sampling first applies a Gaussian anti-alias filter of
   σ = ½·√(r² − 1) input pixels (r = Δ_new/Δ_old), so that noise does not
   alias. The mask is resampled conservatively: a new pixel is valid only if
   every input pixel it interpolates from is valid. ``resample=False`` turns
   a mismatch into an :class:`InputError` instead.

:func:`refine.io.prepare_image` (:mod:`refine.io.preparation`) goes further
for a raw microscope image: it measures the vacuum level, normalises to the
incident beam, finds the particles for an automatic mask and crop, and then
crops and resamples through :func:`read_image`.

:func:`read_sigma_map` reads a per-pixel noise σ map and takes it through
the same crop and resampling; :func:`with_mask` swaps an image's mask.

Array convention (see :mod:`surrogate.imaging.grid`): ``data[i, j]`` is the probe at
``(x0 + iΔ, y0 + jΔ)``. Files store rows first; the row axis is taken as x
as it is, without transposing (a transpose is a mirror, and the refinement
cannot tell a particle from its mirror image anyway).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from refine.io.readers import read_file
from surrogate.common import InputError

__all__ = [
    "ExperimentalImage",
    "read_image",
    "read_sigma_map",
    "validate_image_array",
    "resample",
    "with_mask",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentalImage:
    """An experimental HAADF image ready for the fitness.

    Attributes
    ----------
    data : ndarray of float64, shape (M, N)
        Intensities (any linear scale; the fitness fits ``a·I + b``).
    pixel_size : float
        Probe step Δ in Å.
    mask : ndarray of bool, shape (M, N)
        True where a pixel is used, False where it is excluded.
    origin : (float, float)
        Probe position (Å) of pixel (0, 0): ``data[i, j]`` is at
        ``(origin[0] + iΔ, origin[1] + jΔ)``.
    source : str
        Where the image came from (a path, or ``"<array>"``).
    metadata : dict
        What was done and read: original pixel size and shape, resampling,
        crop, offset, units, signal title, microscope metadata when present.
    """

    data: np.ndarray
    pixel_size: float
    mask: np.ndarray
    origin: tuple = (0.0, 0.0)
    source: str = "<array>"
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def n_valid(self) -> int:
        """Number of pixels used (True in :attr:`mask`)."""
        return int(np.count_nonzero(self.mask))

    @property
    def grid(self):
        """The :class:`surrogate.imaging.grid.ProbeGrid` of this image."""
        from surrogate.imaging import ProbeGrid

        return ProbeGrid(origin=tuple(self.origin), shape=self.data.shape, pixel_size=self.pixel_size)

    def centroid(self) -> tuple:
        """Intensity-weighted centre (x, y) in Å of the valid pixels above their median.

        A robust place to put a starting structure: the particle is where the
        image is brighter than its typical (mostly vacuum or support) level.
        """
        d = np.where(self.mask, self.data, np.nan)
        above = np.clip(d - np.nanmedian(d), 0, None)
        above = np.nan_to_num(above)
        total = above.sum()
        if total <= 0:
            above = self.mask.astype(float)
            total = above.sum()
        i = (above.sum(axis=1) * np.arange(self.shape[0])).sum() / total
        j = (above.sum(axis=0) * np.arange(self.shape[1])).sum() / total
        return (self.origin[0] + i * self.pixel_size, self.origin[1] + j * self.pixel_size)


# --------------------------------------------------------------------------- checks

def validate_image_array(data, *, name: str = "image") -> np.ndarray:
    """Return ``data`` as a 2-D float64 array, or raise :class:`InputError`.

    Refused: non-numeric, not 2-D, empty, NaN or infinite values, constant.
    """
    try:
        arr = np.asarray(data)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name} could not be read as an array: {exc}") from None
    if arr.dtype.kind == "c":
        raise InputError(f"{name} is complex-valued; give a real intensity image")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            hint = " (it looks like an RGB(A) picture; give the raw detector image)"
        elif arr.ndim == 3:
            hint = " (a stack of frames: pass frame=K or sum the frames first)"
        else:
            hint = ""
        raise InputError(f"{name} must be a 2-D array, got shape {arr.shape}{hint}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise InputError(f"{name} is empty or too small: shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(f"{name} has {int(bad.sum())} NaN/infinite pixels (first at [{i}, {j}]); "
                         "mask them with a finite value and a mask instead")
    if arr.max() == arr.min():
        raise InputError(f"{name} is constant (every pixel is {arr.flat[0]:g}); nothing to fit")
    return arr


def _validate_pixel_size(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number of Å, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise InputError(f"{what} must be a positive number of Å, got {value!r}")
    return v



# --------------------------------------------------------------------------- reading

def read_image(source, *, pixel_size: float | None = None, target_pixel_size: float | None = None,
               mask=None, crop=None, offset=None, resample_images: bool = True, rtol: float = 1e-3,
               order: int = 3, signal=None, frame: int | None = None, origin=None) -> ExperimentalImage:
    """Read, check, calibrate, mask, crop and resample an experimental image.

    Parameters
    ----------
    source : str, os.PathLike or array_like
        A file (``.tif``/``.tiff``, ``.npy``, ``.npz``, ``.txt``/``.csv``/``.dat``,
        or any format rosettasciio reads: ``.dm3``, ``.dm4``, ``.emd``, ``.ser``,
        ``.mrc``, ``.hspy``, ...) or a 2-D array.
    pixel_size : float, optional
        Δ of the *file* in Å; overrides the file's calibration. Required when the
        source has none (arrays, text, ``.npy``, uncalibrated TIFF).
    target_pixel_size : float, optional
        The model's Δ (Å); the image is resampled to it (see ``resample_images``).
    mask : array_like, str or os.PathLike, optional
        True/non-zero = pixel used; ``"zeros"`` excludes pixels that are exactly 0
        in the file; a path to an array file of the image's shape.
    crop : (int, int, int, int), optional
        ``(i0, i1, j0, j1)``: keep ``data[i0:i1, j0:j1]`` of the file.
    offset : float, "min", "median" or None
        Constant subtracted from the image (after cropping, over valid pixels).
    resample_images : bool
        False: raise :class:`InputError` when the calibrated Δ differs from
        ``target_pixel_size`` instead of resampling.
    rtol : float
        Relative Δ mismatch tolerated without resampling.
    order : int
        Spline order for resampling (3 cubic, 1 linear).
    signal : int or str, optional
        Which signal of a multi-signal file (index or title, e.g. ``"HAADF"``).
    frame : int, optional
        Which frame of a 3-D stack.
    origin : (float, float), optional
        Probe position (Å) of file pixel (0, 0); default the file's axis offsets or (0, 0).

    Returns
    -------
    ExperimentalImage

    Raises
    ------
    InputError
        Missing file or calibration, unreadable format, NaN/constant/empty/non-2-D
        image, a mask of the wrong shape, a forbidden resampling.
    """
    raw, file_pixel, file_origin, meta, path, name = _read_source(source, signal, frame)
    data = validate_image_array(raw, name=name)
    meta = dict(meta)
    meta["file_shape"] = list(data.shape)
    step = _calibration(pixel_size, file_pixel, rtol, name, meta)
    x0, y0 = (float(v) for v in (origin if origin is not None else file_origin))

    valid = _load_mask(mask, data.shape, data)
    if crop is not None:
        data, valid, (x0, y0) = _crop(data, valid, crop, (x0, y0), step, name, meta)
    if offset is not None:
        data = _subtract_offset(data, valid, offset, meta)
    if target_pixel_size is not None:
        data, valid, step = _resample_to(data, valid, step, target_pixel_size, resample_images, rtol, order, name,
                                         meta)
    data = np.ascontiguousarray(data, dtype=np.float64)
    if np.ptp(data[valid]) == 0:
        raise InputError(f"{name}: the valid (unmasked) pixels are constant; nothing to fit")
    return ExperimentalImage(data=data, pixel_size=float(step), mask=np.ascontiguousarray(valid),
                             origin=(x0, y0), source=str(path) if path else "<array>", metadata=meta)


def _read_source(source, signal, frame):
    """(raw array, file pixel size Å or None, file origin Å, metadata, path or None, name for messages)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"image file {path} does not exist")
        if path.is_dir():
            raise InputError(f"{path} is a folder, not an image file")
        f = read_file(path, signal, frame)
        return f.data, f.pixel_size, f.origin, f.metadata, path, str(path)
    raw = np.asarray(source)
    if raw.ndim == 3 and frame is not None:
        raw = raw[frame]
    return raw, None, (0.0, 0.0), {"format": "array"}, None, "image"


def _calibration(pixel_size, file_pixel, rtol, name, meta) -> float:
    """The pixel size in Å: the argument's, else the file's (recorded in ``meta``)."""
    if pixel_size is not None:
        step = _validate_pixel_size(pixel_size, "pixel_size")
        if file_pixel is not None and abs(file_pixel - step) > rtol * step:
            log.info("%s: using the given pixel size %.6g Å instead of the file's %.6g Å", name, step, file_pixel)
        meta["calibration"] = "argument"
    elif file_pixel is not None:
        step = file_pixel
        meta["calibration"] = "file"
    else:
        units = meta.get("unrecognized_units")
        why = f" (its axis units {units} are not lengths)" if units else ""
        raise InputError(f"{name} has no pixel-size calibration{why}; give the pixel size in Å "
                         "(pixel_size=..., or --pixel-size on the command line)")
    meta["file_pixel_size"] = file_pixel
    return step


def _crop(data, valid, crop, origin, step, name, meta):
    """``data`` and ``valid`` cropped to ``crop`` (file pixels), and the new origin (Å)."""
    x0, y0 = origin
    i0, i1, j0, j1 = _validate_crop(crop, data.shape)
    data = data[i0:i1, j0:j1].copy()
    valid = valid[i0:i1, j0:j1].copy()
    x0, y0 = x0 + i0 * step, y0 + j0 * step
    meta["crop"] = [i0, i1, j0, j1]
    if not valid.any():
        raise InputError(f"crop {crop!r} keeps no valid (unmasked) pixel")
    validate_image_array(np.where(valid, data, data[valid][0]), name=f"{name} (cropped)")
    return data, valid, (x0, y0)


def _subtract_offset(data, valid, offset, meta):
    """``data`` minus a number, or the min or median of the valid pixels (recorded in ``meta``)."""
    if isinstance(offset, str):
        if offset.lower() not in ("min", "median"):
            raise InputError(f"offset must be a number, 'min' or 'median', got {offset!r}")
        value = float(np.min(data[valid]) if offset.lower() == "min" else np.median(data[valid]))
    else:
        value = float(offset)
        if not np.isfinite(value):
            raise InputError(f"offset must be finite, got {offset!r}")
    meta["offset_subtracted"] = value
    return data - value


def _resample_to(data, valid, step, target_pixel_size, resample_images, rtol, order, name, meta):
    """Image, mask and pixel size (Å) at ``target_pixel_size`` when the step differs by more than ``rtol``."""
    target = _validate_pixel_size(target_pixel_size, "target_pixel_size")
    if abs(step - target) <= rtol * target:
        return data, valid, step
    if not resample_images:
        raise InputError(f"{name}: pixel size {step:.6g} Å differs from the model's {target:.6g} Å "
                         "and resampling is turned off")
    ratio = target / step
    old_shape = data.shape
    data, valid = resample(data, ratio, mask=valid, order=order)
    log.info("%s: resampled %s px at %.6g Å to %s px at %.6g Å (cubic spline%s)", name, old_shape,
             step, data.shape, target, ", anti-aliased" if ratio > 1 else "")
    meta["resampled"] = {"from_pixel_size": step, "to_pixel_size": target, "from_shape": list(old_shape),
                         "order": order, "anti_alias_sigma_px": (float(0.5 * np.sqrt(ratio * ratio - 1.0))
                                                                 if ratio > 1 else 0.0)}
    if not valid.any():
        raise InputError(f"{name}: no valid pixel is left after resampling the mask")
    return data, valid, target


# --------------------------------------------------------------------------- mask, crop, resampling

def _load_mask(mask, shape, data_raw: np.ndarray) -> np.ndarray:
    """The boolean mask (True = pixel used) of ``mask``: None, "zeros" (of ``data_raw``), an array or a file."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    if isinstance(mask, str) and mask.strip().lower() == "auto":
        raise InputError("mask 'auto' is found in the raw image by refine.io.prepare_image (--mask auto); "
                         "here give a mask file, an array or 'zeros'")
    if isinstance(mask, str) and mask.lower() == "zeros":
        m = data_raw != 0
        if not m.any():
            raise InputError("mask='zeros' masks every pixel: the image is all zeros")
        return m
    if isinstance(mask, (str, os.PathLike)):
        p = Path(mask)
        if not p.exists():
            raise InputError(f"mask file {p} does not exist")
        arr = read_file(p).data
    else:
        arr = mask
    arr = np.asarray(arr)
    if arr.shape != tuple(shape):
        raise InputError(f"mask shape {arr.shape} does not match the image shape {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError("mask has NaN/infinite values; give booleans (True = pixel used)")
    m = arr.astype(bool) if arr.dtype.kind == "b" else (arr != 0)
    if not m.any():
        raise InputError("mask excludes every pixel (True/non-zero marks the pixels that are used)")
    return m


def _validate_crop(crop, shape) -> tuple:
    try:
        i0, i1, j0, j1 = (int(v) for v in crop)
    except (TypeError, ValueError):
        raise InputError(f"crop must be four integers (i0, i1, j0, j1), got {crop!r}") from None
    if not (0 <= i0 < i1 <= shape[0] and 0 <= j0 < j1 <= shape[1]):
        raise InputError(f"crop {crop!r} is outside the image of shape {tuple(shape)} "
                         "(half-open pixel ranges, first axis first)")
    if i1 - i0 < 2 or j1 - j0 < 2:
        raise InputError(f"crop {crop!r} leaves fewer than 2×2 pixels")
    return i0, i1, j0, j1


def resample(data: np.ndarray, ratio: float, *, mask: np.ndarray | None = None, order: int = 3):
    """Resample an image to a probe step ``ratio`` times the current one.

    Parameters
    ----------
    data : ndarray, shape (M, N)
        Image on step Δ.
    ratio : float
        Δ_new / Δ (> 1 shrinks the image).
    mask : ndarray of bool, shape (M, N), optional
        True = valid; resampled conservatively (see module docstring).
    order : int
        Spline order of ``scipy.ndimage.map_coordinates`` (3 cubic, 1 linear).

    Returns
    -------
    (ndarray, ndarray of bool)
        The image at ``(floor((M−1)/ratio)+1, floor((N−1)/ratio)+1)`` probe
        positions ``i·ratio`` (in old pixels; pixel 0 stays at pixel 0), and
        its mask (all True when ``mask`` is None).
    """
    from scipy import ndimage

    ratio = float(ratio)
    if not (np.isfinite(ratio) and ratio > 0):
        raise InputError(f"resampling ratio must be positive, got {ratio!r}")
    m, n = data.shape
    new_shape = (int(np.floor((m - 1) / ratio + 1e-9)) + 1, int(np.floor((n - 1) / ratio + 1e-9)) + 1)
    if min(new_shape) < 2:
        raise InputError(f"resampling {data.shape} by a step ratio {ratio:g} leaves fewer than 2×2 pixels")
    src = data
    if mask is not None and not mask.all():
        # Fill excluded pixels with the valid mean so the spline does not ring on
        # the edge; the conservative mask drops every new pixel that saw them.
        src = np.where(mask, data, data[mask].mean())
    if ratio > 1.0:
        src = ndimage.gaussian_filter(src, 0.5 * np.sqrt(ratio * ratio - 1.0), mode="nearest")
    ii = np.arange(new_shape[0]) * ratio
    jj = np.arange(new_shape[1]) * ratio
    coords = np.meshgrid(ii, jj, indexing="ij")
    out = ndimage.map_coordinates(src, coords, order=order, mode="nearest", prefilter=order > 1)
    if mask is None:
        return out, np.ones(new_shape, dtype=bool)
    bad = ~mask
    if ratio > 1.0 or order > 1:
        # widen the excluded region by the reach of the filter/spline (≈ 2 input pixels)
        reach = 2 + int(np.ceil(1.5 * np.sqrt(max(ratio * ratio - 1.0, 0.0))))
        bad = ndimage.binary_dilation(bad, iterations=reach) if bad.any() else bad
    new_bad = ndimage.map_coordinates(bad.astype(float), coords, order=1, mode="nearest") > 0
    return out, ~new_bad


# --------------------------------------------------------------------------- σ maps, masks

def read_sigma_map(source, image: ExperimentalImage) -> np.ndarray:
    """A per-pixel noise σ map for ``image``, read and resampled like the image.

    Parameters
    ----------
    source : str, os.PathLike or array_like
        σ in image units, an array file (any format :func:`read_image` reads)
        or an array of the image *file's* shape (before resampling).
    image : ExperimentalImage
        The image it belongs to, as returned by :func:`read_image`.

    Returns
    -------
    ndarray, shape ``image.shape``
        σ (image units) on the image's probe grid. When the image was
        resampled, σ is interpolated the same way (linear): an approximation,
        since interpolation also correlates the noise of neighbouring pixels.

    Raises
    ------
    InputError
        Unreadable file, wrong shape, or σ not positive and finite on the valid pixels.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"noise σ map file {path} does not exist")
        raw = read_file(path).data
        name = f"noise σ map {path}"
    else:
        raw, name = source, "noise σ map"
    sigma = np.asarray(raw)
    if sigma.dtype.kind not in "iuf":
        raise InputError(f"{name}: needs numbers, got type {sigma.dtype}")
    sigma = sigma.astype(np.float64)
    file_shape = tuple(image.metadata.get("file_shape", image.shape))
    if "crop" in image.metadata and sigma.shape == file_shape:
        i0, i1, j0, j1 = image.metadata["crop"]
        sigma = sigma[i0:i1, j0:j1]
        file_shape = sigma.shape
    if sigma.shape != file_shape:
        raise InputError(f"{name}: shape {sigma.shape} does not match the image file's {file_shape}")
    res = image.metadata.get("resampled")
    if res:
        bad = ~np.isfinite(sigma) | (sigma <= 0)
        if bad.all():
            raise InputError(f"{name}: no positive, finite σ")
        filled = np.where(bad, np.median(sigma[~bad]), sigma)
        sigma, _ = resample(filled, res["to_pixel_size"] / res["from_pixel_size"], order=1)
    if sigma.shape != image.shape:
        raise InputError(f"{name}: shape {sigma.shape} does not match the image's {image.shape}")
    valid = image.mask
    if not np.all(np.isfinite(sigma[valid])) or np.any(sigma[valid] <= 0):
        raise InputError(f"{name}: σ must be positive and finite on every valid (unmasked) pixel")
    return np.ascontiguousarray(sigma)


def with_mask(image: ExperimentalImage, mask) -> ExperimentalImage:
    """A copy of ``image`` with another mask (same rules as :func:`read_image`)."""
    return replace(image, mask=_load_mask(mask, image.shape, image.data))
