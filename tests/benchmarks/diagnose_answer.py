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
  the experimental dark-site sweep below), with its wall time::

    python tests/benchmarks/diagnose_answer.py /tmp/indep/c-far-side-high/seed0

The dark-site sweep (not in the search): for each clearly dark spot of the
difference image (an empty surface site where the image wants an atom),
darkest first, it tries each of the ``--sources`` least-coordinated atoms
on both ends of that line of sight (one projection cannot tell them apart)
and keeps the best trial when it lowers the cost. The image-guided sweep
pairs the brightest atoms with the darkest sites instead; an atom left on
a facet where the truth has none is often not bright (a thick column
saturates), while the site it should move to is clearly dark.
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


def dark_site_sweep(atoms, relax, evaluate, difference, nn_distance, *, min_distance, sources=12, sinks=6,
                    smooth=0.3, significance=0.25, cost=None, rng=0):
    """The experimental dark-site sweep (module docstring); returns (atoms, cost, trials, accepted)."""
    from refine.search.difference import smoothed_difference
    from refine.search.geometry import NEIGHBOUR_FACTOR, repair_min_distance
    from refine.search.sites import surface_sites
    from surrogate.common.geometry import coordination_numbers

    rng = np.random.default_rng(rng)
    best = atoms.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    line = 0.5 * nn_distance
    tried, n_trials, n_accepted = [], 0, 0
    for _ in range(sinks):
        _, sample = smoothed_difference(difference, best, smooth)
        pos = np.array(best.positions)
        sites = surface_sites(pos, nn_distance)
        if not len(sites):
            break
        deficit = sample(sites)
        ceiling = significance * deficit.min()
        dark = [i for i in np.argsort(deficit) if deficit[i] < 0 and deficit[i] <= ceiling
                and all(np.hypot(*(sites[i, :2] - xy)) > line for xy in tried)]
        if not dark:
            break
        i = dark[0]
        tried.append(sites[i, :2].copy())
        on_line = np.flatnonzero(np.hypot(*(sites[:, :2] - sites[i, :2]).T) <= line)
        ends = {int(on_line[np.argmax(sites[on_line, 2])]), int(on_line[np.argmin(sites[on_line, 2])])}
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        candidates = np.lexsort((-sample(pos), cn))[:sources]  # least coordinated, brightest first
        found = None
        for k in candidates:
            for end in sorted(ends):
                trial = best.copy()
                p = np.array(trial.positions)
                p[k] = sites[end]
                trial.positions = p
                repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
                relax(trial)
                c = evaluate(trial)
                n_trials += 1
                if found is None or c < found[0]:
                    found = (c, trial)
        if found is not None and found[0] < best_cost:
            best_cost, best = found[0], found[1]
            n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def main(argv=None) -> int:
    import surrogate
    from ase.io import read
    from scipy.spatial import cKDTree

    from make_images import CASES, DATA
    from refine.analysis import compare_structures
    from refine.cost import Fitness
    from refine.cost.energy import make_calculator
    from refine.io import read_image
    from refine.search import FitnessDifference, LocalRelaxation, nearest_neighbour_distance
    from refine.search.operators import DepthMoveMutation
    from refine.search.relaxation import cost_calculator
    from refine.search.sweeps import image_guided_sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder of bench_independent.py (WORK/<case>-<name>-<dose>/seed<S>)")
    p.add_argument("--steps", type=int, default=100, help="FIRE steps of the truth's minimum (default 100)")
    p.add_argument("--trial-steps", type=int, default=30, help="FIRE steps of each sweep trial (default 30)")
    p.add_argument("--sources", type=int, default=12, help="atoms tried on each dark site (default 12)")
    p.add_argument("--sinks", type=int, default=6, help="dark sites tried (default 6)")
    args = p.parse_args(argv)

    run = args.run.resolve()
    case, rest = run.parent.name.split("-", 1)
    name, _, dose_name = rest.rpartition("-")
    if CASES.get(case) != name or dose_name not in DOSES:
        raise SystemExit(f"{run}: not a run folder of bench_independent.py")
    data = DATA / name
    truth = read(str(data / "truth.xyz"))
    best = read(str(run / "best.xyz"))
    summary = json.loads((run / "summary.json").read_text())
    symbols = sorted(set(truth.get_chemical_symbols()))
    model = surrogate.default_model()
    image = read_image(np.load(run.parent / "image.npy"), pixel_size=0.1,
                       target_pixel_size=model.convolution_parameters.pixel_size)
    fit = Fitness(model, image, alpha=summary["alpha"], noise="poisson", dose=DOSES[dose_name], calculator="auto",
                  symbols=symbols, model_error=True)
    nn = nearest_neighbour_distance(symbols)
    calc = make_calculator("auto", tuple(symbols))

    def relaxation(steps):
        return LocalRelaxation(cost_calculator(fit, calc), steps=steps, fmax=0.02, min_distance=0.75 * nn,
                               rng=np.random.default_rng(2))

    relax, trial_relax = relaxation(args.steps), relaxation(args.trial_steps)

    def evaluate(atoms):
        return fit.evaluate(atoms).cost

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

    difference = FitnessDifference(fit)
    mover = DepthMoveMutation(np.random.default_rng(0), 0.75 * nn, nn_distance=nn)
    sweeps = {
        "depth moves (60 least coordinated)":
            lambda at: mover.polish(at, trial_relax, evaluate, max_atoms=60),
        "image-guided (1, 2, 4, 8)":
            lambda at: image_guided_sweep(at, trial_relax, evaluate, difference, nn, min_distance=0.75 * nn,
                                          sizes=(1, 2, 4, 8)),
        f"dark sites ({args.sinks} sites × {args.sources} atoms × 2 ends)":
            lambda at: dark_site_sweep(at, trial_relax, evaluate, difference, nn, min_distance=0.75 * nn,
                                       sources=args.sources, sinks=args.sinks),
    }
    for label, sweep in sweeps.items():
        t0 = time.perf_counter()
        out, cost, n, k = sweep(best.copy())
        print(f"  {label}: cost {cost:.3f}, {k} of {n} trials kept, {100 * within(out):.1f} % within 0.5 Å, "
              f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
