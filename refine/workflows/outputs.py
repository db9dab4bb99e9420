"""Step 5 of a refinement: the result files in the output folder, each written atomically.

Every file goes to a temporary file in the same folder first and is then
moved into place (:mod:`surrogate.common.atomic`), so a killed run leaves
complete files or none:

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
``images.png``, ``fitness_history.png``
    :mod:`refine.workflows.figures`.
``counts.csv``, ``counts.png``, ``counts.json``
    atoms per projected column of ``best.xyz`` against the atoms counted
    from the image's scattering cross-sections
    (:func:`refine.analysis.column_count_table`; columns
    ``x,y,atoms_3d,atoms_image,cross_section,disagree,resolved``), the overlay
    figure, and the table's summary (n_columns, fraction_equal,
    fraction_within_1, the same over the resolved columns, the library) that
    ``summary.json`` repeats under ``counts``. An image in units of the incident beam is counted on the
    model's cross-section scale; one in detector units on the scale at
    which its columns add up to the answer's number of atoms (``scale_rule``
    ``"total"``). Written after every other result: a failure here is logged
    and recorded (``counts.json`` then holds ``{"error": ...}``) and loses
    nothing else.
``progress.xyz``
    written by the GA as it goes (:mod:`refine.search.progress`): the best
    of every generation in the search's frame (not moved onto the image),
    with generation, elapsed time, cost, χ² and E in each frame's info.
``preparation.png``
    when the image file was prepared (``--background``, ``--detector-*``,
    ``--crop``, ``--mask auto``): the raw image with its vacuum, particles,
    crop and pixels used, the histogram, and the prepared image
    (:func:`refine.io.preparation_figure.plot_preparation`).
``summary.json``
    best cost, χ², χ² per pixel, E, α, generations, wall time, seed,
    model, domain-warning flag, noise model, settings, file names
    (:func:`run_summary`); written last, so its presence means the run
    finished.

Lengths in Å, energies in eV.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from ase import Atoms

from refine.io import ExperimentalImage
from refine.io.preparation import preparation_measured
from refine.workflows.figures import plot_history, plot_images
from refine.workflows.inputs import in_detector_units
from refine.workflows.resume import calculator_description
from surrogate.common import atomic_write_with, write_json

__all__ = ["COUNT_FILES", "OUTPUT_FILES", "SUMMARY_VERSION", "best_on_image", "write_column_counts", "write_outputs",
           "run_summary"]

#: files written by :func:`write_outputs` and the summary (besides the checkpoint and logbook.csv)
OUTPUT_FILES = ("best.xyz", "summary.json", "experimental.npy", "simulated.npy", "difference.npy",
                "images.png", "fitness_history.png")
#: version of the layout of ``summary.json``
SUMMARY_VERSION = 1
#: the column counts' files (:func:`write_column_counts`), written when the counting succeeds
COUNT_FILES = ("counts.csv", "counts.png", "counts.json")

log = logging.getLogger(__name__)


def _write_npy(path: Path, array) -> Path:
    def w(t):
        with open(t, "wb") as fh:
            np.save(fh, np.asarray(array))
    return atomic_write_with(path, w)


def _write_xyz(path: Path, frames) -> Path:
    from ase.io import write

    return atomic_write_with(path, lambda t: write(t, frames, format="extxyz"))


def _finite(v):
    """``float(v)``, or None (JSON ``null``) when it is not finite."""
    v = float(v)
    return v if math.isfinite(v) else None


def _result(fitness, atoms):
    """The fitness result of ``atoms``; with α never set (multi-objective mode) its cost is NaN."""
    # Fitness.evaluate refuses an unset α; the χ², E and alignment do not need it.
    return fitness.evaluate(atoms) if fitness.alpha is not None else fitness._evaluate(atoms, None, None)


def _with_results(atoms: Atoms, r, fitness, generation=None) -> Atoms:
    """A plain copy of ``atoms`` carrying ``r`` in ``info`` and its energy (eV) as a single-point result."""
    from ase.calculators.singlepoint import SinglePointCalculator

    a = Atoms(numbers=np.array(atoms.numbers), positions=np.array(atoms.positions, dtype=float))
    a.info = {"cost": float(r.cost), "chi2": float(r.chi2), "chi2_per_pixel": float(r.chi2_per_pixel),
              "alpha": float(fitness.alpha) if fitness.alpha is not None else float("nan"),
              "scale": float(r.scale), "offset": float(r.offset)}
    if generation is not None:
        a.info["generation"] = int(generation)
    a.calc = SinglePointCalculator(a, energy=float(r.energy))
    return a


def best_on_image(fitness, ga):
    """The GA's best structure moved by its alignment shift onto the image, and its fitness result there.

    Returns
    -------
    (ase.Atoms, refine.cost.FitnessResult)
    """
    best0 = ga.best
    best = fitness.aligned(best0, _result(fitness, best0))
    return best, fitness.evaluate(best)


def write_outputs(out: Path, fitness, img: ExperimentalImage, ga, best: Atoms, r, settings) -> dict:
    """Write the structures, images and figures of a finished run into ``out``; return name → path.

    Parameters
    ----------
    out : Path
        The output folder (holds the GA's ``logbook.csv``).
    fitness : refine.cost.Fitness
        The run's fitness (α set).
    img : ExperimentalImage
        The image as refined against.
    ga : refine.search.GAResult
    best : ase.Atoms
        From :func:`best_on_image`, with its result ``r``.
    settings : refine.search.GASettings
    """
    from refine.search import LOGBOOK_NAME

    files = {}
    files["best.xyz"] = _write_xyz(out / "best.xyz", _with_results(best, r, fitness, ga.generation))
    others = ga.pareto_front if settings.multi_objective else ga.hall_of_fame
    frames = []
    for a in others:
        ra = _result(fitness, a)
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
    # the figure shows the file with what was measured on it (vacuum, particles, normalisation)
    if preparation_measured(img.metadata) and img.source != "<array>" and Path(img.source).is_file():
        files.update(_write_preparation_figure(out, img))
    # last: everything above is already on disk if the counting fails
    # an image in detector units has no cross-section scale of its own: it is counted on the scale at which its
    # columns hold the answer's number of atoms (the given composition). The fitness's fitted a of a·I_sim + b is
    # no scale to count with: it follows the answer's rendering, and a counted stack read 16 on every Au column
    scale = "model" if in_detector_units(img) is None else "total"
    files.update(write_column_counts(out, fitness.model, img, best, scale=scale))
    return files


def _write_preparation_figure(out: Path, img: ExperimentalImage) -> dict:
    """``preparation.png``; a failure to draw it is logged, never fatal (the results are already written)."""
    from refine.io.preparation_figure import plot_preparation

    try:
        return {"preparation.png": plot_preparation(img, out / "preparation.png")}
    except Exception as exc:  # noqa: BLE001 - a figure never costs the run its results
        log.warning("preparation.png not drawn: %s: %s", type(exc).__name__, exc)
        return {}


def write_column_counts(out: Path, model, img: ExperimentalImage, best: Atoms, scale="model") -> dict:
    """``counts.csv``, ``counts.png`` and ``counts.json`` of ``best`` against ``img``; name → path.

    Never raises for a failure of the counting itself: it is logged as a
    warning and ``counts.json`` records ``{"error": message}`` (then only
    that file is returned), so that the run's other results and its
    summary are still written.
    """
    from refine.analysis import column_count_table, write_counts
    from refine.analysis.count_files import resolved_agreement

    try:
        table = column_count_table(best, img, model, scale=scale)
        files = write_counts(table, img, out)
        files["counts.json"] = write_json(out / "counts.json", table.summary())
        log.info("column counts from the image: %d columns, %.0f %% equal to the answer's, %.0f %% within ±1",
                 len(table.xy), 100 * table.fraction_equal, 100 * table.fraction_within_1)
        resolved = resolved_agreement(table.summary())
        if resolved:
            log.info("column counts: %s", resolved)
        return files
    except Exception as exc:  # the counting is a report on a finished run: it must not lose the run
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("column counts not written: %s", message)
        try:
            return {"counts.json": write_json(out / "counts.json", {"error": message})}
        except OSError:
            return {}


def _counts_entry(files: dict):
    """The ``counts`` entry of summary.json: what ``counts.json`` holds, or None without it."""
    path = files.get("counts.json")
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"cannot read {Path(path).name}: {exc}"}


def _model_info(model, source: str) -> dict:
    params = model.convolution_parameters
    return {"source": source, "elements": list(getattr(model, "elements_", ())),
            "pixel_size": float(params.pixel_size), "size": int(model.size), "degree": int(model.degree),
            "n_terms": int(len(model.coef_)), "input_range": [float(v) for v in getattr(model, "input_range_", ())]}


def run_summary(inputs, fitness, ga, best: Atoms, r, files: dict, *, resuming: bool, wall_time: float,
                microscope_mismatch: list | None = None) -> dict:
    """The contents of ``summary.json``.

    Parameters
    ----------
    inputs : refine.workflows.inputs.RefinementInputs
    fitness : refine.cost.Fitness
    ga : refine.search.GAResult
    best, r : ase.Atoms, refine.cost.FitnessResult
        From :func:`best_on_image`.
    files : dict
        Every file of the run (name → path); the summary lists their names.
    resuming : bool
        Whether this call continued from a checkpoint.
    wall_time : float
        Seconds of this call (rounded to ms in the summary).
    microscope_mismatch : list of str, optional
        Where the image file's microscope differs from the model's
        (:func:`refine.workflows.inputs.warn_if_microscope_differs`); None: [].
    """
    from refine.search import composition_string

    img, settings = inputs.image, inputs.settings
    n_atoms = len(best)
    ood = bool(fitness.out_of_domain)  # counted over resumed runs (the checkpoint carries the count)
    summary = {
        "version": SUMMARY_VERSION,
        "composition": composition_string(inputs.composition),
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
        "wall_time_s": round(wall_time, 3),
        "ga_time_s": _finite(ga.logbook[-1]["elapsed_s"]) if len(ga.logbook) else None,
        "seed": inputs.seed,
        "resumed": resuming,
        "start": inputs.start,
        # the counted start's count evidence weight (inf as text: JSON has no infinity)
        "count_weight": (None if inputs.start != "counts" or inputs.count_weight is None
                         else float(inputs.count_weight) if np.isfinite(inputs.count_weight) else "inf"),
        "model": _model_info(inputs.model, inputs.model_source),
        "image": {"source": img.source, "shape": list(img.shape), "pixel_size": img.pixel_size,
                  "origin": list(img.origin), "n_valid": img.n_valid,
                  "resampled": img.metadata.get("resampled"), "calibration": img.metadata.get("calibration"),
                  # each step of refine.io.prepare_image with what it measured; beam_units: the data are
                  # fractions of the incident beam (normalised), else the fitness fits the scale
                  "preparation": img.metadata.get("preparation"),
                  "beam_units": bool(img.metadata.get("beam_units", False))},
        "noise": fitness.noise_info,
        "domain_warning": ood,
        # settings where the image file's microscope (voltage, convergence, detector) is not the model's
        "microscope_mismatch": list(microscope_mismatch or []),
        "out_of_domain_evaluations": int(fitness.n_out_of_domain),
        "multi_objective": bool(inputs.multi_objective),
        "pareto_front_size": len(ga.pareto_front),
        "calculator": calculator_description(inputs.calculator),
        "settings": {k: v for k, v in settings.to_flat().items() if k != "progress"},
        "files": {k: Path(v).name for k, v in files.items()},
        "counts": _counts_entry(files),
    }
    if inputs.composition_estimate is not None:  # "-c Pt": the number the image gave, and its uncertainty
        summary["composition_estimate"] = inputs.composition_estimate.to_dict()
    if ood:
        summary["domain_warning_message"] = ("some candidates' convolution images left the model's training range: "
                                             "the surrogate was extrapolating for them")
    return summary
