"""Does the polish's patch sweep carry a misplaced island back? A check on case (a) of the self-consistency benchmark.

The failure it targets: a refinement that gets the projection right but puts
an island of surface atoms on the wrong side of the particle along the beam
(the same image, a few eV more energy). Single-atom depth moves cannot repair
it: each atom moved alone becomes an adatom. Here the island is made on
purpose, so that the repair can be measured without a 15-minute search:

1. the truth and the noisy image of case (a) (``examples/self_consistency.py``:
   a 300-atom EMT-relaxed Marks decahedron tilted 10° off its zone axis,
   surrogate image with Poisson noise at 1e5 e/Å², the shipped model);
2. a top-side patch of ``--size`` surface atoms (:func:`refine.operators.surface_patches`)
   is carried to the bottom (:func:`refine.operators.transfer_patch`) and the
   structure relaxed on E + α·χ² (the GA's offspring relaxation: 20 FIRE
   steps at the search α, four times);
3. the polish's patch sweep (:func:`refine.operators.transfer_patches`,
   evaluated at the finishing stage's thermal α, as in the GA's last 15 %)
   runs on it.

It prints the cost, energy, χ²/px and the fraction of atoms within 0.5 Å of
the truth for the truth (relaxed the same way), the damaged structure and the
sweep's result, and the sweep's trials and time::

    python examples/patch_transfer.py                 # island of 10, seed 0
    python examples/patch_transfer.py --size 7 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

NN = 2.77  # Å, Pt


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10, help="atoms in the misplaced island (default 10)")
    p.add_argument("--seed", type=int, default=0, help="case (a) seed, as in examples/self_consistency.py")
    p.add_argument("--search-alpha", type=float, default=0.000995,
                   help="α of the offspring relaxation, eV (default: 2 × auto of the seed-0 benchmark run)")
    p.add_argument("--patch-seeds", type=int, default=4, help="seeds of the sweep (default 4, the anneal recipe's)")
    args = p.parse_args(argv)

    import self_consistency as sc
    from refine.compare import compare_structures
    from refine.energy import make_calculator
    from refine.fitness import Fitness
    from refine.ga import _cost_calculator
    from refine.operators import LocalRelaxation, repair_min_distance, surface_patches, transfer_patch, transfer_patches

    model, _ = sc.get_model(None)
    rng = np.random.default_rng([args.seed, ord("a")])
    truth, _ = sc.make_truth("a", rng, types.SimpleNamespace(atoms=300, tilt=10.0))
    image, _ = sc.noisy_image(model, truth, 1e5, rng)
    fit = Fitness(model, image, alpha=0.0, noise="poisson", dose=1e5, calculator="auto", symbols=["Pt"])
    fit.alpha = fit.thermal_alpha()  # the finishing stage's criterion
    calc = _cost_calculator(fit, make_calculator("auto", ("Pt",)), alpha=lambda: args.search_alpha)
    relax = LocalRelaxation(calc, steps=20, fmax=0.05, min_distance=0.75 * NN, rng=np.random.default_rng(2))

    def relaxed(atoms):
        for _ in range(4):
            relax(atoms)
        return atoms

    tops = [q for q in surface_patches(truth.positions, NN, sizes=(args.size,), seeds=40)
            if len(q) == args.size and truth.positions[q, 2].mean() > truth.positions[:, 2].mean()]
    if not tops:
        raise SystemExit(f"error: no top-side patch of {args.size} atoms in this particle")
    damaged = truth.copy()
    damaged.positions = transfer_patch(truth.positions, tops[0], NN)
    repair_min_distance(damaged, 0.75 * NN, np.random.default_rng(1), nn_distance=NN)
    relaxed(damaged)
    t0 = time.perf_counter()
    best, _, n_trials, n_accepted = transfer_patches(damaged, relax, lambda a: fit.evaluate(a).cost, NN,
                                                     min_distance=0.75 * NN, seeds=args.patch_seeds)
    dt = time.perf_counter() - t0
    rows = {}
    print(f"case (a) seed {args.seed}: island of {args.size} top atoms carried to the bottom; "
          f"costs at the thermal α = {fit.alpha:.4g} eV")
    print(f"{'structure':28s} {'cost':>8s} {'E eV':>7s} {'χ²/px':>7s} {'≤0.5Å':>7s}")
    for name, atoms in (("truth (relaxed the same way)", relaxed(truth.copy())), ("island on the wrong side", damaged),
                        ("after the patch sweep", best)):
        r = fit.evaluate(atoms)
        within = compare_structures(atoms, truth, mirror=True).within[0.5]
        rows[name] = {"cost": r.cost, "energy": r.energy, "chi2_per_pixel": r.chi2_per_pixel, "within_0.5": within}
        print(f"{name:28s} {r.cost:8.2f} {r.energy:7.2f} {r.chi2_per_pixel:7.4f} {100 * within:6.1f}%")
    print(f"sweep: {n_trials} trials, {n_accepted} accepted, {dt:.1f} s")
    return {"rows": rows, "trials": n_trials, "accepted": n_accepted, "seconds": dt}


if __name__ == "__main__":
    main()
