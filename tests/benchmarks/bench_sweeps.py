"""Do the polish's sweeps put misplaced surface atoms back, on an abTEM image? Case (c) of the independent benchmark.

The failure it targets (the (c) runs at 2e7 and 5e5 e/Å², seed 0): atoms that
belong on hollow sites of the far side left on the near side, a couple of Å
away in x, y. Such an atom is often not bright in the simulated −
experimental difference (on top of a thick column the excess hardly shows),
while the site it belongs on is clearly dark. Here the damage is made on
purpose, so that each sweep can be measured without a 15-minute search:

1. the truth of case (c) (a 309-atom icosahedron with 6 surface atoms moved
   to far-side hollow sites; abTEM image, ``independent/data/far-side``) and
   its noisy image at the dose, under the refine defaults' cost at the
   thermal α (``independent/case_cost.py``);
2. ``--atoms`` of the 6 moved atoms are put on the empty near-side surface
   sites nearest (in x, y, at least ``--offset`` Å away) to where they belong,
   and the structure is relaxed on the cost (``--steps`` FIRE steps);
3. each sweep runs on it with the offspring relaxation (20 FIRE steps): the image-guided
   sweep (as in the polish: trials of 1, 2, 4, 8, 16 atoms), the dark-site
   sweep (6 sites), and the two in the polish's order.

It prints, for the truth's own minimum, the damaged structure and each
sweep's result: cost, moved atoms found, fraction within 0.5 Å, and the
sweep's evaluations and time::

    python tests/benchmarks/bench_sweeps.py                       # both doses, 4 atoms
    python tests/benchmarks/bench_sweeps.py --doses high --atoms 6
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE / "independent"))
sys.path.insert(0, str(HERE))

from bench_independent import score  # noqa: E402
from case_cost import case_cost  # noqa: E402


def damage(truth, moved, nn: float, offset: float):
    """``truth`` with each atom of ``moved`` on the nearest (in x, y, ≥ ``offset`` Å) empty near-side surface site."""
    from refine.search.sites import depth_sides, surface_sites

    out = truth.copy()
    pos = out.positions.copy()
    for k in moved:
        rest = np.delete(pos, k, axis=0)
        sites = surface_sites(rest, nn)
        sites = sites[depth_sides(sites, rest, nn) == 1]
        d = np.hypot(*(sites[:, :2] - pos[k, :2]).T)
        d[d < offset] = np.inf
        pos[k] = sites[np.argmin(d)]
    out.positions = pos
    return out


def main(argv=None) -> list[dict]:
    from refine.search import FitnessDifference
    from refine.search.recipes import IMAGE_RELAX_STEPS
    from refine.search.sweeps import dark_site_sweep, image_guided_sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doses", default="high,realistic", help="comma-separated subset of high, realistic")
    p.add_argument("--atoms", type=int, default=4, help="moved atoms put back on the near side (default 4, ≤ 6)")
    p.add_argument("--offset", type=float, default=2.0, help="least x, y distance of their wrong site, Å (default 2)")
    p.add_argument("--steps", type=int, default=100, help="FIRE steps of the damaged and truth minima (default 100)")
    args = p.parse_args(argv)

    rows = []
    for dose in args.doses.split(","):
        cc = case_cost("c", dose)
        nn, info = cc.nn_distance, cc.info
        relax, trial_relax = cc.relaxation(args.steps), cc.relaxation(IMAGE_RELAX_STEPS)
        truth_min = cc.truth.copy()
        relax(truth_min)
        damaged = damage(cc.truth, info["moved"][:args.atoms], nn, args.offset)
        relax(damaged)
        difference = FitnessDifference(cc.fitness)

        def image_guided(at):
            return image_guided_sweep(at, trial_relax, cc.evaluate, difference, nn, min_distance=0.75 * nn,
                                      sizes=(1, 2, 4, 8, 16))

        def dark_sites(at):
            return dark_site_sweep(at, trial_relax, cc.evaluate, difference, nn, min_distance=0.75 * nn, sites=6)

        def both(at):
            at, _, n1, k1 = image_guided(at)
            at, c, n2, k2 = dark_sites(at)
            return at, c, n1 + n2, k1 + k2

        print(f"case (c), {dose} dose, α = {cc.fitness.alpha:.4g} eV: {args.atoms} moved atoms on the near side")
        for label, atoms in (("truth's own minimum", truth_min), ("damaged", damaged)):
            s = score(atoms, cc.truth, info)
            print(f"  {label:<28} cost {cc.evaluate(atoms.copy()):9.3f}   moved found {s['moved_found']}/6   "
                  f"{100 * s['within_0.5']:5.1f} % within 0.5 Å")
        for label, sweep in (("image-guided sweep", image_guided), ("dark-site sweep", dark_sites),
                             ("image-guided, then dark-site", both)):
            t0 = time.perf_counter()
            out, cost, n, k = sweep(damaged.copy())
            dt = time.perf_counter() - t0
            s = score(out, cc.truth, info)
            print(f"  {label:<28} cost {cost:9.3f}   moved found {s['moved_found']}/6   "
                  f"{100 * s['within_0.5']:5.1f} % within 0.5 Å   {k} kept, {n} evaluations, {dt:.0f} s")
            rows.append({"dose": dose, "sweep": label, "cost": cost, "moved_found": s["moved_found"],
                         "within_0.5": s["within_0.5"], "evaluations": n, "accepted": k, "seconds": dt})
    return rows


if __name__ == "__main__":
    main()
