"""``stem-refine cost``: the refinement's cost of a structure you believe in, next to the refinement's answer.

::

    stem-refine cost STRUCTURE IMAGE [-m MODEL] [--pixel-size Å --mask FILE --dose e/Å² --noise MODEL|FILE]
        [--alpha thermal|X] [--no-model-error] [--relax N] [--json]

Evaluates E(s) + α·χ²[I_surrogate(s), IMAGE] for every frame of STRUCTURE
(any ase.io format; its own atoms make the composition) with the image, model
and noise options of ``stem-refine refine`` and prints the cost, χ², χ²/px
(≈ 1 for the truth under a right noise model), the EMT energy (eV, per atom)
and the fitted intensity map and shift. The default α is the thermal one,
k_B·300 K/2, which the refinement's finishing stage selects with: the cost
that decides between structures the image tells apart. ``--relax N``
first relaxes each structure by N FIRE steps on that cost (image forces
included), as the refinement's offspring are: a structure relaxed with
another program or from another image is compared at the nearest minimum
of this cost. Put the answer of a run (``RUN/best.xyz``) and a structure
you trust through it with the same options to see which the cost prefers.
"""

from __future__ import annotations

import sys

from refine.cli.image_options import add_image_arguments, add_noise_arguments, alpha_arg, prepared_image
from surrogate.cli.options import add_json, add_model

help = "the refinement's cost (E + α·χ², χ²/px, energy) of a given structure against an image"
description = __doc__


def add_arguments(parser):
    parser.add_argument("structure", metavar="STRUCTURE",
                        help="structure file (any ase.io format; every frame is evaluated)")
    parser.add_argument("image", metavar="IMAGE", help="experimental image (as for 'stem-refine refine')")
    add_model(parser)
    add_image_arguments(parser)
    add_noise_arguments(parser)
    g = parser.add_argument_group("cost")
    g.add_argument("--alpha", type=alpha_arg, default="thermal", metavar="thermal|X",
                   help="weight of χ² in eV (default thermal = k_B·300 K/2, the finishing stage's)")
    g.add_argument("--relax", type=int, default=0, metavar="N",
                   help="relax each structure by N FIRE steps on E + α·χ² first (default 0: as given)")
    add_json(parser, "the results (one object per frame, in a list)")


def evaluate_structures(args) -> list[dict]:
    """One result dict per frame of ``args.structure`` (the command's JSON)."""
    import numpy as np

    from refine.cost import Fitness
    from refine.cost.energy import make_calculator
    from refine.search import LocalRelaxation, nearest_neighbour_distance
    from refine.search.relaxation import cost_calculator
    from refine.workflows.inputs import composition_for_model, load_model_or_default, validate_noise
    from surrogate.common import InputError, read_structure

    if args.alpha == "auto":
        raise InputError("--alpha auto needs a population to calibrate on; give 'thermal' or a number (eV)")
    if args.relax < 0:
        raise InputError(f"--relax must be a non-negative number of steps, got {args.relax}")
    frames = read_structure(args.structure, index=":")
    model, source = load_model_or_default(args.model)
    image = prepared_image(args, model)
    noise, dose = validate_noise(args.noise, args.dose, image)
    rows = []
    fitnesses = {}  # one per composition: the weights without a dose depend on it (the image's scale)
    for k, atoms in enumerate(frames):
        symbols = atoms.get_chemical_symbols()
        composition = composition_for_model({s: symbols.count(s) for s in set(symbols)}, model)
        key = tuple(sorted(composition.items()))
        if key not in fitnesses:
            fitness = Fitness(model, image, alpha=0.0, noise=noise, dose=dose, calculator="auto",
                              symbols=sorted(composition), model_error=args.model_error, composition=composition)
            fitness.alpha = fitness.thermal_alpha() if args.alpha == "thermal" else float(args.alpha)
            fitnesses[key] = fitness
        fitness = fitnesses[key]
        if args.relax:
            nn = nearest_neighbour_distance(composition)
            calc = cost_calculator(fitness, make_calculator("auto", tuple(sorted(composition))))
            LocalRelaxation(calc, steps=args.relax, fmax=0.02, min_distance=0.75 * nn,
                            rng=np.random.default_rng(0))(atoms)
        r = fitness.evaluate(atoms)
        rows.append({"structure": str(args.structure), "frame": k, "n_atoms": len(atoms),
                     "composition": composition, "cost": r.cost, "alpha": fitness.alpha, "chi2": r.chi2,
                     "chi2_per_pixel": r.chi2_per_pixel, "energy": r.energy, "energy_per_atom": r.energy / len(atoms),
                     "scale": r.scale, "offset": r.offset, "shift": list(r.shift), "relax_steps": args.relax,
                     "noise": fitness.noise_info, "n_valid_pixels": fitness.n_valid,
                     "n_effective_pixels": fitness.n_effective, "model": source, "image": str(args.image)})
    return rows


def run(args) -> int:
    from surrogate.common import print_json

    rows = evaluate_structures(args)
    if args.json:
        print_json(rows)
        return 0
    print(f"{'frame':>5s} {'atoms':>6s} {'cost eV':>12s} {'χ²/px':>9s} {'E eV':>11s} {'E/atom':>8s}", file=sys.stdout)
    for r in rows:
        print(f"{r['frame']:5d} {r['n_atoms']:6d} {r['cost']:12.4f} {r['chi2_per_pixel']:9.4f} {r['energy']:11.4f} "
              f"{r['energy_per_atom']:8.4f}")
    noise = rows[0]["noise"] if rows else {}
    print(f"α = {rows[0]['alpha']:.6g} eV per unit χ²; noise: {noise.get('model')}"
          + ("; with the model's own error" if "model_error" in noise else ""))
    return 0
