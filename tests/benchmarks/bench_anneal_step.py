"""Cost of the image force in the annealing: float64 vs float32 adjoint, same run, same machine.

The image-restrained annealing (refine.search.anneal) spends almost all its time in
∂χ²/∂r (refine.cost.image_forces.ImageTerm), and that in the adjoint through the
polynomial (surrogate.imaging.adjoint.convolution_vjp, an L1-bound kernel). This
benchmark times, on case (a) of the self-consistency benchmark (300-atom Pt
Marks decahedron, 10° off axis, shipped model, its 263×260-pixel box):

* one ``chi2_and_gradient`` call, float64 and float32 adjoint (median of ``--calls``);
* ``--steps`` MD steps of :class:`refine.search.anneal.Annealing` (no quench), both ways;
* one asap3 EMT force call, for scale;

and prints the float64/float32 ratios. Run from the repository root::

    python tests/benchmarks/bench_anneal_step.py
    python tests/benchmarks/bench_anneal_step.py --steps 2000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _median_ms(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=50, help="gradient calls timed (median)")
    ap.add_argument("--steps", type=int, default=1000, help="MD steps timed per annealing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import self_consistency as sc
    from refine.search.anneal import AnnealSchedule, Annealing
    from refine.cost.energy import make_calculator
    from refine.cost.fitness import Fitness
    from refine.cost.image_forces import ImageTerm

    model, model_desc = sc.get_model(None)
    rng = np.random.default_rng([0, ord("a")])
    truth, _ = sc.make_truth("a", rng, types.SimpleNamespace(atoms=300, tilt=10.0))
    image, _ = sc.noisy_image(model, truth, 1e5, rng)
    fit = Fitness(model, image, alpha=1e-3, noise="poisson", dose=1e5, calculator="auto", symbols=["Pt"])
    jitter = np.random.default_rng(1)
    out = {"model": model_desc, "load_average_start": os.getloadavg()}
    for label, single in (("float64", False), ("float32", True)):
        term = ImageTerm(fit, single_precision=single)
        out[f"gradient_ms_{label}"] = _median_ms(
            lambda: term.chi2_and_gradient(truth.positions + jitter.normal(0, 0.02, truth.positions.shape),
                                           truth.numbers), args.calls)
        ann = Annealing(fit, "auto", AnnealSchedule(steps=args.steps, quench_steps=0), single_precision=single)
        t0 = time.perf_counter()
        ann(truth, 0)
        out[f"md_step_ms_{label}"] = 1e3 * (time.perf_counter() - t0) / args.steps
    work = truth.copy()
    work.cell = np.diag(np.ptp(work.positions, axis=0) + 40.0)
    work.calc = make_calculator("auto", ("Pt",))

    def emt():
        work.positions = work.positions + jitter.normal(0, 1e-3, work.positions.shape)
        work.get_forces()

    out["emt_ms"] = _median_ms(emt, args.calls)
    out["gradient_speedup"] = out["gradient_ms_float64"] / out["gradient_ms_float32"]
    out["md_step_speedup"] = out["md_step_ms_float64"] / out["md_step_ms_float32"]
    out["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"model: {model_desc}; load average {out['load_average_start'][0]:.2f} → {out['load_average_end'][0]:.2f}")
        print(f"{'':24s} {'float64':>9s} {'float32':>9s} {'ratio':>6s}")
        print(f"{'∂χ²/∂r, ms per call':24s} {out['gradient_ms_float64']:9.2f} {out['gradient_ms_float32']:9.2f} "
              f"{out['gradient_speedup']:6.2f}")
        print(f"{'MD step, ms':24s} {out['md_step_ms_float64']:9.2f} {out['md_step_ms_float32']:9.2f} "
              f"{out['md_step_speedup']:6.2f}")
        print(f"EMT forces: {out['emt_ms']:.3f} ms per call")
    return out


if __name__ == "__main__":
    main()
