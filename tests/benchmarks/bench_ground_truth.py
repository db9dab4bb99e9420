"""Ground-truth cost and accuracy: multislice vs PRISM f=2, f=4 vs the surrogate, one particle.

Run from the repository root::

    python tests/benchmarks/bench_ground_truth.py [--atoms 300] [--patch 16] [--threads 1]

On one ~300-atom Pt cuboctahedron (seeded) with the paper's microscope, it
simulates a ``patch × patch`` probe patch at the particle's centre *in the
full image's simulation cell* (so every method sees the same potential and
the same frozen-phonon configuration) with full multislice and with PRISM at
interpolation 2 and 4, and prints

* CPU seconds per full image (the particle's whole probe grid, 0.1 Å pixels) per
  frozen-phonon configuration. Each method is run on the patch (which also
  warms up FFTW plans), then on a single probe (≈ the per-image fixed cost:
  potential, PRISM S-matrix); PRISM also on a ``--timing-patch`` square, since
  its per-probe cost is too small to resolve on the small patch. The line
  t = t_fixed + n_probes·t_probe is extrapolated to the full grid;
* the surrogate (convolution image + fused predict of the shipped default
  model, or a model fitted on the fly when none is shipped) on the full
  image, best of several runs;
* ratios of all times to the surrogate's, and
* PRISM-vs-multislice agreement 1 − R² on the patch (no source-size blur, so
  the comparison is not smoothed; the 16-phonon multislice average would not
  change the comparison since both see the same configuration).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def one_minus_r2(y, yhat):
    y = np.ravel(y)
    yhat = np.ravel(yhat)
    return float(np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2))


def patch_grid(grid, side):
    from surrogate.imaging.grid import ProbeGrid

    i0 = grid.shape[0] // 2 - side // 2
    j0 = grid.shape[1] // 2 - side // 2
    return ProbeGrid((grid.origin[0] + i0 * grid.pixel_size, grid.origin[1] + j0 * grid.pixel_size),
                     (side, side), grid.pixel_size)


def timed(fn, *a, **k):
    """Result and CPU seconds of the whole process (all threads).

    CPU time, not wall time: on a shared machine the wall time of a run
    depends on the other jobs, its CPU time hardly does (run with --threads 1
    to read the numbers as single-core seconds)."""
    t0 = time.process_time()
    out = fn(*a, **k)
    return out, time.process_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atoms", type=int, default=300)
    ap.add_argument("--patch", type=int, default=16,
                    help="side in probes of the patch compared with multislice (default 16)")
    ap.add_argument("--timing-patch", type=int, default=64,
                    help="side in probes of the patch timing PRISM's per-probe cost (default 64)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.groundtruth.multislice import HAADFParameters, haadf_image
    from surrogate.groundtruth.particles import make_particle

    atoms = make_particle("cuboctahedron", args.atoms, np.random.default_rng(args.seed))
    grid = ProbeGrid.around(atoms)
    n_full = grid.shape[0] * grid.shape[1]
    big = patch_grid(grid, args.patch)
    small = patch_grid(grid, 1)
    print(f"particle: {len(atoms)} Pt atoms (cuboctahedron), full grid {grid.shape} = {n_full} probes; "
          f"patch {big.shape} at the centre", flush=True)

    methods = {"multislice": dict(method="multislice"), "PRISM f=2": dict(method="prism", interpolation=2),
               "PRISM f=4": dict(method="prism", interpolation=4)}
    common = dict(phonons=1, source_fwhm=0.0)
    images, seconds = {}, {}
    timing = patch_grid(grid, args.timing_patch)
    n_b, n_t = big.shape[0] * big.shape[1], timing.shape[0] * timing.shape[1]
    for name, kw in methods.items():
        params = HAADFParameters(**kw, **common)
        run = dict(seed=args.seed, num_threads=args.threads, cell_grid=grid)
        # The first run also warms up (FFTW plans); then a one-probe run ≈ the
        # per-image fixed cost (potential, PRISM S-matrix).
        img_b, t_b = timed(haadf_image, atoms, big, params, **run)
        _, t_1 = timed(haadf_image, atoms, small, params, **run)
        if kw["method"] == "prism":
            # PRISM's per-probe cost (~ms) is lost in the S-matrix time on a
            # small patch: time it on a larger one.
            _, t_t = timed(haadf_image, atoms, timing, params, **run)
            per_probe = max((t_t - t_1) / (n_t - 1), 0.0)
            detail = f"1 probe {t_1:6.1f} s, {timing.shape[0]}x{timing.shape[1]} probes {t_t:6.1f} s"
        else:
            per_probe = max((t_b - t_1) / (n_b - 1), 0.0)
            detail = f"1 probe {t_1:6.1f} s, {big.shape[0]}x{big.shape[1]} probes {t_b:6.1f} s"
        fixed = max(t_1 - per_probe, 0.0)
        seconds[name] = fixed + per_probe * n_full
        images[name] = img_b
        print(f"  {name:11s}: {detail} -> fixed {fixed:6.1f} s + {per_probe * 1e3:7.2f} ms/probe"
              f" -> {seconds[name]:9.1f} CPU s per image per phonon configuration", flush=True)

    # The surrogate on the full grid: convolution on the padded grid, fused predict.
    from surrogate.imaging.model import PolynomialSurrogate

    try:
        from surrogate import default_model

        model = default_model()
        source = "shipped default model"
    except Exception:  # no shipped model yet: fit one on this particle (timing only)
        conv_b = convolution_image(atoms, big)
        model = PolynomialSurrogate(size=5, degree=2, log_term=True, interactions=True).fit([conv_b], [images["PRISM f=4"]])
        source = "model fitted on the patch (timing only)"
    padded = grid.padded(model.border)
    conv = np.empty(padded.shape)
    out = np.empty(grid.shape)

    def surrogate():
        convolution_image(atoms, padded, model.convolution_parameters, out=conv)
        return model.predict_into(conv, out)

    surrogate()  # compile
    runs = []
    for _ in range(7):
        _, t = timed(surrogate)
        runs.append(t)
    seconds["surrogate"] = min(runs)
    print(f"  surrogate  : {seconds['surrogate'] * 1e3:.2f} ms per image ({model.n_terms} terms, {source}; best of 7)")

    ref = images["multislice"]
    agreement = {name: one_minus_r2(ref, images[name]) for name in ("PRISM f=2", "PRISM f=4")}
    print()
    print(f"{'method':12s} {'CPU s/image/phonon':>19s} {'x surrogate':>12s} {'CPU s/image, 16 ph.':>20s} {'1-R2 vs multislice':>19s}")
    for name in ("multislice", "PRISM f=2", "PRISM f=4", "surrogate"):
        phon = seconds[name] * (16 if name != "surrogate" else 1)
        r2 = f"{agreement[name]:.4f}" if name in agreement else ("0 (ref.)" if name == "multislice" else "-")
        print(f"{name:12s} {seconds[name]:19.4f} {seconds[name] / seconds['surrogate']:12.3g} {phon:20.1f} {r2:>19s}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds_per_image_per_phonon": seconds, "one_minus_r2": agreement,
                                               "n_probes": n_full, "patch": args.patch, "atoms": len(atoms)},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
