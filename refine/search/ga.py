"""The genetic algorithm's loop: :func:`run_ga`.

Usage
-----
::

    rng = np.random.default_rng(seed)
    population = make_population("Pt309", 20, rng)
    result = run_ga(fitness, population, GASettings(stopping=StoppingSettings(generations=200)), "out/", rng=rng)
    result.best            # ase.Atoms, info: cost, chi2, energy, alpha
    result.logbook         # deap.tools.Logbook, also out/logbook.csv

``fitness`` is any object with ``evaluate(atoms)`` (or a plain callable)
returning a result with ``.cost``, ``.chi2`` and ``.energy`` (a mapping with
those keys, or a bare float cost, also work). When ``settings.alpha`` is
``"auto"`` and the object has ``calibrate_alpha(population)``, that is
called once on the evaluated-to-be starting population; a numeric
``settings.alpha`` is assigned to ``fitness.alpha``. The α in use (read from
``fitness.alpha``) is logged, checkpointed and restored on resume.

The loop
--------
In the spirit of DEAP's ``eaSimple``/``eaMuPlusLambda``, and calling only
what the toolbox (:func:`refine.search.toolbox.make_toolbox`) registers.
Generation 0 evaluates the starting population. Each generation then makes
λ offspring (``offspring_size``): with probability ``crossover_probability``
two tournament-selected parents are cloned and cut-and-spliced, each child
then mutated with probability ``mutation_probability``; otherwise one parent
is cloned and mutated (one mutation drawn by weight). Every offspring is
repaired to the minimum distance (inside the operators) and optionally
relaxed (FIRE, few steps). Every ``anneal_every`` generations annealed
individuals join the offspring, every ``polish_every`` the polished best,
and always in a time-limited run's last generation, for which room is kept
(:func:`polish_now`, :func:`generations_end`; :mod:`refine.search.anneal_tasks`,
:mod:`refine.search.polish`). Offspring
are evaluated with ``toolbox.map`` in list order (results are assigned by
position, so a Dask map gives the same run). Survival: duplicates
(:class:`refine.search.selection.SimilarityCriterion`) are removed from
parents + offspring, then the best μ survive (``replacement="plus"``), or
the ``elite`` hall-of-fame members plus the best μ − elite offspring
(``"generational"``). Multi-objective mode minimises (χ², E) with NSGA-II
survival and a (rank, crowding) tournament and keeps a Pareto front. A
finishing stage (``finish_fraction``) ends the run selecting at another α.

Stopping: ``generations``, ``stagnation`` (generations without a relative
improvement of the best cost beyond ``stagnation_tol``; in multi-objective
mode, without a new member of the Pareto front) or ``time_limit`` seconds of
wall time (summed over resumed segments).

The best of every generation goes to ``progress.xyz`` in ``out_dir``
(:mod:`refine.search.progress`: generation, elapsed time, cost, χ², E).

Checkpoints (``checkpoint.npz`` in ``out_dir`` every ``checkpoint_every``
generations and at the end; :mod:`refine.search.checkpoint`): population,
hall of fame, logbook, generation, the stagnation state, α, the finishing
stage, the last annealing and polish durations and the NumPy generator's
``bit_generator.state``, as arrays and JSON (no pickle), moved into place
atomically. With ``resume=True`` the run continues from it exactly: the
same seed gives the same best structure whether or not the run was killed
in between.

All randomness comes from the one :class:`numpy.random.Generator` given to
:func:`run_ga` (and shared with the toolbox's operators); the polish's
sweeps repair from generators seeded with ``settings.polish.seed``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from deap import base, tools

from surrogate.common import InputError
from refine.search.anneal_tasks import anneal_round
from refine.search.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from refine.search.evaluation import alpha_of, best_key, cost_of, evaluate_individuals, reweigh, set_alpha
from refine.search.geometry import composition_of
from refine.search.individuals import as_atoms
from refine.search.logbook import LOGBOOK_NAME, generation_record, new_logbook, write_logbook_csv
from refine.search.polish import polish_best
from refine.search.progress import PROGRESS_NAME, ProgressFile
from refine.search.selection import SimilarityCriterion
from refine.search.settings import GAResult, GASettings
from refine.search.toolbox import make_toolbox

__all__ = ["run_ga", "polish_now", "generations_end"]

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """The state of a run between generations: what a checkpoint holds, besides the generator."""

    population: list
    hall_of_fame: tools.HallOfFame
    logbook: tools.Logbook
    generation: int
    best_cost: float
    stale: int
    evaluations: int
    alpha: float | None
    elapsed0: float  # s before this segment (resumed runs)
    t_start: float  # perf_counter at the start of this segment
    finishing: bool = False
    search_alpha: float | None = None
    # durations of the last round of annealings and of the last polish (s): they decide whether another one
    # still fits in the time limit, so a resumed run needs them to repeat the original
    anneal_seconds: float = 0.0
    polish_seconds: float = 0.0

    def elapsed(self) -> float:
        """Wall time of the run so far, s (over all segments)."""
        return self.elapsed0 + time.perf_counter() - self.t_start


def run_ga(fitness, population: Sequence[Atoms] | None, settings: GASettings | None = None, out_dir=None, *,
           rng: np.random.Generator, composition: Mapping[str, int] | None = None, difference: Callable | None = None,
           calculator=None, map_func: Callable = map, resume: bool = False,
           toolbox: base.Toolbox | None = None, anneal_map: Callable | None = None) -> GAResult:
    """Run the genetic algorithm (see the module docstring for the loop).

    Parameters
    ----------
    fitness : object
        ``evaluate(atoms)`` (or callable) → result with ``cost``, ``chi2``,
        ``energy``; optional ``calibrate_alpha(population)`` and ``alpha``.
    population : sequence of ase.Atoms or None
        Starting structures (μ of them are used; fewer are cycled). May be
        ``None`` only when resuming from an existing checkpoint.
    settings : GASettings, optional
    out_dir : path, optional
        Where ``logbook.csv`` and ``checkpoint.npz`` go (created). Without
        it nothing is written and resume is impossible.
    rng : numpy.random.Generator
        The run's only source of randomness (shared with the toolbox).
    composition : mapping, optional
        Default: the first starting structure's.
    difference, calculator, map_func
        See :func:`refine.search.toolbox.make_toolbox`.
    resume : bool
        Continue from ``out_dir/checkpoint.npz`` if it exists (else start
        fresh, with a log message). An old ``checkpoint.pkl`` there is
        refused (:class:`InputError`).
    toolbox : deap.base.Toolbox, optional
        A custom toolbox (built with the same ``rng``) instead of
        :func:`~refine.search.toolbox.make_toolbox`'s.
    anneal_map : callable, optional
        ``map``-like used for the annealings only (default: the toolbox's
        ``map``), e.g. a process pool's ``map``: annealings take minutes and
        pickle cheaply, evaluations take a millisecond.

    Returns
    -------
    GAResult
    """
    settings = (settings or GASettings()).validate()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    state = _checkpoint_to_resume(out, settings) if resume else None
    if state is None and not population:
        raise InputError("need a starting population (or a checkpoint to resume from)")
    if composition is None:
        composition = composition_of(state["population"][0] if state else population[0])
    comp = dict(composition)
    if toolbox is None:
        toolbox = make_toolbox(fitness, comp, settings, rng, difference=difference, calculator=calculator,
                               map_func=map_func)
    similar = toolbox.similar if hasattr(toolbox, "similar") else SimilarityCriterion()

    t_start = time.perf_counter()
    if state is not None:
        run = _resumed_run(state, fitness, toolbox, settings, rng, similar, t_start)
        log.info("resumed from %s at generation %d (best cost %.6g)", out / CHECKPOINT_NAME, run.generation,
                 run.best_cost)
    else:
        run = _new_run(fitness, population, comp, toolbox, settings, similar, t_start)

    def checkpoint():
        if out is not None:
            _write_checkpoint(out, run, settings, comp, toolbox, fitness, rng)

    progress_file = ProgressFile(out / PROGRESS_NAME, run.generation) if out is not None else None

    def progress():
        if progress_file is not None:
            progress_file.record(as_atoms(min(run.population, key=best_key)), run.generation, run.elapsed())

    if state is None:
        checkpoint()
        progress()
    bar = _ProgressBar(settings, run)
    stop_reason = None
    search_end = _search_end(settings)
    try:
        while stop_reason is None:
            stop_reason = _stop_reason(run, settings)
            if stop_reason is not None:
                break
            if _finishing_starts(run, settings, search_end):
                _start_finishing(run, fitness, toolbox, settings, similar)
            run.generation += 1
            offspring = _vary(toolbox, run.population, settings, rng)
            offspring += _annealed_if_due(run, toolbox, settings, rng, anneal_map, search_end)
            offspring += _polished_if_due(run, toolbox, settings)
            nevals = evaluate_individuals(toolbox, offspring, settings, run.alpha)
            run.evaluations += nevals
            _survive(run, toolbox, offspring, settings)
            run.logbook.record(**generation_record(run.generation, nevals, run.population, run.alpha,
                                                   run.elapsed(), similar))
            log.debug("generation %d: best cost %.6g", run.generation, run.best_cost)
            bar.update(run)
            progress()
            if out is not None:
                if run.generation % settings.checkpoint_every == 0:
                    checkpoint()
                else:
                    write_logbook_csv(out / LOGBOOK_NAME, run.logbook)
    finally:
        bar.close()
    checkpoint()
    log.info("GA stopped after generation %d (%s); best cost %.6g", run.generation, stop_reason, run.best_cost)
    return _result(run, settings, stop_reason)


# --- starting and resuming ----------------------------------------------------------------

def _checkpoint_to_resume(out: Path | None, settings: GASettings) -> dict | None:
    """The checkpoint in ``out`` (None, with a log message, when there is none); refuses the other objective mode."""
    if out is None:
        raise InputError("resuming needs the output directory of the earlier run")
    if not (out / CHECKPOINT_NAME).exists() and not (out / LEGACY_CHECKPOINT_NAME).exists():
        log.info("no checkpoint in %s; starting a new run", out)
        return None
    state = load_checkpoint(out)  # an old pickled checkpoint is refused here, unopened
    if state["settings"].get("multi_objective") != settings.multi_objective:
        raise InputError("cannot resume: the checkpoint was written in the other objective mode")
    return state


def _new_run(fitness, population, comp, toolbox, settings, similar, t_start) -> _Run:
    """Generation 0: the starting individuals (checked), α (calibrated or set), evaluated, recorded."""
    comp_total = sum(comp.values())
    starts = [population[k % len(population)] for k in range(settings.population_size)]
    for k, a in enumerate(starts):
        if composition_of(a) != comp or len(a) != comp_total:
            raise InputError(f"starting structure {k} has composition {composition_of(a)}, expected {comp}")
    pop = [toolbox.individual(a) for a in starts]
    if settings.alpha == "auto" and hasattr(fitness, "calibrate_alpha"):
        fitness.calibrate_alpha([as_atoms(i) for i in pop])
    elif isinstance(settings.alpha, (int, float)) and not isinstance(settings.alpha, bool):
        set_alpha(fitness, float(settings.alpha))
    alpha = alpha_of(fitness)
    if alpha is not None:
        log.info("alpha = %.6g", alpha)
    mo = settings.multi_objective
    hof = tools.ParetoFront(similar=similar) if mo else tools.HallOfFame(settings.selection.hall_of_fame_size,
                                                                         similar=similar)
    evaluations = evaluate_individuals(toolbox, pop, settings, alpha)
    if mo:
        pop = toolbox.survive(pop, [], hof)
    hof.update(pop)
    logbook = new_logbook()
    logbook.record(**generation_record(0, evaluations, pop, alpha, 0.0, similar))
    return _Run(population=pop, hall_of_fame=hof, logbook=logbook, generation=0,
                best_cost=min(cost_of(i) for i in pop), stale=0, evaluations=evaluations, alpha=alpha,
                elapsed0=0.0, t_start=t_start)


def _resumed_run(state, fitness, toolbox, settings, rng, similar, t_start) -> _Run:
    """The run as checkpointed: α, finishing stage, generator state and out-of-domain count restored."""
    hof = state["hall_of_fame"]
    hof.similar = similar
    run = _Run(population=state["population"], hall_of_fame=hof, logbook=state["logbook"],
               generation=state["generation"], best_cost=state["best_cost"], stale=state["stale"],
               evaluations=state["evaluations"], alpha=state["alpha"], elapsed0=state["elapsed"], t_start=t_start,
               finishing=state["finishing"], search_alpha=state["search_alpha"],
               anneal_seconds=float(state["anneal_seconds"]), polish_seconds=float(state["polish_seconds"]))
    if run.alpha is not None and alpha_of(fitness) != run.alpha:
        set_alpha(fitness, run.alpha)
    if run.finishing:
        _enter_finish(toolbox, settings, run.search_alpha)
    if state["operators"] != repr(getattr(toolbox, "mutate", None)):
        log.warning("resuming with other mutations than the checkpointed run (%s, now %s): the run will "
                    "not repeat an uninterrupted one", state["operators"], getattr(toolbox, "mutate", None))
    old, new = state["settings"], settings.to_flat()
    if old != new:
        log.info("resuming with changed settings: %s", ", ".join(sorted(k for k in old if old[k] != new.get(k))))
    rng.bit_generator.state = state["rng_state"]
    _restore_domain_count(fitness, int(state["n_out_of_domain"]))
    return run


def _restore_domain_count(fitness, n_before: int) -> None:
    """Carry the checkpointed count of out-of-training-range evaluations into a resumed run.

    The warning is given again (once) so that the resumed run's log has it too.
    """
    if n_before <= 0 or not hasattr(fitness, "n_out_of_domain"):
        return
    fitness.n_out_of_domain += n_before
    if not getattr(fitness, "out_of_domain", False):
        fitness.out_of_domain = True
        log.warning("%d evaluations before the resume had convolution images outside the model's training "
                    "range: the surrogate was extrapolating for them", n_before)


def _write_checkpoint(out: Path, run: _Run, settings, comp, toolbox, fitness, rng) -> None:
    """``checkpoint.npz`` and ``logbook.csv`` in ``out``."""
    save_checkpoint(out / CHECKPOINT_NAME, {
        "generation": run.generation, "population": run.population, "hall_of_fame": run.hall_of_fame,
        "logbook": run.logbook, "best_cost": run.best_cost, "stale": run.stale, "evaluations": run.evaluations,
        "elapsed": run.elapsed(), "alpha": run.alpha, "rng_state": rng.bit_generator.state,
        "settings": settings.to_flat(), "composition": comp, "operators": repr(getattr(toolbox, "mutate", None)),
        "finishing": run.finishing, "search_alpha": run.search_alpha, "anneal_seconds": run.anneal_seconds,
        "polish_seconds": run.polish_seconds, "n_out_of_domain": int(getattr(fitness, "n_out_of_domain", 0)),
    })
    write_logbook_csv(out / LOGBOOK_NAME, run.logbook)


# --- one generation -------------------------------------------------------------------------

def _stop_reason(run: _Run, settings: GASettings) -> str | None:
    """Why the run stops before the next generation (``"generations"``, ``"stagnation"``, ``"time_limit"``), or None."""
    stop = settings.stopping
    if run.generation >= stop.generations:
        return "generations"
    if stop.stagnation is not None and run.stale >= stop.stagnation:
        return "stagnation"
    if stop.time_limit is not None and run.elapsed() >= generations_end(stop.time_limit, run.polish_seconds):
        return "time_limit"  # the limit, less the room kept for the last generation's polish
    return None


def _vary(toolbox, population, settings: GASettings, rng: np.random.Generator) -> list:
    """λ offspring by crossover and/or mutation (DEAP's ``varOr``), relaxed, plus ``immigrants`` fresh clusters."""
    offspring = []
    lam, variation = settings.lam, settings.variation
    while len(offspring) < lam:
        if len(population) >= 2 and lam - len(offspring) >= 1 and rng.random() < variation.crossover_probability:
            p1, p2 = toolbox.select(population, 2)
            c1, c2 = toolbox.clone(p1), toolbox.clone(p2)
            c1, c2 = toolbox.mate(c1, c2)
            children = [c1, c2][: lam - len(offspring)]
            for k, c in enumerate(children):
                if rng.random() < variation.mutation_probability:
                    (children[k],) = toolbox.mutate(c)
        else:
            (p,) = toolbox.select(population, 1)
            (c,) = toolbox.mutate(toolbox.clone(p))
            children = [c]
        for c in children:
            del c.fitness.values
            for key in ("cost", "chi2", "energy"):
                c.info.pop(key, None)
            if hasattr(toolbox, "relax"):
                toolbox.relax(c)
        offspring.extend(children)
    for _ in range(variation.immigrants):
        c = toolbox.immigrant()
        if hasattr(toolbox, "relax"):
            toolbox.relax(c)
        offspring.append(c)
    return offspring


def _annealed_if_due(run: _Run, toolbox, settings, rng, anneal_map, search_end) -> list:
    """This generation's annealed individuals (none outside ``anneal_every``, in the finishing stage, or late).

    A round of annealings takes minutes: one that would end past the time
    limit (or the search's end), judged by the last round's duration, is skipped.
    """
    if not hasattr(toolbox, "anneal") or run.finishing or run.generation % settings.annealing.every != 0:
        return []
    time_limit = settings.stopping.time_limit
    end = search_end if search_end is not None else time_limit
    if time_limit is not None and run.elapsed() + run.anneal_seconds > end:
        return []
    t_anneal = time.perf_counter()
    annealed, n_polish = anneal_round(toolbox, run.population, settings, rng, anneal_map)
    run.evaluations += n_polish
    run.anneal_seconds = time.perf_counter() - t_anneal
    return annealed


#: time kept at the end of a time-limited run for its last polish, in units of the last polish's duration
FINAL_POLISH_RESERVE = 1.2


def generations_end(time_limit: float | None, polish_seconds: float) -> float | None:
    """s after which a time-limited run makes no more generations: the limit, less room for its last polish.

    ``polish_seconds``: the last polish's duration (0 before the first: no
    room kept). None without a time limit.
    """
    if time_limit is None:
        return None
    return float(time_limit) - FINAL_POLISH_RESERVE * float(polish_seconds)


def typical_generation_seconds(elapsed) -> float:
    """A generation's usual duration (s): the median of the last five, from the logbook's ``elapsed_s`` column.

    The next polish decision comes one generation later. A generation with
    an annealing round or a polish takes 40–160 s, the others a few: the
    mean, or the last one, would end a run's finishing stage early with
    polishes. 0 with fewer than two records.
    """
    times = np.asarray(list(elapsed)[-6:], dtype=float)
    return float(np.median(np.diff(times))) if len(times) >= 2 else 0.0


def polish_now(generation: int, every: int, elapsed: float, generation_seconds: float, polish_seconds: float,
               time_limit: float | None) -> bool:
    """Whether this generation polishes its best: when due, and always in the run's last generation.

    Due every ``every`` generations. With a time limit and a polish already
    timed (``polish_seconds``), generations stop at :func:`generations_end`
    (the limit less room for one polish): a due polish that would end
    past it is skipped, and the last generation — the one after which
    another of ``generation_seconds`` would start past it — polishes its
    best whatever its number. The answer is the best of the run's last
    generations: without this no polish might have seen it (on case (c) of
    the independent benchmark a run ended 1.5 eV above what one more
    polish of its answer gave).
    """
    if not every:
        return False
    due = generation % every == 0
    if time_limit is None or polish_seconds <= 0:
        return due and (time_limit is None or elapsed <= time_limit)
    end = generations_end(time_limit, polish_seconds)
    if elapsed + generation_seconds >= end:
        return True
    return due and elapsed + polish_seconds <= end


def _polished_if_due(run: _Run, toolbox, settings) -> list:
    """This generation's polished best (:func:`polish_now`; single objective, with a relaxation)."""
    if not (settings.polish.every and hasattr(toolbox, "relax") and not settings.multi_objective):
        return []
    if not polish_now(run.generation, settings.polish.every, run.elapsed(),
                      typical_generation_seconds(run.logbook.select("elapsed_s")), run.polish_seconds,
                      settings.stopping.time_limit):
        return []
    t_polish = time.perf_counter()
    polished, n_polish = polish_best(toolbox, run.population, settings, run.alpha)
    run.evaluations += n_polish
    run.polish_seconds = time.perf_counter() - t_polish
    return [polished]


def _survive(run: _Run, toolbox, offspring, settings) -> None:
    """The next population, the hall of fame updated, the best cost and the stagnation count."""
    run.population = toolbox.survive(run.population, offspring, run.hall_of_fame)
    before = {id(h) for h in run.hall_of_fame}
    run.hall_of_fame.update(run.population)
    new_best = min(cost_of(i) for i in run.population)
    if settings.multi_objective:  # progress = the Pareto front gained a member
        improved = any(id(h) not in before for h in run.hall_of_fame)
    else:
        improved = new_best < run.best_cost - settings.stopping.stagnation_tol * max(1.0, abs(run.best_cost))
    run.stale = 0 if improved else run.stale + 1
    run.best_cost = min(run.best_cost, new_best)


# --- the finishing stage --------------------------------------------------------------------

def _search_end(settings: GASettings):
    """Where the search ends and the finishing stage begins: s, or a generation without a time limit; None without one."""
    f, stop = settings.finishing.fraction, settings.stopping
    if f == 0:
        return None
    if stop.time_limit is not None:
        return stop.time_limit * (1.0 - f)
    return math.floor(stop.generations * (1.0 - f))


def _finishing_starts(run: _Run, settings: GASettings, search_end) -> bool:
    if search_end is None or run.finishing:
        return False
    return (run.elapsed() if settings.stopping.time_limit is not None else run.generation) >= search_end


def _start_finishing(run: _Run, fitness, toolbox, settings, similar) -> None:
    """Select at the finishing α from now on: costs reweighed, a fresh hall of fame, the stagnation count reset."""
    run.finishing, run.search_alpha = True, run.alpha
    run.alpha = _finish_alpha(fitness, settings)
    set_alpha(fitness, run.alpha)
    _enter_finish(toolbox, settings, run.search_alpha)
    hof_members = list(run.hall_of_fame)
    reweigh(run.population + hof_members, run.alpha)
    run.hall_of_fame = tools.HallOfFame(settings.selection.hall_of_fame_size, similar=similar)
    run.hall_of_fame.update(hof_members + run.population)
    run.best_cost, run.stale = min(cost_of(i) for i in run.population), 0
    log.info("finishing stage from generation %d: selection α %.6g → %.6g (relaxation keeps %.6g)",
             run.generation, run.search_alpha, run.alpha, run.search_alpha)


def _enter_finish(toolbox, settings, search_alpha) -> None:
    """Finishing stage: the relaxation keeps the search's α; the mutations get ``finish_weights``."""
    if hasattr(toolbox, "relax_alpha"):
        toolbox.relax_alpha.pinned = search_alpha
    selector = getattr(getattr(toolbox, "mutate", None), "func", None)
    if settings.finishing.weights and hasattr(selector, "reweighted"):
        toolbox.register("mutate", selector.reweighted(settings.finishing.weights))


def _finish_alpha(fitness, settings) -> float:
    """α of the finishing stage (eV per unit χ²): ``finish_alpha``, or the fitness's thermal α."""
    a = settings.finishing.alpha
    if a == "thermal":
        if not hasattr(fitness, "thermal_alpha"):
            raise InputError(f"finish_alpha='thermal' needs a fitness with thermal_alpha(); {type(fitness).__name__} "
                             "has none: give a number")
        return float(fitness.thermal_alpha())
    return float(a)


# --- progress and result --------------------------------------------------------------------

class _ProgressBar:
    """A tqdm bar on stderr (``settings.progress``) showing the best χ², E and α."""

    def __init__(self, settings: GASettings, run: _Run):
        from tqdm.auto import tqdm

        # In a log file (stderr not a terminal) every redraw is a new line: redraw rarely there.
        generations = settings.stopping.generations
        self.bar = tqdm(total=generations, initial=min(run.generation, generations), desc="GA",
                        unit="gen", file=sys.stderr, disable=not settings.progress, dynamic_ncols=True,
                        mininterval=0.1 if sys.stderr.isatty() else 10.0)
        self._postfix(run)

    def _postfix(self, run: _Run) -> None:
        rec = run.logbook[-1]
        self.bar.set_postfix_str(f"χ²={rec['best_chi2']:.4g} E={rec['best_energy']:.4g} α={rec['alpha']:.3g}",
                                 refresh=False)

    def update(self, run: _Run) -> None:
        self.bar.update(1)
        self._postfix(run)

    def close(self) -> None:
        self.bar.close()


def _result(run: _Run, settings: GASettings, stop_reason: str) -> GAResult:
    """The :class:`GAResult` of a finished run: plain ``Atoms`` copies, the best stamped with generation and α."""
    if settings.multi_objective:
        front = sorted(run.hall_of_fame, key=lambda i: (i.fitness.values[0], i.fitness.values[1]))
        pareto = [as_atoms(i) for i in front]
        best_ind = min(front, key=best_key)
        fame = pareto
    else:
        pareto = []
        fame = [as_atoms(i) for i in run.hall_of_fame]
        best_ind = run.hall_of_fame[0]
    best = as_atoms(best_ind)
    best.info["generation"] = run.generation
    if run.alpha is not None:
        best.info["alpha"] = run.alpha
    return GAResult(best=best, population=[as_atoms(i) for i in run.population], hall_of_fame=fame,
                    pareto_front=pareto, logbook=run.logbook, generation=run.generation, stop_reason=stop_reason,
                    alpha=run.alpha, evaluations=run.evaluations)
