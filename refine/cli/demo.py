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
examples/self_consistency.py for random starts) and uses the defaults of
``stem-refine refine`` (:mod:`refine.workflows.defaults`: the anneal search,
α auto, population 20) within a budget of its own: it stops after 90 s of GA
time, so offspring are relaxed by 10 FIRE steps on E + α·χ² (image forces)
instead of 20, and two individuals are annealed every second generation
(6000 MD steps, on two processes) and the best polished every fourth, with
depth moves of its 40 least-coordinated atoms. The whole run takes about
two minutes on two cores (measured with these settings and the noise model
that includes the surrogate's own error: all 130 atoms within 0.5 Å of the
truth, RMSD 0.04 Å, with seeds 0 and 1 on two loaded cores; 87–92 % in
earlier runs with population 16, α × 2 and the shot noise alone; 48 % before
the image forces and the annealing). It writes the usual results (best.xyz, images.png,
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

from refine.workflows import defaults
from surrogate.cli.options import add_json, add_model, add_no_progress, add_out, add_seed, add_workers

help = "run a short refinement of the shipped demo image and show where the results are"
description = __doc__

#: the default output folder; later runs get DEMO_FOLDER-2, DEMO_FOLDER-3, ...
DEMO_FOLDER = "stem-refine-demo"

#: the demo's budget: 90 s of GA time for a 130-atom particle. The search is the common default
#: (refine.workflows.defaults) with fewer FIRE steps per offspring and, for the anneal search, shorter and more
#: frequent annealings and polishes than the self-consistency benchmark's 300 atoms and 15 minutes take
DEMO_TIME_LIMIT = 90.0
DEMO_GENERATIONS = 300
DEMO_RELAX_STEPS = 10
DEMO_ANNEAL_BUDGET = {"anneal_every": 2, "anneal_steps": 6000, "polish_every": 4, "polish_atoms": 40}


def demo_search(args):
    """The demo's search (:class:`refine.search.GASettings`) from its options: the default search within the budget."""
    budget = DEMO_ANNEAL_BUDGET if args.search == "anneal" else {}
    return defaults.search_settings(args.search, population_size=args.population, generations=args.generations,
                                    time_limit=args.time_limit, relax_steps=args.relax_steps, **budget)


def add_arguments(parser):
    add_out(parser, folder=True, required=False,
            help="the results (default: a new folder ./stem-refine-demo, ./stem-refine-demo-2, ... per run)")
    parser.add_argument("--generations", type=int, default=DEMO_GENERATIONS, metavar="N",
                        help=f"generations (default {DEMO_GENERATIONS}; the time limit usually stops first)")
    parser.add_argument("--population", type=int, default=defaults.POPULATION, metavar="N",
                        help=f"population size (default {defaults.POPULATION})")
    add_seed(parser, "the refinement (default 0)")
    parser.add_argument("--start", default="shapes", choices=("shapes", "mixed", "random", "image"),
                        help="starting population (default shapes: ase.cluster shapes in random orientations)")
    parser.add_argument("--time-limit", type=float, default=DEMO_TIME_LIMIT, metavar="SECONDS",
                        help=f"stop after this much GA wall time (default {DEMO_TIME_LIMIT:g})")
    parser.add_argument("--relax-steps", type=int, default=DEMO_RELAX_STEPS, metavar="N",
                        help=f"FIRE steps on E + α·χ² per offspring (default {DEMO_RELAX_STEPS})")
    parser.add_argument("--search", choices=("anneal", "plain"), default=defaults.SEARCH,
                        help=f"search recipe (default {defaults.SEARCH}): anneal = image forces, depth moves and "
                             "image-restrained annealing on --workers processes; plain = the GA with EMT "
                             "relaxation of offspring only")
    add_workers(parser, f"for the annealings; default {defaults.WORKERS}", default=defaults.WORKERS)
    add_model(parser)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an earlier demo run (in -o DIR, default the latest ./stem-refine-demo*)")
    again.add_argument("--force", action="store_true",
                       help="start afresh in a folder that holds an earlier run (-o DIR, default "
                            "./stem-refine-demo): its checkpoint is deleted")
    add_json(parser, "summary.json plus the comparison with the true structure (truth_comparison)")
    add_no_progress(parser)


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
    from refine.workflows import CostSettings, RunSettings, StartSettings, refine_image
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
    result = refine_image(image, meta["composition"], model=args.model, out_dir=out, search=demo_search(args),
                          cost=CostSettings(dose=meta["dose"]), start=StartSettings(source=args.start),
                          run=RunSettings(seed=args.seed, workers=args.workers, resume=args.resume,
                                          progress=args.progress, log_file=True))
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
