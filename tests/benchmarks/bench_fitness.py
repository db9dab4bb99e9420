"""Fitness evaluations per second: 561-atom Pt icosahedron, 250×250 image (issue 5, "must show" 2).

Run from the repository root::

    python tests/benchmarks/bench_fitness.py            # table on stdout
    python tests/benchmarks/bench_fitness.py --json     # machine-readable
    python tests/benchmarks/bench_fitness.py --model path/to/model.npz --evals 400

Setup: the "experiment" is the surrogate image of an EMT-relaxed
Icosahedron('Pt', 6) (561 atoms) on a 250×250 grid at Δ = 0.1 Å, scaled,
offset and with Gaussian noise. Candidates are GA-like offspring: the truth
rattled by 0.05 Å and shifted by up to ±0.3 Å (so alignment has work to do).
Times are split into convolution (splatting the Gaussians into the box),
polynomial (``predict_into``), alignment (FFT cross-correlation when used,
normal-equation sums over the box, 4×4 solves) and energy (asap3 EMT), from
the fitness's own profile counters; "2 processes" runs two forked workers
on half the candidates each (how a DEAP ``map`` over a pool would use 2
cores). Each row is the best of ``--repeat`` runs (the machine is shared).

Goal (issue 5): ≥ 1000 evaluations/s on 2 cores for the shipped default
model with alignment, i.e. row "default 378 auto", column "eval/s 2 proc".
The 2-process rate needs both cores free: the load averages printed at the
start and the end tell whether another job shared them (with one core busy
elsewhere, "eval/s 2 proc" falls to about "eval/s 1 core").

The model is ``--model`` if given, else the shipped default model when it
exists, else stand-ins fitted here with the default hyper-parameters
(s=5, d=2, log term, interactions: 378 terms) and with s=3 (55 terms) — the
polynomial's cost scales with the number of terms, so both are reported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PIXEL = 0.1
SHAPE = (250, 250)


def relaxed_icosahedron():
    from asap3 import EMT
    from ase.cluster import Icosahedron
    from ase.optimize import FIRE

    a = Icosahedron("Pt", 6)
    a.center(vacuum=5.0)
    a.calc = EMT()
    FIRE(a, logfile=None).run(fmax=0.01, steps=300)
    a.calc = None
    a.positions -= a.positions.mean(axis=0)
    a.rotate(11, "z")
    return a


def stand_in_model(truth, size):
    """A surrogate with the given s, fitted on rotated copies (multislice := smooth nonlinear map)."""
    from scipy.ndimage import gaussian_filter

    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for k in range(3):
        a = truth.copy()
        a.rotate(rng.uniform(0, 360), "z")
        a.positions += rng.normal(0, 0.03, a.positions.shape)
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 2.0))
        convs.append(c)
        ms.append(0.5 * np.sqrt(np.maximum(gaussian_filter(c, 1.0), 0)) + 0.01)
    return PolynomialSurrogate(size=size, degree=2, log_term=True, interactions=True).fit(
        convs, ms, elements=["Pt"])


def candidates(truth, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pos = truth.positions + rng.normal(0, 0.05, truth.positions.shape)
        pos[:, :2] += rng.uniform(-0.3, 0.3, 2)
        out.append(pos)
    return out


def make_fitness(model, truth, align):
    from refine.cost.fitness import Fitness
    from refine.io.images import read_image
    from surrogate.imaging.grid import ProbeGrid

    origin = (-0.5 * (SHAPE[0] - 1) * PIXEL, -0.5 * (SHAPE[1] - 1) * PIXEL)
    grid = ProbeGrid(origin=origin, shape=SHAPE, pixel_size=PIXEL)
    clean = model.simulate(truth, grid)
    rng = np.random.default_rng(1)
    data = 2.0 * clean + 0.1 + rng.normal(0, 0.02 * clean.max(), SHAPE)
    img = read_image(data, pixel_size=PIXEL, origin=origin)
    return Fitness(model, img, alpha=1.0, noise=0.02 * clean.max(), align=align, calculator="emt",
                   symbols=["Pt"])


def run_serial(fit, cands, numbers):
    fit.profile = True
    for k in fit.timings:
        fit.timings[k] = 0.0
    t = time.perf_counter()
    c = time.process_time()
    for pos in cands:
        fit.evaluate(pos, numbers)
    wall = time.perf_counter() - t
    return wall, dict(fit.timings), time.process_time() - c


def _worker(args):
    fit, cands, numbers = args
    fit.profile = False
    t = time.perf_counter()
    for pos in cands:
        fit.evaluate(pos, numbers)
    return time.perf_counter() - t


def run_two_processes(fit, cands, numbers):
    ctx = mp.get_context("fork")
    half = len(cands) // 2
    with ctx.Pool(2) as pool:
        pool.map(_worker, [(fit, cands[:4], numbers)] * 2)  # warm up (jit already cached in the parent)
        t = time.perf_counter()
        pool.map(_worker, [(fit, cands[:half], numbers), (fit, cands[half:], numbers)])
        return time.perf_counter() - t


def bench(model, truth, n_evals, label, aligns=("none", "local", "auto", "fft"), parallel=True, repeat=3):
    numbers = truth.numbers
    cands = candidates(truth, n_evals)
    rows = []
    for align in aligns:
        fit = make_fitness(model, truth, align)
        for pos in cands[:3]:  # compile / warm caches
            fit.evaluate(pos, numbers)
        # best of `repeat`: the machine is shared, the minimum is the least disturbed run
        wall, tim, cpu = min((run_serial(fit, cands, numbers) for _ in range(repeat)), key=lambda x: x[0])
        row = {"model": label, "align": align, "n_terms": int(model.n_terms), "evaluations": n_evals,
               "evals_per_s_1core": n_evals / wall,
               "evals_per_cpu_s": n_evals / cpu,
               "ms_per_eval": 1e3 * wall / n_evals,
               **{f"ms_{k}": 1e3 * v / n_evals for k, v in tim.items()}}
        row["ms_other"] = row["ms_per_eval"] - sum(row[f"ms_{k}"] for k in tim)
        if parallel:
            row["evals_per_s_2proc"] = n_evals / min(run_two_processes(fit, cands, numbers) for _ in range(repeat))
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model file (default: the shipped default model, else stand-ins)")
    ap.add_argument("--evals", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-parallel", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per row (shared machine)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    load_start = os.getloadavg()[0]
    truth = relaxed_icosahedron()
    models = []
    if args.model:
        from surrogate.imaging.model import load_model

        models.append((Path(args.model).name, load_model(args.model)))
    else:
        try:
            from surrogate import default_model

            models.append(("default", default_model()))
        except Exception:
            models.append(("stand-in s=5", stand_in_model(truth, 5)))
        models.append(("stand-in s=3", stand_in_model(truth, 3)))
    rows = []
    for label, model in models:
        rows += bench(model, truth, args.evals, label, parallel=not args.no_parallel, repeat=args.repeat)
    if args.json:
        print(json.dumps({"atoms": len(truth), "image": list(SHAPE), "pixel_size": PIXEL, "cpu_count": os.cpu_count(),
                          "load_average_start": load_start, "load_average": os.getloadavg()[0], "rows": rows},
                         indent=1))
        return 0
    load = os.getloadavg()[0]
    print(f"{len(truth)} atoms, {SHAPE[0]}×{SHAPE[1]} image at {PIXEL} Å, {args.evals} evaluations per row, "
          f"best of {args.repeat}; load average {load_start:.2f} at the start, {load:.2f} at the end, "
          f"on {os.cpu_count()} CPUs")
    head = ("model", "terms", "align", "eval/s 1 core", "eval/CPU-s", "eval/s 2 proc", "ms/eval", "conv", "poly",
            "align", "energy", "other")
    print("{:<14}{:>6} {:<6}{:>14}{:>11}{:>14}{:>9}{:>7}{:>7}{:>7}{:>7}{:>7}".format(*head))
    for r in rows:
        print("{:<14}{:>6} {:<6}{:>14.0f}{:>11.0f}{:>14}{:>9.2f}{:>7.2f}{:>7.2f}{:>7.2f}{:>7.2f}{:>7.2f}".format(
            r["model"], r["n_terms"], r["align"], r["evals_per_s_1core"], r["evals_per_cpu_s"],
            f"{r['evals_per_s_2proc']:.0f}" if "evals_per_s_2proc" in r else "-", r["ms_per_eval"],
            r["ms_convolution"], r["ms_polynomial"], r["ms_alignment"], r["ms_energy"], r["ms_other"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
