"""Image files: the one reader (and writer) of the 2-D arrays both packages exchange.

* :func:`read_image_file`: the array a file holds, with the calibration the
  file carries (pixel size in Å, origin) and what was read. Every failure —
  a corrupt, empty or truncated file, whatever the underlying library
  raises — is one :class:`InputError` line naming the file.
* :func:`read_image_array`: a plain 2-D image as float64 (the training
  pairs of :mod:`surrogate.training.pairs`, the input of ``predict``).
* :func:`write_image`, :func:`read_image_metadata`: images this project
  writes (``simulate``, ``predict``, the refinement's outputs) keep their
  probe grid in a JSON record, so that reading them back needs no pixel size.

Formats, by suffix: text arrays (``.txt``, ``.csv``, ``.dat``, ``.asc``;
comma, semicolon or whitespace separated), NumPy ``.npy`` and ``.npz`` (the
array ``image``, another by name, or the first; an optional scalar
``pixel_size`` in Å), TIFF (``.tif``, ``.tiff``, through tifffile; ImageJ's
unit and resolution tags give the pixel size).

Microscope formats (DM3/DM4, Velox EMD, TIA SER, MRC, HSPY) are read by
:mod:`refine.io.readers` through rosettasciio: only the refinement reads
experimental files, and it asks rosettasciio first for TIFFs too, whose
microscope calibrations ImageJ's tags do not hold.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surrogate.common.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ImageFile", "UNIT_TO_ANGSTROM", "image_file_errors", "read_image_array",
           "read_image_file", "read_image_metadata", "to_angstrom", "write_image"]

#: plain image files, one 2-D array each: what paired training folders hold and :func:`read_image_array` reads
IMAGE_SUFFIXES = (".txt", ".dat", ".csv", ".tif", ".tiff", ".npy")
TEXT_SUFFIXES = (".txt", ".csv", ".dat", ".asc")
TIFF_SUFFIXES = (".tif", ".tiff")

#: length units seen in microscope files → Å
UNIT_TO_ANGSTROM = {
    "m": 1e10, "mm": 1e7, "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "nm": 10.0,
    "å": 1.0, "Å": 1.0, "a": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ang": 1.0, "pm": 0.01,
}


@dataclass(frozen=True)
class ImageFile:
    """What an image file holds.

    Attributes
    ----------
    data : ndarray
        The stored array, as stored (any dtype and number of dimensions).
    pixel_size : float or None
        Å, when the file is calibrated.
    origin : (float, float)
        Å, the probe position of pixel (0, 0) when the file records it, else (0, 0).
    metadata : dict
        ``format`` and whatever else was read (the project's record, ``array``
        name of an ``.npz``, ``units`` of a TIFF).
    """

    data: np.ndarray
    pixel_size: float | None = None
    origin: tuple = (0.0, 0.0)
    metadata: dict = field(default_factory=dict)


def to_angstrom(scale, units) -> float | None:
    """``scale`` in length ``units`` (see :data:`UNIT_TO_ANGSTROM`) as Å; None when not a positive length."""
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


@contextlib.contextmanager
def image_file_errors(path: Path):
    """Turn any failure of a reader into one :class:`InputError` naming the file.

    Readers raise anything from EOFError to IndexError on a corrupt, empty or
    truncated file; an :class:`InputError` passes unchanged.
    """
    try:
        yield
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: too large to read into memory") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file may make a reader raise anything
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise InputError(f"{path}: cannot read it as a {path.suffix.lstrip('.') or 'data'} image "
                         f"(corrupt, empty or truncated file? {type(exc).__name__}: {what})") from None


def read_image_file(path, *, array: str | None = None) -> ImageFile:
    """The array an image file holds, with its calibration.

    Parameters
    ----------
    path : path-like
        An existing file: text, ``.npy``, ``.npz`` or TIFF (see the module docstring).
    array : str, optional
        Which array of an ``.npz`` (default ``image``, else the first).

    Returns
    -------
    ImageFile
        The pixel size and origin come from the project's record
        (:func:`write_image`), an ``.npz``'s ``pixel_size`` or a TIFF's
        ImageJ tags; None and (0, 0) otherwise.

    Raises
    ------
    InputError
        Unknown suffix, or an unreadable file (one line naming it).
    """
    path = Path(path)
    with image_file_errors(path):
        return _read(path, array)


def _read(path: Path, array) -> ImageFile:
    suffix = path.suffix.lower()
    record = read_image_metadata(path)
    if record is not None and "grid" in record:
        # An image this project wrote (simulate, predict, refine outputs): its probe grid is exact.
        grid = record["grid"]
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            import tifffile

            data = tifffile.imread(path)
        return ImageFile(data, float(grid["pixel_size"]), tuple(grid["origin"]),
                         {"format": suffix.lstrip("."), **record})
    if suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a plain numeric .npy array ({exc})") from None
        return ImageFile(data, None, (0.0, 0.0), {"format": "npy"})
    if suffix == ".npz":
        return _read_npz(path, array)
    if suffix in TEXT_SUFFIXES:
        return ImageFile(_read_text(path), None, (0.0, 0.0), {"format": "text"})
    if suffix in TIFF_SUFFIXES:
        data, pixel, meta = _read_tiff(path)
        meta["format"] = suffix.lstrip(".")
        return ImageFile(data, pixel, (0.0, 0.0), meta)
    raise InputError(f"{path}: unknown image format {suffix!r}; this reader takes "
                     f"{', '.join(TEXT_SUFFIXES + ('.npy', '.npz') + TIFF_SUFFIXES)}")


def _read_npz(path: Path, array) -> ImageFile:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if not keys:
            raise InputError(f"{path}: the .npz file holds no array")
        key = array if isinstance(array, str) else ("image" if "image" in keys else keys[0])
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
    return ImageFile(data, pixel, (0.0, 0.0), {"format": "npz", "array": key})


def _read_text(path: Path) -> np.ndarray:
    with open(path, "r", errors="replace") as fh:
        first = fh.readline()
    delimiter = "," if "," in first else (";" if ";" in first else None)
    try:
        return np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric text array ({exc})") from None


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None, dict]:
    """TIFF data, the pixel size (Å) of ImageJ's unit and X resolution tags (or None), and the unit."""
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
                pixel = to_angstrom(den / num, unit.replace("\\u00B5", "µ"))
        meta["units"] = unit
    return data, pixel, meta


def read_image_array(path) -> np.ndarray:
    """A plain 2-D image file (:data:`IMAGE_SUFFIXES`) as float64, shape (M, N).

    A 3-D array with one singleton axis is squeezed to 2-D.

    Raises
    ------
    InputError
        Missing file, unsupported suffix, unreadable file, not 2-D, empty,
        not numbers, NaN or infinite pixels (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported image format {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    data = np.asarray(read_image_file(path).data)
    if data.ndim == 3 and 1 in data.shape:
        data = data.squeeze()
    if data.ndim != 2:
        raise InputError(f"{path}: expected a 2-D image, got shape {data.shape}")
    if data.size == 0:
        raise InputError(f"{path}: image is empty")
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path}: image does not hold numbers (dtype {data.dtype})")
    data = data.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(f"{path}: {bad} NaN or infinite pixels")
    return data


def write_image(path, image: np.ndarray, grid=None, *, meta: dict | None = None) -> Path:
    """Write a 2-D image atomically with its probe grid recorded; returns the path.

    Formats (chosen by suffix), float64:

    * TIFF (``.tif``/``.tiff``): the ImageDescription tag holds JSON
      ``{"stem-refine": 1, "shape": [nx, ny], "grid": {"origin": [x0, y0],
      "shape": [...], "pixel_size": Δ}, "units": "Å", ...meta}`` (tifffile's
      "shaped" form, so ``tifffile.imread`` still returns the 2-D array), and
      the X/Y resolution tags hold 1e8/Δ pixels per cm (ImageJ/Fiji show Δ).
    * NumPy (``.npy``): the same JSON in a sidecar ``IMAGE.npy.json``.

    :func:`read_image_metadata` reads the record back; :func:`read_image_file`
    (and so ``refine.io.read_image``) takes its calibration from it.

    Parameters
    ----------
    path : path-like
    image : ndarray, shape grid.shape
    grid : ProbeGrid, optional
        Where the pixels are (Å). Without it nothing about calibration is written.
    meta : dict, optional
        More JSON-serializable facts (what was simulated, with which parameters).
    """
    from surrogate.common.atomic import atomic_path, atomic_write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise InputError(f"{path}: output images are .npy, .tif or .tiff, not {suffix!r}")
    image = np.ascontiguousarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"{path}: can only write 2-D images, got shape {image.shape}")
    record = {"stem-refine": 1, "shape": list(image.shape), "units": "Å", **(meta or {})}
    if grid is not None:
        if tuple(grid.shape) != image.shape:
            raise InputError(f"{path}: image shape {image.shape} does not match its grid {grid.shape}")
        record["grid"] = grid.to_dict()
    text = json.dumps(record, sort_keys=True)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            np.save(tmp, image)
        else:
            import tifffile

            kwargs = {}
            if grid is not None:
                per_cm = 1e8 / grid.pixel_size
                kwargs = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            tifffile.imwrite(tmp, image, description=text, metadata=None, **kwargs)
    if suffix == ".npy":
        atomic_write_text(path.with_name(path.name + ".json"), text + "\n")
    return path


def read_image_metadata(path) -> dict | None:
    """The record :func:`write_image` left with an image (TIFF description or ``.npy.json``), or None."""
    path = Path(path)
    text = None
    try:
        if path.suffix.lower() == ".npy":
            side = path.with_name(path.name + ".json")
            if side.is_file():
                text = side.read_text()
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("ImageDescription")
                text = tag.value if tag is not None else None
        record = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("stem-refine") != 1:
        return None
    return record
