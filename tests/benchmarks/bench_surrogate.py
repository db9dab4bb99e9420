"""Surrogate speed, side by side in one run (issue 2, "must show" 2).

Run from the repository root::

    python tests/benchmarks/bench_surrogate.py                 # table on stdout
    python tests/benchmarks/bench_surrogate.py --json          # machine-readable
    python tests/benchmarks/bench_surrogate.py --data DIR --images 10 --blas-threads 1

What is measured, on the published Pt–Mo 5 % images (Combs et al. 2019;
``DIR`` holds ``convolution/`` and ``multislice/``, default
``../shared/data/combs2019-ptmo5``):

(a) fit of the 378-term model (s=5, d=2, log term, interactions) on the first
    ``--images`` image pairs: :meth:`PolynomialSurrogate.fit` from the images,
    against scikit-learn ``LinearRegression`` on the same feature matrix
    (:func:`surrogate.imaging.features.features` with the same log floor), timed with
    and without building that matrix. Both fits run under the same BLAS
    thread limit (``--blas-threads``; default: the library's own setting).
(b) prediction of one convolution image (the one nearest 250×250 pixels) on
    one thread: ``predict`` (validation + allocation) and ``predict_into``
    (hot path); median of ``--repeat`` calls after warm-up, wall clock and
    thread CPU time (the machine may be shared). The general Horner kernel
    (used for models above ``UNROLL_MAX_TERMS`` terms) is timed too.
(c) convolution image of a 561-atom particle, ``Icosahedron('Pt', 6)``, on its
    default grid (0.1 Å pixels), alone: median time, allocating and with ``out=``.
(d) agreement of our predictions with scikit-learn's: relative norm
    difference ‖ours − sklearn‖ / ‖sklearn‖ on the training pixels and on the
    held-out images. The Gram matrix of these features is singular to working
    precision (neighbouring pixels of smooth images are nearly collinear), so
    two minimum-norm solvers can give different coefficients that fit the
    training pixels equally well; held-out predictions may then differ more.

Skips with a message (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# One thread for Numba (prediction must be single-threaded); set before numba loads.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "combs2019-ptmo5"


def _median_time(fn, repeat, warmup=5):
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        c1, t1 = time.thread_time(), time.perf_counter()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
    return {"median_ms": 1e3 * float(np.median(wall)), "min_ms": 1e3 * float(np.min(wall)),
            "cpu_median_ms": 1e3 * float(np.median(cpu)), "repeats": repeat}


def _once(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_fit(conv, ms, n_train, fit_repeat):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from surrogate.imaging.features import features
    from surrogate.imaging.model import PolynomialSurrogate

    train_c, train_m = conv[:n_train], ms[:n_train]
    h = 2
    ours_s = []
    model = None
    for _ in range(fit_repeat):
        _log("fitting PolynomialSurrogate ...")
        t, model = _once(lambda: PolynomialSurrogate(size=5, degree=2, log_term=True, interactions=True)
                         .fit(train_c, train_m))
        ours_s.append(t)
    floor = model.log_floor_

    def build():
        x = np.concatenate([features(c, 5, 2, True, True, floor)[:, 1:] for c in train_c])
        y = np.concatenate([m[h:-h, h:-h].ravel() for m in train_m])
        return x, y

    sk_feat_s, sk_fit_s, sk_scaled_s = [], [], []
    reg = scaled = None
    for _ in range(fit_repeat):
        _log("building the feature matrix for scikit-learn ...")
        t_feat, (x, y) = _once(build)
        _log(f"fitting LinearRegression on {x.shape[0]} x {x.shape[1]} ...")
        t_fit, reg = _once(lambda: LinearRegression().fit(x, y))
        sk_feat_s.append(t_feat)
        sk_fit_s.append(t_fit)
        # Same least-squares problem with standardized columns (as our fit does): the
        # raw columns span many decades, and lstsq's default cut-off then drops most
        # of the singular values (see reg.rank_).
        _log("fitting StandardScaler + LinearRegression ...")
        t_scaled, scaled = _once(lambda: make_pipeline(StandardScaler(), LinearRegression()).fit(x, y))
        sk_scaled_s.append(t_scaled)
        del x, y
    ours, sk_fit = min(ours_s), min(sk_fit_s)
    sk_total = min(a + b for a, b in zip(sk_feat_s, sk_fit_s))
    n_pixels = int(sum((c.shape[0] - 2 * h) * (c.shape[1] - 2 * h) for c in train_c))
    result = {
        "n_images": n_train, "n_pixels": n_pixels, "n_terms": int(len(model.coef_)),
        "ours_s": ours, "sklearn_fit_s": sk_fit, "sklearn_features_s": min(sk_feat_s),
        "sklearn_total_s": sk_total,
        "speedup_vs_sklearn_total": sk_total / ours, "speedup_vs_sklearn_fit_only": sk_fit / ours,
        "sklearn_scaled_fit_s": min(sk_scaled_s), "speedup_vs_sklearn_scaled_fit": min(sk_scaled_s) / ours,
        "sklearn_rank": int(reg.rank_),
        "sklearn_scaled_rank": int(scaled[-1].rank_), "repeats": fit_repeat,
    }
    return result, model, {"sklearn": reg, "sklearn_scaled": scaled}, floor


def bench_agreement(model, regs, floor, conv, ms, n_train):
    from surrogate.imaging.features import features

    h = model.border

    def evaluate(images, targets):
        x = np.concatenate([features(c, 5, 2, True, True, floor)[:, 1:] for c in images])
        y = np.concatenate([m[h:-h, h:-h].ravel() for m in targets])
        preds = {"ours": np.concatenate([model.predict(c).ravel() for c in images])}
        preds.update({name: reg.predict(x) for name, reg in regs.items()})
        out = {f"rms_residual_{k}": float(np.sqrt(np.mean((v - y) ** 2))) for k, v in preds.items()}
        out.update({f"rel_diff_vs_{k}": _rel(preds["ours"], v) for k, v in preds.items() if k != "ours"})
        out["rms_target"] = float(np.sqrt(np.mean((y - y.mean()) ** 2)))
        return out

    held_c, held_m = conv[n_train:], ms[n_train:]
    return {
        "training": evaluate(conv[:n_train], ms[:n_train]),
        "heldout": evaluate(held_c, held_m) if held_c else None,
        "n_heldout_images": len(held_c),
        "note": "rel_diff: |ours - sklearn| / |sklearn| over the predicted pixels; the Gram matrix is "
                "singular to working precision, so minimum-norm solutions from different solvers "
                "(and lstsq cut-offs) need not coincide, least of all away from the training pixels",
    }


def bench_predict(model, conv, repeat):
    from surrogate.imaging.features import features

    sizes = [abs(c.shape[0] * c.shape[1] - 250 * 250) for c in conv]
    img = conv[int(np.argmin(sizes))]
    h = model.border
    out = np.empty((img.shape[0] - 2 * h, img.shape[1] - 2 * h))
    _log("timing prediction ...")
    model.predict_into(img, out)  # compile / load the kernel
    fast_into = _median_time(lambda: model.predict_into(img, out), repeat)
    fast_predict = _median_time(lambda: model.predict(img), repeat)
    ref = (features(img, model.size, model.degree, model.log_term, model.interactions, model.log_floor_)
           @ model.coef_).reshape(out.shape)
    exact = _rel(model.predict(img), ref)
    fast = model._unrolled
    try:
        model._unrolled = None  # the general Horner kernel, for comparison
        model.predict_into(img, out)
        general = _median_time(lambda: model.predict_into(img, out), max(5, repeat // 10), warmup=1)
    finally:
        model._unrolled = fast
    return {"image_shape": list(img.shape), "output_shape": list(out.shape),
            "predict_into": fast_into, "predict": fast_predict, "general_kernel_predict_into": general,
            "rel_diff_vs_feature_product": exact, "fast_path": fast is not None}


def bench_convolution(repeat):
    from ase.cluster import Icosahedron

    from surrogate.imaging.convolution import ConvolutionParameters, convolution_image
    from surrogate.imaging.grid import ProbeGrid

    atoms = Icosahedron("Pt", 6)
    params = ConvolutionParameters()
    grid = ProbeGrid.around(atoms, pixel_size=params.pixel_size)
    out = np.empty(grid.shape)
    _log("timing the convolution image ...")
    alloc = _median_time(lambda: convolution_image(atoms, grid, params), repeat)
    into = _median_time(lambda: convolution_image(atoms, grid, params, out=out), repeat)
    return {"n_atoms": len(atoms), "grid_shape": list(grid.shape), "pixel_size_A": grid.pixel_size,
            "allocating": alloc, "out": into}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with convolution/ and multislice/ (default: %(default)s)")
    parser.add_argument("--images", type=int, default=10, help="training images for (a) (default 10)")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls for (b) and (c) (default 200)")
    parser.add_argument("--fit-repeat", type=int, default=1, help="fits of each kind; the best is kept (default 1)")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="BLAS thread limit for both fits in (a) (default: the library's setting)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    conv_dir, ms_dir = args.data / "convolution", args.data / "multislice"
    if not conv_dir.is_dir() or not ms_dir.is_dir():
        print(f"skipped: Combs et al. data not found at {args.data}", file=sys.stderr)
        return 0

    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    from surrogate.training.pairs import read_pairs

    _, conv, ms = read_pairs(conv_dir, ms_dir)
    if len(conv) < 2 or args.images < 1:
        print("need at least 2 image pairs and --images >= 1", file=sys.stderr)
        return 2
    n_train = min(args.images, len(conv) - 1)

    report = {"data": str(args.data), "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
              "load_average_start": list(os.getloadavg())}
    blas_default = max((p.get("num_threads", 1) for p in threadpool_info() if p.get("user_api") == "blas"),
                       default=None)
    if args.blas_threads:
        with threadpool_limits(args.blas_threads, user_api="blas"):
            fit, model, regs, floor = bench_fit(conv, ms, n_train, args.fit_repeat)
    else:
        fit, model, regs, floor = bench_fit(conv, ms, n_train, args.fit_repeat)
    fit["blas_threads"] = args.blas_threads or blas_default
    report["fit"] = fit
    _log("comparing predictions ...")
    report["agreement"] = bench_agreement(model, regs, floor, conv, ms, n_train)
    del regs

    numba.set_num_threads(1)
    with threadpool_limits(1):
        report["predict"] = bench_predict(model, conv, args.repeat)
        report["convolution"] = bench_convolution(args.repeat)
    report["load_average_end"] = list(os.getloadavg())

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _print_table(r):
    f, p, c, a = r["fit"], r["predict"], r["convolution"], r["agreement"]
    print(f"CPU: {r['cpu']} ({r['logical_cpus']} logical), load average {r['load_average_start'][0]:.1f} "
          f"-> {r['load_average_end'][0]:.1f}; data {r['data']}")
    print(f"(a) fit, {f['n_terms']} terms, {f['n_images']} images, {f['n_pixels']} pixels, "
          f"BLAS threads {f['blas_threads']}:")
    print(f"    PolynomialSurrogate.fit (from images)        {f['ours_s']:8.2f} s")
    print(f"    sklearn LinearRegression, fit only           {f['sklearn_fit_s']:8.2f} s")
    print(f"    sklearn, + building the feature matrix       {f['sklearn_total_s']:8.2f} s")
    print(f"    speed-up: {f['speedup_vs_sklearn_total']:.1f}x (vs sklearn incl. features), "
          f"{f['speedup_vs_sklearn_fit_only']:.1f}x (fit only); goal >= 10x")
    print(f"(b) predict, one thread, {p['image_shape'][0]}x{p['image_shape'][1]} convolution image -> "
          f"{p['output_shape'][0]}x{p['output_shape'][1]} (median of {p['predict_into']['repeats']}):")
    for key, label in (("predict_into", "predict_into (hot path)"), ("predict", "predict (validates, allocates)"),
                       ("general_kernel_predict_into", "general Horner kernel, for comparison")):
        t = p[key]
        print(f"    {label:40s} {t['median_ms']:7.3f} ms wall (min {t['min_ms']:.3f}), "
              f"{t['cpu_median_ms']:.3f} ms CPU")
    print(f"    goal <= 1 ms; |fused - features @ coef| / |features @ coef| = {p['rel_diff_vs_feature_product']:.1e}")
    print(f"(c) convolution image, {c['n_atoms']} atoms, {c['grid_shape'][0]}x{c['grid_shape'][1]} at "
          f"{c['pixel_size_A']} A: {c['allocating']['median_ms']:.3f} ms (allocating), "
          f"{c['out']['median_ms']:.3f} ms (out=), median of {c['out']['repeats']}")
    print(f"    sklearn LinearRegression rank {f['sklearn_rank']} of {f['n_terms'] - 1} (raw columns); "
          f"StandardScaler + LinearRegression: {f['sklearn_scaled_fit_s']:.2f} s "
          f"({f['speedup_vs_sklearn_scaled_fit']:.1f}x ours), rank {f['sklearn_scaled_rank']}")
    print("(d) predictions, ours vs sklearn: relative norm difference; RMS residual against the multislice target")
    for part in ("training", "heldout"):
        d = a[part]
        if d is None:
            continue
        label = "training pixels" if part == "training" else f"{a['n_heldout_images']} held-out images"
        print(f"    {label:20s} vs sklearn {d['rel_diff_vs_sklearn']:.2e}, vs scaled sklearn "
              f"{d['rel_diff_vs_sklearn_scaled']:.2e}; RMS residual ours {d['rms_residual_ours']:.3e}, "
              f"sklearn {d['rms_residual_sklearn']:.3e}, scaled sklearn {d['rms_residual_sklearn_scaled']:.3e} "
              f"(target RMS {d['rms_target']:.3e})")

if __name__ == "__main__":
    sys.exit(main())
