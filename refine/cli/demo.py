"""``stem-refine demo``: a short refinement of the shipped demo image with the shipped model.

::

    stem-refine demo [-o DIR] [--resume | --force] [--generations N --population N --seed S]
                     [--start shapes|mixed|random|image] [--time-limit SECONDS] [--search anneal|plain]
                     [--workers N] [-m MODEL] [--json] [--no-progress]

The shipped image (``refine/data/demo_image.npy``, made by
``refine/data/make_demo_image.py``) is an abTEM PRISM HAADF image of an
EMT-relaxed 130-atom Pt Marks decahedron with Poisson noise; its pixel size,
dose and composition come from ``refine/data/demo_image.json``. The GA starts
from ase.cluster shapes in random orientations (a demo, not the benchmark: see
examples/self_consistency.py for random starts) and uses the search of the
self-consistency benchmark (``--search anneal``): offspring relaxed by 10
FIRE steps on E + α·χ² (image forces), depth moves and beam-parallel cuts,
image-restrained simulated annealing of two individuals every second
generation on two processes, and a depth-move sweep of the best every fourth.
It stops after 90 s of GA time, so the whole run takes about two minutes on
two cores (measured: 87–92 % of the atoms within 0.5 Å of the truth in three runs, 91 % in a fourth; 48 % before the
image forces and the annealing); it writes the usual results (best.xyz, images.png,
fitness_history.png, summary.json, ...) to DIR; the true structure
(``demo_truth.xyz``) is compared with the result at the end.

Output folder: without ``-o``, each run gets a new folder in the current
directory (``stem-refine-demo``, then ``stem-refine-demo-2``, ``-3``, ...), so
the demo can be run again and again; ``--resume`` continues the latest of them
(or ``-o DIR``). ``--force`` starts afresh in a folder that holds an earlier
run (``-o DIR``, default ``stem-refine-demo``): its checkpoint is deleted, the
results are rewritten and ``refine.log`` is appended to, as over resumes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from surrogate.cli.options import add_json, add_model, add_no_progress, add_out, add_seed, add_workers

help = "run a short refinement of the shipped demo image and show where the results are"
description = __doc__

#: the default output folder; later runs get DEMO_FOLDER-2, DEMO_FOLDER-3, ...
DEMO_FOLDER = "stem-refine-demo"


def add_arguments(parser):
    add_out(parser, folder=True, required=False,
            help="the results (default: a new folder ./stem-refine-demo, ./stem-refine-demo-2, ... per run)")
    parser.add_argument("--generations", type=int, default=300, metavar="N",
                        help="generations (default 300; the time limit usually stops first)")
    parser.add_argument("--population", type=int, default=16, metavar="N", help="population size (default 16)")
    add_seed(parser, "the refinement (default 0)")
    parser.add_argument("--start", default="shapes", choices=("shapes", "mixed", "random", "image"),
                        help="starting population (default shapes: ase.cluster shapes in random orientations)")
    parser.add_argument("--time-limit", type=float, default=90.0, metavar="SECONDS",
                        help="stop after this much GA wall time (default 90)")
    parser.add_argument("--relax-steps", type=int, default=10, metavar="N",
                        help="FIRE steps on E + α·χ² per offspring (default 10)")
    parser.add_argument("--search", choices=("anneal", "plain"), default="anneal",
                        help="anneal (default): image forces, depth moves and image-restrained annealing on "
                             "--workers processes; plain: the GA with EMT relaxation of offspring only")
    add_workers(parser, "for the annealings; default 2", default=2)
    add_model(parser)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an earlier demo run (in -o DIR, default the latest ./stem-refine-demo*)")
    again.add_argument("--force", action="store_true",
                       help="start afresh in a folder that holds an earlier run (-o DIR, default "
                            "./stem-refine-demo): its checkpoint is deleted")
    add_json(parser, "summary.json plus the comparison with the true structure (truth_comparison)")
    add_no_progress(parser)


#: changes to the search of the self-consistency benchmark (refine.search.recipes "anneal") for a
#: 130-atom particle and 90 s
DEMO_SEARCH = {"anneal_every": 2, "anneal_steps": 6000, "polish_every": 4,
               "polish_atoms": 40}
DEMO_ALPHA_SCALE = 2.0


def demo_files():
    """(image path, metadata dict, truth path) of the shipped demo image."""
    import json
    from importlib.resources import files

    from surrogate.common import InputError

    data = files("refine").joinpath("data")
    meta_path = data.joinpath("demo_image.json")
    if not meta_path.is_file():
        raise InputError(f"the demo image is missing from this installation ({meta_path}); "
                         "make it with 'python refine/data/make_demo_image.py'")
    meta = json.loads(meta_path.read_text())
    image = data.joinpath(meta["image"])
    truth = data.joinpath(meta.get("truth", "demo_truth.xyz"))
    if not image.is_file():
        raise InputError(f"the demo image {image} is missing from this installation")
    return image, meta, truth


def demo_folder(*, resume: bool, force: bool, where=".") -> Path:
    """The default output folder in ``where``: a new one, or with ``resume`` the latest, with ``force`` the first.

    Folders are ``stem-refine-demo`` (number 1), ``stem-refine-demo-2``, ...;
    a new run takes the number after the highest one present.
    """
    where = Path(where)
    first = where / DEMO_FOLDER
    if force:
        return first
    pattern = re.compile(re.escape(DEMO_FOLDER) + r"(?:-([0-9]+))?")
    numbers = {}
    for p in where.glob(DEMO_FOLDER + "*"):
        m = pattern.fullmatch(p.name)
        if m and p.is_dir():
            numbers[int(m.group(1) or 1)] = p
    if not numbers:
        return first
    last = max(numbers)
    return numbers[last] if resume else where / f"{DEMO_FOLDER}-{last + 1}"


def _clear_earlier_run(out: Path) -> None:
    """``--force``: delete the checkpoint (either format) that would make the new run refuse the folder."""
    from refine.search import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME

    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        if (out / name).is_file():
            (out / name).unlink()


def run(args) -> int:
    from ase.io import read

    from refine.cli.refine import print_summary
    from refine.io import read_image
    from refine.workflows import refine_image
    from surrogate.common import InputError, print_json

    if args.generations < 0 or args.population < 2:
        raise InputError("--generations must be ≥ 0 and --population ≥ 2")
    image_path, meta, truth_path = demo_files()
    out = Path(args.out) if args.out is not None else demo_folder(resume=args.resume, force=args.force)
    if args.force:
        _clear_earlier_run(out)
    image = read_image(image_path, pixel_size=meta["pixel_size"], origin=tuple(meta.get("origin", (0.0, 0.0))))
    print(f"demo: {meta['composition']} ({meta.get('particle', '')}), {meta['simulation']['method']} image "
          f"{tuple(image.shape)} px at {meta['pixel_size']} Å, Poisson noise at {meta['dose']:g} e/Å²; "
          f"results in {out}", file=sys.stderr)
    result = refine_image(image, meta["composition"], model=args.model, out_dir=out,
                          population=args.population, generations=args.generations, seed=args.seed,
                          time_limit=args.time_limit, dose=meta["dose"], start=args.start, resume=args.resume,
                          relax_steps=args.relax_steps, progress=args.progress, alpha_scale=DEMO_ALPHA_SCALE,
                          ga_options=DEMO_SEARCH if args.search == "anneal" else None, workers=args.workers,
                          search=args.search, log_file=True)
    cmp = None
    if truth_path.is_file():
        from refine.analysis import compare_structures

        cmp = compare_structures(result.best, read(str(truth_path)))
    if args.json:
        doc = dict(result.summary)
        if cmp is not None:
            doc["truth_comparison"] = cmp.to_dict()
        print_json(doc)
        return 0
    print_summary(result.summary, result.out_dir)
    if cmp is not None:
        w = cmp.within
        print(f"against the true structure (demo_truth.xyz): {100 * w.get(0.5, float('nan')):.0f} % of atoms "
              f"within 0.5 Å, {100 * w.get(0.3, float('nan')):.0f} % within 0.3 Å, RMSD {cmp.rmsd:.2f} Å")
    print(f"open {result.files['images.png']} and {result.files['fitness_history.png']}")
    return 0
