"""Preparation of a raw HAADF image: from detector counts to what the surrogate predicts.

The surrogate predicts an image in units of the incident beam (the fraction
of the beam that reaches the detector) on a vacuum of 0, of one whole
particle. A microscope image is in detector counts on an offset, often holds
several particles, and needs cutting to one. :func:`prepare_image` reads the
file like :func:`refine.io.read_image` and, in this order, on the whole file:

1. **background** (``background=``): ``None`` leaves the image as it is;
   a number is subtracted; ``"vacuum"`` finds the vacuum
   (:func:`refine.io.particles.find_vacuum`: the pixels more than
   ``particle_margin`` Å beyond every particle's edge) and subtracts their
   mean (clipped at 8 σ), recording the offset, its standard error and the
   vacuum noise σ.
2. **normalisation** (``detector=``) to a fraction of the incident beam, as
   in the detector-scan normalisation of quantitative HAADF-STEM (LeBeau &
   Stemmer, Ultramicroscopy 108, 1653, 2008; StatSTEM):
   I_norm = (I − I_vac) / (I_beam − I_vac), from the detector-scan levels
   ``(I_vac, I_beam)`` (when a background was measured, the image's own
   vacuum replaces I_vac in the numerator; the two are logged side by side),
   or I_norm = (I − b) / S from a scale S (image units per beam fraction).
   Given neither, the scale is **left to the fitness**: it fits a·I_sim + b
   in closed form (:func:`refine.cost.alignment.fit_intensity_map`), so χ²
   needs no absolute scale. Only a Poisson noise model with a ``dose``
   assumes beam units; the record says ``beam_units: false``.
3. **mask** ``"auto"``: the chosen particle (see 4.; else the largest whole
   particle in the crop), its edge (out to where it meets the vacuum's noise)
   and ``particle_margin`` Å of vacuum, keeping only the pixels nearer to it
   than to any other particle: the particle's edge and some vacuum are
   fitted, its neighbours are not. Blocks of exact zeros (padding) are left
   out. (Files and ``"zeros"`` as in :func:`refine.io.read_image`.)
4. **crop**: ``"i0:i1,j0:j1"`` (file pixels, half-open, first axis first),
   ``"auto"`` = the bounding box of the largest particle that lies wholly
   inside the image, grown by its edge and ``particle_margin`` Å, or
   ``"particle:K"`` for the K-th largest. A particle cut by the image edge
   is never chosen: the refinement needs all of its atoms in view.
5. **resample** to the model's Δ (:func:`refine.io.resample`), last.

Particles, their edges and the vacuum are found by :mod:`refine.io.particles`
(the image smoothed by a Gaussian of 1.5 Å, split at Otsu's threshold,
connected groups; a particle's edge reaches to where it meets the vacuum's
noise, and the crop box and the mask take the edge and then the margin).

Every step is recorded in ``metadata["preparation"]`` (a list of
``{"step", "parameters", "values"}``, JSON-ready; thresholds in the file's
units) and logged, one line each; :func:`refine.io.preparation_figure.
plot_preparation` draws them. Lengths in Å, pixel indices of the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, replace

import numpy as np

from refine.io.images import ExperimentalImage, _validate_crop, read_image
from refine.io.particles import (MARGIN, SMOOTHING, box_text, choose_particle, find_vacuum, grow_box, largest_in,
                                 particle_edge, particle_mask, segment_particles, zero_padding)
from surrogate.common import InputError

__all__ = [
    "MARGIN",
    "SMOOTHING",
    "Crop",
    "Detector",
    "normalise_detector",
    "parse_background",
    "parse_crop",
    "parse_detector",
    "parse_margin",
    "prepare_image",
    "preparation_measured",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the settings' grammar

@dataclass(frozen=True)
class Crop:
    """A crop: a ``box`` (i0, i1, j0, j1) in file pixels, or the ``particle``-th largest whole particle (1: largest)."""

    box: tuple | None = None
    particle: int | None = None

    def __str__(self) -> str:
        if self.box is not None:
            i0, i1, j0, j1 = self.box
            return f"{i0}:{i1},{j0}:{j1}"
        return "auto" if self.particle == 1 else f"particle:{self.particle}"


@dataclass(frozen=True)
class Detector:
    """Detector normalisation: I_norm = (I − b) / ``scale``.

    b is ``vacuum`` (the detector scan's) unless a background was measured.
    ``vacuum`` is None for a bare scale (``--detector-scale``); ``beam`` = vacuum + scale.
    """

    scale: float
    vacuum: float | None = None

    @property
    def beam(self) -> float | None:
        return None if self.vacuum is None else self.vacuum + self.scale


def parse_background(value):
    """``None``/"none", "vacuum" or a number (file units) → None, "vacuum" or float."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "vacuum":
        return "vacuum"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"background must be 'none', 'vacuum' or a number (image units), got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"background must be finite, got {value!r}")
    return v


def parse_detector(value) -> Detector | None:
    """None, a scale S (> 0, image units per beam fraction), or levels "VAC,BEAM" / (VAC, BEAM) with BEAM > VAC."""
    if value is None or isinstance(value, Detector):
        return value
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    elif np.ndim(value) == 0:
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"detector must be a scale S or the levels 'VAC,BEAM' of a detector scan, got {value!r}")
    if len(numbers) == 1:
        if numbers[0] <= 0:
            raise InputError(f"detector scale must be positive (image units per fraction of the beam), got {value!r}")
        return Detector(scale=numbers[0])
    vac, beam = numbers
    if beam <= vac:
        raise InputError(f"detector levels VAC,BEAM = {vac:g},{beam:g}: the beam level must be above the vacuum level")
    return Detector(scale=beam - vac, vacuum=vac)


def parse_crop(value) -> Crop | None:
    """None, "auto", "particle:K", "i0:i1,j0:j1" or (i0, i1, j0, j1) → :class:`Crop` (not yet checked on an image)."""
    if value is None or isinstance(value, Crop):
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text == "auto":
            return Crop(particle=1)
        m = re.fullmatch(r"particle:(\d+)", text)
        if m:
            if int(m.group(1)) < 1:
                raise InputError(f"crop {value!r}: particles are counted from 1 (the largest)")
            return Crop(particle=int(m.group(1)))
        m = re.fullmatch(r"(\d+):(\d+),(\d+):(\d+)", text)
        if not m:
            raise InputError(f"crop must be 'i0:i1,j0:j1' (file pixels), 'auto' or 'particle:K', got {value!r}")
        box = tuple(int(g) for g in m.groups())
    else:
        try:
            box = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            raise InputError(f"crop must be (i0, i1, j0, j1), 'auto' or 'particle:K', got {value!r}") from None
    if not (box[0] < box[1] and box[2] < box[3]) or min(box) < 0:
        raise InputError(f"crop {value!r}: need 0 ≤ i0 < i1 and 0 ≤ j0 < j1 (half-open file pixel ranges)")
    return Crop(box=box)


def parse_margin(value) -> float:
    """The particle margin in Å (≥ 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"particle margin must be a number of Å, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise InputError(f"particle margin must be a non-negative number of Å, got {value!r}")
    return v


# --------------------------------------------------------------------------- the whole preparation

def normalise_detector(data: np.ndarray, detector: Detector, background: float | None) -> tuple[np.ndarray, float]:
    """(I − b) / scale, and b: the measured ``background`` if any, else the detector's vacuum level (or 0)."""
    b = background if background is not None else (detector.vacuum if detector.vacuum is not None else 0.0)
    return (data - b) / detector.scale, float(b)


def _record(steps: list, step: str, parameters: dict, values: dict, message: str, *args) -> None:
    steps.append({"step": step, "parameters": parameters, "values": values})
    log.info("%s: " + message, step, *args)


def prepare_image(source, *, pixel_size: float | None = None, target_pixel_size: float | None = None, mask=None,
                  crop=None, background=None, detector=None, particle_margin: float = MARGIN,
                  smoothing: float = SMOOTHING, resample_images: bool = True, rtol: float = 1e-3, order: int = 3,
                  signal=None, frame: int | None = None, origin=None) -> ExperimentalImage:
    """Read a raw image and prepare it for the fitness: background, normalisation, mask, crop, resampling.

    Parameters
    ----------
    source, pixel_size, target_pixel_size, resample_images, rtol, order, signal, frame, origin
        As for :func:`refine.io.read_image`.
    mask : array_like, path, "zeros", "auto" or None
        As for :func:`read_image`, or ``"auto"``: the particle mask (module docstring, step 3).
    crop : str, (i0, i1, j0, j1) or None
        ``"i0:i1,j0:j1"`` or a tuple (file pixels), ``"auto"``, ``"particle:K"`` (:func:`parse_crop`).
    background : None, "none", "vacuum" or float
        Subtracted first (:func:`parse_background`), file units.
    detector : None, float, "VAC,BEAM" or (VAC, BEAM)
        Normalisation to a fraction of the incident beam (:func:`parse_detector`).
    particle_margin : float
        Å of vacuum kept beyond the particle's edge by the automatic mask and
        crop; also the least distance of a vacuum pixel from a particle's edge.
    smoothing : float
        Å, σ of the Gaussian before the particle threshold.

    Returns
    -------
    ExperimentalImage
        With ``metadata["preparation"]`` (list of steps) and ``metadata["beam_units"]``.

    Raises
    ------
    InputError
        As :func:`read_image`, and: a crop outside the image, no vacuum found,
        no particle found (for ``crop="auto"``/``mask="auto"``), detector levels
        with BEAM ≤ VAC, a bad margin.
    """
    bg = parse_background(background)
    det = parse_detector(detector)
    cut = parse_crop(crop)
    margin = parse_margin(particle_margin)
    auto_mask = isinstance(mask, str) and mask.strip().lower() == "auto"
    read = dict(pixel_size=pixel_size, signal=signal, frame=frame, origin=origin)
    finish = dict(target_pixel_size=target_pixel_size, resample_images=resample_images, rtol=rtol, order=order)
    steps: list = []
    if bg is None and det is None and not auto_mask and (cut is None or cut.box is not None):
        # nothing to measure on the image: read_image does it all, exactly as without preparation
        image = read_image(source, mask=mask, crop=None if cut is None else cut.box, **read, **finish)
        _record_read(steps, image, signal, frame, pixel_size, origin, mask)
        _record_unmeasured(steps, image, cut)
        return replace(image, metadata={**image.metadata, "preparation": steps, "beam_units": False})

    raw = read_image(source, mask=None if auto_mask else mask, **read)
    name = raw.source if raw.source != "<array>" else "the image"
    data, valid, step = raw.data, raw.mask, raw.pixel_size
    if auto_mask:
        padding = zero_padding(data)
        if padding.any():
            # StatSTEM-style files pad with exact zeros; mask 'auto' cannot be combined with 'zeros', so it
            # leaves such blocks out itself (an isolated 0 among counts stays)
            valid = ~padding
            log.info("read: %d pixels of zero padding left out (mask auto)", int(padding.sum()))
    if cut is not None and cut.box is not None:
        _validate_crop(cut.box, data.shape)
    _record_read(steps, raw, signal, frame, pixel_size, origin, mask)
    seg = segment_particles(data, valid, step, smoothing=smoothing, margin=margin)
    seg_parameters = {"smoothing_A": seg.smoothing, "margin_A": margin}
    seg_values = {"threshold": seg.threshold, "edge_threshold": seg.edge, "contrast": seg.contrast,
                  "particles": seg.n_particles, "whole_particles": len(seg.ranked_whole())}

    # 1. background
    offset = None
    if bg == "vacuum":
        vac = find_vacuum(data, seg, name=name)
        offset = vac.level
        _record(steps, "background", {"method": "vacuum", **seg_parameters},
                {"offset": vac.level, "offset_standard_error": vac.standard_error, "noise_sigma": vac.sigma,
                 "n_vacuum_pixels": vac.n, **seg_values},
                "vacuum level %.6g ± %.2g subtracted (noise σ %.4g, %d vacuum pixels, threshold %.6g)",
                vac.level, vac.standard_error, vac.sigma, vac.n, seg.threshold)
    elif bg is not None:
        offset = float(bg)
        _record(steps, "background", {"method": "value", "value": offset}, {"offset": offset},
                "%.6g subtracted (given)", offset)
    else:
        _record(steps, "background", {"method": "none"}, {"offset": 0.0}, "none subtracted (the fitness fits b)")
    prepared = data - offset if offset is not None else data.copy()

    # 2. normalisation
    if det is not None:
        prepared, b = normalise_detector(data, det, offset)
        values = {"scale": det.scale, "offset": b, "beam_units": True}
        if det.vacuum is not None and offset is not None:
            values["detector_vacuum_minus_image_background"] = det.vacuum - offset
        if bg == "vacuum":
            values["noise_sigma_beam"] = steps[-1]["values"]["noise_sigma"] / det.scale
        params = ({"method": "detector_levels", "vacuum": det.vacuum, "beam": det.beam} if det.vacuum is not None
                  else {"method": "detector_scale", "scale": det.scale})
        _record(steps, "normalisation", params, values,
                "I_norm = (I − %.6g) / %.6g (fraction of the incident beam, %s)", b, det.scale, params["method"])
    else:
        _record_unnormalised(steps)

    # 3.–4. crop choice and mask, on the file's pixels
    label = edge = None
    if cut is not None and cut.particle is not None:
        label = choose_particle(seg, cut.particle, name=name)
        particle, edge = seg.boxes[label - 1], particle_edge(seg, label, step)
        box = grow_box(particle, (edge + margin) / step, data.shape)
        _record(steps, "crop", {"method": str(cut), **seg_parameters},
                {"box": list(box), "particle_box": list(particle), "particle_area_px": int(seg.areas[label - 1]),
                 "particle_size_A": _box_size(particle, step), "edge_A": edge, **seg_values},
                "particle %d of %d wholly in view (%.1f × %.1f Å at the threshold, edge %.2g Å), box %s with "
                "%.3g Å margin", cut.particle, len(seg.ranked_whole()), *_box_size(particle, step), edge,
                box_text(box), margin)
        g = math.ceil((edge + margin) / step)
        if min(particle[0] - g, particle[2] - g) < 0 or particle[1] + g > data.shape[0] or \
                particle[3] + g > data.shape[1]:
            log.warning("crop: the particle's edge and %.3g Å margin are cut by the image edge", margin)
    elif cut is not None:
        box = cut.box
        _record(steps, "crop", {"method": "box"}, {"box": list(box)}, "box %s (given)", box_text(box))
    else:
        box = (0, data.shape[0], 0, data.shape[1])
    if auto_mask:
        if label is None:
            label = largest_in(seg, box, name)
            edge = particle_edge(seg, label, step)
        valid = particle_mask(seg, label, step, reach=edge + margin, valid=valid, window=box)
        _record(steps, "mask", {"method": "auto", **seg_parameters},
                {"particle_box": list(seg.boxes[label - 1]), "edge_A": edge, "n_valid_file_px": int(valid.sum()),
                 **seg_values},
                "particle %s, its %.2g Å edge and %.3g Å of vacuum: %d file pixels used",
                box_text(seg.boxes[label - 1]), edge, margin, int(valid.sum()))
    elif label is not None:
        i0, i1, j0, j1 = box
        intruders = int(np.count_nonzero(seg.above[i0:i1, j0:j1] & (seg.labels[i0:i1, j0:j1] != label)))
        if intruders:
            log.warning("crop: %d pixels of other particles lie in the box; --mask auto leaves them out", intruders)

    # 5. crop and resample, through read_image (it records crop and resampled)
    crop_box = None if cut is None else tuple(box)
    image = read_image(prepared, pixel_size=step, origin=raw.origin, mask=valid, crop=crop_box, **finish)
    meta = dict(raw.metadata)
    for key in ("crop", "resampled"):
        if key in image.metadata:
            meta[key] = image.metadata[key]
    _record_resample(steps, image)
    meta["preparation"] = steps
    meta["beam_units"] = det is not None
    return replace(image, source=raw.source, metadata=meta)


def preparation_measured(metadata: dict) -> bool:
    """Whether the preparation recorded in ``metadata["preparation"]`` measured anything on the file.

    True for a background from vacuum pixels, a detector normalisation, a
    crop to a segmented particle or an automatic mask; False for an image
    read as it is (a given box crop and resampling measure nothing).
    """
    steps = {s["step"]: s.get("parameters", {}) for s in metadata.get("preparation") or []}
    return (steps.get("background", {}).get("method", "none") != "none"
            or steps.get("normalisation", {}).get("method", "fitted") != "fitted"
            or steps.get("crop", {}).get("method", "box") != "box"
            or steps.get("mask", {}).get("method") == "auto")


def _box_size(box, step) -> list:
    return [round((box[1] - box[0]) * step, 3), round((box[3] - box[2]) * step, 3)]


def _record_read(steps: list, image: ExperimentalImage, signal, frame, pixel_size, origin, mask) -> None:
    """What was read, with what it takes to read the file again (not logged: read_image says it)."""
    meta = image.metadata
    file_mask = None
    if isinstance(mask, (str, os.PathLike)):
        file_mask = str(mask).strip() if str(mask).strip().lower() != "auto" else "auto"
    elif mask is not None and not isinstance(mask, str):
        file_mask = "<array>"
    steps.append({"step": "read", "parameters": {"source": image.source, "signal": signal, "frame": frame,
                                                 "pixel_size": pixel_size,
                                                 "origin": None if origin is None else [float(v) for v in origin],
                                                 "mask": file_mask},
                  "values": {"file_shape": meta.get("file_shape"), "file_pixel_size": meta.get("file_pixel_size"),
                             "calibration": meta.get("calibration")}})


def _record_unnormalised(steps: list) -> None:
    _record(steps, "normalisation", {"method": "fitted"},
            {"beam_units": False, "note": "the scale is left to the fitness's closed-form fit of a·I_sim + b; "
                                          "a Poisson noise model with a dose assumes beam units"},
            "none: the fitness fits the scale a of a·I_sim + b (beam units only with --detector-*)")


def _record_unmeasured(steps: list, image: ExperimentalImage, cut) -> None:
    """The record of a preparation that measured nothing (read_image did crop and resampling)."""
    _record(steps, "background", {"method": "none"}, {"offset": 0.0}, "none subtracted (the fitness fits b)")
    _record_unnormalised(steps)
    if cut is not None:
        _record(steps, "crop", {"method": "box"}, {"box": list(cut.box)}, "box %s (given)", box_text(cut.box))
    _record_resample(steps, image)


def _record_resample(steps: list, image: ExperimentalImage) -> None:
    res = image.metadata.get("resampled")
    if res:
        _record(steps, "resample", {"to_pixel_size": res["to_pixel_size"], "order": res["order"]},
                {"from_pixel_size": res["from_pixel_size"], "shape": list(image.shape)},
                "%.6g Å → %.6g Å, %s px", res["from_pixel_size"], res["to_pixel_size"], image.shape)
    else:
        _record(steps, "resample", {"to_pixel_size": image.pixel_size}, {"shape": list(image.shape)},
                "none needed (%.6g Å), %s px", image.pixel_size, image.shape)
