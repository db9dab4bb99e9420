"""One refinement, end to end: image + composition + model → best structure and report files.

:func:`refine_image` is what ``stem-refine refine`` and ``stem-refine demo``
call. It

1. **validates every input before writing anything**: the model (default: the
   shipped one, :func:`surrogate.default_model`), the composition (only
   elements in ``model.elements_`` when the model records them; the energy
   calculator must cover them too), the image (read, calibrated and
   resampled to the model's pixel size by :func:`refine.io.images.read_image`;
   NaN, constant, uncalibrated images are refused), the GA settings, the
   starting population, and that ``out_dir`` holds no other run (a
   checkpoint there needs ``resume=True``);
2. builds the :class:`refine.cost.fitness.Fitness` (image term, EMT energy, α,
   noise model) and a seeded starting population (random compact clusters,
   :mod:`ase.cluster` shapes, or the frames of a structure file), placed on
   the image's intensity centroid;
3. runs :func:`refine.search.ga.run_ga` with checkpoints in ``out_dir``
   (``resume=True`` continues from ``out_dir/checkpoint.pkl``);
4. writes the results into ``out_dir``, each file atomically (temporary file
   in the same folder, then :func:`os.replace`):

   ``best.xyz``
       extxyz of the best structure moved onto the image (its alignment shift
       applied), with the energy (eV) as a single-point calculator result and
       ``cost``, ``chi2``, ``chi2_per_pixel``, ``alpha``, ``scale``,
       ``offset``, ``generation`` in ``info``.
   ``hall_of_fame.xyz`` (``pareto.xyz`` in multi-objective mode)
       the best distinct structures (the Pareto front sorted by χ²).
   ``experimental.npy``, ``simulated.npy``, ``difference.npy``
       the image as refined against (after resampling), a·I_sim + b of the
       best structure, and their difference (NaN where masked); all
       ``image[i, j]`` at ``(x0 + iΔ, y0 + jΔ)``.
   ``images.png``
       the three as one panel figure (x to the right, y up).
   ``fitness_history.png``
       best and mean cost, best χ² per pixel and best energy per generation,
       read from ``logbook.csv``.
   ``summary.json``
       best cost, χ², χ² per pixel, E, α, generations, wall time, seed,
       model, domain-warning flag, noise model, settings, file names.
   ``inputs.json``
       written at the start: what a resumed run must match (image checksum,
       composition, model).

   plus the GA's own ``checkpoint.pkl`` and ``logbook.csv``.

Lengths in Å, energies in eV.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from surrogate.common import atomic_write_with
from surrogate.common import save_figure

from surrogate.common import InputError
from refine.io import ExperimentalImage

__all__ = ["refine_image", "RefinementResult", "load_model_or_default", "START_SOURCES", "OUTPUT_FILES"]

log = logging.getLogger(__name__)

#: named starting populations (anything else is a structure file)
START_SOURCES = ("random", "shapes", "mixed", "image")
#: files written by :func:`refine_image` (besides checkpoint.pkl and logbook.csv)
OUTPUT_FILES = ("best.xyz", "summary.json", "experimental.npy", "simulated.npy", "difference.npy",
                "images.png", "fitness_history.png")
_SUMMARY_VERSION = 1


@dataclass
class RefinementResult:
    """What :func:`refine_image` returns.

    Attributes
    ----------
    best : ase.Atoms
        Best structure, moved onto the image (as in ``best.xyz``); ``info``
        has cost, chi2, chi2_per_pixel, alpha, energy (eV).
    summary : dict
        The contents of ``summary.json``.
    out_dir : pathlib.Path
    files : dict
        Output name → path.
    ga : refine.search.ga.GAResult
        The GA's own result (population, hall of fame, logbook, Pareto front).
    fitness : refine.cost.fitness.Fitness
        The fitness the run used (α set), for re-evaluating structures.
    """

    best: Atoms
    summary: dict
    out_dir: Path
    files: dict = field(default_factory=dict)
    ga: object = None
    fitness: object = None


# --------------------------------------------------------------------------- validation

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


def _model_info(model, source: str) -> dict:
    params = model.convolution_parameters
    return {"source": source, "elements": list(getattr(model, "elements_", ())),
            "pixel_size": float(params.pixel_size), "size": int(model.size), "degree": int(model.degree),
            "n_terms": int(len(model.coef_)), "input_range": [float(v) for v in getattr(model, "input_range_", ())]}


def _validate_image(image, model, *, pixel_size, mask, resample: bool) -> ExperimentalImage:
    from refine.io import read_image, with_mask
    from refine.io import resample as resample_image

    target = float(model.convolution_parameters.pixel_size)
    if isinstance(image, ExperimentalImage):
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
            from dataclasses import replace

            image = replace(image, pixel_size=target)
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, pixel_size=pixel_size, target_pixel_size=target, mask=mask,
                          resample_images=resample)
    if isinstance(image, np.ndarray) or isinstance(image, (list, tuple)):
        return read_image(np.asarray(image), pixel_size=pixel_size, target_pixel_size=target, mask=mask,
                          resample_images=resample)
    raise InputError(f"image must be a file, a 2-D array or an ExperimentalImage, got {type(image).__name__}")


def _validate_start(start):
    if isinstance(start, (str, os.PathLike)) and str(start) in START_SOURCES:
        return str(start)
    p = Path(start)
    if not p.is_file():
        raise InputError(f"start must be one of {', '.join(START_SOURCES)} or an existing structure file, "
                         f"got {str(start)!r}")
    return str(p)


def _validate_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


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
    return ("estimate" if noise is None else noise), None


def _is_sigma_map(noise) -> bool:
    if isinstance(noise, os.PathLike):
        return True
    if isinstance(noise, str):
        return noise.lower() not in ("estimate", "poisson")
    return noise is not None and np.ndim(noise) > 0


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


def _calculator_description(calculator):
    return calculator if calculator is None or isinstance(calculator, str) else type(calculator).__name__


def _check_resume_inputs(old: dict, new: dict, out: Path) -> None:
    """Refuse to resume when an input that defines the cost differs from the checkpointed run's.

    Costs in the checkpoint (population, hall of fame, α) were computed with the
    old inputs; mixing them with new ones would compare numbers of two
    different cost functions. Keys an older ``inputs.json`` lacks are not checked.
    """
    labels = {"image_sha256": "another image or mask", "model_sha256": "another model", "noise": "noise model",
              "dose": "dose", "calculator": "energy calculator", "alpha": "alpha", "alpha_scale": "alpha scale"}
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


def _image_digest(image: ExperimentalImage) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image.data, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(image.mask).tobytes())
    h.update(repr((float(image.pixel_size), tuple(float(v) for v in image.origin))).encode())
    return h.hexdigest()


def _particle_radius(comp) -> float:
    from refine.search import nearest_neighbour_distance

    n = sum(comp.values())
    d = nearest_neighbour_distance(comp)
    return float((3.0 * n * d ** 3 / math.sqrt(2.0) / (4.0 * math.pi)) ** (1.0 / 3.0))


# --------------------------------------------------------------------------- atomic writes

def _write_json(path: Path, obj) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
    return atomic_write_with(path, lambda t: Path(t).write_text(text))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _write_npy(path: Path, array) -> Path:
    def w(t):
        with open(t, "wb") as fh:
            np.save(fh, np.asarray(array))
    return atomic_write_with(path, w)


def _write_xyz(path: Path, frames) -> Path:
    from ase.io import write

    return atomic_write_with(path, lambda t: write(t, frames, format="extxyz"))


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- figures

def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_images(experimental, simulated, difference, grid, path, *, title: str = "") -> Path:
    """Experimental, simulated and difference images side by side (x right, y up) as a PNG."""
    x0, y0 = grid.origin
    x1 = x0 + (grid.shape[0] - 1) * grid.pixel_size
    y1 = y0 + (grid.shape[1] - 1) * grid.pixel_size
    extent = (x0, x1, y0, y1)
    fig = _figure((12.5, 4.3))
    axes = fig.subplots(1, 3)
    lo = float(np.nanmin([np.nanmin(experimental), np.nanmin(simulated)]))
    hi = float(np.nanmax([np.nanmax(experimental), np.nanmax(simulated)]))
    for ax, data, name in ((axes[0], experimental, "experimental"), (axes[1], simulated, "simulated (a·I + b)")):
        im = ax.imshow(np.asarray(data).T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, shrink=0.8)
    lim = float(np.nanmax(np.abs(difference))) if np.isfinite(difference).any() else 1.0
    im = axes[2].imshow(np.asarray(difference).T, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[2].set_title("experimental − simulated")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, Path(path), dpi=110, format="png")


def _read_logbook(path: Path) -> dict:
    cols: dict = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                try:
                    cols.setdefault(k, []).append(float(v) if v not in ("", None) else math.nan)
                except ValueError:
                    cols.setdefault(k, []).append(math.nan)
    return {k: np.asarray(v) for k, v in cols.items()}


def plot_history(logbook_csv, path, *, n_valid: int | None = None) -> Path:
    """Best/mean cost, best χ² (per pixel when ``n_valid`` is given) and best E per generation."""
    cols = _read_logbook(Path(logbook_csv))
    gen = cols.get("gen", np.array([]))
    fig = _figure((12.5, 3.8))
    axes = fig.subplots(1, 3)
    if "best_cost" in cols:
        axes[0].plot(gen, cols["best_cost"], label="best")
    if "mean_cost" in cols:
        axes[0].plot(gen, cols["mean_cost"], label="mean", alpha=0.6)
    axes[0].set_ylabel("cost E + α·χ²")
    axes[0].legend()
    chi = cols.get("best_chi2", np.full_like(gen, np.nan))
    if n_valid:
        chi = chi / n_valid
    axes[1].plot(gen, chi)
    axes[1].set_ylabel("χ² per pixel (best)" if n_valid else "χ² (best)")
    if np.all(np.isfinite(chi)) and chi.size and np.all(chi > 0):
        axes[1].set_yscale("log")
    axes[2].plot(gen, cols.get("best_energy", np.full_like(gen, np.nan)))
    axes[2].set_ylabel("E (eV, best)")
    for ax in axes:
        ax.set_xlabel("generation")
    return save_figure(fig, Path(path), dpi=110, format="png")


# --------------------------------------------------------------------------- the run

@contextlib.contextmanager
def _anneal_pool(workers: int):
    """A process pool's ordered ``map`` for the annealings (None: serial)."""
    if workers <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers inherit the imported, jitted modules (no re-compilation)
    method = "fork" if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context(method)) as pool:
        yield lambda f, xs: list(pool.map(f, list(xs)))


def refine_image(image, composition, *, model=None, out_dir, population: int = 20, generations: int = 100,
                 seed: int = 0, alpha="auto", time_limit: float | None = None, pixel_size: float | None = None,
                 resume: bool = False, mask=None, start="random", noise=None, dose: float | None = None,
                 multi_objective: bool = False, calculator="auto", stagnation: int | None = None,
                 relax_steps: int | None = None, start_relax_steps: int = 0, resample: bool = True,
                 checkpoint_every: int = 1, progress: bool = True, alpha_scale: float = 1.0,
                 ga_options: dict | None = None, fitness_options: dict | None = None,
                 workers: int = 1, search: str = "plain", log_file: bool = False) -> RefinementResult:
    """Refine the structure of a particle of ``composition`` against ``image``.

    Parameters
    ----------
    image : str, os.PathLike, ndarray or ExperimentalImage
        The experimental image: a file (TIFF, ``.npy``, DM3/DM4, EMD, ... see
        :func:`refine.io.images.read_image`), a 2-D array (needs ``pixel_size``),
        or an already read :class:`ExperimentalImage`. Resampled to the
        model's pixel size when its calibration differs (``resample=False``:
        an error instead).
    composition : str or mapping
        E.g. ``"Pt309"``; only elements the model was fitted on.
    model : PolynomialSurrogate, path or None
        The surrogate; None: the shipped default model.
    out_dir : path
        Output folder (created). A folder with a checkpoint needs ``resume=True``.
    population, generations : int
        μ and the maximum number of generations (counted over resumed runs).
    seed : int
        Seeds the one :class:`numpy.random.Generator` of the run.
    alpha : "auto", "thermal" or float
        Weight of χ² in the cost (see :mod:`refine.cost.fitness`).
    alpha_scale : float
        With ``alpha="auto"``: multiply the automatic α by this (> 1 favours the image).
    time_limit : float, optional
        Seconds of GA wall time (summed over resumed runs).
    pixel_size : float, optional
        Å per pixel of the image file when it has no (or a wrong) calibration.
    resume : bool
        Continue from ``out_dir/checkpoint.pkl`` (same image and composition required).
    mask : array_like, path or "zeros", optional
        Pixels used (True) — see :func:`refine.io.images.read_image`.
    start : {"random", "shapes", "mixed", "image"} or path
        Starting population: random compact clusters, :mod:`ase.cluster`
        shapes, half of each, clusters following the image, or a structure file.
    noise : "estimate", "poisson", float or None
        Noise model of χ² (default: estimated uniform σ; with ``dose``: Poisson).
    dose : float, optional
        Electron dose in e/Å² (the image in units of the incident beam), for Poisson noise.
    multi_objective : bool
        NSGA-II on (χ², E); ``pareto.xyz`` holds the front and ``best.xyz`` its lowest-cost member.
    calculator : str or ASE calculator
        Energy term (:func:`refine.cost.energy.make_calculator`); None drops it.
    stagnation : int, optional
        Stop after this many generations without improvement.
    relax_steps, start_relax_steps : int
        FIRE steps on each offspring / each random starting cluster (0: none).
        ``relax_steps`` None: 20 with a search that relaxes on the image
        cost (``"anneal"``), else 0.
    ga_options, fitness_options : dict, optional
        Further :class:`refine.search.ga.GASettings` fields and :class:`refine.cost.fitness.Fitness` keywords.
    workers : int
        Processes for the image-restrained annealings (``anneal_every`` in
        ``ga_options``); results do not depend on it.
    search : {"plain", "anneal"}
        Search recipe (:mod:`refine.search.recipes`): GASettings fields applied
        before ``ga_options`` (which override them). ``stem-refine refine``
        uses ``"anneal"`` by default.
    log_file : bool
        Also log INFO and above (α and its rule, resampling, annealing and
        polish results, the stop) to ``out_dir/refine.log``, appended over
        resumed runs (:mod:`refine.workflows.runlog`); ``stem-refine refine`` does.

    Returns
    -------
    RefinementResult

    Raises
    ------
    InputError
        Any bad input; raised before anything is written to ``out_dir``.
    """
    params = {k: v for k, v in locals().items() if k != "log_file"}
    if not (log_file and out_dir is not None):
        return _refine_image(**params)
    from refine.workflows.runlog import run_log

    # records of a run that fails before its folder exists are dropped with it
    with run_log(out_dir) as folder_log:
        return _refine_image(**params, folder_log=folder_log)


def _refine_image(image, composition, *, model, out_dir, population, generations, seed, alpha, time_limit,
                  pixel_size, resume, mask, start, noise, dose, multi_objective, calculator, stagnation,
                  relax_steps, start_relax_steps, resample, checkpoint_every, progress, alpha_scale, ga_options,
                  fitness_options, workers, search, folder_log=None) -> RefinementResult:
    """:func:`refine_image` (its parameters); ``folder_log.open()`` once ``out_dir`` exists (refine.log)."""
    t_start = time.perf_counter()
    from refine.cost import Fitness
    from refine.search import (
        CHECKPOINT_NAME,
        LOGBOOK_NAME,
        FitnessDifference,
        GASettings,
        load_checkpoint,
        run_ga,
    )
    from refine.search import LocalRelaxation
    from refine.search import (
        composition_string,
        make_population,
        parse_composition,
        validate_composition,
    )

    # ---- validate everything before touching out_dir
    seed = _validate_seed(seed)
    mdl, model_source = load_model_or_default(model)
    allowed = tuple(getattr(mdl, "elements_", ()) or ())
    if isinstance(composition, str):
        comp = parse_composition(composition, allowed)
    else:
        comp = validate_composition(composition, allowed)
    img = _validate_image(image, mdl, pixel_size=pixel_size, mask=mask, resample=resample)
    start = _validate_start(start)
    noise_model, dose = _noise_spec(noise, dose)
    if _is_sigma_map(noise_model):
        from refine.io import read_sigma_map

        noise_model = read_sigma_map(noise_model, img)
    if out_dir is None:
        raise InputError("an output folder is needed (out_dir / --out)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {str(out)!r} exists and is not a folder")
    ckpt = out / CHECKPOINT_NAME
    if ckpt.exists() and not resume:
        raise InputError(f"{str(out)!r} already holds a refinement (checkpoint.pkl); resume it with --resume "
                         "or choose another output folder")
    from refine.search import search_options

    recipe = search_options(search)
    if multi_objective:
        # The finishing stage chooses one answer at one α; NSGA-II keeps the whole (χ², E)
        # front instead, so a recipe's finishing stage does not apply (an explicit one is refused).
        dropped = [k for k in ("finish_fraction", "finish_alpha", "finish_weights") if k in recipe]
        for k in dropped:
            del recipe[k]
        if dropped:
            log.info("multi-objective mode: the %r search's finishing stage is off", search)
    opts = {**recipe, **dict(ga_options or {})}
    if relax_steps is None:
        relax_steps = 20 if opts.get("relax_image") else 0
    try:
        settings = GASettings(population_size=population, generations=generations, alpha=alpha,
                              time_limit=time_limit, multi_objective=bool(multi_objective),
                              stagnation=stagnation, relax_steps=relax_steps, checkpoint_every=checkpoint_every,
                              progress=progress, **opts)
    except TypeError as exc:
        raise InputError(f"unknown GA option: {exc}") from None
    if isinstance(settings.alpha, str) and settings.alpha not in ("auto", "thermal"):
        raise InputError(f"alpha must be 'auto', 'thermal' or a non-negative number, got {alpha!r}")
    if settings.alpha == "thermal":
        settings.alpha = None  # the fitness sets it (k_B·T/2)
    if isinstance(alpha, (int, float, np.floating)) and not isinstance(alpha, bool):
        settings.alpha = float(alpha)
    settings.validate()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(start_relax_steps, (int, np.integer)) or start_relax_steps < 0:
        raise InputError(f"start_relax_steps must be a non-negative integer, got {start_relax_steps!r}")
    fit_kw = dict(fitness_options or {})
    try:
        alpha_scale = float(alpha_scale)
    except (TypeError, ValueError):
        raise InputError(f"alpha_scale must be a positive number, got {alpha_scale!r}") from None
    if not (math.isfinite(alpha_scale) and alpha_scale > 0):
        raise InputError(f"alpha_scale must be a positive number, got {alpha_scale!r}")
    fitness_cls = Fitness
    if alpha_scale != 1.0:
        fitness_cls = _scaled_alpha_fitness()
        fit_kw["alpha_scale"] = alpha_scale
    fitness = fitness_cls(mdl, img, alpha=alpha, noise=noise_model, dose=dose, calculator=calculator,
                      symbols=list(comp) if calculator is not None else None,
                      mode="pareto" if multi_objective else "weighted", **fit_kw)
    radius = _particle_radius(comp)
    extent = np.array(img.shape) * img.pixel_size
    if np.any(extent < 2 * radius):
        log.warning("the image (%.1f × %.1f Å) is smaller than a compact %s particle (≈ %.1f Å across)",
                    extent[0], extent[1], composition_string(comp), 2 * radius)
    digest = _image_digest(img)
    inputs = {"image_sha256": digest, "image_source": img.source, "image_shape": list(img.shape),
              "pixel_size": img.pixel_size, "composition": composition_string(comp), "model": model_source,
              "model_sha256": _model_digest(mdl), "noise": _noise_description(noise_model), "dose": dose,
              "calculator": _calculator_description(calculator),
              "alpha": alpha if isinstance(alpha, str) else float(alpha), "alpha_scale": alpha_scale,
              "multi_objective": bool(multi_objective)}
    if resume and not ckpt.exists():
        log.warning("--resume: no checkpoint in %s; starting a new run", out)
    resuming = bool(resume and ckpt.exists())
    if resuming:
        state = load_checkpoint(ckpt)
        if dict(state.get("composition", {})) != comp:
            raise InputError(f"cannot resume: the checkpoint in {str(out)!r} is for "
                             f"{composition_string(state.get('composition', {}))}, not {composition_string(comp)}")
        if bool(state["settings"].get("multi_objective")) != bool(multi_objective):
            raise InputError("cannot resume: the checkpoint was written in the other objective mode")
        try:
            old_inputs = json.loads((out / "inputs.json").read_text())
        except (OSError, ValueError):
            old_inputs = {}
        _check_resume_inputs(old_inputs if isinstance(old_inputs, dict) else {}, inputs, out)

    rng = np.random.default_rng(seed)
    pop = None
    if not resuming:
        relax = None
        if start_relax_steps:
            from refine.cost import make_calculator

            relax = LocalRelaxation(make_calculator(calculator or "auto", tuple(comp)),
                                    steps=int(start_relax_steps))
        pop = make_population(comp, settings.population_size, rng, source=start,
                              relax=relax, orient=start in ("random", "shapes", "mixed"),
                              image=img.data if start == "image" else None,
                              grid=img.grid if start == "image" else None)
        if start != "image":
            cx, cy = img.centroid()
            for a in pop:
                a.positions[:, 0] += cx
                a.positions[:, 1] += cy

    # ---- run
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if folder_log is not None:
        folder_log.open()
    try:
        if not resuming:
            _write_json(out / "inputs.json", inputs)
        with _anneal_pool(workers if settings.anneal_every else 1) as anneal_map:
            ga = run_ga(fitness, pop, settings, out, rng=rng, composition=comp,
                        difference=FitnessDifference(fitness),
                        calculator=calculator if (relax_steps or settings.anneal_every) else None,
                        resume=resuming, anneal_map=anneal_map)
    except InputError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise

    # ---- results
    best0 = ga.best
    r0 = fitness.evaluate(best0) if fitness.alpha is not None else fitness._evaluate(best0, None, None)
    best = Fitness.aligned(best0, r0)
    r = fitness.evaluate(best)
    files = _write_outputs(out, fitness, img, ga, best, r, settings)
    wall = time.perf_counter() - t_start
    n_atoms = len(best)
    ood = bool(fitness.out_of_domain)  # counted over resumed runs (the checkpoint carries the count)
    summary = {
        "version": _SUMMARY_VERSION,
        "composition": composition_string(comp),
        "n_atoms": n_atoms,
        "best_cost": _finite(r.cost),
        "chi2": _finite(r.chi2),
        "chi2_per_pixel": _finite(r.chi2_per_pixel),
        "n_valid_pixels": int(fitness.n_valid),
        "energy": _finite(r.energy),
        "energy_per_atom": _finite(r.energy / n_atoms) if not fitness.per_atom_energy else _finite(r.energy),
        "alpha": _finite(fitness.alpha) if fitness.alpha is not None else None,
        "alpha_rule": fitness.alpha_rule,
        "alpha_scale": float(getattr(fitness, "alpha_scale", 1.0)),
        # with a finishing stage the answer is chosen at its α; the search ran at this one
        "search_alpha": _finite(ga.logbook[0]["alpha"]) if len(ga.logbook) else None,
        "intensity_map": {"scale": _finite(r.scale), "offset": _finite(r.offset)},
        "generations": int(ga.generation),
        "stop_reason": ga.stop_reason,
        "evaluations": int(ga.evaluations),
        "wall_time_s": round(wall, 3),
        "ga_time_s": _finite(ga.logbook[-1]["elapsed_s"]) if len(ga.logbook) else None,
        "seed": seed,
        "resumed": resuming,
        "start": start,
        "model": _model_info(mdl, model_source),
        "image": {"source": img.source, "shape": list(img.shape), "pixel_size": img.pixel_size,
                  "origin": list(img.origin), "n_valid": img.n_valid,
                  "resampled": img.metadata.get("resampled"), "calibration": img.metadata.get("calibration")},
        "noise": fitness.noise_info,
        "domain_warning": ood,
        "out_of_domain_evaluations": int(fitness.n_out_of_domain),
        "multi_objective": bool(multi_objective),
        "pareto_front_size": len(ga.pareto_front),
        "calculator": _calculator_description(calculator),
        "settings": {k: v for k, v in asdict(settings).items() if k != "progress"},
        "files": {k: Path(v).name for k, v in files.items()},
    }
    if ood:
        summary["domain_warning_message"] = ("some candidates' convolution images left the model's training range: "
                                             "the surrogate was extrapolating for them")
    files["logbook.csv"] = out / LOGBOOK_NAME
    files["checkpoint.pkl"] = ckpt
    files["summary.json"] = out / "summary.json"
    if folder_log is not None:
        files["refine.log"] = folder_log.path
    summary["files"] = {k: Path(v).name for k, v in files.items()}
    _write_json(out / "summary.json", summary)
    log.info("refinement finished: cost %.6g, χ²/pixel %.4g, E %.4g eV, %d generations, %.1f s; results in %s",
             r.cost, r.chi2_per_pixel, r.energy, ga.generation, wall, out)
    return RefinementResult(best=best, summary=summary, out_dir=out, files=files, ga=ga, fitness=fitness)


def _scaled_alpha_fitness():
    from refine.cost import Fitness

    class ScaledAlphaFitness(Fitness):
        """A :class:`refine.cost.fitness.Fitness` whose automatic α is ``alpha_scale`` × the IQR rule's."""

        def __init__(self, *args, alpha_scale: float = 1.0, **kw):
            super().__init__(*args, **kw)
            self.alpha_scale = float(alpha_scale)

        def alpha_from(self, energies, chi2s) -> float:
            alpha = self.alpha_scale * Fitness.alpha_from(energies, chi2s)
            log.info("alpha scaled by %g: %.6g", self.alpha_scale, alpha)
            return alpha

    ScaledAlphaFitness.__module__ = __name__
    ScaledAlphaFitness.__qualname__ = "_ScaledAlphaFitness"
    globals()["_ScaledAlphaFitness"] = ScaledAlphaFitness  # so that instances pickle by reference
    return ScaledAlphaFitness


def __getattr__(name):  # the subclass is built lazily (refine.cost.fitness imports numba)
    if name == "_ScaledAlphaFitness":
        return _scaled_alpha_fitness()
    raise AttributeError(name)


def _with_results(atoms: Atoms, r, fitness, generation=None) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    a = Atoms(numbers=np.array(atoms.numbers), positions=np.array(atoms.positions, dtype=float))
    a.info = {"cost": float(r.cost), "chi2": float(r.chi2), "chi2_per_pixel": float(r.chi2_per_pixel),
              "alpha": float(fitness.alpha) if fitness.alpha is not None else float("nan"),
              "scale": float(r.scale), "offset": float(r.offset)}
    if generation is not None:
        a.info["generation"] = int(generation)
    a.calc = SinglePointCalculator(a, energy=float(r.energy))
    return a


def _write_outputs(out: Path, fitness, img: ExperimentalImage, ga, best: Atoms, r, settings) -> dict:
    from refine.search import LOGBOOK_NAME

    files = {}
    files["best.xyz"] = _write_xyz(out / "best.xyz", _with_results(best, r, fitness, ga.generation))
    others = ga.pareto_front if settings.multi_objective else ga.hall_of_fame
    frames = []
    for a in others:
        ra = fitness.evaluate(a) if fitness.alpha is not None else fitness._evaluate(a, None, None)
        frames.append(_with_results(fitness.aligned(a, ra), ra, fitness))
    if frames:
        name = "pareto.xyz" if settings.multi_objective else "hall_of_fame.xyz"
        files[name] = _write_xyz(out / name, frames)
    sim = fitness.simulated_image(best)
    diff = fitness.difference_image(best)
    exp = np.where(img.mask, img.data, np.nan)
    files["experimental.npy"] = _write_npy(out / "experimental.npy", img.data)
    files["simulated.npy"] = _write_npy(out / "simulated.npy", sim)
    files["difference.npy"] = _write_npy(out / "difference.npy", diff)
    title = (f"{best.get_chemical_formula()}: χ²/pixel = {r.chi2_per_pixel:.3g}, E = {r.energy:.4g} eV, "
             f"generation {ga.generation}")
    files["images.png"] = plot_images(exp, sim, diff, img.grid, out / "images.png", title=title)
    files["fitness_history.png"] = plot_history(out / LOGBOOK_NAME, out / "fitness_history.png",
                                                n_valid=fitness.n_valid)
    return files
