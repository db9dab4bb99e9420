"""The microscope behind an image or a model: what it is, and what an image file says about it.

:class:`Microscope` holds the settings a HAADF image depends on, in the
units microscopists quote: acceleration voltage (kV), probe convergence
semi-angle (mrad), annular detector inner and outer angles (mrad), spherical
aberration Cs (µm), defocus (Å) and the source size (Å, FWHM of the Gaussian
blur of the image, Combs et al. 2019's "width of 88 pm"). Every field may be
None: unknown.

:func:`microscope_from_metadata` reads those settings from the metadata of
an image file, wherever this project has seen them written:

* a Velox EMD's original metadata (rosettasciio ``original_metadata``):
  ``Optics.AccelerationVoltage`` (V), ``Optics.BeamConvergence`` (rad) and
  the ``CollectionAngleRange`` (rad) of the detector that recorded the image
  (``BinaryResult.Detector``; ``DetectorMetadata``). Velox writes 0–0 for
  detectors whose angles it does not know: read as unknown. Its
  ``Optics.Defocus`` is a lens reading, not the defocus at the specimen, and
  is not read;
* hyperspy-style ``Acquisition_instrument.TEM`` (``beam_energy`` kV,
  ``convergence_angle`` mrad), as rosettasciio maps DM and other formats;
* images this project simulated (``stem-refine simulate``'s record: the
  multislice ``parameters``) and an explicit ``microscope`` record.

:func:`read_image_microscope` opens an image file for that metadata only
(rosettasciio, lazily: the pixels are not read). Cs, defocus and the source
size are in none of these files; :meth:`Microscope.missing` names what a
file did not say.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from surrogate.common.errors import InputError

__all__ = ["Microscope", "MICROSCOPE_FIELDS", "microscope_from_metadata", "read_image_microscope",
           "microscope_from_haadf", "parse_detector"]

#: field -> (unit, what it is), for messages and ``--help``
MICROSCOPE_FIELDS = {
    "voltage": ("kV", "acceleration voltage"),
    "convergence": ("mrad", "probe convergence semi-angle"),
    "detector": ("mrad", "detector inner, outer angle"),
    "cs": ("µm", "spherical aberration Cs"),
    "defocus": ("Å", "defocus"),
    "source_size": ("Å", "source size (FWHM)"),
}
_MICROSCOPE_SUFFIXES = {".emd", ".dm3", ".dm4", ".ser", ".mrc", ".hspy", ".h5", ".hdf5", ".prz", ".tif", ".tiff"}


def _number(value, name: str):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    return v


def parse_detector(text) -> tuple[float, float]:
    """``"INNER,OUTER"`` (mrad) or a pair → ``(inner, outer)``; checked by :meth:`Microscope.validate`."""
    if isinstance(text, str):
        parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    else:
        parts = list(text)
    if len(parts) != 2:
        raise InputError(f"detector angles are INNER,OUTER in mrad (e.g. 50,150), got {text!r}")
    return (_number(parts[0], "detector inner angle"), _number(parts[1], "detector outer angle"))


@dataclass(frozen=True)
class Microscope:
    """HAADF-STEM settings; None where unknown.

    Parameters
    ----------
    voltage : float
        Acceleration voltage in kV (> 0).
    convergence : float
        Probe convergence semi-angle in mrad (> 0).
    detector : (float, float)
        Annular detector inner and outer angles in mrad, 0 <= inner < outer.
    cs : float
        Spherical aberration in µm (1 µm = 1e4 Å; any sign).
    defocus : float
        Defocus in Å (any sign).
    source_size : float
        FWHM in Å of the Gaussian source-size blur (>= 0).
    """

    voltage: float | None = None
    convergence: float | None = None
    detector: tuple | None = None
    cs: float | None = None
    defocus: float | None = None
    source_size: float | None = None

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "detector":
                if v is not None:
                    object.__setattr__(self, "detector", parse_detector(v))
            else:
                object.__setattr__(self, f.name, _number(v, MICROSCOPE_FIELDS[f.name][1]))

    def validate(self) -> "Microscope":
        """Raise :class:`InputError` (one line) for a setting no microscope has; return self."""
        if self.voltage is not None and self.voltage <= 0:
            raise InputError(f"voltage must be > 0 kV, got {self.voltage:g}")
        if self.voltage is not None and self.voltage > 3000:
            raise InputError(f"voltage is in kV; {self.voltage:g} kV is not a TEM's (did you give volts?)")
        if self.convergence is not None and self.convergence <= 0:
            raise InputError(f"convergence semi-angle must be > 0 mrad, got {self.convergence:g}")
        if self.detector is not None:
            inner, outer = self.detector
            if inner < 0 or inner >= outer:
                raise InputError(f"detector angles must be 0 <= inner < outer mrad, got {inner:g},{outer:g}")
        if self.source_size is not None and self.source_size < 0:
            raise InputError(f"source size (FWHM) must be >= 0 Å, got {self.source_size:g}")
        return self

    def merged(self, **overrides) -> "Microscope":
        """A copy where every override that is not None replaces the field."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def missing(self, names=("voltage", "convergence", "detector", "cs", "defocus", "source_size")) -> list[str]:
        """The fields among ``names`` that are unknown (None)."""
        return [n for n in names if getattr(self, n) is None]

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.detector is not None:
            d["detector"] = list(self.detector)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Microscope":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

    def describe(self) -> str:
        """One line: ``300 kV, 21.4 mrad, detector 50–200 mrad, Cs 1 µm, defocus 0 Å, source 0.7 Å FWHM``."""
        def g(v, unit):
            return "?" if v is None else f"{v:g} {unit}"

        det = "?" if self.detector is None else f"{self.detector[0]:g}–{self.detector[1]:g} mrad"
        return (f"{g(self.voltage, 'kV')}, convergence {g(self.convergence, 'mrad')}, detector {det}, "
                f"Cs {g(self.cs, 'µm')}, defocus {g(self.defocus, 'Å')}, source {g(self.source_size, 'Å')} FWHM")


def microscope_from_haadf(params: dict) -> Microscope:
    """The :class:`Microscope` of a :class:`surrogate.groundtruth.HAADFParameters` dict (energy eV, Cs Å)."""
    energy = params.get("energy")
    cs = params.get("Cs")
    return Microscope(voltage=None if energy is None else float(energy) / 1e3,
                      convergence=params.get("semiangle"),
                      detector=params.get("detector"),
                      cs=None if cs is None else float(cs) / 1e4,
                      defocus=params.get("defocus", 0.0 if energy is not None else None),
                      source_size=params.get("source_fwhm"))


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _velox(om: dict) -> dict:
    found = {}
    volt = _get(om, "Optics", "AccelerationVoltage")
    if volt not in (None, ""):
        found["voltage"] = float(volt) / 1e3
    conv = _get(om, "Optics", "BeamConvergence")
    if conv not in (None, "") and float(conv) > 0:
        found["convergence"] = float(conv) * 1e3
    name = _get(om, "BinaryResult", "Detector")
    candidates = [om.get("DetectorMetadata")] + list((_get(om, "Detectors") or {}).values())
    for det in candidates:
        if not isinstance(det, dict) or (name and det.get("DetectorName") != name):
            continue
        rng = det.get("CollectionAngleRange") or {}
        try:
            inner, outer = float(rng.get("begin")), float(rng.get("end"))
        except (TypeError, ValueError):
            continue
        if outer > 0:  # Velox writes 0–0 for a detector whose angles it does not know
            found["detector"] = (inner * 1e3, outer * 1e3)
            break
    return found


def microscope_from_metadata(metadata: dict | None) -> Microscope:
    """The settings an image file's metadata records (None where it says nothing).

    Parameters
    ----------
    metadata : dict
        ``refine.io`` / :func:`read_image_microscope` metadata: any of the keys
        ``microscope`` (a :meth:`Microscope.to_dict`), ``original_metadata``
        (rosettasciio's; Velox EMD), ``acquisition_instrument`` or
        ``Acquisition_instrument`` (hyperspy-style), ``parameters`` (a
        simulated image's HAADF parameters, with ``kind: "multislice"``).
        Where two say the same thing the first in that order wins.
    """
    if not metadata:
        return Microscope()
    found: dict = {}

    def take(values: dict):
        for k, v in values.items():
            if v is not None and found.get(k) is None:
                found[k] = v

    if isinstance(metadata.get("microscope"), dict):
        take(Microscope.from_dict(metadata["microscope"]).to_dict())
    if isinstance(metadata.get("original_metadata"), dict):
        try:
            take(_velox(metadata["original_metadata"]))
        except (TypeError, ValueError):  # a foreign layout: say nothing rather than guess
            pass
    tem = _get(metadata.get("acquisition_instrument") or metadata.get("Acquisition_instrument") or {}, "TEM")
    if isinstance(tem, dict):
        take({"voltage": tem.get("beam_energy"), "convergence": tem.get("convergence_angle")})
    if metadata.get("kind") == "multislice" and isinstance(metadata.get("parameters"), dict):
        take(microscope_from_haadf(metadata["parameters"]).to_dict())
    return Microscope.from_dict(found)


def _pick(signals: list, signal):
    # as refine.io.readers picks: by index or title, else the one titled HAADF, else the first 2-D one
    if signal is not None:
        if isinstance(signal, int):
            return signals[signal] if 0 <= signal < len(signals) else None
        for s in signals:
            if str(_get(s, "metadata", "General", "title") or "").lower() == str(signal).lower():
                return s
        return None
    images = [s for s in signals if len(getattr(s.get("data"), "shape", ())) >= 2]
    for s in images:
        if "haadf" in str(_get(s, "metadata", "General", "title") or "").lower():
            return s
    return images[0] if images else (signals[0] if signals else None)


def read_image_microscope(path, signal=None) -> dict:
    """Metadata of an image file that :func:`microscope_from_metadata` reads, without its pixels.

    Returns
    -------
    dict
        ``{"file": str, "format": suffix, "microscope": Microscope.to_dict(), "missing": [field, ...]}``;
        every field None (and all missing) for a file that records no microscope (text, ``.npy``,
        plain TIFF).

    Raises
    ------
    InputError
        The file does not exist or rosettasciio cannot read it.
    """
    from surrogate.common.imagefiles import read_image_metadata

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    meta: dict = {}
    record = read_image_metadata(path)
    if record is not None:
        meta = dict(record)
    elif path.suffix.lower() in _MICROSCOPE_SUFFIXES:
        meta = _rsciio_metadata(path, signal)
    scope = microscope_from_metadata(meta)
    return {"file": str(path), "format": path.suffix.lower().lstrip("."), "microscope": scope.to_dict(),
            "missing": scope.missing()}


def _rsciio_metadata(path: Path, signal) -> dict:
    import importlib

    try:
        import rsciio
    except ImportError:  # pragma: no cover - rosettasciio is a dependency
        return {}
    ext = path.suffix.lstrip(".").lower()
    reader = None
    for plugin in rsciio.IO_PLUGINS:
        if ext in [e.lower() for e in plugin["file_extensions"]] and plugin["name"] not in ("numpy", "Image"):
            reader = importlib.import_module(plugin["api"]).file_reader
            break
    if reader is None:
        return {}
    try:
        try:
            signals = reader(str(path), lazy=True)
        except TypeError:  # a reader without lazy loading
            signals = reader(str(path))
    except Exception as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            return {}  # a plain TIFF: no microscope, not an error
        raise InputError(f"{path}: could not read the file's metadata ({type(exc).__name__}: {exc})") from None
    chosen = _pick(list(signals), signal)
    if chosen is None:
        return {}
    return {"original_metadata": chosen.get("original_metadata") or {},
            "acquisition_instrument": _get(chosen, "metadata", "Acquisition_instrument") or {}}
