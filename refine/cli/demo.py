"""``stem-refine demo``: a short refinement of the shipped demo image with the shipped model.

::

    stem-refine demo [--out DIR] [--generations N] [--seed S] [--start shapes|mixed|random|image]
                     [--time-limit SECONDS] [--search anneal|plain] [--workers N] [--model MODEL]

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
"""

from __future__ import annotations

import sys

help = "run a short refinement of the shipped demo image and show where the results are"
description = __doc__


def add_arguments(parser):
    parser.add_argument("--out", "-o", default="stem-refine-demo", metavar="DIR",
                        help="output folder (default ./stem-refine-demo)")
    parser.add_argument("--generations", type=int, default=300, metavar="N",
                        help="generations (default 300; the time limit usually stops first)")
    parser.add_argument("--population", type=int, default=16, metavar="N", help="population size (default 16)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--start", default="shapes", choices=("shapes", "mixed", "random", "image"),
                        help="starting population (default shapes: ase.cluster shapes in random orientations)")
    parser.add_argument("--time-limit", type=float, default=90.0, metavar="SECONDS",
                        help="stop after this much GA wall time (default 90)")
    parser.add_argument("--relax-steps", type=int, default=10, metavar="N",
                        help="FIRE steps on E + α·χ² per offspring (default 10)")
    parser.add_argument("--search", choices=("anneal", "plain"), default="anneal",
                        help="anneal (default): image forces, depth moves and image-restrained annealing on "
                             "--workers processes; plain: the GA with EMT relaxation of offspring only")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="processes for the annealings (default 2)")
    parser.add_argument("--model", "-m", default=None, metavar="MODEL",
                        help="surrogate model file (default: the shipped default model)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier demo run in --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


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


def run(args) -> int:
    from ase.io import read

    from refine.io import read_image
    from refine.workflows import refine_image
    from surrogate.common import InputError
    from refine.cli.refine import print_summary

    if args.generations < 0 or args.population < 2:
        raise InputError("--generations must be ≥ 0 and --population ≥ 2")
    image_path, meta, truth_path = demo_files()
    image = read_image(image_path, pixel_size=meta["pixel_size"], origin=tuple(meta.get("origin", (0.0, 0.0))))
    print(f"demo: {meta['composition']} ({meta.get('particle', '')}), {meta['simulation']['method']} image "
          f"{tuple(image.shape)} px at {meta['pixel_size']} Å, Poisson noise at {meta['dose']:g} e/Å²", file=sys.stderr)
    result = refine_image(image, meta["composition"], model=args.model, out_dir=args.out,
                          population=args.population, generations=args.generations, seed=args.seed,
                          time_limit=args.time_limit, dose=meta["dose"], start=args.start, resume=args.resume,
                          relax_steps=args.relax_steps, progress=args.progress, alpha_scale=DEMO_ALPHA_SCALE,
                          ga_options=DEMO_SEARCH if args.search == "anneal" else None, workers=args.workers,
                          search=args.search, log_file=True)
    print_summary(result.summary, result.out_dir)
    if truth_path.is_file():
        from refine.analysis import compare_structures

        cmp = compare_structures(result.best, read(str(truth_path)))
        w = cmp.within
        print(f"against the true structure (demo_truth.xyz): {100 * w.get(0.5, float('nan')):.0f} % of atoms "
              f"within 0.5 Å, {100 * w.get(0.3, float('nan')):.0f} % within 0.3 Å, RMSD {cmp.rmsd:.2f} Å")
    print(f"open {result.files['images.png']} and {result.files['fitness_history.png']}")
    return 0
