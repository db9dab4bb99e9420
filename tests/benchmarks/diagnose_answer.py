"""Why did a run of the independent benchmark miss atoms? A missed basin or a wrong cost, and which sweep helps.

For one run folder of ``bench_independent.py`` (``WORK/<case>-<name>-<dose>/seed<S>``)
this puts the answer (``best.xyz``) next to the truth under the run's own cost
(the refine defaults: Poisson noise at the dose plus the model error, the
run's final α) and reports:

* the atoms of the truth with no atom of the answer within 0.5 Å after
  rigid/mirror alignment, and the answer's atoms with no partner (x, y, z in Å,
  z from the truth's centre): which atoms are wrong, and whether in x, y or
  only in depth;
* the cost of the answer and of the truth's own minimum (FIRE on
  E + α·χ², ``--steps``): when the minimum is lower, the cost is right and
  the search missed the basin;
* the cost and the fraction within 0.5 Å after each candidate sweep applied
  to the answer alone (the polish's depth moves and image-guided sweep, and
  the dark-site and far-site sweeps and the adatom flip, :mod:`refine.search.sweeps`), with its wall time;
* with ``--oracle``: the moves the search would have had to find. Each of
  the answer's unmatched atoms is paired (in x, y, one to one) with one of
  the truth's unmatched atoms and put on its site (in the aligned frame),
  one at a time and all together, each relaxed (``--trial-steps`` and
  ``--steps``) and scored: whether the cost rewards these moves singly,
  or only judged together::

    python tests/benchmarks/diagnose_answer.py /tmp/indep/c-far-side-high/seed0
    python tests/benchmarks/diagnose_answer.py /tmp/indep/c-far-side-realistic/seed0 --oracle
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "independent"))

from bench_independent import DOSES  # noqa: E402
from case_cost import case_cost  # noqa: E402


def main(argv=None) -> int:
    from ase.io import read
    from scipy.spatial import cKDTree

    from make_images import CASES
    from refine.analysis import compare_structures
    from refine.search import FitnessDifference
    from refine.search.operators import DepthMoveMutation
    from refine.search.recipes import IMAGE_RELAX_STEPS
    from refine.search.sweeps import adatom_flip, dark_site_sweep, far_site_sweep, image_guided_sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder of bench_independent.py (WORK/<case>-<name>-<dose>/seed<S>)")
    p.add_argument("--steps", type=int, default=100, help="FIRE steps of the truth's minimum (default 100)")
    p.add_argument("--trial-steps", type=int, default=IMAGE_RELAX_STEPS,
                   help=f"FIRE steps of each sweep trial (default {IMAGE_RELAX_STEPS}, as the run's offspring)")
    p.add_argument("--dark-sites", type=int, default=6, help="dark sites filled by the dark-site sweep (default 6)")
    p.add_argument("--oracle", action="store_true",
                   help="only the oracle moves: the answer's unmatched atoms onto the truth's unmatched sites")
    args = p.parse_args(argv)

    run = args.run.resolve()
    case, rest = run.parent.name.split("-", 1)
    name, _, dose_name = rest.rpartition("-")
    if CASES.get(case) != name or dose_name not in DOSES:
        raise SystemExit(f"{run}: not a run folder of bench_independent.py")
    best = read(str(run / "best.xyz"))
    summary = json.loads((run / "summary.json").read_text())
    cc = case_cost(case, dose_name, alpha=summary["alpha"])  # the run's cost at its final α
    truth, nn, evaluate = cc.truth, cc.nn_distance, cc.evaluate
    relax, trial_relax = cc.relaxation(args.steps), cc.relaxation(args.trial_steps)

    def within(atoms):
        return compare_structures(atoms, truth, mirror=True).within[0.5]

    c = compare_structures(best, truth, mirror=True)
    a, t = c.aligned.positions, truth.positions
    zc = t[:, 2].mean()
    d_truth, _ = cKDTree(a).query(t)
    d_answer, _ = cKDTree(t).query(a)
    print(f"{run}: {100 * c.within[0.5]:.1f} % within 0.5 Å")
    for label, pos, dist in (("truth atoms with no answer atom", t, d_truth),
                             ("answer atoms with no truth atom", a, d_answer)):
        rows = [f"#{i} ({pos[i, 0]:.1f}, {pos[i, 1]:.1f}, {pos[i, 2] - zc:+.1f}) {dist[i]:.1f} Å"
                for i in np.flatnonzero(dist > 0.5)]
        print(f"  {label} within 0.5 Å: {'; '.join(rows) or 'none'}")
    answer_cost = evaluate(best.copy())
    truth_min = truth.copy()
    relax(truth_min)
    truth_cost = evaluate(truth_min)
    print(f"  cost: answer {answer_cost:.3f}, truth {evaluate(truth.copy()):.3f}, truth's own minimum "
          f"{truth_cost:.3f} ({'the search missed its basin' if truth_cost < answer_cost else 'the cost prefers the answer'})")

    if args.oracle:
        oracle_moves(best, c.aligned.positions, t, d_answer, d_truth, evaluate, within,
                     {args.trial_steps: trial_relax, args.steps: relax})
        return 0

    difference = FitnessDifference(cc.fitness)
    mover = DepthMoveMutation(np.random.default_rng(0), 0.75 * nn, nn_distance=nn)
    sweeps = {
        "depth moves (60 least coordinated)":
            lambda at: mover.polish(at, trial_relax, evaluate, max_atoms=60),
        "image-guided (1, 2, 4, 8)":
            lambda at: image_guided_sweep(at, trial_relax, evaluate, difference, nn, min_distance=0.75 * nn,
                                          sizes=(1, 2, 4, 8)),
        f"dark sites ({args.dark_sites})":
            lambda at: dark_site_sweep(at, trial_relax, evaluate, difference, nn, min_distance=0.75 * nn,
                                       sites=args.dark_sites),
        "far sites (60 least coordinated)":
            lambda at: far_site_sweep(at, trial_relax, evaluate, nn, min_distance=0.75 * nn, atoms=60),
        f"adatom flip, then dark sites ({args.dark_sites}) and put-backs":
            lambda at: adatom_flip(at, trial_relax, evaluate, nn, min_distance=0.75 * nn, difference=difference,
                                   dark_sites=args.dark_sites),
    }
    for label, sweep in sweeps.items():
        t0 = time.perf_counter()
        out, cost, n, k = sweep(best.copy())
        print(f"  {label}: cost {cost:.3f}, {k} of {n} trials kept, {100 * within(out):.1f} % within 0.5 Å, "
              f"{time.perf_counter() - t0:.0f} s")
    return 0


def oracle_moves(answer, aligned, truth_positions, d_answer, d_truth, evaluate, within, relaxations) -> None:
    """Put the answer's unmatched atoms on the truth's unmatched sites, singly and together; print each cost.

    ``aligned``: the answer's positions after rigid/mirror alignment on the
    truth (the cost does not depend on the frame: it fits the shift, and a
    mirror in z leaves the projection alone). ``relaxations``: steps ->
    relaxation (in place) applied to every trial.
    """
    from scipy.optimize import linear_sum_assignment

    extra, missing = np.flatnonzero(d_answer > 0.5), np.flatnonzero(d_truth > 0.5)
    if not len(extra) or not len(missing):
        print("  oracle: no unmatched atoms")
        return
    xy = np.linalg.norm(aligned[extra, None, :2] - truth_positions[None, missing, :2], axis=2)
    rows, cols = linear_sum_assignment(xy)
    pairs = [(int(extra[r]), int(missing[c])) for r, c in zip(rows, cols)]
    for (i, j), r, c in zip(pairs, rows, cols):
        print(f"  oracle pair: answer #{i} -> truth #{j}, {xy[r, c]:.2f} Å in x, y, "
              f"{truth_positions[j, 2] - aligned[i, 2]:+.1f} Å in z")
    start = answer.copy()
    start.positions = aligned
    for steps, relax in relaxations.items():
        base = start.copy()
        relax(base)
        print(f"  oracle, {steps}-step relaxations: the answer relaxed {evaluate(base):.3f}")
        trials = [([i], f"#{i} alone") for i, _ in pairs] + [([i for i, _ in pairs], "all together")]
        target = dict(pairs)
        for movers, label in trials:
            trial = start.copy()
            for i in movers:
                trial.positions[i] = truth_positions[target[i]]
            relax(trial)
            print(f"    {label}: cost {evaluate(trial):.3f}, {100 * within(trial):.1f} % within 0.5 Å")


if __name__ == "__main__":
    raise SystemExit(main())
