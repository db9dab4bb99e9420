"""What ``inputs.json`` records of a run, and whether a run continues from its checkpoint.

Once the cost is built, :func:`input_record` gives what ``inputs.json``
records (digests of the image and the model, the noise, the energy, α) and
:func:`resuming_run` decides whether the run continues from the checkpoint
in its folder, refusing one written with inputs that define another cost
(an :class:`~surrogate.common.errors.InputError` with a one-line message).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from refine.io import ExperimentalImage
from refine.workflows.inputs import RefinementInputs
from surrogate.common import InputError

__all__ = ["input_record", "resuming_run", "calculator_description"]

log = logging.getLogger(__name__)


def _noise_description(noise):
    """What inputs.json records of the noise model (a σ map by its digest)."""
    if noise is None or isinstance(noise, str):
        return noise
    if np.ndim(noise) == 0:
        return float(noise)
    return "sigma map sha256:" + hashlib.sha256(np.ascontiguousarray(noise, dtype=np.float64).tobytes()).hexdigest()


def _model_digest(model) -> str:
    """sha256 of what makes a surrogate's images: coefficients, features and convolution parameters."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(model.coef_, dtype=np.float64).tobytes())
    h.update(np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64).tobytes())
    h.update(repr((model.size, model.degree, getattr(model, "elements_", None),
                   getattr(model, "input_range_", None), model.convolution_parameters)).encode())
    return h.hexdigest()


def _image_digest(image: ExperimentalImage) -> str:
    """sha256 of the image as refined against: data, mask, pixel size and origin."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image.data, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(image.mask).tobytes())
    h.update(repr((float(image.pixel_size), tuple(float(v) for v in image.origin))).encode())
    return h.hexdigest()


def calculator_description(calculator):
    """The energy calculator as recorded: its name, None, or its class name."""
    return calculator if calculator is None or isinstance(calculator, str) else type(calculator).__name__


def _model_error_description(inputs: RefinementInputs):
    """What inputs.json records of the model-error term: None (off, or no calibration) or the calibration."""
    discrepancy = getattr(inputs.model, "discrepancy_", None)
    if not inputs.model_error or discrepancy is None:
        return None
    return {"correlation_area": discrepancy.correlation_area, "sigmas_sha256": hashlib.sha256(
        np.asarray(discrepancy.intensities + discrepancy.sigmas, dtype=np.float64).tobytes()).hexdigest()}


def input_record(inputs: RefinementInputs) -> dict:
    """What ``inputs.json`` records: what a resumed run must match (image and model digests, ...)."""
    from refine.search import composition_string

    img, alpha = inputs.image, inputs.alpha
    return {"image_sha256": _image_digest(img), "image_source": img.source, "image_shape": list(img.shape),
            "pixel_size": img.pixel_size, "composition": composition_string(inputs.composition),
            "model": inputs.model_source, "model_sha256": _model_digest(inputs.model),
            "noise": _noise_description(inputs.noise), "dose": inputs.dose,
            "calculator": calculator_description(inputs.calculator),
            "alpha": alpha if isinstance(alpha, str) else float(alpha), "alpha_scale": inputs.alpha_scale,
            "multi_objective": bool(inputs.multi_objective), "model_error": _model_error_description(inputs)}


def _check_resume_inputs(old: dict, new: dict, out: Path) -> None:
    """Refuse to resume when an input that defines the cost differs from the checkpointed run's.

    Costs in the checkpoint (population, hall of fame, α) were computed with the
    old inputs; mixing them with new ones would compare numbers of two
    different cost functions. Keys an older ``inputs.json`` lacks are not checked.
    """
    labels = {"image_sha256": "another image or mask", "model_sha256": "another model", "noise": "noise model",
              "dose": "dose", "model_error": "model error term", "calculator": "energy calculator", "alpha": "alpha", "alpha_scale": "alpha scale"}
    changed = []
    for key, label in labels.items():
        if key in old and old[key] != new.get(key):
            if key.endswith("sha256"):
                changed.append(label + (f" ({old.get('image_source')} before)" if key == "image_sha256" else ""))
            else:
                changed.append(f"{label} ({old[key]!r} before, {new.get(key)!r} now)")
    if changed:
        raise InputError(f"cannot resume {str(out)!r}: the cost would change — " + "; ".join(changed)
                         + ". Resume with the same inputs, or start a new run in another folder")


def resuming_run(inputs: RefinementInputs, record: dict) -> bool:
    """Whether the run continues from the checkpoint in ``inputs.out``.

    With ``resume`` and no checkpoint: a warning, and a new run. With a
    checkpoint: it must be of the same composition and objective mode, and
    ``record`` (see :func:`input_record`) must match ``inputs.json`` in every
    input that defines the cost.
    """
    from refine.search import composition_string, load_checkpoint

    out, ckpt, comp = inputs.out, inputs.checkpoint, inputs.composition
    if inputs.resume and not ckpt.exists():
        log.warning("--resume: no checkpoint in %s; starting a new run", out)
    resuming = bool(inputs.resume and ckpt.exists())
    if resuming:
        state = load_checkpoint(ckpt)
        if dict(state.get("composition", {})) != comp:
            raise InputError(f"cannot resume: the checkpoint in {str(out)!r} is for "
                             f"{composition_string(state.get('composition', {}))}, not {composition_string(comp)}")
        if bool(state["settings"].get("multi_objective")) != bool(inputs.multi_objective):
            raise InputError("cannot resume: the checkpoint was written in the other objective mode")
        try:
            old_inputs = json.loads((out / "inputs.json").read_text())
        except (OSError, ValueError):
            old_inputs = {}
        _check_resume_inputs(old_inputs if isinstance(old_inputs, dict) else {}, record, out)
    return resuming
