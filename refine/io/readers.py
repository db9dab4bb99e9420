"""Experimental image files: the array, its calibration and metadata, whatever the microscope wrote.

:func:`read_file` picks the reader by suffix:

* text, ``.npy``, ``.npz`` and images this project wrote: the shared reader
  :func:`surrogate.common.read_image_file`;
* microscope formats (DM3/DM4, Velox EMD, TIA SER, MRC, HSPY, …) and other
  TIFFs: rosettasciio, which reads their calibration (axis scales and units,
  converted to Å by :func:`surrogate.common.to_angstrom`) and metadata.
  Several signals in one file (e.g. an EMD with HAADF and DF4) are chosen
  by ``signal=``, by default the one titled HAADF, else the first 2-D one; a
  3-D stack by ``frame=``. A TIFF rosettasciio refuses is read by tifffile
  (ImageJ calibration).

Any failure on a corrupt, empty or truncated file is one
:class:`InputError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from surrogate.common import ImageFile, InputError, image_file_errors, read_image_file, read_image_metadata, to_angstrom

__all__ = ["read_file"]

_SHARED_SUFFIXES = {".npy", ".npz", ".txt", ".csv", ".dat", ".asc"}
_TIFF_SUFFIXES = {".tif", ".tiff"}


def read_file(path: Path, signal=None, frame: int | None = None) -> ImageFile:
    """The array of an experimental image file, with the calibration the file carries.

    Parameters
    ----------
    path : Path
        An existing file.
    signal : int or str, optional
        Which signal of a multi-signal file (index or title), or which array of an ``.npz`` (name).
    frame : int, optional
        Which frame of a 3-D stack in a microscope file.

    Returns
    -------
    ImageFile
        ``pixel_size`` in Å or None, ``origin`` in Å, ``metadata`` with ``format``.

    Raises
    ------
    InputError
        Unknown format, or an unreadable file.
    """
    with image_file_errors(path):
        suffix = path.suffix.lower()
        if suffix in _SHARED_SUFFIXES or _project_image(path):
            return read_image_file(path, array=signal if isinstance(signal, str) else None)
        reader = _rsciio_reader(path)
        if reader is not None:
            try:
                data, pixel, origin, meta = _read_rsciio(path, reader, signal, frame)
            except InputError:
                if suffix not in _TIFF_SUFFIXES:
                    raise
                return read_image_file(path)
            meta["format"] = suffix.lstrip(".")
            return ImageFile(data, pixel, origin, meta)
        if suffix in _TIFF_SUFFIXES:  # pragma: no cover - rosettasciio handles TIFF
            return read_image_file(path)
        raise InputError(f"{path}: unknown image format {suffix!r}; use TIFF, .npy, a text array, "
                         "or a microscope format rosettasciio reads (DM3/DM4, EMD, SER, MRC, HSPY, ...)")


def _project_image(path: Path) -> bool:
    """Whether the file is an image this project wrote with its probe grid (:func:`surrogate.common.write_image`)."""
    record = read_image_metadata(path)
    return record is not None and "grid" in record


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
    # the microscope the file records (Velox EMD: voltage, convergence, detector angles), for the model check
    from surrogate.common.microscope import microscope_from_metadata

    scope = microscope_from_metadata({"original_metadata": chosen.get("original_metadata"),
                                      "acquisition_instrument": meta.get("acquisition_instrument")})
    if any(v is not None for v in scope.to_dict().values()):
        meta["microscope"] = scope.to_dict()
    pixel, origin = None, (0.0, 0.0)
    if data.ndim == 2 and len(axes) == 2:
        steps = [to_angstrom(a.get("scale"), a.get("units")) for a in axes]
        if all(s is not None for s in steps):
            if abs(steps[0] - steps[1]) > 1e-3 * max(steps):
                raise InputError(f"{path}: non-square pixels ({steps[0]:.6g} × {steps[1]:.6g} Å) are not supported")
            pixel = float(np.mean(steps))
            offsets = [to_angstrom(1.0, a.get("units")) * float(a.get("offset") or 0.0) for a in axes]
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
