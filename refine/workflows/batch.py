"""Batch refinement on Dask: runs of a manifest, one Dask task each, and a results table.

The runs come from :func:`refine.workflows.read_manifest`
(:mod:`refine.workflows.manifest`: TOML or CSV, one :class:`RunSpec` per
image and seed).

Runs
----
Each (refinement, seed) pair is one *run* named ``<name>-seed<seed>`` and
one Dask task; it writes into ``DIR/<run name>/`` through
``refine_image(..., resume=True)``. A run is *finished* when its
``summary.json`` exists (``refine_image`` writes it atomically, last). So:

* a re-run of the batch skips finished runs (status ``"skipped"`` in the
  table, their numbers read back from ``summary.json``) and resumes the
  others from their checkpoints;
* a worker that dies mid-run loses only that run's progress since its last
  checkpoint: the scheduler gives the task to another worker (up to
  ``distributed.scheduler.allowed-failures`` times, default 3), which
  resumes it; a result that was finished but not yet collected is read
  back from its ``summary.json``;
* an exception inside a run is retried ``retries`` times (the retry resumes
  from the checkpoint); a :class:`~surrogate.common.errors.StemRefineError` (bad
  input found only when the run starts, e.g. an unreadable image) is not
  retried. Either way the run gets status ``"failed"`` with the message and
  the batch goes on.

Results
-------
``DIR/results.csv`` and ``DIR/results.json`` (same rows, plus batch
metadata in the JSON), one row per run in manifest order, columns
:data:`RESULT_COLUMNS`; rewritten atomically (temporary file +
:func:`os.replace`) each time a run finishes, so they are always complete
and readable. Status: ``done`` (finished in this batch), ``skipped``
(finished earlier), ``failed``, ``pending`` (not finished: interrupted).

Cluster
-------
By default a :class:`distributed.LocalCluster` on this machine with
``workers`` worker processes of one thread each (one refinement per core).
Give ``scheduler="tcp://host:8786"`` to use an existing cluster, started
for instance with::

    dask scheduler                                  # prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1   # on each machine

Every worker needs stem-refine installed and the manifest's images, models
and the output folder at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from refine.workflows.manifest import RunSpec
from surrogate.common import InputError, StemRefineError, atomic_write_text, dumps, write_json

__all__ = [
    "BatchResult",
    "run_batch",
    "execute_run",
    "result_row",
    "read_results",
    "write_results",
    "is_finished",
    "attempts",
    "RESULT_COLUMNS",
    "SUMMARY_NAME",
]

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
SPEC_NAME = "batch_run.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"

#: columns of results.csv (and keys of each row of results.json), in order
RESULT_COLUMNS = (
    "name", "image", "composition", "seed", "best_cost", "chi2", "energy", "alpha", "generations",
    "wall_time_s", "out_dir", "status", "error",
)


# --- one run (on a worker) ------------------------------------------------------------------

def _first(mapping: Mapping, *keys, default=math.nan):
    for k in keys:
        if k in mapping and mapping[k] is not None:
            return mapping[k]
    return default


def result_row(spec: RunSpec, folder, summary: Mapping | None, status: str, error: str = "") -> dict:
    """One row of the results table (see :data:`RESULT_COLUMNS`) from a run's ``summary.json``."""
    s = summary or {}
    best = s.get("best") if isinstance(s.get("best"), Mapping) else {}
    look = {**best, **s}
    return {
        "name": spec.name, "image": spec.image, "composition": spec.composition, "seed": spec.seed,
        "best_cost": _float(_first(look, "best_cost", "cost")),
        "chi2": _float(_first(look, "chi2", "best_chi2")),
        "energy": _float(_first(look, "energy", "best_energy", "E")),
        "alpha": _float(_first(look, "alpha")),
        "generations": _int_or_none(_first(look, "generations", "generation", default=None)),
        "wall_time_s": _float(_first(look, "wall_time_s", "wall_time", "elapsed_s", "elapsed")),
        "out_dir": str(folder), "status": status, "error": error,
    }


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int_or_none(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _read_summary(folder: Path) -> dict | None:
    try:
        with open(folder / SUMMARY_NAME, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def is_finished(folder) -> bool:
    """Whether a run folder holds a readable ``summary.json`` (written last by ``refine_image``)."""
    return _read_summary(Path(folder)) is not None


def _refine_image_run(spec: RunSpec, folder: Path):
    """The default run function: :func:`refine.workflows.refine_image` with the spec's settings, resuming."""
    from refine.workflows.refinement import refine_image
    from refine.workflows.settings import refinement_settings

    model = None
    if spec.model is not None:
        from surrogate.imaging import load_model

        model = load_model(spec.model)
    # many runs at once, one per worker core: the batch has its own progress bar, and a run anneals in its own
    # process unless its manifest entry asks for more
    settings = refinement_settings(**{"workers": 1, **spec.settings}, seed=spec.seed, resume=True, progress=False)
    refine_image(spec.image, spec.composition, model=model, out_dir=folder, **settings)


def _record_attempt(spec: RunSpec, folder: Path):
    """Write ``batch_run.json``: the run's spec and every start of it (host, pid, time)."""
    import socket

    try:
        doc = json.loads((folder / SPEC_NAME).read_text(encoding="utf-8"))
        attempts = list(doc.get("attempts", []))
    except (OSError, ValueError, AttributeError):
        attempts = []
    attempts.append({"host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if len(attempts) > 1:
        log.warning("run %s: attempt %d (resuming from its checkpoint)", spec.name, len(attempts))
    write_json(folder / SPEC_NAME, {"spec": spec.to_dict(), "attempts": attempts})


def attempts(folder) -> list[dict]:
    """The starts of a run recorded in its folder's ``batch_run.json`` (host, pid, started)."""
    try:
        return list(json.loads((Path(folder) / SPEC_NAME).read_text(encoding="utf-8")).get("attempts", []))
    except (OSError, ValueError, AttributeError):
        return []


def execute_run(spec: RunSpec, out_dir, run_func: Callable | None = None) -> dict:
    """Run one refinement into ``out_dir/<spec.name>`` (the Dask task) and return its results row.

    A run whose folder already holds ``summary.json`` is not run again. A
    :class:`StemRefineError` from the run gives a ``"failed"`` row (no retry);
    other exceptions propagate (Dask retries the task, which resumes).

    Parameters
    ----------
    spec : RunSpec
    out_dir : path
        The batch's output folder.
    run_func : callable, optional
        ``run_func(spec, folder)`` that must leave ``folder/summary.json``;
        default :func:`refine.workflows.refine_image` with ``resume=True``.
    """
    folder = Path(out_dir) / spec.name
    summary = _read_summary(folder)
    if summary is not None:
        return result_row(spec, folder, summary, "done")
    folder.mkdir(parents=True, exist_ok=True)
    _record_attempt(spec, folder)
    log.info("run %s starting in %s (pid %d)", spec.name, folder, os.getpid())
    try:
        (run_func or _refine_image_run)(spec, folder)
    except StemRefineError as exc:
        log.error("run %s failed: %s", spec.name, exc)
        return result_row(spec, folder, None, "failed", f"{type(exc).__name__}: {exc}")
    summary = _read_summary(folder)
    if summary is None:
        raise StemRefineError(f"run {spec.name} ended without writing {folder / SUMMARY_NAME}")
    return result_row(spec, folder, summary, "done")


# --- results table --------------------------------------------------------------------------

def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_results(rows: Iterable[Mapping], out_dir, meta: Mapping | None = None) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` into ``out_dir`` atomically; return their paths.

    NaN numbers are empty cells in the CSV and ``null`` in the JSON.
    """
    out = Path(out_dir)
    rows = list(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if _json_safe(r.get(k)) is None else r.get(k)) for k in RESULT_COLUMNS})
    csv_path, json_path = out / RESULTS_CSV, out / RESULTS_JSON
    atomic_write_text(csv_path, buf.getvalue())
    doc = dict(meta or {})
    doc["runs"] = [{k: _json_safe(r.get(k)) for k in RESULT_COLUMNS} for r in rows]
    write_json(json_path, doc)
    return csv_path, json_path


def read_results(out_dir) -> list[dict]:
    """The rows of ``out_dir/results.csv`` (numbers parsed; empty cells NaN or None)."""
    path = Path(out_dir) / RESULTS_CSV
    if not path.is_file():
        raise InputError(f"no results table at {path}")
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            for k in ("best_cost", "chi2", "energy", "alpha", "wall_time_s"):
                r[k] = _float(r[k]) if r[k] != "" else math.nan
            r["seed"] = int(r["seed"])
            r["generations"] = int(r["generations"]) if r["generations"] != "" else None
            rows.append(r)
    return rows


class _Table:
    """The batch's rows by run name, written out (manifest order, with status counts) on every change."""

    def __init__(self, specs: list[RunSpec], out: Path, meta: dict):
        self.specs, self.out, self.meta = specs, out, meta
        self.rows: dict[str, dict] = {}

    def ordered(self) -> list[dict]:
        return [self.rows[s.name] for s in self.specs]

    def write(self) -> tuple[Path, Path]:
        ordered = self.ordered()
        counts = {st: sum(1 for r in ordered if r["status"] == st) for st in ("done", "skipped", "failed", "pending")}
        return write_results(ordered, self.out, {**self.meta, **counts})


# --- the batch --------------------------------------------------------------------------------

@dataclass
class BatchResult:
    """What :func:`run_batch` returns.

    Attributes
    ----------
    rows : list of dict
        One per run, manifest order (columns :data:`RESULT_COLUMNS`).
    csv_path, json_path : Path
        The results table.
    wall_time_s : float
        Wall time of this batch invocation.
    """

    rows: list
    csv_path: Path
    json_path: Path
    wall_time_s: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def n_failed(self) -> int:
        return self.count("failed")


def _validate_specs(specs) -> list[RunSpec]:
    specs = list(specs)
    if not specs:
        raise InputError("the batch has no runs")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError("run names must be unique within a batch")
    return specs


def _check_count(name: str, value, minimum: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _start_cluster(workers: int):
    from distributed import LocalCluster

    # one thread per worker; Numba / BLAS single-threaded (one refinement per core)
    env = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    # ":0": no fixed dashboard port (a scheduler always serves HTTP; 8787 may be taken)
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.CRITICAL, env=env)


class _QuietDistributed:
    """Keep the in-process scheduler's INFO chatter out of the CLI's log (unless at DEBUG)."""

    def __enter__(self):
        self.logger = logging.getLogger("distributed")
        self.level = self.logger.level
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            self.logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False


def _connect(stack: contextlib.ExitStack, scheduler: str | None, client, workers: int):
    """The client to use: ``client`` as is, one of the scheduler at ``scheduler``, or of a new local cluster.

    A client (and cluster) made here is closed when ``stack`` closes.
    """
    from distributed import Client

    if client is None:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
        else:
            cluster = stack.enter_context(_start_cluster(workers))
            client = Client(cluster)
        stack.enter_context(client)  # closed before the cluster
    return client


def _collected_row(fut, spec: RunSpec, out: Path) -> dict:
    """The row of a finished task; a task that raised is ``"failed"`` unless its summary.json exists after all."""
    try:
        return fut.result()
    except Exception as exc:  # retries used up, or the task's worker died too often
        summary = _read_summary(out / spec.name)
        if summary is not None:  # it finished after all
            return result_row(spec, out / spec.name, summary, "done")
        log.error("run %s failed: %s: %s", spec.name, type(exc).__name__, exc)
        return result_row(spec, out / spec.name, None, "failed", f"{type(exc).__name__}: {exc}")


def _run_tasks(client, todo: list[RunSpec], table: _Table, *, retries: int, run_func: Callable | None,
               progress: bool, on_result: Callable | None) -> None:
    """Submit ``todo`` as Dask tasks and record each row in ``table`` as it finishes (tqdm bar on stderr)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    out, n_runs = table.out, len(table.specs)
    futures = {}
    for spec in todo:
        fut = client.submit(execute_run, spec, str(out), run_func, key=f"stem-refine-run-{spec.name}-{os.getpid()}",
                            retries=retries, pure=False)
        futures[fut] = spec
    bar = tqdm(total=n_runs, initial=n_runs - len(todo), desc="batch", unit="run", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for fut in as_completed(list(futures)):
            spec = futures.pop(fut)
            row = _collected_row(fut, spec, out)
            fut.release()
            table.rows[spec.name] = row
            table.write()
            bar.update(1)
            n_failed = sum(1 for r in table.rows.values() if r["status"] == "failed")
            if n_failed:
                bar.set_postfix_str(f"failed={n_failed}")
            if on_result is not None:
                on_result(row)
    finally:
        bar.close()
        for fut in futures:
            fut.cancel()


def run_batch(specs, out_dir, *, scheduler: str | None = None, client=None, workers: int = 2, retries: int = 2,
              progress: bool = True, run_func: Callable | None = None, manifest: str | None = None,
              on_result: Callable | None = None) -> BatchResult:
    """Run refinements as Dask tasks, skipping finished ones, and keep the results table up to date.

    Parameters
    ----------
    specs : sequence of RunSpec
        From :func:`refine.workflows.read_manifest`.
    out_dir : path
        Batch folder: runs go to ``out_dir/<run name>/``, the table to
        ``out_dir/results.csv`` and ``results.json``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    client : distributed.Client, optional
        An existing client (used as is, not closed).
    workers : int
        Worker processes of the local cluster made when neither
        ``scheduler`` nor ``client`` is given (one thread each).
    retries : int
        Retries of a run that raised an unexpected exception.
    progress : bool
        tqdm bar over the runs on stderr.
    run_func : callable, optional
        ``run_func(spec, folder)`` instead of ``refine_image`` (must be
        picklable and write ``folder/summary.json``); for tests and custom runs.
    manifest : str, optional
        Recorded in ``results.json``.
    on_result : callable, optional
        Called with each finished row on the client (e.g. for tests or logs).

    Returns
    -------
    BatchResult
    """
    specs = _validate_specs(specs)
    if scheduler is not None and client is not None:
        raise InputError("give either a scheduler address or a client, not both")
    _check_count("workers", workers, 1)
    _check_count("retries", retries, 0)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    table = _Table(specs, out, {"manifest": manifest, "out_dir": str(out), "n_runs": len(specs)})
    todo: list[RunSpec] = []
    for spec in specs:
        folder = out / spec.name
        summary = _read_summary(folder)
        if summary is not None:
            _warn_if_changed(spec, folder)
            table.rows[spec.name] = result_row(spec, folder, summary, "skipped")
        else:
            table.rows[spec.name] = result_row(spec, folder, None, "pending")
            todo.append(spec)
    csv_path, json_path = table.write()
    log.info("batch of %d runs in %s: %d finished earlier, %d to run", len(specs), out, len(specs) - len(todo),
             len(todo))
    if not todo:
        return BatchResult(table.ordered(), csv_path, json_path, time.perf_counter() - t0)

    quiet = _QuietDistributed() if scheduler is None and client is None else contextlib.nullcontext()
    with quiet, contextlib.ExitStack() as stack:
        client = _connect(stack, scheduler, client, workers)
        log.info("Dask cluster: %s", client)
        _run_tasks(client, todo, table, retries=retries, run_func=run_func, progress=progress, on_result=on_result)
    csv_path, json_path = table.write()
    return BatchResult(table.ordered(), csv_path, json_path, time.perf_counter() - t0)


def _warn_if_changed(spec: RunSpec, folder: Path):
    try:
        old = json.loads((folder / SPEC_NAME).read_text(encoding="utf-8")).get("spec")
    except (OSError, ValueError, AttributeError):
        return
    if old != json.loads(dumps(spec.to_dict())):
        log.warning("run %s finished earlier with other settings (%s); skipped anyway: delete its folder to redo "
                    "it", spec.name, folder / SPEC_NAME)
