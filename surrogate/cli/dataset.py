"""``stem-refine dataset build``: generate particles, simulate image pairs, write a dataset file.

Either a spec file (JSON or TOML; see :mod:`surrogate.training.builder`) or flags for a
single-family spec. Flags given together with ``--spec`` override the spec's
simulation settings (``--method``, ``--interpolation``, ``--phonons``,
``--device``) and seed.

Examples::

    stem-refine dataset build --spec surrogate/data/default_spec.toml --out pt.npz
    stem-refine dataset build --family icosahedron --family amorphous --count 4 \\
        --n-atoms 150 350 --mo-fraction 0.05 --phonons 16 --out ptmo.npz
    stem-refine dataset build --spec big.toml --scheduler tcp://10.0.0.5:8786 --out big.npz
"""

from __future__ import annotations

import shlex
import sys

help = "build a convolution/multislice training dataset (Dask, resumable)"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="generate particles and simulate image pairs into a dataset file",
                       description=__doc__.split("\n\n")[0])
    b.add_argument("--out", required=True, metavar="FILE", help="dataset file to write (.npz); "
                   "per-particle results go to FILE.work/ so an interrupted build resumes")
    b.add_argument("--spec", metavar="FILE", help="build spec (.json or .toml)")
    b.add_argument("--family", action="append", metavar="NAME",
                   help="particle family (repeatable): cuboctahedron, truncated_octahedron, icosahedron, "
                        "decahedron, marks_decahedron, disordered, amorphous")
    b.add_argument("--count", type=int, default=1, help="particles per family (default 1)")
    b.add_argument("--n-atoms", type=int, nargs="+", metavar="N", default=[250],
                   help="atoms per particle: N, or LO HI drawn per particle (default 250)")
    b.add_argument("--mo-fraction", type=float, default=0.0, help="fraction of atoms replaced by Mo (default 0)")
    b.add_argument("--cooling-rate", type=float, help="K/ps for amorphous particles (default 100)")
    b.add_argument("--rattle", type=float, help="Å rms displacement for disordered particles (default 0.25)")
    b.add_argument("--seed", type=int, help="base seed (default 0, or the spec's)")
    b.add_argument("--pixel-size", type=float, help="Å (default 0.1)")
    b.add_argument("--margin", type=float, help="Å of vacuum around each particle (default 4)")
    b.add_argument("--method", choices=("prism", "multislice"), help="simulation method (default prism)")
    b.add_argument("--interpolation", type=int, help="PRISM interpolation factor (default 4)")
    b.add_argument("--phonons", type=int, help="frozen-phonon configurations (default 16)")
    b.add_argument("--device", choices=("cpu", "gpu"), help="abTEM device (gpu needs CuPy)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="existing Dask scheduler address; default: a LocalCluster; 'synchronous': no Dask")
    b.add_argument("--workers", type=int, default=1, help="LocalCluster worker processes (default 1)")
    b.add_argument("--threads", type=int, help="threads per simulation (default: cores / workers)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


def _spec_from_args(args) -> dict:
    from surrogate.training import load_spec
    from surrogate.common import InputError

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
    for key in ("seed", "pixel_size", "margin", "device"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    sim = dict(spec.get("simulation", {}))
    for key in ("method", "interpolation", "phonons"):
        if getattr(args, key) is not None:
            sim[key] = getattr(args, key)
    spec["simulation"] = sim
    return spec


def run(args) -> int:
    from surrogate.training import build_dataset

    spec = _spec_from_args(args)
    scheduler = args.scheduler
    ds = build_dataset(spec, args.out, scheduler=scheduler, n_workers=args.workers, threads_per_task=args.threads,
                       progress=not args.no_progress,
                       command="stem-refine " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    prov = ds.meta["provenance"]
    print(f"wrote {args.out}: {len(ds)} pairs, {prov['simulation_seconds_total']:.0f} s of simulation, "
          f"{prov['wall_seconds_last_run']:.0f} s wall this run")
    return 0
