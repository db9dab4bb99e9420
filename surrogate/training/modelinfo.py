"""What a model file records, and whether an image's microscope is the model's.

* :func:`model_microscope`: the microscope a model was trained for. Models
  from ``stem-refine model build`` record it (``provenance_["microscope"]``);
  older ones, the shipped default among them, record the dataset they were
  fitted on, whose header holds the simulation's settings: read from there
  when the file is found (relative paths against the working folder, then the
  repository root).
* :func:`microscope_mismatch`: one message per setting (voltage, convergence,
  detector angles) where an image's metadata and the model differ beyond a
  tolerance; the refinement logs them and puts them in ``summary.json``.
* :func:`model_record`: a model file's contents as one JSON-able dict
  (``stem-refine model show``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from surrogate.common.microscope import Microscope, microscope_from_haadf, microscope_from_metadata

__all__ = ["model_microscope", "model_simulation", "model_haadf_parameters", "microscope_mismatch",
           "model_record", "TOLERANCES"]

#: setting -> (absolute, relative) tolerance: a difference counts when it exceeds both.
#: Voltage: 1 kV; convergence: 5 % (≈ 1 mrad at 24.5 mrad); detector angles: 10 % each
#: (HAADF intensity follows the inner angle closely; a few mrad of calibration error is common).
TOLERANCES = {"voltage": (1.0, 0.01), "convergence": (0.5, 0.05), "detector": (2.0, 0.10)}

_REPO = Path(__file__).resolve().parents[2]


def _dataset_simulation(path) -> dict | None:
    """The abTEM settings (``HAADFParameters`` dict) recorded in a training dataset file, or None."""
    if not path:
        return None
    candidates = [Path(path)] if Path(path).is_absolute() else [Path(path), _REPO / path]
    for p in candidates:
        if p.is_file():
            try:
                with np.load(p, allow_pickle=False) as z:
                    meta = json.loads(z["meta"].tobytes().decode())
                return dict(meta["microscope"])
            except Exception:  # not a dataset we can read: the model's microscope stays unknown
                return None
    return None


def _dataset_microscope(path) -> Microscope | None:
    sim = _dataset_simulation(path)
    return None if sim is None else microscope_from_haadf(sim)


def model_simulation(model) -> dict | None:
    """The abTEM settings of a model's training images (a ``HAADFParameters`` dict), or None where unknown.

    ``model build`` records them in the model file (``provenance_["simulation"]``);
    the shipped model names its training dataset, which records them. What
    simulates a model's structures by multislice to compare with the model
    (``stem-refine compare --with-multislice``) uses these: the same
    microscope, source size and phonon amplitudes as the model's training.
    """
    prov = getattr(model, "provenance_", None) or {}
    if isinstance(prov.get("simulation"), dict):
        return dict(prov["simulation"])
    return _dataset_simulation(prov.get("dataset"))


def model_haadf_parameters(model):
    """The model's microscope as :class:`~surrogate.groundtruth.multislice.HAADFParameters`, or None where unknown.

    Voltage, convergence, Cs, detector, source size, phonon amplitudes and
    sampling are the model's training settings (:func:`model_simulation`);
    the accuracy settings (method, PRISM factor, phonons) are left at the
    defaults, for the caller to set.
    """
    from surrogate.groundtruth.multislice import HAADFParameters

    trained = model_simulation(model)
    if trained is None:
        return None
    return HAADFParameters.from_dict({k: v for k, v in trained.items()
                                      if k not in ("method", "interpolation", "phonons")})


def model_microscope(model) -> Microscope | None:
    """The :class:`Microscope` a fitted model was trained for, or None where the model does not say."""
    prov = getattr(model, "provenance_", None) or {}
    if isinstance(prov.get("microscope"), dict):
        return Microscope.from_dict(prov["microscope"])
    return _dataset_microscope(prov.get("dataset"))


def _differs(a: float, b: float, name: str) -> bool:
    absolute, relative = TOLERANCES[name]
    return abs(a - b) > max(absolute, relative * max(abs(a), abs(b)))


def microscope_mismatch(image_metadata: dict | None, model) -> list[str]:
    """One message per setting where the image's microscope differs from the model's.

    Parameters
    ----------
    image_metadata : dict or None
        An image's metadata (``refine.io`` ``ImageFile.metadata``, or
        :func:`surrogate.common.microscope.read_image_microscope`'s dict); see
        :func:`surrogate.common.microscope.microscope_from_metadata` for what is read.
    model : PolynomialSurrogate
        A fitted model.

    Returns
    -------
    list of str
        Empty where they agree within :data:`TOLERANCES` or where either side
        does not record a setting (nothing to compare). E.g. ``"voltage: the image
        was recorded at 300 kV, the model was trained for 200 kV"``.
    """
    image = microscope_from_metadata(image_metadata or {})
    mine = model_microscope(model)
    if mine is None:
        return []
    out = []
    if image.voltage is not None and mine.voltage is not None and _differs(image.voltage, mine.voltage, "voltage"):
        out.append(f"voltage: the image was recorded at {image.voltage:g} kV, the model was trained for "
                   f"{mine.voltage:g} kV")
    if (image.convergence is not None and mine.convergence is not None
            and _differs(image.convergence, mine.convergence, "convergence")):
        out.append(f"convergence: the image's probe has a {image.convergence:.3g} mrad semi-angle, the model's "
                   f"{mine.convergence:.3g} mrad")
    if image.detector is not None and mine.detector is not None and any(
            _differs(a, b, "detector") for a, b in zip(image.detector, mine.detector)):
        out.append(f"detector: the image's collects {image.detector[0]:.3g}–{image.detector[1]:.3g} mrad, the "
                   f"model's {mine.detector[0]:.3g}–{mine.detector[1]:.3g} mrad")
    return out


def model_record(model, path=None) -> dict:
    """A model file's contents that a person reads: hyper-parameters, training set, microscope, CV, model error."""
    prov = dict(getattr(model, "provenance_", None) or {})
    scope = model_microscope(model)
    disc = getattr(model, "discrepancy_", None)
    cv = prov.get("cv")
    if cv is None and path is not None:  # the shipped model keeps its CV beside it (surrogate/data/fit_default.py)
        side = Path(path).with_name(Path(path).stem + "_cv.json")
        if side.is_file():
            try:
                cv = json.loads(side.read_text()).get("cv")
                cv = {k: v for k, v in cv.items() if k != "per_fold"} if isinstance(cv, dict) else None
            except ValueError:
                cv = None
    record = {
        "file": None if path is None else str(path),
        "n_terms": int(model.n_terms),
        "hyperparameters": {k: model.get_params()[k] for k in ("size", "degree", "log_term", "interactions", "ridge",
                                                              "saturation")},
        "pixel_size": model.convolution_parameters.pixel_size,
        "convolution": model.convolution_parameters.to_dict(),
        "elements": list(model.elements_),
        "n_images": model.n_images_, "n_pixels": model.n_pixels_,
        "microscope": None if scope is None else scope.to_dict(),
        "microscope_from": ("model file" if isinstance(prov.get("microscope"), dict)
                            else "training dataset" if scope is not None else None),
        "cv": cv,
        "model_error": None if disc is None else {
            "correlation_area_px": disc.correlation_area, "sigma_brightest": disc.sigmas[-1],
            "intensity_brightest": disc.intensities[-1], "source": disc.source},
        "build": prov.get("build"),
        "source_fit": prov.get("source_fit"),
        "made_by": prov.get("made_by"),
        "command": prov.get("command") or prov.get("dataset_command"),
    }
    return record
