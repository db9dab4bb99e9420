"""``stem-refine refine``: find the structure behind a HAADF-STEM image with the genetic algorithm.

::

    stem-refine refine IMAGE --composition Pt309 -o DIR [-m MODEL]
        [--population N --generations N --seed S --alpha auto|thermal|X --time-limit SECONDS]
        [--pixel-size Å --mask FILE --start random|shapes|mixed|image|counts|matched|FILE --dose e/Å² --noise MODEL|FILE --no-model-error]
        [--pareto --resume --checkpoint-every N]
        [--search anneal|plain --workers N --finish-fraction F --finish-alpha thermal|X]
        [--json] [--no-progress]

The cost is E(s) + α·χ²[I_surrogate(s), IMAGE] (EMT energy in eV, surrogate
image from MODEL, default the shipped model). Results go to the folder DIR
(``-o``): best.xyz, images.png (experimental / simulated / difference),
experimental.npy, simulated.npy, difference.npy, fitness_history.png,
summary.json, plus logbook.csv, checkpoint.npz (no pickle) and refine.log (the run's log,
appended over resumes); ``--resume`` continues a run from its checkpoint
(raise --generations or --time-limit to run longer) and refuses other inputs
that would change the cost (image, mask, model, noise, dose, calculator, α).
``--json`` prints summary.json on stdout instead of the table.

The default search (``--search anneal``, :mod:`refine.search.recipes`) ends with a
finishing stage: the last 15 % of the run selects at the thermal α
(k_B·300 K/2, the Bayesian weight of χ²), which decides between sites
the image can tell apart and the energy alone cannot. The defaults (search,
α, noise model, population, generations) are those of
:func:`refine.workflows.refine_image` and of batch manifests
(:mod:`refine.workflows.defaults`).
"""

from __future__ import annotations

import sys

from refine.search import SEARCHES
from refine.workflows import defaults
from refine.cli.image_options import add_image_arguments, add_noise_arguments, alpha_arg, image_keywords
from surrogate.cli.options import add_json, add_model, add_no_progress, add_out, add_seed, add_workers

help = "refine a particle's 3-D structure against a HAADF-STEM image (genetic algorithm)"
description = __doc__


_alpha = alpha_arg  # one --alpha grammar (refine, cost)


def _count_weight(text):
    """--count-weight: a positive number, 'inf' or 'none' (:func:`refine.workflows.inputs.validate_count_weight`)."""
    import argparse

    from refine.workflows.inputs import validate_count_weight
    from surrogate.common import InputError

    try:
        return validate_count_weight(text)
    except InputError:
        raise argparse.ArgumentTypeError(f"must be a positive number, 'inf' or 'none', got {text!r}") from None


def add_arguments(parser):
    parser.add_argument("image", metavar="IMAGE",
                        help="experimental image: TIFF, .npy, .npz, text, DM3/DM4, EMD, ... (rosettasciio)")
    parser.add_argument("--composition", "-c", required=True, metavar="FORMULA",
                        help="atoms of the particle, e.g. Pt309 or Pt557Mo29 (only the model's elements); one "
                             "element without a number (Pt) estimates the number from the image's integrated "
                             "intensity (summary.json: composition_estimate)")
    add_out(parser, folder=True, help="the results (best.xyz, images, summary.json, checkpoint, ...)")
    add_model(parser)
    add_image_arguments(parser)
    add_noise_arguments(parser)
    g = parser.add_argument_group("genetic algorithm")
    g.add_argument("--population", type=int, default=defaults.POPULATION, metavar="N",
                   help=f"population size (default {defaults.POPULATION})")
    g.add_argument("--generations", type=int, default=defaults.GENERATIONS, metavar="N",
                   help=f"maximum generations, counted over resumed runs (default {defaults.GENERATIONS})")
    add_seed(g, "the refinement (default 0)")
    g.add_argument("--alpha", type=_alpha, default=defaults.ALPHA, metavar="auto|thermal|X",
                   help="weight of χ² in E + α·χ² (eV); 'auto' balances the two over the starting population, "
                        "'thermal' = k_B·300 K/2 (the Bayesian weight: χ² = −2 ln likelihood, E/k_BT the prior)")
    g.add_argument("--alpha-scale", type=float, default=defaults.ALPHA_SCALE, metavar="F",
                   help="with --alpha auto: multiply the automatic α by F (> 1 weighs the image more; "
                        f"default {defaults.ALPHA_SCALE:g})")
    g.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop after this much GA wall time (summed over resumed runs)")
    g.add_argument("--stagnation", type=int, default=None, metavar="N",
                   help="stop after N generations without improvement")
    g.add_argument("--start", default=defaults.START, metavar="random|shapes|mixed|image|counts|matched|FILE",
                   help="starting population: random compact clusters, ase.cluster shapes, half of each, clusters "
                        "following the image, a counted reconstruction (zone-axis images: each column counted "
                        "from its cross-section, stacked, relaxed with its atoms tied to the column; with -c "
                        "ELEMENT the number of atoms is the sum of the counts; --generations 0 for it alone), the "
                        "ase.cluster shape, zone axis and angle whose image fits best (twinned particles; "
                        "--generations 0 for it alone), or "
                        f"the frames of a structure file (default {defaults.START})")
    g.add_argument("--search", choices=sorted(SEARCHES), default=defaults.SEARCH,
                   help=f"search recipe (default {defaults.SEARCH}): 'anneal' = offspring relaxed on E + α·χ² "
                        "(image forces), depth moves, beam-parallel cuts, image-restrained simulated annealing of 2 individuals "
                        "every 3 generations and a depth-move sweep of the best every 5 (the --anneal-* options "
                        "override its values); 'plain' = the GA with only the options given")
    g.add_argument("--relax-steps", type=int, default=None, metavar="N",
                   help="FIRE steps on every offspring (default 20 with --search anneal, else 0)")
    g.add_argument("--start-relax-steps", type=int, default=0, metavar="N",
                   help="FIRE steps on every random starting cluster (default 0)")
    g.add_argument("--count-weight", type=_count_weight, default=defaults.COUNT_WEIGHT, metavar="W",
                   help="--start counts: weight of the image's count of a column against the energy when the "
                        "counted columns are settled (docs/search.md); larger keeps more counts, 'inf' keeps "
                        f"every count and settles the depths only, 'none' leaves the columns as counted "
                        f"(default {defaults.COUNT_WEIGHT:g})")
    g.add_argument("--calculator", default="auto",
                   help="energy: auto (asap3 EMT / the Pt-Mo potential), emt, ase-emt, or package.module:Class")
    g.add_argument("--image-forces", action="store_true", default=None,
                   help="relax offspring on E + α·χ² (image forces from the surrogate's adjoint), not E alone; "
                        "needs --relax-steps")
    g.add_argument("--anneal-every", type=int, default=None, metavar="N",
                   help="every N generations, image-restrained simulated annealing of --anneal-count "
                        "selected individuals (0: never; default 3 with --search anneal, else 0)")
    g.add_argument("--anneal-count", type=int, default=None, metavar="N",
                   help="annealings each time (default 2 with --search anneal, else 1)")
    g.add_argument("--anneal-steps", type=int, default=None, metavar="N",
                   help="MD steps of 5 fs per annealing (default 20000 = 100 ps with --search anneal)")
    g.add_argument("--anneal-temperature", type=float, default=None, metavar="K",
                   help="start temperature of the annealing, cooled linearly to 300 K (default 1500)")
    g.add_argument("--anneal-image-weight", type=float, default=None, metavar="W",
                   help="fraction of α on χ² while the annealing cools, in (0, 1]; its final quench uses the "
                        "full α (default 0.3: a full-strength image force pins the melt to its columns)")
    g.add_argument("--finish-fraction", type=float, default=None, metavar="F",
                   help="the last fraction F of --time-limit (or of --generations) is a finishing stage that "
                        "selects at --finish-alpha, without annealing (default 0.15 with --search anneal, else 0)")
    g.add_argument("--finish-alpha", type=_alpha, default=None, metavar="thermal|X",
                   help="α of the finishing stage's selection (default thermal = k_B·300 K/2); the offspring "
                        "relaxation keeps the search's α")
    add_workers(g, f"for the annealings; default {defaults.WORKERS}", default=defaults.WORKERS)
    g.add_argument("--pareto", action="store_true",
                   help="multi-objective NSGA-II on (χ², E): pareto.xyz holds the front")
    g.add_argument("--resume", action="store_true", help="continue the run in -o DIR from its checkpoint")
    g.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="write the checkpoint every N generations (default 1; it is also written at the end)")
    add_no_progress(g)
    add_json(parser, "summary.json")


def print_summary(summary: dict, out_dir, file=None):
    """The human-readable summary of a refinement."""
    file = file or sys.stdout
    s = summary

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    print(f"refined {s['composition']} in {s['generations']} generations ({s['stop_reason']}), "
          f"{s['evaluations']} evaluations, {s['wall_time_s']:.1f} s", file=file)
    print(f"  best cost        {num(s['best_cost'], '.6g')}", file=file)
    print(f"  χ²               {num(s['chi2'], '.6g')}  ({num(s['chi2_per_pixel'], '.4g')} per pixel over "
          f"{s['n_valid_pixels']} pixels; noise: {s['noise'].get('model')})", file=file)
    print(f"  energy           {num(s['energy'], '.6g')} eV  ({num(s['energy_per_atom'], '.4g')} eV/atom)", file=file)
    search = s.get("search_alpha")
    if search is not None and s["alpha"] is not None and abs(search - s["alpha"]) > 1e-12 * abs(s["alpha"]):
        how = f"of the finishing stage; the search ran at {search:.6g} ({s['alpha_rule']})"
    else:
        how = s["alpha_rule"]
    print(f"  alpha            {num(s['alpha'], '.6g')}  ({how})", file=file)
    print(f"  model            {s['model']['source']}", file=file)
    if s.get("domain_warning"):
        print(f"  WARNING          {s['out_of_domain_evaluations']} candidates left the model's training range "
              "(the surrogate extrapolated)", file=file)
    if s.get("multi_objective"):
        print(f"  Pareto front     {s['pareto_front_size']} structures (pareto.xyz)", file=file)
    print(f"results in {out_dir}: " + ", ".join(sorted(s["files"])), file=file)


def refinement_keywords(args) -> dict:
    """The flat keywords (:data:`refine.workflows.settings.KEYWORDS`) of the parsed options."""
    from surrogate.common import InputError

    for name in ("population", "generations"):
        v = getattr(args, name)
        if v < (1 if name == "population" else 0):
            raise InputError(f"--{name} must be a {'positive' if name == 'population' else 'non-negative'} "
                             f"integer, got {v}")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")
    ga_options = {}
    for key, value in (("relax_image", args.image_forces), ("anneal_every", args.anneal_every),
                       ("anneal_count", args.anneal_count), ("anneal_steps", args.anneal_steps),
                       ("anneal_temperature", args.anneal_temperature),
                       ("anneal_image_weight", args.anneal_image_weight),
                       ("finish_fraction", args.finish_fraction), ("finish_alpha", args.finish_alpha)):
        if value is not None:
            ga_options[key] = value
    if args.finish_alpha == "auto":
        raise InputError("--finish-alpha must be 'thermal' or a number, got 'auto'")
    if args.finish_fraction is not None and args.finish_fraction > 0 and args.finish_alpha is None:
        ga_options["finish_alpha"] = "thermal"
    return dict(population=args.population, generations=args.generations, seed=args.seed, alpha=args.alpha,
                time_limit=args.time_limit, resume=args.resume, **image_keywords(args),
                start=args.start, noise=args.noise, dose=args.dose, model_error=args.model_error,
                multi_objective=args.pareto,
                calculator=args.calculator, stagnation=args.stagnation, relax_steps=args.relax_steps,
                start_relax_steps=args.start_relax_steps, count_weight=args.count_weight, progress=args.progress,
                alpha_scale=args.alpha_scale, workers=args.workers, ga_options=ga_options, search=args.search,
                log_file=True, checkpoint_every=args.checkpoint_every)


def run(args) -> int:
    from refine.workflows import refine_image, refinement_settings
    from surrogate.common import print_json

    settings = refinement_settings(**refinement_keywords(args))
    result = refine_image(args.image, args.composition, model=args.model, out_dir=args.out, **settings)
    if args.json:
        print_json(result.summary)
    else:
        print_summary(result.summary, result.out_dir)
    return 0
