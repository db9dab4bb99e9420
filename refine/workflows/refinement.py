"""One refinement, end to end: image + composition + model → best structure and report files.

:func:`refine_image` is what ``stem-refine refine`` and ``stem-refine demo``
call. Its steps, in the order of the data flow:

1. **validate** every input before writing anything
   (:mod:`refine.workflows.inputs`): seed, model (default: the shipped one),
   composition, image (read, calibrated, resampled to the model's pixel
   size), starting population, noise model, output folder, GA settings;
   the checked values become one :class:`~refine.workflows.inputs.RefinementInputs`;
2. build the **cost** (:mod:`refine.workflows.cost`): a
   :class:`refine.cost.Fitness` (image term, EMT energy, α, noise model);
   then ``inputs.json`` is prepared and, with ``run.resume``, checked
   against the checkpoint's run;
3. a seeded **starting population** (:func:`starting_population`: random
   compact clusters, :mod:`ase.cluster` shapes, or the frames of a structure
   file), placed on the image's intensity centroid;
4. **run** :func:`refine.search.run_ga` with checkpoints in ``out_dir``
   (:func:`run_search`; ``run.resume`` continues from the checkpoint there);
5. write the **outputs** (:mod:`refine.workflows.outputs`: ``best.xyz``,
   the hall of fame or Pareto front, the images as ``.npy`` and
   ``images.png``, ``fitness_history.png``, then ``summary.json``).

Besides those, ``out_dir`` holds ``inputs.json`` (written at the start: what
a resumed run must match), the GA's checkpoint and ``logbook.csv``, and with
``run.log_file`` the run log ``refine.log`` (:mod:`refine.workflows.runlog`).

What it is told comes in five settings objects (:mod:`refine.workflows.settings`:
the search, the cost, the image's calibration, the start, the run), each
defaulting to what ``stem-refine refine`` uses (:mod:`refine.workflows.defaults`).

Lengths in Å, energies in eV.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

from refine.workflows.inputs import (
    RefinementInputs,
    composition_for_model,
    composition_from_image,
    elements_only,
    ga_settings,
    load_model_or_default,
    validate_alpha_scale,
    validate_count_weight,
    validate_image_settings,
    validate_noise,
    validate_out_dir,
    validate_seed,
    validate_start,
    validate_start_relax_steps,
    validate_workers,
    warn_if_image_too_small,
    warn_if_microscope_differs,
)
from refine.workflows.outputs import best_on_image, run_summary, write_outputs
from refine.workflows.resume import input_record, resuming_run
from refine.workflows.runlog import run_log
from refine.workflows.settings import CostSettings, ImageSettings, RunSettings, StartSettings
from surrogate.common import InputError, write_json

if TYPE_CHECKING:
    from refine.search import GASettings

__all__ = ["refine_image", "RefinementResult", "starting_population", "run_search"]

log = logging.getLogger(__name__)


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
    ga : refine.search.GAResult
        The GA's own result (population, hall of fame, logbook, Pareto front).
    fitness : refine.cost.Fitness
        The fitness the run used (α set), for re-evaluating structures.
    """

    best: Atoms
    summary: dict
    out_dir: Path
    files: dict = field(default_factory=dict)
    ga: object = None
    fitness: object = None


def refine_image(image, composition, *, out_dir, model=None, search: GASettings | str | None = None,
                 cost: CostSettings | None = None, image_settings: ImageSettings | None = None,
                 start: StartSettings | None = None, run: RunSettings | None = None) -> RefinementResult:
    """Refine the structure of a particle of ``composition`` against ``image``.

    Every settings object left out takes the defaults that ``stem-refine
    refine`` has too (:mod:`refine.workflows.defaults`). To give settings by
    the flat names of the CLI and of batch manifests, use
    ``refine_image(image, composition, out_dir=..., **refinement_settings(population=16, ...))``
    (:func:`refine.workflows.settings.refinement_settings`).

    Parameters
    ----------
    image : str, os.PathLike, ndarray or ExperimentalImage
        The experimental image: a file (TIFF, ``.npy``, DM3/DM4, EMD, ... see
        :func:`refine.io.read_image`), a 2-D array (needs ``image_settings.pixel_size``),
        or an already read :class:`ExperimentalImage`. Resampled to the
        model's pixel size when its calibration differs.
    composition : str or mapping
        E.g. ``"Pt309"``; only elements the model was fitted on. An element
        without a number (``"Pt"``) takes the number estimated from the
        image's integrated intensity (logged; ``summary.json``:
        ``composition_estimate``); a given number always wins.
    out_dir : path
        Output folder (created). A folder with a checkpoint needs ``run.resume``.
    model : PolynomialSurrogate, path or None
        The surrogate; None: the shipped default model.
    search : refine.search.GASettings or str, optional
        The search: population, stopping (generations, time limit in s,
        stagnation, counted over resumed runs), objective mode
        (``multi_objective``: NSGA-II on (χ², E), ``pareto.xyz`` holds the
        front and ``best.xyz`` its lowest-cost member), variation,
        selection, offspring relaxation, annealing, polish, finishing stage;
        or the name of a recipe (:mod:`refine.search.recipes`) with the
        default population and generations. Default:
        :func:`refine.workflows.defaults.search_settings`. Its ``alpha``,
        ``checkpoint_every`` and ``progress`` are replaced by those of
        ``cost`` and ``run``.
    cost : CostSettings, optional
        α rule, noise model (with a dose: Poisson), energy calculator.
    image_settings : ImageSettings, optional
        Pixel size (Å), mask, resampling of the image.
    start : StartSettings, optional
        Starting population and its FIRE steps.
    run : RunSettings, optional
        Seed, annealing processes, resume, checkpoint period, progress bar,
        the log file ``out_dir/refine.log`` (INFO and above: α and its rule,
        resampling, annealing and polish results, the stop; appended over
        resumed runs, :mod:`refine.workflows.runlog`; ``stem-refine refine`` writes it).

    Returns
    -------
    RefinementResult

    Raises
    ------
    InputError
        Any bad input; raised before anything is written to ``out_dir``.
    """
    t_start = time.perf_counter()
    cost = cost if cost is not None else CostSettings()
    image_settings = image_settings if image_settings is not None else ImageSettings()
    start = start if start is not None else StartSettings()
    run = run if run is not None else RunSettings()
    # records of a run that fails before its folder exists are dropped with it
    folder_log = run_log(out_dir) if run.log_file and out_dir is not None else contextlib.nullcontext()
    with folder_log as handler:
        # 1. validate everything before touching out_dir (in this order: the first bad input is reported)
        seed = validate_seed(run.seed)
        mdl, model_source = load_model_or_default(model)
        # "Pt" (no number): checked and counted once the image is read
        comp = None if elements_only(composition) else composition_for_model(composition, mdl)
        img = validate_image_settings(image, mdl, image_settings)
        estimate = None
        source = validate_start(start.source)
        if comp is None:
            from refine.search import composition_string

            comp, estimate = composition_from_image(composition, mdl, img)
            if source == "counts":  # the counted start's own total: the one it and counts.csv agree on
                comp, estimate = composition_from_columns(comp, estimate, mdl, img, cost.calculator)
            text = composition_string(comp)
            log.warning("composition estimated from the image: %s ± %.0f atoms (%s); refining %s",
                        text, estimate.uncertainty, estimate.method, text)
        noise_model, dose = validate_noise(cost.noise, cost.dose, img)
        out = validate_out_dir(out_dir, run.resume)
        settings = ga_settings(search, cost, run)
        workers = validate_workers(run.workers)
        start_relax_steps = validate_start_relax_steps(start.relax_steps)
        count_weight = validate_count_weight(start.count_weight)
        alpha_scale = validate_alpha_scale(cost.alpha_scale)
        inputs = RefinementInputs(
            model=mdl, model_source=model_source, composition=comp, image=img, start=source, noise=noise_model,
            dose=dose, out=out, resume=run.resume, settings=settings, seed=seed, alpha=cost.alpha,
            alpha_scale=alpha_scale, calculator=cost.calculator, model_error=bool(cost.model_error),
            multi_objective=bool(settings.multi_objective),
            workers=workers, start_relax_steps=start_relax_steps, count_weight=count_weight, fitness_options=dict(cost.fitness_options or {}),
            composition_estimate=estimate)
        return _run_refinement(inputs, t_start=t_start, folder_log=handler)


#: ``info["origin"]`` of the starts built from the image (the first member of their population, unrattled)
BUILT_STARTS = ("counts", "matched+counts")


def _built_start_as_answer(ga, start):
    """With no generations, the built start itself is the answer, not the best of its population.

    The other members are the start rattled by 0.1 Å, diversity for a search. With a depth-blur model the
    image sees z, and a rattled copy can fit the pixels better at an energy no search would keep (the Au
    counted reconstruction: one seed in three answered +0.075 eV/atom higher, 68 atom pairs closer than
    2.5 Å; docs/benchmarks.md, session 24). ``--generations 0`` promises the counted (or matched)
    reconstruction alone.
    """
    from dataclasses import replace

    best = start.copy()
    best.info = dict(start.info, generation=0)
    if ga.alpha is not None:
        best.info["alpha"] = ga.alpha
    return replace(ga, best=best)


def _recount_after_slides(slid, image, model, calculator, composition):
    """The slid counted start with its columns' ends grown or trimmed to the image's counts again.

    With a depth-blur model a column's cross-section depends on where its atoms sit along the beam, so the
    slides move some columns' counts by one; counting the slid structure again and growing or trimming the
    ends (:func:`refine.search.template_counts.counted_template`, relaxed in columns) restores them. On the
    real images: counts equal to the image's 63 → 80 % (Au), 86 → 92 % (Pt–Ir) at +0.000–0.002 eV/atom
    (docs/benchmarks.md, session 24). A depth-blind model is left as it is: there the recount cost energy
    and counts (session 22).
    """
    from scipy.spatial import cKDTree

    from refine.analysis.cross_sections import projected_columns
    from refine.search.template_counts import counted_template

    info = dict(slid.info)
    out = counted_template(slid, image, model, relax=column_relaxation(calculator, composition))
    out.info = dict(info, recounted_after_slides=True)
    xy0, n0, _ = projected_columns(slid.positions)
    xy1, n1, _ = projected_columns(out.positions)
    dist, k = cKDTree(xy1).query(xy0)
    changed = int(np.count_nonzero((dist > 0.5) | (n1[k] != n0)))
    log.info("counted start recounted after the slides (depth-blur model): %d of %d columns changed their count",
             changed, len(n0))
    return out


def column_relaxation(calculator, composition):
    """Atoms → Atoms: the counted start's relaxation on the energy with every atom tied to its column.

    A crystal that keeps the image's counts (:mod:`refine.search.column_restraint`); the counting
    rounds count the relaxed structure, so the start and its ``counts.csv`` agree. ``calculator``:
    a name (None: ``"auto"``) or a calculator built already (used as it is).
    """
    from functools import partial

    from refine.cost import make_calculator
    from refine.search.column_restraint import relax_in_columns

    return partial(relax_in_columns, calculator=make_calculator(calculator or "auto", tuple(composition)))


def composition_from_columns(comp: dict, estimate, model, image, calculator=None):
    """``(composition, estimate)`` with the number of atoms from the image's column counts.

    For ``--start counts`` without a given number: the sum of the columns'
    cross-section counts (:func:`refine.search.column_start.column_count_total`,
    seeded by the integrated-intensity ``estimate``), which the estimate's
    record keeps (``method``) with its own number and uncertainty.
    """
    from dataclasses import replace

    from refine.search.column_start import CALIBRATION_ERROR, RELAXED_COUNT_ROUNDS, column_count_total

    (element, guess), = comp.items()
    total, sigma = column_count_total(image, model, element, guess, rounds=RELAXED_COUNT_ROUNDS,
                                      relax=column_relaxation(calculator, comp))
    method = (f"sum of the column counts from their cross-sections (± from a {100 * CALIBRATION_ERROR:.0f} % "
              f"error of the model's cross-sections); the integrated intensity gave {estimate.n} ± "
              f"{estimate.uncertainty:.0f} ({estimate.method})")
    return {element: total}, replace(estimate, n=total, n_exact=float(total), uncertainty=float(sigma),
                                     per_atom_cross_section=estimate.integrated_intensity / max(total, 1),
                                     method=method)


def _run_refinement(inputs: RefinementInputs, *, t_start: float, folder_log=None) -> RefinementResult:
    """Steps 2-5 of :func:`refine_image`; ``folder_log.open()`` once ``out_dir`` exists (refine.log)."""
    from refine.search import CHECKPOINT_NAME, LOGBOOK_NAME
    from refine.workflows.cost import make_fitness  # imports the Numba kernels of refine.cost

    # 2. the cost; then what inputs.json records, checked against the checkpoint's run on resume
    fitness = make_fitness(inputs)
    warn_if_image_too_small(inputs)
    mismatch = warn_if_microscope_differs(inputs.image, inputs.model)
    record = input_record(inputs)
    resuming = resuming_run(inputs, record)

    # 3. the starting population (a resumed run takes the checkpoint's); one generator for the whole run
    rng = np.random.default_rng(inputs.seed)
    population = None if resuming else starting_population(inputs, rng)

    # 4. the GA
    ga = run_search(inputs, fitness, population, rng, record=record, resuming=resuming, folder_log=folder_log)
    if inputs.settings.stopping.generations == 0 and population and population[0].info.get("origin") in BUILT_STARTS:
        ga = _built_start_as_answer(ga, population[0])

    # 5. the outputs, summary.json last
    out = inputs.out
    best, r = best_on_image(fitness, ga)
    files = write_outputs(out, fitness, inputs.image, ga, best, r, inputs.settings)
    wall = time.perf_counter() - t_start
    files[LOGBOOK_NAME] = out / LOGBOOK_NAME
    files[CHECKPOINT_NAME] = inputs.checkpoint
    files["summary.json"] = out / "summary.json"
    if folder_log is not None:
        files["refine.log"] = folder_log.path
    summary = run_summary(inputs, fitness, ga, best, r, files, resuming=resuming, wall_time=wall,
                          microscope_mismatch=mismatch)
    write_json(out / "summary.json", summary)
    log.info("refinement finished: cost %.6g, χ²/pixel %.4g, E %.4g eV, %d generations, %.1f s; results in %s",
             r.cost, r.chi2_per_pixel, r.energy, ga.generation, wall, out)
    return RefinementResult(best=best, summary=summary, out_dir=out, files=files, ga=ga, fitness=fitness)


def starting_population(inputs: RefinementInputs, rng: np.random.Generator) -> list:
    """The seeded starting population of a new run (:func:`refine.search.make_population`).

    Random compact clusters, :mod:`ase.cluster` shapes (both in random
    orientations), clusters following the image, the image's columns
    stacked with its own atom counts (``"counts"``,
    :mod:`refine.search.column_start`, then relaxed with every atom tied to
    its column, then settled as whole columns with the image's count
    evidence weighted by ``count_weight``, :mod:`refine.search.column_stacks`,
    or, with ``count_weight`` None, slid along the beam on the energy,
    :mod:`refine.search.column_restraint`: the first member as built, the
    others rattled), the relaxed shape whose zone-axis image fits the image
    best with its columns given the image's counts (``"matched"``,
    :mod:`refine.search.shape_match`, :mod:`refine.search.template_counts`,
    likewise), or the
    frames of a structure file; FIRE-relaxed for
    ``start_relax_steps`` steps when asked. All but the image-following and
    counted ones are moved by the image's intensity centroid (x, y in Å).
    """
    from refine.search import LocalRelaxation, make_population

    comp, img, start = inputs.composition, inputs.image, inputs.start
    relax = None
    if inputs.start_relax_steps and start not in ("random", "mixed", "image"):
        log.warning("--start-relax-steps relaxes random starting clusters only; the %s start is used as built",
                    {"counts": "counted", "matched": "matched"}.get(start, repr(start)))
    if inputs.start_relax_steps:
        from refine.cost import make_calculator

        relax = LocalRelaxation(make_calculator(inputs.calculator or "auto", tuple(comp)),
                                steps=int(inputs.start_relax_steps))
    if start in ("counts", "matched"):
        from refine.cost import make_calculator

        # one calculator for the relaxations in columns, the slides and the shapes
        calculator = make_calculator(inputs.calculator or "auto", tuple(comp))
    if start == "counts":
        from refine.search.column_restraint import slide_columns
        from refine.search.column_start import RELAXED_COUNT_ROUNDS, counted_structure

        in_columns = column_relaxation(calculator, comp)
        counted = counted_structure(img, inputs.model, comp, rng, rounds=RELAXED_COUNT_ROUNDS, relax=in_columns)
        if inputs.count_weight is not None:
            from refine.search.column_stacks import settle_columns

            # the settling's anneal already slides the columns; EMT slides after it gained ≤ 0.003 eV/atom on
            # the abTEM truths and the real images, and their relaxations moved marginal counts (3–4 points of
            # the Au image's counts.csv agreement): docs/benchmarks.md, "Columns the peaks miss"
            start = [settle_columns(counted, img, inputs.model, rng, weight=inputs.count_weight, relax=in_columns)]
        else:
            start = [slide_columns(counted, calculator, rng)]
            log.info("counted start relaxed in its columns: %d slides along the beam accepted",
                     start[0].info["column_slides"])
        if getattr(inputs.model.convolution_parameters, "depth_blur", 0.0):
            start = [_recount_after_slides(start[0], img, inputs.model, calculator, comp)]
    elif start == "matched":
        from refine.search.shape_match import matched_structure
        from refine.search.template_counts import counted_template

        template = matched_structure(img, inputs.model, comp, calculator)
        start = [counted_template(template, img, inputs.model, relax=column_relaxation(calculator, comp))]
    pop = make_population(comp, inputs.settings.population_size, rng, source=start,
                          relax=relax, orient=start in ("random", "shapes", "mixed"),
                          image=img.data if start == "image" else None,
                          grid=img.grid if start == "image" else None)
    if not isinstance(start, list) and start != "image":  # counted and image starts are in the image's frame
        cx, cy = img.centroid()
        for a in pop:
            a.positions[:, 0] += cx
            a.positions[:, 1] += cy
    return pop


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


def run_search(inputs: RefinementInputs, fitness, population, rng: np.random.Generator, *, record: dict,
               resuming: bool, folder_log=None):
    """Run the GA in the output folder (created here; ``inputs.json`` written first for a new run).

    An :class:`InputError` raised by the GA removes a folder this call
    created. The annealings run on ``inputs.workers`` processes when the
    settings anneal (results do not depend on it).

    Returns
    -------
    refine.search.GAResult
    """
    from refine.search import FitnessDifference, run_ga

    out, settings = inputs.out, inputs.settings
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if folder_log is not None:
        folder_log.open()
    try:
        if not resuming:
            write_json(out / "inputs.json", record)
        annealing = settings.annealing.every
        with _anneal_pool(inputs.workers if annealing else 1) as anneal_map:
            return run_ga(fitness, population, settings, out, rng=rng, composition=inputs.composition,
                          difference=FitnessDifference(fitness),
                          calculator=inputs.calculator if (settings.relaxation.steps or annealing) else None,
                          resume=resuming, anneal_map=anneal_map)
    except InputError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
