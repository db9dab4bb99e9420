"""Step 1 of a refinement: check every input before anything is written.

:func:`refine.workflows.refinement.refine_image` calls these in order: the
seed, the model (default: the shipped one), the composition (only elements
in ``model.elements_`` when the model records them), the image (read,
calibrated and resampled to the model's pixel size by
:func:`refine.io.read_image`; NaN, constant, uncalibrated images are
refused), the starting population, the noise model, the output folder (a
checkpoint there needs ``resume=True``), the GA settings and the counts. The
checked values travel on as one :class:`RefinementInputs`.

What ``inputs.json`` records and whether a run resumes are
:mod:`refine.workflows.resume`'s.

Lengths in Å; every refusal is an :class:`~surrogate.common.errors.InputError`
with a one-line message.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from refine.io import ExperimentalImage
from refine.workflows import defaults
from surrogate.common import InputError

__all__ = [
    "START_SOURCES",
    "RefinementInputs",
    "load_model_or_default",
    "validate_seed",
    "composition_for_model",
    "composition_from_image",
    "elements_only",
    "bare_element",
    "validate_image",
    "validate_image_settings",
    "validate_start",
    "validate_noise",
    "validate_out_dir",
    "ga_settings",
    "validate_workers",
    "validate_start_relax_steps",
    "validate_count_weight",
    "validate_alpha_scale",
    "warn_if_image_too_small",
    "warn_if_microscope_differs",
    "in_detector_units",
]

log = logging.getLogger(__name__)

#: named starting populations (anything else is a structure file)
START_SOURCES = ("random", "shapes", "mixed", "image", "counts", "matched")


@dataclass(frozen=True)
class RefinementInputs:
    """The checked inputs of one refinement (what the later steps read).

    Attributes
    ----------
    model : PolynomialSurrogate
        The fitted surrogate.
    model_source : str
        Where it came from (a path or ``"<object>"``).
    composition : dict
        Element → count, e.g. ``{"Pt": 309}``.
    image : ExperimentalImage
        At the model's pixel size (Å), with its mask.
    start : str
        One of :data:`START_SOURCES` or a structure file.
    noise : str, float or ndarray
        Noise model of χ² (``"estimate"``, ``"poisson"``, a σ or a σ map of
        the image's shape).
    dose : float or None
        Electron dose in e/Å² (Poisson noise).
    out : pathlib.Path
        Output folder (may not exist yet).
    resume : bool
        Whether the caller asked to continue from a checkpoint.
    settings : refine.search.GASettings
        Validated GA settings (α resolved: a float, None for "thermal", or "auto").
    seed : int
    alpha : str or float
        α as given (``"auto"``, ``"thermal"`` or a number): the fitness reads it.
    alpha_scale : float
        Factor on the automatic α (> 0).
    calculator : str, ASE calculator or None
        The energy term as given.
    multi_objective : bool
    workers : int
        Processes for the annealings.
    start_relax_steps : int
        FIRE steps on each random starting cluster.
    count_weight : float or None
        The counted start's count evidence weight (:class:`refine.workflows.StartSettings`).
    fitness_options : dict
        Further :class:`refine.cost.Fitness` keywords.
    model_error : bool
        The surrogate's own error (its model file's calibration) in the noise of χ².
    composition_estimate : refine.analysis.AtomNumberEstimate or None
        The number of atoms estimated from the image when the composition
        was an element without a number (``"Pt"``); None when it was given.
    """

    model: object
    model_source: str
    composition: dict
    image: ExperimentalImage
    start: str
    noise: object
    dose: float | None
    out: Path
    resume: bool
    settings: object
    seed: int
    alpha: object
    alpha_scale: float
    calculator: object
    multi_objective: bool
    workers: int
    start_relax_steps: int
    count_weight: float | None = None
    fitness_options: dict = field(default_factory=dict)
    model_error: bool = True
    composition_estimate: object = None

    @property
    def checkpoint(self) -> Path:
        """The GA's checkpoint file in the output folder."""
        from refine.search import CHECKPOINT_NAME

        return self.out / CHECKPOINT_NAME


# --------------------------------------------------------------------------- model, composition, image

def load_model_or_default(model=None):
    """A fitted surrogate from ``model``: None (the shipped default), a path, or a model.

    Returns
    -------
    (PolynomialSurrogate, str)
        The model and a description of where it came from (path or ``"<object>"``).

    Raises
    ------
    InputError
        Missing or unreadable model file, or no shipped default model.
    """
    if model is None:
        from surrogate import default_model, default_model_path

        path = default_model_path()
        if not path.is_file():
            raise InputError(f"the shipped default model ({path}) is not in this installation yet; "
                             "give a model file (--model FILE, e.g. one made by 'stem-refine fit')")
        try:
            return default_model(), str(path)
        except ValueError as exc:
            raise InputError(f"cannot load the default model: {exc}") from None
    if isinstance(model, (str, os.PathLike)):
        from surrogate.imaging import load_model

        try:
            return load_model(model), str(model)
        except ValueError as exc:  # surrogate.InputError
            raise InputError(str(exc)) from None
    if not hasattr(model, "predict_into") or not hasattr(model, "coef_"):
        raise InputError("model must be a fitted PolynomialSurrogate, a model file, or None for the default")
    return model, "<object>"


def validate_seed(seed) -> int:
    """``seed`` as an ``int`` (a non-negative integer, not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def composition_for_model(composition, model) -> dict:
    """``composition`` (``"Pt309"`` or a mapping) as element → count, only of the model's elements."""
    from refine.search import parse_composition, validate_composition

    allowed = tuple(getattr(model, "elements_", ()) or ())
    if isinstance(composition, str):
        return parse_composition(composition, allowed)
    return validate_composition(composition, allowed)


def elements_only(composition) -> bool:
    """Whether ``composition`` names elements without numbers (``"Pt"``): the image must give the number."""
    import re

    return isinstance(composition, str) and re.fullmatch(r"(?:[A-Z][a-z]?)+", composition.strip()) is not None


def bare_element(composition, allowed=()) -> str | None:
    """The element of a composition given without a number (``"Pt"``), checked against ``allowed``; else None.

    Several elements without numbers (``"PtMo"``) are refused: the image's
    intensity cannot tell their shares apart. ``allowed``: the model's
    elements (empty: any element).
    """
    import re

    from refine.search import validate_composition

    if not elements_only(composition):
        return None
    elements = re.findall(r"[A-Z][a-z]?", composition.strip())
    if len(elements) > 1:
        raise InputError(f"composition {composition!r}: give the number of atoms of each element (e.g. "
                         f"{''.join(e + n for e, n in zip(elements, ('557', '29', '10', '5')))}); only a single "
                         "element's number can be estimated from the image")
    validate_composition({elements[0]: 1}, tuple(allowed))
    return elements[0]


def composition_from_image(composition, model, image: ExperimentalImage):
    """``(composition, estimate)``: an element given without a number (``"Pt"``) gets its number from the image.

    The number of atoms is the image's integrated intensity over the model's
    cross-section per atom (:func:`refine.analysis.estimate_atom_number`);
    ``estimate`` is its :class:`~refine.analysis.AtomNumberEstimate`. Any
    other composition is returned as it is with ``estimate`` None (a given
    number always wins). Several elements without numbers (``"PtMo"``) are
    refused (:func:`bare_element`).
    """
    element = bare_element(composition, getattr(model, "elements_", ()) or ())
    if element is None:
        return composition, None
    from refine.analysis import estimate_atom_number

    if (top := in_detector_units(image)) is not None:
        raise InputError(f"composition {composition!r}: estimating the number of atoms needs IMAGE in fractions of "
                         "the incident beam (--detector-levels VAC,BEAM or --detector-scale S), and it reaches "
                         f"{top:.4g}; or give the number (e.g. {element}900)")
    estimate = estimate_atom_number(image, model, element)
    return {element: estimate.n}, estimate


def validate_image(image, model, *, pixel_size, mask, resample: bool,
                   preparation: dict | None = None, undistort: bool = False,
                   lattice_pixel_size: bool = False) -> ExperimentalImage:
    """The experimental image at the model's pixel size (Å), prepared, masked and, with ``undistort``, corrected
    for its linear scan distortion (:func:`refine.io.distortion.correct_distortion`, on the lattice of the
    model's elements; the last step of ``metadata["preparation"]``). With ``lattice_pixel_size`` the image is
    read again at the pixel size its columns' lattice implies (:func:`refine.io.calibration.calibrate_pixel_size`,
    ``pixel_size`` or the file's being the start; a ``"pixel size from lattice"`` step). Otherwise a warning is
    logged where the columns' lattice says the pixel size is off (:func:`refine.io.calibration.check_pixel_size`).

    See :func:`_prepared_image` for the rest.
    """
    from refine.search import nearest_neighbour_distance

    if undistort and lattice_pixel_size:
        raise InputError("--undistort and --pixel-size-from-lattice both set the scale from the lattice: choose one "
                         "(--undistort also corrects shear)")
    if lattice_pixel_size and isinstance(image, ExperimentalImage):
        raise InputError("--pixel-size-from-lattice applies to an image file or array; an ExperimentalImage "
                         "carries its own pixel size")
    img = _prepared_image(image, model, pixel_size=pixel_size, mask=mask, resample=resample,
                          preparation=preparation)
    elements = list(model.elements_)
    if undistort:
        from refine.io.distortion import correct_distortion

        img, _ = correct_distortion(img, nearest_neighbour_distance(elements))
    elif lattice_pixel_size:
        from refine.io.calibration import calibrate_pixel_size

        def read_at(p):
            return _prepared_image(image, model, pixel_size=p, mask=mask, resample=resample, preparation=preparation)

        img = calibrate_pixel_size(img, read_at, nearest_neighbour_distance(elements), element="".join(elements))
    else:  # a zone-axis image whose lattice says the pixel size is off gets a warning (undistort corrects it)
        from refine.io.calibration import check_pixel_size

        check_pixel_size(img, nearest_neighbour_distance(elements), element="".join(elements))
    return img


def validate_image_settings(image, model, settings) -> ExperimentalImage:
    """:func:`validate_image` with the calibration, mask, resampling and preparation of ``settings``
    (a :class:`refine.workflows.ImageSettings`): the one place that maps its fields onto the keywords."""
    return validate_image(image, model, pixel_size=settings.pixel_size, mask=settings.mask,
                          resample=settings.resample, preparation=settings.preparation(),
                          undistort=settings.undistort, lattice_pixel_size=settings.lattice_pixel_size)


def _prepared_image(image, model, *, pixel_size, mask, resample: bool,
                    preparation: dict | None = None) -> ExperimentalImage:
    """The experimental image at the model's pixel size (Å), prepared and masked.

    ``image`` is a file, a 2-D array (``pixel_size`` in Å needed unless the
    file is calibrated) or an :class:`ExperimentalImage`; it is resampled when
    its pixel size differs from the model's by more than 0.1 %
    (``resample=False``: an error instead). ``preparation``: the keywords of
    :func:`refine.io.prepare_image` (background, detector, crop,
    particle_margin; :meth:`ImageSettings.preparation`), for files and arrays
    only; each step is logged and kept in ``metadata["preparation"]``.
    """
    from refine.io import prepare_image, with_mask
    from refine.io import resample as resample_image
    from refine.io.preparation import MARGIN

    target = float(model.convolution_parameters.pixel_size)
    preparation = dict(preparation or {})
    if isinstance(image, ExperimentalImage):
        asked = {k for k, v in preparation.items()
                 if v is not None and not (k == "particle_margin" and v == MARGIN)}
        if asked or (isinstance(mask, str) and mask.strip().lower() == "auto"):
            raise InputError(f"{', '.join(sorted(asked)) or 'mask=auto'}: preparation applies to an image file or "
                             "array; an ExperimentalImage is used as it is")
        if mask is not None:
            image = with_mask(image, mask)
        if pixel_size is not None:
            raise InputError("pixel_size applies to a file or array; an ExperimentalImage carries its own")
        if abs(image.pixel_size - target) > 1e-3 * target:
            if not resample:
                raise InputError(f"image pixel size {image.pixel_size:.6g} Å differs from the model's "
                                 f"{target:.6g} Å and resampling is turned off")
            data, valid = resample_image(image.data, target / image.pixel_size, mask=image.mask)
            meta = dict(image.metadata, resampled={"from_pixel_size": image.pixel_size, "to_pixel_size": target,
                                                   "from_shape": list(image.shape)})
            image = ExperimentalImage(data=np.ascontiguousarray(data), pixel_size=target, mask=valid,
                                      origin=image.origin, source=image.source, metadata=meta)
            log.info("resampled the image to the model's pixel size %.6g Å: %s px", target, image.shape)
        elif image.pixel_size != target:
            image = replace(image, pixel_size=target)
        return image
    if isinstance(image, (str, os.PathLike, np.ndarray, list, tuple)):
        source = image if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        return prepare_image(source, pixel_size=pixel_size, target_pixel_size=target, mask=mask,
                             resample_images=resample, **preparation)
    raise InputError(f"image must be a file, a 2-D array or an ExperimentalImage, got {type(image).__name__}")


def validate_start(start) -> str:
    """One of :data:`START_SOURCES`, or the path of an existing structure file."""
    if isinstance(start, (str, os.PathLike)) and str(start) in START_SOURCES:
        return str(start)
    p = Path(start)
    if not p.is_file():
        raise InputError(f"start must be one of {', '.join(START_SOURCES)} or an existing structure file, "
                         f"got {str(start)!r}")
    return str(p)


# --------------------------------------------------------------------------- noise

def _noise_spec(noise, dose):
    if dose is not None:
        try:
            d = float(dose)
        except (TypeError, ValueError):
            raise InputError(f"dose must be a positive number of e/Å², got {dose!r}") from None
        if not (math.isfinite(d) and d > 0):
            raise InputError(f"dose must be a positive number of e/Å², got {dose!r}")
        if noise not in (None, "poisson"):
            raise InputError(f"a dose implies Poisson noise; it cannot be combined with noise={noise!r}")
        return "poisson", d
    return (defaults.NOISE if noise is None else noise), None


def _is_sigma_map(noise) -> bool:
    if isinstance(noise, os.PathLike):
        return True
    if isinstance(noise, str):
        return noise.lower() not in ("estimate", "poisson")
    return noise is not None and np.ndim(noise) > 0


def in_detector_units(image: ExperimentalImage) -> float | None:
    """The image's top level (99.9th percentile) when it cannot be in fractions of the incident beam, else None.

    Such an image was not normalised by the preparation and is brighter than
    the whole beam (a HAADF detector never collects more).
    """
    if image.metadata.get("beam_units", False) or not image.n_valid:
        return None
    top = float(np.percentile(image.data[image.mask], 99.9))
    return top if top > 1.0 else None


def validate_noise(noise, dose, image: ExperimentalImage):
    """The noise model of χ² and the dose: ``(noise, dose)``.

    No ``dose``: ``noise`` (None → :data:`refine.workflows.defaults.NOISE`); a σ-map file is read and
    resampled with the image (:func:`refine.io.read_sigma_map`). A ``dose``
    (e/Å², > 0) means ``"poisson"`` and refuses any other noise model.
    """
    noise_model, dose = _noise_spec(noise, dose)
    if dose is not None and (top := in_detector_units(image)) is not None:
        log.warning("--dose: the Poisson model takes IMAGE as fractions of the incident beam, but IMAGE "
                    "reaches %.4g; normalise it (--detector-levels VAC,BEAM or --detector-scale) or leave "
                    "out --dose", top)
    if _is_sigma_map(noise_model):
        from refine.io import read_sigma_map

        noise_model = read_sigma_map(noise_model, image)
    return noise_model, dose


# --------------------------------------------------------------------------- output folder and GA settings

def validate_out_dir(out_dir, resume: bool) -> Path:
    """The output folder: given, a folder if it exists, and holding no checkpoint unless ``resume``.

    A folder with an old pickle checkpoint (``checkpoint.pkl``) is refused either way: it is never opened
    (unpickling can run code), so it can neither be resumed nor silently overwritten.
    """
    from refine.search import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME

    if out_dir is None:
        raise InputError("an output folder is needed (out_dir / --out)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {str(out)!r} exists and is not a folder")
    if (out / LEGACY_CHECKPOINT_NAME).exists():
        raise InputError(f"{str(out)!r} holds an old {LEGACY_CHECKPOINT_NAME}, which this version no longer reads; "
                         "start a new run in another folder")
    if (out / CHECKPOINT_NAME).exists() and not resume:
        raise InputError(f"{str(out)!r} already holds a refinement ({CHECKPOINT_NAME}); resume it with --resume "
                         "or choose another output folder")
    return out


def ga_settings(search, cost, run):
    """The GA settings of a run, validated: ``search`` with α from ``cost`` and checkpoints and progress from ``run``.

    ``search`` is a :class:`refine.search.GASettings`, a recipe name (with
    the default population and generations,
    :func:`refine.workflows.defaults.search_settings`) or None (the default
    search). α: a float, None for ``"thermal"`` (the fitness sets it), or ``"auto"``.

    Returns
    -------
    GASettings
        A copy; ``search`` is left as it is.
    """
    from refine.search import GASettings

    if search is None or isinstance(search, str):
        search = defaults.search_settings(search)
    if not isinstance(search, GASettings):
        raise InputError(f"search must be a GASettings or the name of a search recipe, got {type(search).__name__}")
    alpha = cost.alpha
    if isinstance(alpha, str) and alpha not in ("auto", "thermal"):
        raise InputError(f"alpha must be 'auto', 'thermal' or a non-negative number, got {alpha!r}")
    if alpha == "thermal":
        alpha = None  # the fitness sets it (k_B·T/2)
    elif isinstance(alpha, (int, float, np.floating)) and not isinstance(alpha, bool):
        alpha = float(alpha)
    settings = search.with_flat({"alpha": alpha, "checkpoint_every": run.checkpoint_every, "progress": run.progress})
    return settings.validate()


def validate_workers(workers):
    """``workers``: a positive integer (not a bool)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    return workers


def validate_count_weight(count_weight):
    """``count_weight``: None (or "none"), a positive number or inf (a float)."""
    if count_weight is None or (isinstance(count_weight, str) and count_weight.strip().lower() == "none"):
        return None
    try:
        w = float(count_weight)
    except (TypeError, ValueError):
        w = float("nan")
    if isinstance(count_weight, bool) or not w > 0:
        raise InputError(f"count_weight must be a positive number, inf, or none, got {count_weight!r}")
    return w


def validate_start_relax_steps(start_relax_steps):
    """``start_relax_steps``: a non-negative integer."""
    if not isinstance(start_relax_steps, (int, np.integer)) or start_relax_steps < 0:
        raise InputError(f"start_relax_steps must be a non-negative integer, got {start_relax_steps!r}")
    return start_relax_steps


def validate_alpha_scale(alpha_scale) -> float:
    """``alpha_scale`` as a positive, finite ``float``."""
    try:
        alpha_scale = float(alpha_scale)
    except (TypeError, ValueError):
        raise InputError(f"alpha_scale must be a positive number, got {alpha_scale!r}") from None
    if not (math.isfinite(alpha_scale) and alpha_scale > 0):
        raise InputError(f"alpha_scale must be a positive number, got {alpha_scale!r}")
    return alpha_scale


# --------------------------------------------------------------------------- checks against the image

def _particle_radius(comp) -> float:
    """Radius (Å) of a sphere of ``sum(comp)`` atoms packed as an fcc crystal of the composition's spacing."""
    from refine.search import nearest_neighbour_distance

    n = sum(comp.values())
    d = nearest_neighbour_distance(comp)
    return float((3.0 * n * d ** 3 / math.sqrt(2.0) / (4.0 * math.pi)) ** (1.0 / 3.0))


def warn_if_microscope_differs(image: ExperimentalImage, model) -> list[str]:
    """Log a warning for each setting (voltage, convergence, detector) where the image's file and the model differ.

    Returns the messages (:func:`surrogate.training.modelinfo.microscope_mismatch`;
    empty where either side does not record a setting).
    """
    from surrogate.training.modelinfo import microscope_mismatch

    messages = microscope_mismatch(image.metadata, model)
    for message in messages:
        log.warning("the image's microscope differs from the model's: %s; build a model for it with "
                    "'stem-refine model build --from-image IMAGE'", message)
    return messages


def warn_if_image_too_small(inputs: RefinementInputs) -> None:
    """Log a warning when the image is narrower than a compact particle of the composition."""
    from refine.search import composition_string

    img, comp = inputs.image, inputs.composition
    radius = _particle_radius(comp)
    extent = np.array(img.shape) * img.pixel_size
    if np.any(extent < 2 * radius):
        log.warning("the image (%.1f × %.1f Å) is smaller than a compact %s particle (≈ %.1f Å across)",
                    extent[0], extent[1], composition_string(comp), 2 * radius)
