"""Build a training dataset on Dask: particles → convolution + HAADF pairs → dataset file.

Spec
----
A dict (from JSON or TOML) — every key optional except ``particles``::

    name = "pt-default"
    seed = 2019                # base seed; particle k uses default_rng([seed, k])
    pixel_size = 0.1           # Å
    margin = 4.0               # Å of vacuum around each particle's projection
    [simulation]               # surrogate.groundtruth.multislice.HAADFParameters fields
    method = "prism"
    interpolation = 4
    phonons = 4
    [convolution]              # surrogate.imaging.convolution.ConvolutionParameters fields
    sigma = 0.38
    [[particles]]              # one table per family; repeated `count` times
    family = "cuboctahedron"   # surrogate.groundtruth.particles.FAMILIES
    count = 2
    n_atoms = [150, 350]       # exact, or [lo, hi] drawn per particle
    mo_fraction = 0.0
    # family options: rattle (Å), cooling_rate (K/ps), melt_temperature (K),
    # orientation ("zone"|"random")
    # other elements: element = "Au" (the host, default Pt), solute = "Ir"
    # with solute_fraction = 0.2 (instead of mo_fraction)

:func:`expand_spec` turns it into a list of fully determined particle tasks
(ids 0 … n−1), so a run is reproducible from the spec alone.

Resumability
------------
Each finished particle is written atomically as a one-pair dataset file
``<out>.work/particle-<id>.npz``; a re-run with the same spec skips the
ids already there, so a killed run loses only the particles in flight. The
work directory also holds ``spec.json``; a re-run with a different spec is
refused rather than mixing two datasets. The final dataset is assembled from
the per-particle files in id order and written atomically; the work
directory is kept (delete it by hand, or pass ``keep_work=False``).

Solutes other than Mo
---------------------
:func:`surrogate.groundtruth.make_particle` alloys with Mo before it relaxes
or melts a particle. Any other ``solute`` replaces ``solute_fraction`` of
the host's atoms *after* the particle is made, so disordered and amorphous
particles were relaxed with the host's potential (there is none for Pt–Ir
here); for the images (Z contrast of each column) that is what matters.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np

from surrogate.common import write_json
from surrogate.training.datasets import Dataset
from surrogate.common import InputError

__all__ = ["load_spec", "expand_spec", "simulate_particle", "build_dataset", "work_dir_for"]

logger = logging.getLogger(__name__)

_SPEC_KEYS = {"name", "seed", "pixel_size", "margin", "simulation", "convolution", "particles", "device"}
_PARTICLE_KEYS = {"family", "count", "n_atoms", "mo_fraction", "rattle", "cooling_rate", "melt_temperature",
                  "orientation", "element", "solute", "solute_fraction", "column_heights"}
#: particle keys a task carries only when the spec gives them (older specs expand unchanged)
_ELEMENT_KEYS = ("element", "solute", "solute_fraction")


def load_spec(path) -> dict:
    """Read a build spec from ``.json`` or ``.toml``."""
    path = os.fspath(path)
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as fh:
                return tomllib.load(fh)
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"spec file {path!r} does not exist") from None
    except ValueError as exc:
        raise InputError(f"cannot parse spec file {path!r}: {exc}") from None


def _normalized_spec(spec: dict) -> dict:
    from surrogate.imaging import ConvolutionParameters
    from surrogate.imaging import DEFAULT_MARGIN, DEFAULT_PIXEL_SIZE
    from surrogate.groundtruth import HAADFParameters
    from surrogate.groundtruth import FAMILIES

    if not isinstance(spec, dict):
        raise InputError("a dataset spec must be a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise InputError(f"unknown spec keys {sorted(unknown)}; expected {sorted(_SPEC_KEYS)}")
    parts = spec.get("particles")
    if not parts:
        raise InputError("a dataset spec needs at least one [[particles]] entry")
    pixel = float(spec.get("pixel_size", DEFAULT_PIXEL_SIZE))
    conv = ConvolutionParameters.from_dict(dict(spec.get("convolution", {}), pixel_size=pixel))
    try:
        sim = HAADFParameters(**spec.get("simulation", {}))
    except TypeError as exc:
        raise InputError(f"bad [simulation] settings: {exc}") from None
    out = {
        "name": str(spec.get("name", "dataset")),
        "seed": int(spec.get("seed", 0)),
        "pixel_size": pixel,
        "margin": float(spec.get("margin", DEFAULT_MARGIN)),
        "device": str(spec.get("device", "cpu")),
        "simulation": sim.to_dict(),
        "convolution": conv.to_dict(),
        "particles": [],
    }
    for p in parts:
        bad = set(p) - _PARTICLE_KEYS
        if bad:
            raise InputError(f"unknown particle keys {sorted(bad)}; expected {sorted(_PARTICLE_KEYS)}")
        if p.get("family") not in FAMILIES:
            raise InputError(f"particle family must be one of {FAMILIES}, got {p.get('family')!r}")
        n = _atom_range(p.get("n_atoms", 250), "n_atoms must be an integer or [lo, hi] with 2 <= lo <= hi",
                        scalar=True)
        q = dict(p, n_atoms=n, count=int(p.get("count", 1)), mo_fraction=float(p.get("mo_fraction", 0.0)))
        if "column_heights" in p:
            q["column_heights"] = _atom_range(p["column_heights"],
                                              "column_heights must be [lo, hi] atoms per column with 2 <= lo <= hi")
        _check_elements(q)
        if q["count"] < 1:
            raise InputError(f"particle count must be >= 1, got {q['count']}")
        out["particles"].append(q)
    return out


def _atom_range(value, message: str, *, scalar: bool = False) -> list:
    """``[lo, hi]`` atoms with 2 <= lo <= hi from a spec value (also a single integer where ``scalar``).

    Anything else raises :class:`InputError` with ``message`` and the value given.
    """
    try:
        pair = [int(value)] * 2 if scalar and np.isscalar(value) else [int(v) for v in value]
    except (TypeError, ValueError):
        pair = []
    if len(pair) != 2 or not 2 <= pair[0] <= pair[1]:
        raise InputError(f"{message}, got {value!r}")
    return pair


def _check_elements(p: dict) -> None:
    from ase.data import atomic_numbers

    for key in ("element", "solute"):
        if key in p and p[key] not in atomic_numbers:
            raise InputError(f"unknown element {p[key]!r} as particle {key}")
    if "solute_fraction" in p:
        f = p["solute_fraction"]
        if not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
            raise InputError(f"solute_fraction must be a number in [0, 1], got {f!r}")
        if p["mo_fraction"]:
            raise InputError("give a particle's solute as solute/solute_fraction or as mo_fraction, not both")
        p["solute_fraction"] = float(f)


def expand_spec(spec: dict) -> tuple[dict, list[dict]]:
    """Normalize a spec and list its particle tasks.

    Returns
    -------
    spec : dict
        The normalized spec (defaults filled in; what the work dir records).
    tasks : list of dict
        ``{"id", "family", "n_atoms", "mo_fraction", "seed", "options"}`` per
        particle; ``seed`` is ``[spec seed, id]``.
    """
    spec = _normalized_spec(spec)
    rng = np.random.default_rng([spec["seed"], 2**31 - 1])  # sizes only; particles use their own streams
    tasks = []
    for p in spec["particles"]:
        opts = {k: p[k] for k in ("rattle", "cooling_rate", "melt_temperature", "orientation", "column_heights")
                if k in p}
        for _ in range(p["count"]):
            lo, hi = p["n_atoms"]
            k = len(tasks)
            task = {"id": k, "family": p["family"], "n_atoms": int(rng.integers(lo, hi + 1)),
                    "mo_fraction": p["mo_fraction"], "seed": [spec["seed"], k], "options": opts}
            task.update({key: p[key] for key in _ELEMENT_KEYS if key in p})
            tasks.append(task)
    return spec, tasks


def simulate_particle(task: dict, spec: dict, num_threads: int | None = None) -> Dataset:
    """Generate one particle and its image pair (a one-pair :class:`Dataset`)."""
    from surrogate.imaging import ConvolutionParameters, convolution_image
    from surrogate.imaging import ProbeGrid
    from surrogate.groundtruth import HAADFParameters, haadf_image

    t0 = time.perf_counter()
    rng = np.random.default_rng(task["seed"])
    atoms = _make_particle(task, rng)
    grid = ProbeGrid.around(atoms, pixel_size=spec["pixel_size"], margin=spec["margin"])
    conv = convolution_image(atoms, grid, ConvolutionParameters.from_dict(spec["convolution"]))
    ms = haadf_image(atoms, grid, HAADFParameters.from_dict(spec["simulation"]), seed=rng,
                     device=spec["device"], num_threads=num_threads)
    pair = {"id": task["id"], "seed": task["seed"], "recipe": dict(atoms.info), "n_atoms": len(atoms),
            "formula": atoms.get_chemical_formula(), "seconds": round(time.perf_counter() - t0, 2)}
    return Dataset([conv], [ms], [atoms], [grid], {"pairs": [pair]})


def _make_particle(task: dict, rng: np.random.Generator):
    from surrogate.groundtruth import make_particle
    from surrogate.groundtruth.particles import alloy

    solute = task.get("solute", "Mo")
    fraction = task.get("solute_fraction", task["mo_fraction"])
    host = {"base": task["element"]} if "element" in task else {}
    if solute == "Mo":
        return make_particle(task["family"], task["n_atoms"], rng, mo_fraction=fraction, **host, **task["options"])
    # any other solute is substituted after the particle is made (module docstring)
    atoms = make_particle(task["family"], task["n_atoms"], rng, **host, **task["options"])
    alloy(atoms, fraction, rng, solute=solute)
    atoms.info.update(solute=solute, solute_fraction=float(fraction))
    return atoms


def _particle_path(work: str, k: int) -> str:
    return os.path.join(work, f"particle-{k:05d}.npz")


def _run_task(task, spec, work, num_threads):
    # Runs on a Dask worker: writes its own result file atomically, so the
    # client only needs to learn that it finished.
    path = _particle_path(work, task["id"])
    simulate_particle(task, spec, num_threads).write(path)
    return task["id"]


def work_dir_for(out) -> str:
    """``<out>.work``: where per-particle results of a build live."""
    return os.fspath(out) + ".work"


def _versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for name in ("abtem", "ase", "asap3", "numpy", "dask", "distributed", "stem-refine"):
        try:
            v[name] = md.version(name)
        except md.PackageNotFoundError:
            v[name] = None
    return v


def _finished(work: str, n: int) -> set:
    done = set()
    for k in range(n):
        p = _particle_path(work, k)
        if os.path.exists(p):
            try:
                Dataset.read(p)
            except InputError:
                # A file that cannot be read (disk full, foreign file) is redone.
                logger.warning("particle result %s is unreadable; recomputing it", p)
                os.unlink(p)
                continue
            done.add(k)
    return done


def build_dataset(spec: dict, out, *, scheduler: str | None = None, n_workers: int = 1,
                  threads_per_task: int | None = None, progress: bool = True, command: str | None = None,
                  keep_work: bool = True) -> Dataset:
    """Build (or resume building) a dataset file.

    Parameters
    ----------
    spec : dict
        See the module docstring.
    out : path
        The dataset file to write (``.npz``).
    scheduler : str, optional
        ``None``: a new :class:`distributed.LocalCluster` of ``n_workers``
        single-threaded worker processes; ``"synchronous"``: no Dask, one
        particle after another in this process; any other string: the address
        of an existing Dask scheduler (``tcp://host:8786``).
    threads_per_task : int, optional
        Threads abTEM uses inside one particle's simulation (default: the
        machine's cores divided by ``n_workers``).
    progress : bool
        tqdm progress bar (stderr).
    command : str, optional
        Recorded in the provenance (default ``sys.argv``).
    """
    from tqdm import tqdm

    spec, tasks = expand_spec(spec)
    out = os.fspath(out)
    work = work_dir_for(out)
    os.makedirs(work, exist_ok=True)
    spec_path = os.path.join(work, "spec.json")
    if os.path.exists(spec_path):
        with open(spec_path) as fh:
            old = json.load(fh)
        if old != json.loads(json.dumps(spec)):
            raise InputError(f"{work!r} holds results of a different spec; delete it or choose another output")
    else:
        write_json(spec_path, spec, indent=1, sort_keys=True)

    done = _finished(work, len(tasks))
    todo = [t for t in tasks if t["id"] not in done]
    logger.info("%d particles, %d already done, %d to simulate", len(tasks), len(done), len(todo))
    t0 = time.perf_counter()
    if todo:
        if threads_per_task is None:
            threads_per_task = max(1, (os.cpu_count() or 1) // max(1, n_workers))
        bar = tqdm(total=len(tasks), initial=len(done), desc="particles", unit="particle", file=sys.stderr,
                   disable=not progress, smoothing=0)
        if scheduler == "synchronous":
            for t in todo:
                _run_task(t, spec, work, threads_per_task)
                bar.update(1)
        else:
            _run_distributed(todo, spec, work, scheduler, n_workers, threads_per_task, bar)
        bar.close()
    wall = time.perf_counter() - t0

    parts = [Dataset.read(_particle_path(work, t["id"])) for t in tasks]
    meta = {
        "convolution": spec["convolution"],
        "microscope": spec["simulation"],
        "pairs": [p.meta["pairs"][0] for p in parts],
        "spec": spec,
        "provenance": {
            "command": command if command is not None else " ".join(sys.argv),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "device": spec["device"],
            "wall_seconds_last_run": round(wall, 1),
            "simulation_seconds_total": round(sum(p.meta["pairs"][0].get("seconds", 0.0) for p in parts), 1),
        },
    }
    ds = Dataset([p.convolution_images[0] for p in parts], [p.multislice_images[0] for p in parts],
                 [p.atoms[0] for p in parts], [p.grids[0] for p in parts], meta)
    ds.write(out)
    if not keep_work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return ds


def _run_distributed(todo, spec, work, scheduler, n_workers, threads_per_task, bar):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        # Single-threaded worker processes: each task runs abTEM on its own
        # threaded scheduler with `threads_per_task` threads.
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=0)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(_run_task, t, spec, work, threads_per_task, key=f"particle-{t['id']}-{os.getpid()}",
                                 pure=False) for t in todo]
        for fut in as_completed(futures):
            fut.result()  # re-raises a worker's exception here
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
