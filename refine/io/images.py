"""Experimental images: reading, calibration, mask, crop and resampling.

:func:`read_image` turns what a user brings (a TIFF, a ``.npy`` array, a text
array, or a microscope file such as DM3/DM4, Velox EMD, TIA SER, MRC, HSPY
read through rosettasciio) into an :class:`ExperimentalImage` on the model's
probe grid:

1. **Read** the 2-D array (a 3-D stack needs ``frame=``; several signals in
   one file, e.g. an EMD with HAADF and DF4, are chosen by ``signal=``, by
   default the one titled HAADF, else the first 2-D one).
2. **Calibrate**: the pixel size comes from the file's axes (units converted
   to Å: m, µm, nm, Å, pm) or from an explicit ``pixel_size`` (which wins,
   with a log message when the two disagree); neither gives :class:`InputError`.
3. **Check**: NaN/inf, empty, non-2-D and constant images are refused.
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
   position and the new step is exactly the target. Down-sampling first
   applies a Gaussian anti-alias filter of σ = ½·√(r² − 1) input pixels
   (r = Δ_new/Δ_old), so that noise does not alias. The mask is resampled
   conservatively: a new pixel is valid only if every input pixel it
   interpolates from is valid. ``resample=False`` turns a mismatch into an
   :class:`InputError` instead.

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

from surrogate.common import InputError

__all__ = [
    "ExperimentalImage",
    "read_image",
    "read_sigma_map",
    "validate_image",
    "resample",
    "with_mask",
    "UNIT_TO_ANGSTROM",
]

log = logging.getLogger(__name__)

#: length units seen in microscope files → Å
UNIT_TO_ANGSTROM = {
    "m": 1e10, "mm": 1e7, "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "nm": 10.0,
    "å": 1.0, "Å": 1.0, "a": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ang": 1.0, "pm": 0.01,
}

_TEXT_SUFFIXES = {".txt", ".csv", ".dat", ".asc"}
_TIFF_SUFFIXES = {".tif", ".tiff"}


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

def validate_image(data, *, name: str = "image") -> np.ndarray:
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


def _to_angstrom(scale, units) -> float | None:
    if scale is None or units is None:
        return None
    key = str(units).strip()
    factor = UNIT_TO_ANGSTROM.get(key, UNIT_TO_ANGSTROM.get(key.lower()))
    if factor is None:
        return None
    try:
        s = float(scale) * factor
    except (TypeError, ValueError):
        return None
    return s if np.isfinite(s) and s > 0 else None


# --------------------------------------------------------------------------- readers

def _read_text(path: Path) -> np.ndarray:
    with open(path, "r", errors="replace") as fh:
        first = fh.readline()
    delimiter = "," if "," in first else (";" if ";" in first else None)
    try:
        return np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric text array ({exc})") from None


def _rsciio_reader(path: Path):
    """The rosettasciio ``file_reader`` for a file's extension, or None."""
    try:
        import rsciio
    except ImportError:  # pragma: no cover - rosettasciio is a dependency
        return None
    import importlib

    ext = path.suffix.lstrip(".")
    for plugin in rsciio.IO_PLUGINS:
        if ext in plugin["file_extensions"] or ext.lower() in plugin["file_extensions"]:
            if plugin["name"] in ("numpy", "Image"):
                continue  # read directly (numpy) / pictures carry no calibration
            module = importlib.import_module(plugin["api"])
            return module.file_reader
    return None


def _pick_signal(signals: list, signal, path: Path) -> dict:
    if not signals:
        raise InputError(f"{path}: the file holds no data")
    if signal is not None:
        if isinstance(signal, (int, np.integer)):
            if not 0 <= signal < len(signals):
                raise InputError(f"{path}: signal index {signal} out of range (the file holds {len(signals)})")
            return signals[int(signal)]
        titles = [str(s.get("metadata", {}).get("General", {}).get("title", "")) for s in signals]
        for s, t in zip(signals, titles):
            if t.lower() == str(signal).lower():
                return s
        raise InputError(f"{path}: no signal titled {signal!r}; the file holds {titles}")
    images = [s for s in signals if np.ndim(s["data"]) >= 2]
    for s in images:
        if "haadf" in str(s.get("metadata", {}).get("General", {}).get("title", "")).lower():
            return s
    return images[0] if images else signals[0]


def _read_rsciio(path: Path, reader, signal, frame) -> tuple[np.ndarray, float | None, tuple, dict]:
    try:
        signals = reader(str(path))
    except ImportError as exc:
        raise InputError(f"{path}: reading this format needs the Python package {exc.name!r} "
                         f"(pip install {exc.name})") from None
    except Exception as exc:
        raise InputError(f"{path}: could not read the file ({type(exc).__name__}: {exc})") from None
    chosen = _pick_signal(list(signals), signal, path)
    data = np.asarray(chosen["data"])
    axes = sorted(chosen.get("axes", []), key=lambda a: a.get("index_in_array", 0))
    if data.ndim == 3 and frame is not None:
        if not -data.shape[0] <= frame < data.shape[0]:
            raise InputError(f"{path}: frame {frame} out of range (stack of {data.shape[0]})")
        data = data[frame]
        axes = axes[1:]
    meta = {
        "title": chosen.get("metadata", {}).get("General", {}).get("title"),
        "axes": [{k: a.get(k) for k in ("name", "scale", "offset", "units", "size")} for a in axes],
    }
    sig_meta = chosen.get("metadata", {})
    if "Acquisition_instrument" in sig_meta:
        meta["acquisition_instrument"] = _jsonable(sig_meta["Acquisition_instrument"])
    pixel, origin = None, (0.0, 0.0)
    if data.ndim == 2 and len(axes) == 2:
        steps = [_to_angstrom(a.get("scale"), a.get("units")) for a in axes]
        if all(s is not None for s in steps):
            if abs(steps[0] - steps[1]) > 1e-3 * max(steps):
                raise InputError(f"{path}: non-square pixels ({steps[0]:.6g} × {steps[1]:.6g} Å) are not supported")
            pixel = float(np.mean(steps))
            offsets = [_to_angstrom(1.0, a.get("units")) * float(a.get("offset") or 0.0) for a in axes]
            origin = (offsets[0], offsets[1])
            meta["units"] = axes[0].get("units")
        elif any(a.get("units") not in (None, "", "<undefined>") for a in axes):
            meta["unrecognized_units"] = [a.get("units") for a in axes]
    return data, pixel, origin, meta


def _jsonable(obj, depth: int = 0):
    if depth > 6:
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _read_tiff_fallback(path: Path) -> tuple[np.ndarray, float | None, dict]:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        data = tif.asarray()
        meta = {}
        ij = tif.imagej_metadata or {}
        page = tif.pages[0]
        unit = ij.get("unit")
        pixel = None
        xres = page.tags.get("XResolution")
        if unit is not None and xres is not None:
            num, den = xres.value
            if num:
                pixel = _to_angstrom(den / num, unit.replace("\\u00B5", "µ"))
        meta["units"] = unit
    return data, pixel, meta


def _read_raw(path: Path, signal, frame):
    """(data, pixel size Å or None, origin, metadata) from a file.

    Any failure of a reader on a corrupt, empty or truncated file becomes one
    :class:`InputError` naming the file (readers raise anything from EOFError
    to IndexError on such files).
    """
    try:
        return _read_raw_unchecked(path, signal, frame)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: too large to read into memory") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file may make a reader raise anything
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise InputError(f"{path}: cannot read it as a {path.suffix.lstrip('.') or 'data'} image "
                         f"(corrupt, empty or truncated file? {type(exc).__name__}: {what})") from None


def _read_raw_unchecked(path: Path, signal, frame):
    suffix = path.suffix.lower()
    from surrogate.training import read_image_metadata

    record = read_image_metadata(path)
    if record is not None and "grid" in record:
        # An image this project wrote (simulate, predict, refine outputs): its probe grid is exact.
        grid = record["grid"]
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            import tifffile

            data = tifffile.imread(path)
        return data, float(grid["pixel_size"]), tuple(grid["origin"]), {"format": suffix.lstrip("."), **record}
    if suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a plain numeric .npy array ({exc})") from None
        return data, None, (0.0, 0.0), {"format": "npy"}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if not keys:
                raise InputError(f"{path}: the .npz file holds no array")
            key = signal if isinstance(signal, str) else ("image" if "image" in keys else keys[0])
            if key not in keys:
                raise InputError(f"{path}: no array {key!r}; the file holds {keys}")
            data = z[key]
            pixel = None
            if "pixel_size" in keys:
                value = np.asarray(z["pixel_size"])
                if value.size != 1 or value.dtype.kind not in "iuf":
                    raise InputError(f"{path}: 'pixel_size' must be one number (Å), got an array of shape "
                                     f"{value.shape} and type {value.dtype}")
                pixel = float(value.reshape(()))
        return data, pixel, (0.0, 0.0), {"format": "npz", "array": key}
    if suffix in _TEXT_SUFFIXES:
        return _read_text(path), None, (0.0, 0.0), {"format": "text"}
    reader = _rsciio_reader(path)
    if reader is not None:
        try:
            data, pixel, origin, meta = _read_rsciio(path, reader, signal, frame)
        except InputError:
            if suffix not in _TIFF_SUFFIXES:
                raise
            data, pixel, meta = _read_tiff_fallback(path)
            origin = (0.0, 0.0)
        meta["format"] = suffix.lstrip(".")
        return data, pixel, origin, meta
    if suffix in _TIFF_SUFFIXES:  # pragma: no cover - rosettasciio handles TIFF
        data, pixel, meta = _read_tiff_fallback(path)
        return data, pixel, (0.0, 0.0), meta
    raise InputError(f"{path}: unknown image format {suffix!r}; use TIFF, .npy, a text array, "
                     "or a microscope format rosettasciio reads (DM3/DM4, EMD, SER, MRC, HSPY, ...)")


# --------------------------------------------------------------------------- mask, crop, resample

def _load_mask(mask, shape, source_path: Path | None, data_raw: np.ndarray) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    if isinstance(mask, str) and mask.lower() == "zeros":
        m = data_raw != 0
        if not m.any():
            raise InputError("mask='zeros' masks every pixel: the image is all zeros")
        return m
    if isinstance(mask, (str, os.PathLike)):
        p = Path(mask)
        if not p.exists():
            raise InputError(f"mask file {p} does not exist")
        arr, _, _, _ = _read_raw(p, None, None)
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


# --------------------------------------------------------------------------- public entry

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
    path = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"image file {path} does not exist")
        if path.is_dir():
            raise InputError(f"{path} is a folder, not an image file")
        raw, file_pixel, file_origin, meta = _read_raw(path, signal, frame)
        name = str(path)
    else:
        raw, file_pixel, file_origin, meta = source, None, (0.0, 0.0), {"format": "array"}
        raw = np.asarray(raw)
        if raw.ndim == 3 and frame is not None:
            raw = raw[frame]
        name = "image"
    data = validate_image(raw, name=name)
    meta = dict(meta)
    meta["file_shape"] = list(data.shape)

    # calibration
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
    x0, y0 = (float(v) for v in (origin if origin is not None else file_origin))

    valid = _load_mask(mask, data.shape, path, data)
    if crop is not None:
        i0, i1, j0, j1 = _validate_crop(crop, data.shape)
        data = data[i0:i1, j0:j1].copy()
        valid = valid[i0:i1, j0:j1].copy()
        x0, y0 = x0 + i0 * step, y0 + j0 * step
        meta["crop"] = [i0, i1, j0, j1]
        if not valid.any():
            raise InputError(f"crop {crop!r} keeps no valid (unmasked) pixel")
        validate_image(np.where(valid, data, data[valid][0]), name=f"{name} (cropped)")

    if offset is not None:
        if isinstance(offset, str):
            if offset.lower() not in ("min", "median"):
                raise InputError(f"offset must be a number, 'min' or 'median', got {offset!r}")
            value = float(np.min(data[valid]) if offset.lower() == "min" else np.median(data[valid]))
        else:
            value = float(offset)
            if not np.isfinite(value):
                raise InputError(f"offset must be finite, got {offset!r}")
        data = data - value
        meta["offset_subtracted"] = value

    if target_pixel_size is not None:
        target = _validate_pixel_size(target_pixel_size, "target_pixel_size")
        if abs(step - target) > rtol * target:
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
            step = target
            if not valid.any():
                raise InputError(f"{name}: no valid pixel is left after resampling the mask")
    data = np.ascontiguousarray(data, dtype=np.float64)
    if np.ptp(data[valid]) == 0:
        raise InputError(f"{name}: the valid (unmasked) pixels are constant; nothing to fit")
    return ExperimentalImage(data=data, pixel_size=float(step), mask=np.ascontiguousarray(valid),
                             origin=(x0, y0), source=str(path) if path else "<array>", metadata=meta)


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
        raw, _, _, _ = _read_raw(path, None, None)
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
    return replace(image, mask=_load_mask(mask, image.shape, None, image.data))
