"""Independent-image benchmark (issue 16): refine abTEM images the surrogate did not make, as a user would.

The clean images and truths are made once by
``tests/benchmarks/independent/make_images.py`` (abTEM PRISM, interpolation 2,
8 frozen phonons: not the shipped model's training settings) and committed.
For each case, dose and seed this runner

1. draws Poisson noise at the dose from the clean image (the noise stream is
   fixed by case and dose, not by the refinement's seed) and writes the noisy
   image as a ``.npy`` file in units of the incident beam;
2. runs the CLI exactly as a user would, with its defaults::

       stem-refine refine IMAGE.npy -c Pt300 --pixel-size 0.1 --dose D --seed S --time-limit T -o RUN --json

3. scores ``RUN/best.xyz`` against the truth after rigid/mirror alignment and
   one-to-one assignment: fractions within 0.3 and 0.5 Å, the fraction whose
   projected (x, y) position is within 0.5 Å, and for case (c) how many of the
   6 moved atoms were found; and the time at which the run's best first had
   98 % of the atoms within 0.5 Å (scoring ``RUN/progress.xyz``, the best of
   each generation);
4. puts the truth next to the answer under the run's own cost
   (``stem-refine cost TRUTH IMAGE`` with the same image and noise options
   and the run's final α): E and χ²/px of both, and whether the truth's cost
   is lower; and the same for the truth's own minimum of that cost
   (``--relax 100``: FIRE steps on E + α·χ², as the run's offspring are
   relaxed). The answer is a minimum of the cost and the unrelaxed truth is
   not, so where the unrelaxed truth loses, the minimum tells a search that
   missed the truth's basin (its minimum wins) from a cost that prefers
   another structure (it loses too).

Every run's folder and a ``results.json``/table go to ``--work``; a run whose
folder holds a ``summary.json`` is not run again (the table is rebuilt from
what exists), so the full table (hours of CPU) is built up one run at a time::

    python tests/benchmarks/bench_independent.py --cases a --doses high --seeds 0 --work /tmp/indep
    python tests/benchmarks/bench_independent.py --work /tmp/indep --report   # the table only

Goals (issue 16, "the search finds it"): ≥ 98 % of the atoms within 0.5 Å on
(a) and (b) in at least two seeds each and no seed below 90 %; (c) ≥ 4 of the
6 moved atoms; (d) ≥ 80 %; at both doses; 15 minutes per run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "independent"))

#: dose name -> electrons per Å²
DOSES = {"realistic": 5e5, "high": 2e7}
#: FIRE steps of the truth's own minimum of the run's cost (``stem-refine cost --relax``)
TRUTH_RELAX_STEPS = 100
GOALS = {
    "a": ("≥ 98 % within 0.5 Å (≥ 2 seeds), none < 90 %", lambda r: r["within_0.5"] >= 0.98),
    "b": ("≥ 98 % within 0.5 Å (≥ 2 seeds), none < 90 %", lambda r: r["within_0.5"] >= 0.98),
    "c": ("≥ 4 of 6 moved atoms found", lambda r: r.get("moved_found", 0) >= 4),
    "d": ("≥ 80 % within 0.5 Å", lambda r: r["within_0.5"] >= 0.80),
}


def noisy_image(clean: np.ndarray, dose: float, pixel: float, case: str, dose_name: str) -> np.ndarray:
    """Poisson noise at ``dose`` e/Å² on ``clean`` (fraction of the beam); same stream for a (case, dose)."""
    rng = np.random.default_rng([ord(case), int(DOSES[dose_name])])
    per_pixel = dose * pixel * pixel
    return (rng.poisson(np.clip(clean.astype(np.float64), 0.0, None) * per_pixel) / per_pixel)


def _stem_refine(args: list[str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "ab") as fh:
        return subprocess.run([sys.executable, "-m", "refine.cli.main", *args], stdout=subprocess.PIPE,
                              stderr=fh, cwd=ROOT, check=False)


def score(best, truth, info: dict) -> dict:
    """Fractions of ``best``'s atoms near ``truth``'s (3-D after alignment, and in projection)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from refine.analysis import compare_structures

    cmp = compare_structures(best, truth, mirror=True)
    d_xy = cdist(truth.positions[:, :2], best.positions[:, :2])
    ri, ci = linear_sum_assignment(d_xy)
    row = {"within_0.3": cmp.within[0.3], "within_0.5": cmp.within[0.5],
           "xy_within_0.5": float(np.mean(d_xy[ri, ci] < 0.5)), "rmsd": cmp.rmsd}
    if "moved" in info:
        d_truth = np.full(len(truth), np.inf)
        ok = cmp.truth_index >= 0
        d_truth[cmp.truth_index[ok]] = cmp.displacements[ok]
        row["moved_found"] = int(np.count_nonzero(d_truth[np.array(info["moved"])] < 0.5))
    return row


def time_to(progress, truth, fraction: float = 0.98) -> float | None:
    """Elapsed s at which a generation's best first had ``fraction`` of its atoms within 0.5 Å (None: never)."""
    from refine.analysis import compare_structures
    from refine.search.progress import read_progress

    for frame in read_progress(progress):
        if compare_structures(frame, truth, mirror=True).within[0.5] >= fraction:
            return float(frame.info["elapsed_s"])
    return None


def run_one(case: str, dose_name: str, seed: int, args) -> dict:
    """Run (or reuse) one refinement and return its row of the table."""
    from ase.io import read

    from make_images import CASES, DATA

    data = Path(args.data or DATA) / CASES[case]
    meta = json.loads((data / "image.json").read_text())
    truth = read(str(data / "truth.xyz"))
    dose = DOSES[dose_name]
    pixel = float(meta["pixel_size"])
    folder = Path(args.work) / f"{case}-{CASES[case]}-{dose_name}"
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "image.npy"
    if not image.is_file():
        np.save(image, noisy_image(np.load(data / "clean.npy"), dose, pixel, case, dose_name))
    run = folder / f"seed{seed}"
    composition = meta["composition"]
    common = [str(image), "--pixel-size", str(pixel), "--dose", f"{dose:g}"]
    if not (run / "summary.json").is_file():
        if args.report:
            return {}
        t0 = time.perf_counter()
        refine_args = ["refine", *common, "-c", composition, "--seed", str(seed), "--time-limit",
                       f"{args.time_limit:g}", "-o", str(run), "--json", "--no-progress"]
        if run.exists():
            refine_args.append("--resume")
        proc = _stem_refine(refine_args, folder / f"seed{seed}.log")
        if proc.returncode != 0:
            raise SystemExit(f"stem-refine refine failed for {run} (see {folder / f'seed{seed}.log'})")
        (run / "wall_time_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    summary = json.loads((run / "summary.json").read_text())
    best = read(str(run / "best.xyz"))
    row = {"case": case, "name": CASES[case], "dose": dose_name, "seed": seed, "n_atoms": len(truth),
           **score(best, truth, meta.get("truth_info", {})),
           "energy": summary["energy"], "chi2_per_pixel": summary["chi2_per_pixel"], "cost": summary["best_cost"],
           "generations": summary["generations"], "ga_time_s": summary.get("ga_time_s")}
    row["time_to_98_s"] = time_to(run / "progress.xyz", truth)
    wall = run / "wall_time_s.txt"
    row["wall_time_s"] = float(wall.read_text()) if wall.is_file() else None
    # the truth under the run's own cost: the refine defaults (noise, model error) and the run's final α
    proc = _stem_refine(["cost", str(data / "truth.xyz"), *common, "--alpha", repr(summary["alpha"]), "--json"],
                        folder / f"seed{seed}.log")
    if proc.returncode == 0:
        t = json.loads(proc.stdout)[0]
        row.update({"energy_truth": t["energy"], "chi2_per_pixel_truth": t["chi2_per_pixel"],
                    "cost_truth": t["cost"], "truth_cost_lower": t["cost"] < summary["best_cost"]})
    proc = _stem_refine(["cost", str(data / "truth.xyz"), *common, "--alpha", repr(summary["alpha"]),
                         "--relax", str(TRUTH_RELAX_STEPS), "--json"], folder / f"seed{seed}.log")
    if proc.returncode == 0:
        t = json.loads(proc.stdout)[0]
        row.update({"cost_truth_minimum": t["cost"], "truth_minimum_lower": t["cost"] < summary["best_cost"]})
    return row


def table(rows, file=sys.stdout) -> None:
    head = (f"{'case':18s} {'dose':9s} seed  ≤0.3Å   ≤0.5Å  xy≤0.5Å  moved  E eV (truth)      "
            f"χ²/px (truth)       cost answer (truth, its min)  gens  wall s  98% at s  goal")
    print(head, file=file)
    for r in rows:
        if not r:
            continue
        goal = GOALS[r["case"]][1](r)
        moved = f"{r['moved_found']}/6" if "moved_found" in r else "  - "
        print(f"({r['case']}) {r['name']:14s} {r['dose']:9s} {r['seed']:4d} {100 * r['within_0.3']:5.1f}% "
              f"{100 * r['within_0.5']:6.1f}% {100 * r['xy_within_0.5']:7.1f}%  {moved:5s} "
              f"{r['energy']:7.1f} ({r.get('energy_truth', float('nan')):6.1f})  "
              f"{r['chi2_per_pixel']:7.3f} ({r.get('chi2_per_pixel_truth', float('nan')):7.3f})  "
              f"{r['cost']:8.2f} ({r.get('cost_truth', float('nan')):8.2f}, "
              f"{r.get('cost_truth_minimum', float('nan')):8.2f})  "
              f"{r['generations']:4d}  {r['wall_time_s'] or float('nan'):6.0f}  "
              f"{'-' if r.get('time_to_98_s') is None else format(r['time_to_98_s'], '8.0f'):>8s}  "
              f"{'met' if goal else 'NOT met'}",
              file=file)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    p.add_argument("--doses", default="realistic,high", help="comma-separated subset of realistic (5e5), high (2e7)")
    p.add_argument("--seeds", default="0,1", help="comma-separated refinement seeds (default 0,1)")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds of GA time per run (default 900)")
    p.add_argument("--work", required=True, help="folder for the runs and results.json")
    p.add_argument("--data", help="folder of the clean images (default: independent/data)")
    p.add_argument("--report", action="store_true", help="only tabulate the runs that exist")
    args = p.parse_args(argv)
    rows = []
    for case in args.cases.split(","):
        for dose_name in args.doses.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(run_one(case.strip(), dose_name.strip(), seed, args))
    rows = [r for r in rows if r]
    from surrogate.common.jsonio import write_json

    os.makedirs(args.work, exist_ok=True)
    write_json(Path(args.work) / "results.json", rows)
    table(rows)
    return 0 if all(GOALS[r["case"]][1](r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
