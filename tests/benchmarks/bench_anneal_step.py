"""Cost of the image force in the annealing: float64 vs float32 adjoint, same run, same machine.

The image-restrained annealing (refine.search.anneal) spends almost all its time in
∂χ²/∂r (refine.cost.image_forces.ImageTerm), and that in the adjoint through the
polynomial (surrogate.imaging.adjoint.convolution_vjp, an L1-bound kernel). This
benchmark times, on case (a) of the self-consistency benchmark (300-atom Pt
Marks decahedron, 10° off axis, shipped model, its 263×260-pixel box):

* one ``chi2_and_gradient`` call, float64 and float32 adjoint (median of ``--calls``);
* ``--steps`` MD steps of :class:`refine.search.anneal.Annealing` (no quench), both ways;
* one asap3 EMT force call, for scale;
* the float32 adjoint through the polynomial alone (``convolution_vjp``) against
  the per-row jitted loop it replaced (kept below as a reference): the same
  convolution image and upstream gradient, median of ``--calls``;

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

import math

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


# The degree-2 adjoint before session 12: one output row at a time, ∂f/∂x = l + Q·x in
# nested loops (reference for the timing only).
@numba.njit(nogil=True, fastmath=True)
def _vjp_degree2(conv, up, h, offsets, log_term, log_floor, lin, Q, Xt, Dt, out):  # pragma: no cover - jitted
    # One output row at a time, variable-major (Xt[v, b]): every inner loop runs
    # over the row's pixels, contiguous, so that ∂f/∂x = l + Q·x vectorizes.
    bi, bj = up.shape
    n_pix = offsets.shape[0]
    n_var = Q.shape[0]
    c = n_pix // 2
    for a in range(bi):
        for v in range(n_pix):
            r = a + h + offsets[v, 0]
            o = h + offsets[v, 1]
            for b in range(bj):
                Xt[v, b] = conv[r, o + b]
        if log_term:
            for b in range(bj):
                xc = Xt[c, b]
                Xt[n_pix, b] = math.log(xc if xc > log_floor else log_floor)
        for v in range(n_var):
            lv = lin[v]
            for b in range(bj):
                Dt[v, b] = lv
            for w in range(n_var):
                q = Q[v, w]
                for b in range(bj):
                    Dt[v, b] += q * Xt[w, b]
        for v in range(n_var):
            for b in range(bj):
                Dt[v, b] *= up[a, b]
        for v in range(n_pix):
            r = a + h + offsets[v, 0]
            o = h + offsets[v, 1]
            for b in range(bj):
                out[r, o + b] += Dt[v, b]
        if log_term:
            for b in range(bj):
                xc = conv[a + h, h + b]
                if xc > log_floor:
                    out[a + h, h + b] += Dt[n_pix, b] / xc


def _row_loop_vjp(grad, conv, up):
    conv32, up32 = conv.astype(np.float32), up.astype(np.float32)
    bj = up.shape[1]
    Xt, Dt = np.empty((grad.n_var, bj), np.float32), np.empty((grad.n_var, bj), np.float32)
    out = np.zeros(conv.shape, np.float32)
    _vjp_degree2(conv32, up32, grad.h, grad._offsets, grad.log_term, np.float32(grad.log_floor), grad._lin32,
                 grad._Q32, Xt, Dt, out)
    return out


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
    term = ImageTerm(fit, single_precision=True)
    fit.prepare_numbers(truth.numbers)
    sim = fit.render_box(truth.positions, (0.0, 0.0))[0]
    conv = np.array(fit.renderer.convolution_box(*sim.shape))  # the annealing's input: vacuum included
    up = jitter.normal(0.0, 1.0, sim.shape)
    new, ref = term.gradient.convolution_vjp(conv, up), _row_loop_vjp(term.gradient, conv, up)
    out["vjp_max_rel_difference"] = float(np.abs(new - ref).max() / np.abs(ref).max())
    out["vjp_ms_row_loop"] = _median_ms(lambda: _row_loop_vjp(term.gradient, conv, up), args.calls)
    out["vjp_ms_matrix_product"] = _median_ms(lambda: term.gradient.convolution_vjp(conv, up), args.calls)
    out["vjp_speedup"] = out["vjp_ms_row_loop"] / out["vjp_ms_matrix_product"]
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
        print(f"{'adjoint Q·x, ms (f32)':24s} row loop {out['vjp_ms_row_loop']:.2f}, matrix product "
              f"{out['vjp_ms_matrix_product']:.2f}, ratio {out['vjp_speedup']:.2f} "
              f"(max rel. difference {out['vjp_max_rel_difference']:.1e})")
        print(f"EMT forces: {out['emt_ms']:.3f} ms per call")
    return out


if __name__ == "__main__":
    main()
