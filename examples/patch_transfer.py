"""Does the polish's patch sweep carry a misplaced island back? A check on case (a) of the self-consistency benchmark.

The failure it targets: a refinement that gets the projection right but puts
an island of surface atoms on the wrong side of the particle along the beam
(the same image, a few eV more energy). Single-atom depth moves cannot repair
it: each atom moved alone becomes an adatom. Here the island is made on
purpose, so that the repair can be measured without a 15-minute search:

1. the truth and the noisy image of case (a) (``examples/self_consistency.py``:
   a 300-atom EMT-relaxed Marks decahedron tilted 10° off its zone axis,
   surrogate image with Poisson noise at 1e5 e/Å², the shipped model);
2. a top-side patch of ``--size`` surface atoms (:func:`refine.search.operators.surface_patches`)
   is carried to the bottom (:func:`refine.search.operators.transfer_patch`) and the
   structure relaxed on E + α·χ² (the GA's offspring relaxation: 20 FIRE
   steps at the search α, four times);
3. the polish's patch sweep (:func:`refine.search.operators.transfer_patches`,
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from damaged_case_a import NN, add_case_arguments, case_a_setup, report  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10, help="atoms in the misplaced island (default 10)")
    add_case_arguments(p)
    p.add_argument("--patch-seeds", type=int, default=4, help="seeds of the sweep (default 4, the anneal recipe's)")
    args = p.parse_args(argv)

    from refine.search.geometry import repair_min_distance
    from refine.search.sites import surface_patches, transfer_patch
    from refine.search.sweeps import transfer_patches

    truth, fit, relax, relaxed, evaluate = case_a_setup(args.seed, args.search_alpha)
    tops = [q for q in surface_patches(truth.positions, NN, sizes=(args.size,), seeds=40)
            if len(q) == args.size and truth.positions[q, 2].mean() > truth.positions[:, 2].mean()]
    if not tops:
        raise SystemExit(f"error: no top-side patch of {args.size} atoms in this particle")
    damaged = truth.copy()
    damaged.positions = transfer_patch(truth.positions, tops[0], NN)
    repair_min_distance(damaged, 0.75 * NN, np.random.default_rng(1), nn_distance=NN)
    relaxed(damaged)
    t0 = time.perf_counter()
    best, _, n_trials, n_accepted = transfer_patches(damaged, relax, evaluate, NN,
                                                     min_distance=0.75 * NN, seeds=args.patch_seeds)
    dt = time.perf_counter() - t0
    print(f"case (a) seed {args.seed}: island of {args.size} top atoms carried to the bottom; "
          f"costs at the thermal α = {fit.alpha:.4g} eV")
    rows = report(fit, truth, {"truth (relaxed the same way)": relaxed(truth.copy()),
                               "island on the wrong side": damaged, "after the patch sweep": best})
    print(f"sweep: {n_trials} trials, {n_accepted} accepted, {dt:.1f} s")
    return {"rows": rows, "trials": n_trials, "accepted": n_accepted, "seconds": dt}


if __name__ == "__main__":
    main()
