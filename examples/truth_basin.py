"""Is the truth a basin of the search's annealing? A diagnostic for a self-consistency case.

When the refinement misses a structure, there are two explanations: the cost
has a better minimum elsewhere (a cost failure), or the search never reaches
the truth's basin (a search failure). This script asks the GA's own
annealing operator (:class:`refine.search.anneal.Annealing`: Langevin MD on
E + α·χ² from ``--temperature`` K down to 300 K over ``--steps`` steps of
5 fs, then a FIRE quench, at the run's search α) to start from

* the truth: if the anneal comes back to it, the truth is a basin of the
  search's cost that survives the annealing temperature;
* the refinement's answer: if the anneal does not get to the truth from
  there, the GA's annealings cannot bridge the gap either,

and reports, for each anneal, the fraction of atoms within 0.5 Å of the truth
(after optimal alignment, mirror allowed), the energy, χ²/px and the cost
E + α_T·χ² at the thermal α_T = k_B·300 K/2 (the finishing stage's
criterion). It reads a case folder written by ``examples/self_consistency.py``
(``truth.xyz``, ``refinement/experimental.npy``, ``refinement/summary.json``,
``refinement/best.xyz``), so run that first::

    python examples/self_consistency.py --cases g --work /tmp/sc
    python examples/truth_basin.py /tmp/sc/g-glass            # 2 anneals from each start

Anneals run on ``--workers`` processes (default 2), ~100 s each at the
recipe's 20000 steps for 300 atoms. Results: a table on stdout and
``basin.json`` in the case folder (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _fitness(case_dir: Path, alpha: float, model_path=None):
    from ase.io import read

    from refine.cost.fitness import Fitness
    from refine.io.images import ExperimentalImage
    from refine.workflows import load_model_or_default

    run = case_dir / "refinement"
    inputs = json.loads((run / "inputs.json").read_text())
    data = np.load(run / "experimental.npy")
    image = ExperimentalImage(data=data, pixel_size=float(inputs["pixel_size"]), mask=np.ones(data.shape, bool),
                              origin=(0.0, 0.0), source=inputs.get("image_source", "experimental.npy"))
    model, _ = load_model_or_default(model_path)
    symbols = sorted(set(read(case_dir / "truth.xyz").get_chemical_symbols()))
    return Fitness(model, image, alpha=alpha, noise=inputs.get("noise", "poisson"), dose=inputs.get("dose"),
                   calculator="auto", symbols=symbols)


def _anneal(task):
    case_dir, model_path, alpha, temperature, steps, start_name, seed = task
    from ase.io import read

    from refine.search.anneal import AnnealSchedule, Annealing

    fitness = _fitness(case_dir, alpha, model_path)
    start = read(case_dir / ("truth.xyz" if start_name == "truth" else "refinement/best.xyz"))
    schedule = AnnealSchedule(start_temperature=temperature, end_temperature=min(300.0, temperature), steps=steps)
    return start_name, seed, Annealing(fitness, "auto", schedule)(start, seed)


def _row(fitness, thermal, atoms, truth):
    from refine.analysis import compare_structures

    r = fitness.evaluate(atoms)
    cmp = compare_structures(atoms, truth, mirror=True)
    return {"within_0.5": cmp.within[0.5], "within_0.3": cmp.within[0.3], "energy": r.energy,
            "chi2_per_pixel": r.chi2_per_pixel, "cost_thermal": r.energy + thermal * r.chi2}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case_dir", type=Path, help="a case folder of examples/self_consistency.py, e.g. /tmp/sc/g-glass")
    p.add_argument("--runs", type=int, default=2, help="anneals from each start (default 2)")
    p.add_argument("--temperature", type=float, default=1500.0, help="K at the start of the ramp (recipe: 1500)")
    p.add_argument("--steps", type=int, default=20000, help="MD steps of 5 fs (recipe: 20000)")
    p.add_argument("--alpha", type=float, default=None,
                   help="eV per unit χ² (default: the run's search α from refinement/summary.json)")
    p.add_argument("--model", default=None,
                   help="the model file the case was run with (default: the shipped default model)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    from ase.io import read

    case_dir = args.case_dir.resolve()
    for name in ("truth.xyz", "refinement/experimental.npy", "refinement/summary.json", "refinement/best.xyz",
                 "refinement/inputs.json"):
        if not (case_dir / name).is_file():
            raise SystemExit(f"error: {case_dir / name} is missing (run examples/self_consistency.py first)")
    summary = json.loads((case_dir / "refinement/summary.json").read_text())
    alpha = args.alpha if args.alpha is not None else float(summary.get("search_alpha") or summary["alpha"])
    fitness = _fitness(case_dir, alpha, args.model)
    thermal = fitness.thermal_alpha()
    truth = read(case_dir / "truth.xyz")
    rows = [{"start": "truth", "seed": None, **_row(fitness, thermal, truth, truth)},
            {"start": "answer", "seed": None, **_row(fitness, thermal, read(case_dir / "refinement/best.xyz"), truth)}]
    tasks = [(case_dir, args.model, alpha, args.temperature, args.steps, s, k) for s in ("truth", "answer")
             for k in range(args.runs)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for start_name, seed, out in pool.map(_anneal, tasks):
            rows.append({"start": f"anneal from {start_name}", "seed": seed, **_row(fitness, thermal, out, truth)})
    print(f"{case_dir.name}: search α = {alpha:.4g} eV, thermal α = {thermal:.4g} eV, anneal "
          f"{args.temperature:g} → 300 K over {args.steps} × 5 fs")
    print(f"{'structure':22s} {'seed':>4s} {'≤0.3Å':>7s} {'≤0.5Å':>7s} {'E eV':>8s} {'χ²/px':>7s} {'cost@α_T':>9s}")
    for r in rows:
        seed = "" if r["seed"] is None else str(r["seed"])
        print(f"{r['start']:22s} {seed:>4s} {100 * r['within_0.3']:6.1f}% {100 * r['within_0.5']:6.1f}% "
              f"{r['energy']:8.2f} {r['chi2_per_pixel']:7.4f} {r['cost_thermal']:9.2f}")
    report = {"case_dir": str(case_dir), "search_alpha": alpha, "thermal_alpha": thermal,
              "temperature": args.temperature, "steps": args.steps, "rows": rows}
    fd, tmp = tempfile.mkstemp(dir=case_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, case_dir / "basin.json")
    return report


if __name__ == "__main__":
    main()
