"""``stem-refine ensemble RUN_DIR... -o DIR``: consensus and per-atom spread of refinements of one image.

Each RUN_DIR is a refinement's output folder holding ``best.xyz`` (a
structure file may be given instead of a folder). All runs are aligned
(rotation, mirror z → −z allowed by default) and their atoms matched; the
consensus (mean matched positions, in the frame of the medoid run) is
written to ``DIR/consensus.xyz`` with the per-atom spread across runs in
its ``spread``, ``spread_xy`` and ``spread_z`` arrays (Å), the aligned runs
to ``DIR/aligned_runs.xyz``, a summary to ``DIR/ensemble.json`` and a figure
to ``DIR/ensemble.png`` (``--no-figure``: none). ``--json`` prints the
summary on stdout.
"""

from __future__ import annotations

import sys

from surrogate.cli.options import add_json, add_no_progress, add_out

help = "consensus structure and per-atom spread of several refinements of one image"
description = __doc__


def add_arguments(parser):
    parser.add_argument("runs", metavar="RUN_DIR", nargs="+", help="refinement output folders (with best.xyz)")
    add_out(parser, folder=True, help="consensus.xyz, aligned_runs.xyz, ensemble.json and ensemble.png")
    parser.add_argument("--rotation", choices=("full", "beam", "none"), default="full",
                        help="rotations allowed when aligning runs (default any 3-D rotation)")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="do not allow a run to match as its mirror image z -> -z")
    parser.add_argument("--no-figure", dest="figure", action="store_false", help="skip ensemble.png")
    add_json(parser, "the summary")
    add_no_progress(parser)


def _structure_path(run):
    from pathlib import Path

    from surrogate.common import InputError

    p = Path(run)
    if p.is_dir():
        best = p / "best.xyz"
        if not best.is_file():
            raise InputError(f"run folder {p} has no best.xyz")
        return best
    if p.is_file():
        return p
    raise InputError(f"run folder {p} does not exist")


def run(args) -> int:
    from tqdm import tqdm

    from refine.analysis import build_ensemble, write_ensemble
    from surrogate.common import InputError, print_json, read_structure

    paths = [_structure_path(r) for r in args.runs]
    if len(paths) < 2:
        raise InputError(f"an ensemble needs at least 2 runs, got {len(paths)}")
    structures = [read_structure(p) for p in paths]
    n_pairs = len(paths) * (len(paths) - 1) // 2
    with tqdm(total=n_pairs, desc="aligning run pairs", unit="pair", file=sys.stderr,
              disable=None if args.progress else True) as bar:
        ens = build_ensemble(structures, mirror=args.mirror, rotation=args.rotation, progress=bar.update)
    written = write_ensemble(ens, args.out, figure=args.figure, sources=paths)
    summary = ens.to_dict()
    summary["sources"] = [str(p) for p in paths]
    summary["written"] = written
    if args.json:
        print_json(summary)
    else:
        print(f"{ens.n_runs} runs of {summary['formula']}; reference (medoid) run {ens.reference}: "
              f"{paths[ens.reference]}")
        print(f"spread per atom    mean {summary['mean_spread']:.3f} Å, median {summary['median_spread']:.3f} Å, "
              f"max {summary['max_spread']:.3f} Å (in-plane {summary['mean_spread_xy']:.3f}, "
              f"along the beam {summary['mean_spread_z']:.3f})")
        rms = ", ".join(f"{v:.3f}" for v in ens.rmsd_to_consensus)
        print(f"RMSD to consensus  {rms} Å")
        for name, p in written.items():
            print(f"{name:<18} {p}")
    return 0
