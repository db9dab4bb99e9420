"""``stem-refine dataset build``: generate particles, simulate image pairs, write a dataset file.

Either a spec file (JSON or TOML; see :mod:`surrogate.training.builder`) or flags for a
single-family spec. Flags given together with ``--spec`` override the spec's
simulation settings (``--method``, ``--interpolation``, ``--phonons``,
``--device``), its probe step (``--sampling``), margin and seed.

Examples::

    stem-refine dataset build --spec surrogate/data/default_spec.toml -o pt.npz
    stem-refine dataset build --family icosahedron --family amorphous --count 4 \\
        --n-atoms 150 350 --mo-fraction 0.05 --phonons 16 -o ptmo.npz
    stem-refine dataset build --spec big.toml --scheduler tcp://10.0.0.5:8786 -o big.npz

The dataset is one file (``-o``, .npz); the per-particle results go to
``FILE.work/``, so running the same command again resumes an interrupted build.
"""

from __future__ import annotations

from surrogate.cli.options import add_json, add_no_progress, add_out, add_sampling, add_seed, add_workers, command_line

help = "build a convolution/multislice training dataset (Dask, resumable)"
description = __doc__


def add_arguments(parser):
    import argparse

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # RawDescriptionHelpFormatter keeps the examples' layout; no abbreviations, as on every subcommand
    b = sub.add_parser("build", help="generate particles and simulate image pairs into a dataset file",
                       description=__doc__, allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_out(b, folder=False, help="the dataset file to write (.npz); per-particle results go to FILE.work/ "
                                  "so an interrupted build resumes")
    b.add_argument("--spec", metavar="FILE", help="build spec (.json or .toml)")
    b.add_argument("--family", action="append", metavar="NAME",
                   help="particle family (repeatable): cuboctahedron, truncated_octahedron, icosahedron, "
                        "decahedron, marks_decahedron, disordered, amorphous")
    b.add_argument("--count", type=int, default=1, metavar="N", help="particles per family (default 1)")
    b.add_argument("--n-atoms", type=int, nargs="+", metavar="N", default=[250],
                   help="atoms per particle: N, or LO HI drawn per particle (default 250)")
    b.add_argument("--mo-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of atoms replaced by Mo (default 0)")
    b.add_argument("--cooling-rate", type=float, metavar="K/ps", help="for amorphous particles (default 100)")
    b.add_argument("--rattle", type=float, metavar="Å",
                   help="rms displacement for disordered particles (default 0.25)")
    add_seed(b, "the particles (particle k draws from default_rng([S, k]); default: the spec's, else 0)",
             default=None)
    add_sampling(b, "default: the spec's, else 0.1")
    b.add_argument("--margin", type=float, metavar="Å", help="vacuum around each particle in Å (default 4)")
    b.add_argument("--method", choices=("prism", "multislice"), help="simulation method (default prism)")
    b.add_argument("--interpolation", type=int, metavar="F", help="PRISM interpolation factor (default 4)")
    b.add_argument("--phonons", type=int, metavar="N", help="frozen-phonon configurations (default 16)")
    b.add_argument("--device", choices=("cpu", "gpu"), help="abTEM device (gpu needs CuPy)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="existing Dask scheduler address; default: a LocalCluster; 'synchronous': no Dask")
    add_workers(b, "of the LocalCluster; default 1", default=1)
    b.add_argument("--threads", type=int, metavar="N", help="threads per simulation (default: cores / workers)")
    add_json(b, "a summary (dataset file, pairs, simulation time)")
    add_no_progress(b)


def _spec_from_args(args) -> dict:
    from surrogate.common import InputError
    from surrogate.training import load_spec

    if args.spec:
        spec = load_spec(args.spec)
        if args.family:
            raise InputError("give particle families in the spec file or as --family, not both")
    else:
        if not args.family:
            raise InputError("give --spec FILE or at least one --family")
        if len(args.n_atoms) not in (1, 2):
            raise InputError("--n-atoms takes N or LO HI")
        particles = []
        for fam in args.family:
            p = {"family": fam, "count": args.count, "mo_fraction": args.mo_fraction,
                 "n_atoms": args.n_atoms[0] if len(args.n_atoms) == 1 else list(args.n_atoms)}
            if fam == "amorphous" and args.cooling_rate is not None:
                p["cooling_rate"] = args.cooling_rate
            if fam == "disordered" and args.rattle is not None:
                p["rattle"] = args.rattle
            particles.append(p)
        spec = {"particles": particles}
    # option -> spec key (the spec calls the probe step pixel_size)
    for key, option in (("seed", "seed"), ("pixel_size", "sampling"), ("margin", "margin"), ("device", "device")):
        if getattr(args, option) is not None:
            spec[key] = getattr(args, option)
    sim = dict(spec.get("simulation", {}))
    for key in ("method", "interpolation", "phonons"):
        if getattr(args, key) is not None:
            sim[key] = getattr(args, key)
    spec["simulation"] = sim
    return spec


def run(args) -> int:
    from surrogate.common import print_json
    from surrogate.training import build_dataset

    spec = _spec_from_args(args)
    ds = build_dataset(spec, args.out, scheduler=args.scheduler, n_workers=args.workers, threads_per_task=args.threads,
                       progress=args.progress, command=command_line())
    prov = ds.meta["provenance"]
    if args.json:
        print_json({"dataset": str(args.out), "n_pairs": len(ds),
                    "simulation_seconds_total": prov["simulation_seconds_total"],
                    "wall_seconds_last_run": prov["wall_seconds_last_run"]})
    else:
        print(f"wrote {args.out}: {len(ds)} pairs, {prov['simulation_seconds_total']:.0f} s of simulation, "
              f"{prov['wall_seconds_last_run']:.0f} s wall this run")
    return 0
