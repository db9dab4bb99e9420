"""Does the polish's column-shift sweep slide an edge of the particle back down its columns? A check on case (a).

The failure it targets: a refinement that ends with a region of the particle
— a grain, or the edge of one — one lattice period too high along its
columns. Every column of the region holds the right atoms, so the projection
is right (for a particle tilted off its zone axis, the columns are tilted
too, and the region slid along them, not along z); its top and bottom
facets are stepped against the rest (several eV), and no local move repairs
it. Here the damage is made on purpose:

1. the truth and the noisy image of case (a) (``examples/self_consistency.py``:
   a 300-atom EMT-relaxed Marks decahedron tilted 10° off its zone axis,
   surrogate image with Poisson noise at 1e5 e/Å², the shipped model);
2. the ``--fraction`` of the atoms farthest out along one direction normal
   to the columns (a cap, :func:`refine.search.operators.beam_sectors`) is moved
   one period up its columns (:func:`refine.search.operators.beam_column`), and
   the structure is relaxed on E + α·χ² as the GA's offspring are;
3. the sweep (:func:`refine.search.operators.shift_sectors` with the polish's
   clean-up, ``keep`` candidates followed up) runs on it at the thermal α.

For each damaged case (``--cases``, ``seed:fraction:direction``) it
prints cost, energy, χ²/px and the fraction of atoms within 0.5 Å of the
truth for the truth (relaxed the same way), the damaged structure and the
sweep's result, and the sweep's evaluations and time; then a summary::

    python examples/column_shift.py                          # four cases, ~2 min on 2 cores
    python examples/column_shift.py --cases 1:0.3:5 --keep 1
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


DEFAULT_CASES = "0:0.15:2,1:0.3:5,0:0.3:8,1:0.45:0"


def damaged_case(seed: int, fraction: float, direction: int, keep: int, search_alpha: float) -> dict:
    """Damage case (a) of ``seed`` (a cap of ``fraction`` of the atoms, cap ``direction`` of 12, one period up), sweep."""
    from refine.search import FitnessDifference
    from refine.search.polish import shift_finish
    from refine.search.sites import beam_column, beam_sectors
    from refine.search.sweeps import shift_sectors

    truth, fit, relax, relaxed, evaluate = case_a_setup(seed, search_alpha)
    column = beam_column(truth.positions, NN)
    if column is None:
        raise SystemExit("error: this particle has no columns along the beam")
    caps = beam_sectors(truth.positions, axis=column, widths=(), caps=(fraction,))
    cap = caps[direction % len(caps)]
    damaged = truth.copy()
    damaged.positions[cap] += column
    relaxed(damaged)

    def energy(atoms):  # ranks the candidates, as the GA's polish does
        r = fit.evaluate(atoms)
        atoms.positions = fit.aligned(atoms, r).positions
        return r.energy

    t0 = time.perf_counter()
    finish = shift_finish(relax, evaluate, FitnessDifference(fit), NN, 0.75 * NN)
    best, _, n_trials, n_accepted = shift_sectors(damaged, relax, evaluate, NN, min_distance=0.75 * NN,
                                                  finish=finish, keep=keep, rank=energy)
    dt = time.perf_counter() - t0
    tilt = np.degrees(np.arccos(column[2] / np.linalg.norm(column)))
    print(f"\ncase (a) seed {seed}: {cap.sum()} atoms of an edge (cap {fraction:g}, direction {direction}) moved one "
          f"period ({np.linalg.norm(column):.2f} Å, {tilt:.1f}° off z) up their columns; costs at the thermal "
          f"α = {fit.alpha:.4g} eV")
    rows = report(fit, truth, {"truth (relaxed the same way)": relaxed(truth.copy()),
                               "edge one period up": damaged, "after the column-shift sweep": best})
    print(f"sweep: {n_trials} evaluations, {n_accepted} accepted, {dt:.1f} s")
    return {"seed": seed, "fraction": fraction, "direction": direction, "atoms_shifted": int(cap.sum()),
            "rows": rows, "evaluations": n_trials, "accepted": n_accepted, "seconds": dt}


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=DEFAULT_CASES,
                   help=f"comma-separated seed:fraction:direction (cap of 12, every 30°); default {DEFAULT_CASES}")
    p.add_argument("--keep", type=int, default=2, help="candidates followed up (the anneal recipe's polish_shifts)")
    add_case_arguments(p, seed=False)
    args = p.parse_args(argv)
    try:
        cases = [(int(a), float(b), int(c)) for a, b, c in (k.split(":") for k in args.cases.split(","))]
    except ValueError:
        raise SystemExit(f"error: --cases must be seed:fraction:direction[,...], got {args.cases!r}")
    results = [damaged_case(seed, f, d, args.keep, args.search_alpha) for seed, f, d in cases]
    print("\nsummary: within 0.5 Å of the truth, damaged → after the sweep")
    for r in results:
        rows = list(r["rows"].values())
        print(f"  seed {r['seed']} cap {r['fraction']:g} dir {r['direction']:2d} ({r['atoms_shifted']:3d} atoms): "
              f"{100 * rows[1]['within_0.5']:5.1f} % → {100 * rows[2]['within_0.5']:5.1f} %  "
              f"(truth {100 * rows[0]['within_0.5']:.1f} %), {r['evaluations']} evaluations, {r['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
