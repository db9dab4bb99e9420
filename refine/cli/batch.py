"""``stem-refine batch MANIFEST -o DIR``: many refinements as Dask tasks, resumable, with a results table.

The manifest (TOML, or CSV with a header row) lists refinements: image,
composition, model, seeds (one run per seed) and settings
(population, generations, time_limit, alpha, pixel_size, ...)::

    [defaults]
    model = "pt_model.npz"
    population = 20
    generations = 100

    [[runs]]
    image = "particle_a.tif"
    composition = "Pt309"
    seeds = [1, 2, 3, 4]

Each run writes into ``DIR/<name>-seed<seed>/`` (``best.xyz``,
``summary.json``, images, checkpoint) and the table ``DIR/results.csv`` /
``DIR/results.json`` is updated as runs finish. Running the same command
again skips finished runs and resumes unfinished ones from their
checkpoints; a worker that dies mid-batch costs only its run's progress
since the last checkpoint.

By default the runs go to a local Dask cluster of ``--workers`` processes
(one thread each; default: the number of CPU cores). To scale out, start a
cluster and pass its address::

    dask scheduler                          # on one machine; prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1    # on each machine
    stem-refine batch manifest.toml -o runs/ --scheduler tcp://HOST:8786

Every worker needs stem-refine installed and must see the images, models
and output folder at the same paths (a shared file system). A worker may
die up to ``distributed.scheduler.allowed-failures`` times (default 3) per
run before the run is marked failed; raise it with
``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=10 dask scheduler``.

``--json`` prints the results table (results.json) on stdout;
``--no-progress`` hides the progress bar.

Exit status: 0 when every run finished, 1 when some failed, 2 for a bad
manifest or options.
"""

from __future__ import annotations

import math
import os

from surrogate.cli.options import add_json, add_no_progress, add_out, add_workers

help = "many refinements (manifest of images x seeds) as Dask tasks, resumable, with a results table"
description = __doc__


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def add_arguments(parser):
    parser.add_argument("manifest", metavar="MANIFEST", help="TOML or CSV list of refinements")
    add_out(parser, folder=True, help="one sub-folder per run, and the results table (results.csv, results.json)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running Dask scheduler (tcp://host:8786) instead of a local cluster")
    add_workers(where, "of the local Dask cluster, one thread each; default: CPU cores")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="retries of a run that raised an unexpected error (default 2)")
    add_json(parser, "the results table")
    add_no_progress(parser)


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def run(args) -> int:
    import json

    from refine.workflows import read_manifest, run_batch
    from surrogate.common import InputError, print_json

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.retries < 0:
        raise InputError(f"--retries must be at least 0, got {args.retries}")
    specs = read_manifest(args.manifest)
    result = run_batch(specs, args.out, scheduler=args.scheduler, workers=args.workers or _default_workers(),
                       retries=args.retries, progress=args.progress, manifest=os.path.abspath(args.manifest))
    if args.json:
        doc = json.loads(result.json_path.read_text(encoding="utf-8"))
        print_json(doc)
    else:
        width = max(len(r["name"]) for r in result.rows)
        print(f"{'run':<{width}}  {'status':<8} {'cost':>12} {'chi2':>12} {'E (eV)':>12} {'alpha':>10} "
              f"{'gens':>5} {'wall (s)':>9}")
        for r in result.rows:
            print(f"{r['name']:<{width}}  {r['status']:<8} {_fmt(r['best_cost'], '12.6g')} {_fmt(r['chi2'], '12.6g')} "
                  f"{_fmt(r['energy'], '12.6g')} {_fmt(r['alpha'], '10.4g')} {_fmt(r['generations'], '5d')} "
                  f"{_fmt(r['wall_time_s'], '9.1f')}")
            if r["status"] == "failed":
                print(f"{'':<{width}}  {r['error']}")
        counts = ", ".join(f"{result.count(s)} {s}" for s in ("done", "skipped", "failed", "pending")
                           if result.count(s))
        print(f"{len(result.rows)} runs ({counts}) in {result.wall_time_s:.1f} s")
        print(f"results            {result.csv_path}")
        print(f"                   {result.json_path}")
    return 1 if result.n_failed else 0
