"""Batch refinement on Dask: a manifest of refinements, one Dask task each, a results table.

Manifest
--------
A TOML file (read with :mod:`tomllib`) or a CSV file listing refinements.
TOML::

    [defaults]                  # optional, for every run below
    model = "pt_model.npz"      # default: the shipped default model
    population = 20
    generations = 100
    time_limit = 600            # s
    alpha = "auto"              # or a number

    [[runs]]
    image = "images/particle_a.tif"
    composition = "Pt309"
    seeds = [1, 2, 3, 4]        # one run per seed (or `seed = 1`)
    pixel_size = 0.1            # Å, when the file has no calibration
    name = "a"                  # optional; default the image's file stem

CSV: a header row naming the same keys (``name``, ``image``,
``composition``, ``model``, ``seeds``/``seed``, and the settings), one
refinement per row; an empty cell takes the default; seeds separated by
spaces or semicolons (``1;2;3;4``); lines starting with ``#`` are comments.
Relative paths are relative to the manifest's folder.

Keys: ``image`` and ``composition`` are required; ``model``, ``seeds``
(default ``[0]``) and ``name`` are optional; every other key is a setting
passed to :func:`refine.workflows.refinement.refine_image` (``population``,
``generations``, ``time_limit``, ``alpha``, ``pixel_size``, and the other
keyword parameters it takes, see :func:`setting_names`). Unknown keys, a
missing image or model file, a bad composition, bad values and duplicate
run names raise :class:`~surrogate.common.errors.InputError` before anything runs.

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
import inspect
import io
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from surrogate.common import atomic_write_text

from surrogate.common import InputError, StemRefineError

__all__ = [
    "RunSpec",
    "BatchResult",
    "read_manifest",
    "parse_manifest",
    "setting_names",
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

#: keys of a manifest entry that are not settings of refine_image
_ENTRY_KEYS = ("name", "image", "composition", "model", "seeds", "seed")
#: refine_image parameters a manifest cannot set (the batch sets them)
_RESERVED = ("image", "composition", "model", "out_dir", "seed", "resume", "progress", "rng", "map_func",
             "client")
#: settings known from the refine_image contract, with checks; others are passed through
_CORE_SETTINGS = ("population", "generations", "time_limit", "alpha", "pixel_size")

#: named starting populations of refine_image (other ``start`` values are structure files)
_START_NAMES = ("random", "shapes", "mixed", "image")

_NAME_OK = re.compile(r"[^A-Za-z0-9._+-]+")


# --- manifest ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """One refinement run of a batch: one image, one seed.

    Attributes
    ----------
    name : str
        Unique run name, also the output sub-folder (``<name>-seed<seed>``).
    image : str
        Absolute path of the image file.
    composition : str
        E.g. ``"Pt309"``.
    seed : int
    model : str or None
        Absolute path of the model file; None: the shipped default model.
    settings : dict
        Further keyword arguments of :func:`refine.workflows.refinement.refine_image`.
    """

    name: str
    image: str
    composition: str
    seed: int
    model: str | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def setting_names() -> tuple[str, ...]:
    """Settings a manifest may give: keyword parameters of :func:`refine.workflows.refinement.refine_image`.

    Falls back to the documented core settings (population, generations,
    time_limit, alpha, pixel_size) when :mod:`refine.workflows.refinement` cannot be imported.
    """
    names = list(_CORE_SETTINGS)
    try:
        from refine.workflows.refinement import refine_image
    except ImportError:  # pragma: no cover - refine.workflows.refinement not importable
        return tuple(names)
    for p in inspect.signature(refine_image).parameters.values():
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _RESERVED and p.name not in names:
            names.append(p.name)
    return tuple(names)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_setting(key: str, value, where: str):
    """Check the core settings' values; return the normalized value."""
    def number(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{where}: {key} must be a number, got {v!r}")
        return v

    if key == "population":
        if not _is_int(value) or value < 1:
            raise InputError(f"{where}: population must be an integer ≥ 1, got {value!r}")
    elif key == "generations":
        if not _is_int(value) or value < 0:
            raise InputError(f"{where}: generations must be an integer ≥ 0, got {value!r}")
    elif key in ("time_limit", "pixel_size"):
        if number(value) <= 0:
            raise InputError(f"{where}: {key} must be positive, got {value!r}")
    elif key == "alpha":
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value) or value < 0):
            raise InputError(f"{where}: alpha must be 'auto' or a number ≥ 0, got {value!r}")
    return value


def _seeds(value, where: str) -> list[int]:
    if _is_int(value):
        value = [value]
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s;,]+", value.strip()) if p]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"{where}: seeds must be integers separated by spaces or ';', got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(s) and s >= 0 for s in value):
        raise InputError(f"{where}: seeds must be a non-empty list of integers ≥ 0, got {value!r}")
    if len(set(value)) != len(value):
        raise InputError(f"{where}: seeds {value!r} repeat a seed")
    return list(value)


def _resolve(path, base: Path, what: str, where: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"{where}: {what} must be a file path, got {path!r}")
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = base / p
    if not p.exists():
        raise InputError(f"{where}: {what} file {p} does not exist")
    if p.is_dir():
        raise InputError(f"{where}: {what} {p} is a folder, not a file")
    return str(p.resolve())


def _model_elements(path: str | None, cache: dict):
    """Elements a model file was fitted on (empty when unknown or unreadable here)."""
    if path not in cache:
        elements = ()
        try:
            if path is None:
                from surrogate import default_model

                model = default_model()
            else:
                from surrogate.imaging import load_model

                model = load_model(path)
            elements = tuple(getattr(model, "elements_", ()) or ())
        except Exception as exc:  # the run will report it
            if path is not None:
                raise InputError(f"cannot read model {path}: {exc}") from exc
            log.debug("default model not readable here: %s", exc)
        cache[path] = elements
    return cache[path]


def parse_manifest(data: Mapping, base_dir=".", *, source: str = "manifest", check_models: bool = True
                   ) -> list[RunSpec]:
    """Validate a manifest given as a mapping (the parsed TOML) and expand it into runs.

    Parameters
    ----------
    data : mapping
        ``{"defaults": {...}, "runs": [{...}, ...]}``.
    base_dir : path
        Folder that relative paths are relative to.
    source : str
        Name used in error messages.
    check_models : bool
        Read each model file once to check that it loads and that the
        compositions use only its elements.

    Returns
    -------
    list of RunSpec
        One per (entry, seed), in manifest order.

    Raises
    ------
    InputError
        See the module docstring.
    """
    from refine.search import composition_string, validate_composition

    base = Path(base_dir).resolve()
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a table with a [[runs]] list, got {type(data).__name__}")
    unknown = set(data) - {"defaults", "runs"}
    if unknown:
        raise InputError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                         "expected [defaults] and [[runs]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise InputError(f"{source}: [defaults] must be a table")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: no runs; list them as [[runs]] tables (TOML) or rows (CSV)")
    allowed_settings = setting_names()
    allowed = set(_ENTRY_KEYS) | set(allowed_settings)
    for key in defaults:
        if key not in allowed or key == "name":
            raise InputError(f"{source}: unknown key {key!r} in [defaults]; known: "
                             f"{', '.join(k for k in (*_ENTRY_KEYS, *allowed_settings) if k != 'name')}")
    specs: list[RunSpec] = []
    model_cache: dict = {}
    for k, entry in enumerate(entries, 1):
        where = f"{source}, run {k}"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: expected a table of keys, got {entry!r}")
        for key in entry:
            if key not in allowed:
                raise InputError(f"{where}: unknown key {key!r}; known: "
                                 f"{', '.join((*_ENTRY_KEYS, *allowed_settings))}")
        for table, what in ((defaults, f"{source}, [defaults]"), (entry, where)):
            if "seed" in table and "seeds" in table:
                raise InputError(f"{what}: give either seed or seeds, not both")
        seed_table = entry if ("seed" in entry or "seeds" in entry) else defaults
        merged = {key: v for key, v in {**defaults, **entry}.items() if key not in ("seed", "seeds")}
        for req in ("image", "composition"):
            if req not in merged or merged[req] in (None, ""):
                raise InputError(f"{where}: missing {req!r}")
        image = _resolve(merged["image"], base, "image", where)
        model = merged.get("model")
        model = None if model in (None, "", "default") else _resolve(model, base, "model", where)
        try:
            elements = _model_elements(model, model_cache) if check_models else ()
            comp = composition_string(validate_composition(merged["composition"], elements))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        seeds = _seeds(seed_table.get("seeds", seed_table.get("seed", 0)), where)
        settings = {}
        for key, value in merged.items():
            if key in _ENTRY_KEYS:
                continue
            settings[key] = _check_setting(key, value, where)
        # file settings, relative to the manifest's folder
        if isinstance(settings.get("mask"), str) and settings["mask"] != "zeros":
            settings["mask"] = _resolve(settings["mask"], base, "mask", where)
        if isinstance(settings.get("start"), str) and settings["start"] not in _START_NAMES:
            settings["start"] = _resolve(settings["start"], base, "start structure", where)
        name = merged.get("name") or Path(image).stem
        if not isinstance(name, str):
            raise InputError(f"{where}: name must be a string, got {name!r}")
        name = _NAME_OK.sub("_", name).strip("._") or f"run{k}"
        for s in seeds:
            specs.append(RunSpec(name=f"{name}-seed{s}", image=image, composition=comp, seed=int(s), model=model,
                                 settings=dict(settings)))
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.name in seen:
            raise InputError(f"{source}: two runs are named {spec.name!r}; give the refinements distinct "
                             "'name' keys (or distinct seeds)")
        seen[spec.name] = 1
    return specs


def _csv_value(key: str, text: str):
    """A CSV cell as the TOML value it stands for (numbers become numbers)."""
    text = text.strip()
    if key in ("image", "composition", "model", "name", "seeds"):
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _read_csv(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not a text file") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"manifest {path} is empty")
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader)]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputError(f"manifest {path}: the header row needs distinct, non-empty column names, got {header}")
    runs = []
    for lineno, row in enumerate(reader, 2):
        if len(row) > len(header):
            raise InputError(f"manifest {path}, row {lineno}: {len(row)} cells for {len(header)} columns")
        entry = {h: _csv_value(h, v) for h, v in zip(header, row) if v.strip()}
        runs.append(entry)
    return {"runs": runs}


def read_manifest(path, *, check_models: bool = True) -> list[RunSpec]:
    """Read a TOML (``.toml``) or CSV (any other suffix) manifest and expand it into runs.

    See the module docstring for the format; relative paths are relative to
    the manifest's folder. Raises :class:`InputError` for a missing or bad
    manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"manifest {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"manifest {path} is not a text file") from None
    else:
        data = _read_csv(path)
    return parse_manifest(data, path.parent, source=f"manifest {path.name}", check_models=check_models)


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
    """The default run function: :func:`refine.workflows.refinement.refine_image` with ``resume=True``."""
    from refine.workflows.refinement import refine_image

    model = None
    if spec.model is not None:
        from surrogate.imaging import load_model

        model = load_model(spec.model)
    kwargs = dict(spec.settings)
    if "progress" in inspect.signature(refine_image).parameters:
        kwargs["progress"] = False  # many runs at once: the batch has its own bar
    refine_image(spec.image, spec.composition, model=model, out_dir=folder, seed=spec.seed, resume=True, **kwargs)


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
    atomic_write_text(folder / SPEC_NAME, json.dumps({"spec": spec.to_dict(), "attempts": attempts}, indent=2))


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
        default :func:`refine.workflows.refinement.refine_image` with ``resume=True``.
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
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
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


def run_batch(specs, out_dir, *, scheduler: str | None = None, client=None, workers: int = 2, retries: int = 2,
              progress: bool = True, run_func: Callable | None = None, manifest: str | None = None,
              on_result: Callable | None = None) -> BatchResult:
    """Run refinements as Dask tasks, skipping finished ones, and keep the results table up to date.

    Parameters
    ----------
    specs : sequence of RunSpec
        From :func:`read_manifest`.
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
    from distributed import Client, as_completed

    specs = _validate_specs(specs)
    if scheduler is not None and client is not None:
        raise InputError("give either a scheduler address or a client, not both")
    if not (_is_int(workers) and workers >= 1):
        raise InputError(f"workers must be an integer ≥ 1, got {workers!r}")
    if not (_is_int(retries) and retries >= 0):
        raise InputError(f"retries must be an integer ≥ 0, got {retries!r}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    rows: dict[str, dict] = {}
    todo: list[RunSpec] = []
    for spec in specs:
        folder = out / spec.name
        summary = _read_summary(folder)
        if summary is not None:
            _warn_if_changed(spec, folder)
            rows[spec.name] = result_row(spec, folder, summary, "skipped")
        else:
            rows[spec.name] = result_row(spec, folder, None, "pending")
            todo.append(spec)
    meta = {"manifest": manifest, "out_dir": str(out), "n_runs": len(specs)}

    def write():
        ordered = [rows[s.name] for s in specs]
        counts = {st: sum(1 for r in ordered if r["status"] == st) for st in ("done", "skipped", "failed", "pending")}
        return write_results(ordered, out, {**meta, **counts})

    csv_path, json_path = write()
    log.info("batch of %d runs in %s: %d finished earlier, %d to run", len(specs), out, len(specs) - len(todo),
             len(todo))
    if not todo:
        return BatchResult([rows[s.name] for s in specs], csv_path, json_path, time.perf_counter() - t0)

    from tqdm.auto import tqdm

    quiet = _QuietDistributed() if scheduler is None and client is None else contextlib.nullcontext()
    with quiet, contextlib.ExitStack() as stack:
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
        log.info("Dask cluster: %s", client)
        futures = {}
        for spec in todo:
            fut = client.submit(execute_run, spec, str(out), run_func, key=f"stem-refine-run-{spec.name}-{os.getpid()}",
                                retries=retries, pure=False)
            futures[fut] = spec
        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="batch", unit="run", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        try:
            for fut in as_completed(list(futures)):
                spec = futures.pop(fut)
                try:
                    row = fut.result()
                except Exception as exc:  # retries used up, or the task's worker died too often
                    summary = _read_summary(out / spec.name)
                    if summary is not None:  # it finished after all
                        row = result_row(spec, out / spec.name, summary, "done")
                    else:
                        log.error("run %s failed: %s: %s", spec.name, type(exc).__name__, exc)
                        row = result_row(spec, out / spec.name, None, "failed", f"{type(exc).__name__}: {exc}")
                fut.release()
                rows[spec.name] = row
                write()
                bar.update(1)
                n_failed = sum(1 for r in rows.values() if r["status"] == "failed")
                if n_failed:
                    bar.set_postfix_str(f"failed={n_failed}")
                if on_result is not None:
                    on_result(row)
        finally:
            bar.close()
            for fut in futures:
                fut.cancel()
    csv_path, json_path = write()
    return BatchResult([rows[s.name] for s in specs], csv_path, json_path, time.perf_counter() - t0)


def _warn_if_changed(spec: RunSpec, folder: Path):
    try:
        old = json.loads((folder / SPEC_NAME).read_text(encoding="utf-8")).get("spec")
    except (OSError, ValueError, AttributeError):
        return
    if old != json.loads(json.dumps(spec.to_dict())):
        log.warning("run %s finished earlier with other settings (%s); skipped anyway: delete its folder to redo "
                    "it", spec.name, folder / SPEC_NAME)
