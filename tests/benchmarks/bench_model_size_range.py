"""Does a model trained on small particles render large ones? Models scored image by image on held-out abTEM pairs.

A model build (``stem-refine model build``) trains on particles of its
``--sizes`` range (default 120–200 atoms) and cross-validates on them; a
user's particle can be five times larger, with columns twice as tall. This
runner scores model files on the image pairs of other builds (their
``OUT.work/dataset.npz``, or the per-particle files of an unfinished one,
``OUT.work/dataset.npz.work/``): 1 − R² over each image's interior pixels, the
prediction's best scale against abTEM (1 = no bias), and the fraction of
pixels outside the model's training range. With ``--pool`` it also fits
the model's polynomial on the pooled pairs of the given builds and scores
each held-out build (leave one build out): how much the large particles'
pairs change the model::

    python tests/benchmarks/bench_model_size_range.py --pairs au_big.npz.work --model au.npz
    python tests/benchmarks/bench_model_size_range.py --pairs au_big.npz.work --model au.npz \\
        --pool au.npz.work --pool au_big.npz.work

The pairs must be simulated for the model's microscope (same convolution
σ and pixel size); this is checked.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

import numpy as np


def read_pairs(work) -> list:
    """(convolution, multislice, atoms, convolution parameters) of a build's work folder, a dataset or particle files."""
    from surrogate.training.datasets import Dataset

    work = Path(work)
    if work.is_file():
        files = [work]
    elif (work / "dataset.npz").is_file():
        files = [work / "dataset.npz"]
    else:
        files = sorted(Path(p) for p in glob.glob(os.path.join(work, "dataset.npz.work", "particle-*.npz")))
    if not files:
        raise SystemExit(f"{work}: no dataset.npz and no particle files")
    pairs = []
    for f in files:
        ds = Dataset.read(f)
        for c, m, a in zip(ds.convolution_images, ds.multislice_images, ds.atoms):
            pairs.append((np.asarray(c, float), np.asarray(m, float), a, ds.meta.get("convolution")))
    return pairs


def _check_microscope(model, pairs, where):
    conv = model.convolution_parameters
    for *_, params in pairs:
        if params and not (np.isclose(params["sigma"], conv.sigma, rtol=1e-3)
                           and np.isclose(params["pixel_size"], conv.pixel_size, rtol=1e-3)):
            raise SystemExit(f"{where}: pairs made with σ {params['sigma']} Å at {params['pixel_size']} Å, the model "
                             f"has σ {conv.sigma} Å at {conv.pixel_size} Å: not the same microscope")


def score(model, pairs) -> dict:
    """Per-image and pooled 1 − R² of ``model`` on ``pairs`` (interior pixels, as the CV scores them)."""
    from surrogate.training.validation import pooled_metrics

    h = model.border
    rows, t_all, p_all = [], [], []
    for conv, ms, atoms, _ in pairs:
        t = ms[h:ms.shape[0] - h, h:ms.shape[1] - h].ravel()
        p = model.predict(conv).ravel()
        m = pooled_metrics(t, p)
        heights = np.ptp(atoms.positions[:, 2]) if len(atoms) else 0.0
        rows.append({"atoms": len(atoms), "family": atoms.info.get("family", "?"), "thickness": round(float(heights), 1),
                     "one_minus_r2": m["one_minus_r2"], "scale": float(p @ t / (p @ p)),
                     "out_of_domain": model.out_of_domain_fraction(conv)})
        t_all.append(t)
        p_all.append(p)
    pooled = pooled_metrics(np.concatenate(t_all), np.concatenate(p_all))
    return {"pooled_one_minus_r2": pooled["one_minus_r2"], "pooled_frms": pooled["frms"], "images": rows}


def leave_one_build_out(model, pools: dict) -> dict:
    """For each build, the model's polynomial fitted on the other builds' pairs and scored on it."""
    from sklearn.base import clone

    out = {}
    for name, pairs in pools.items():
        train = [p for other, ps in pools.items() if other != name for p in ps]
        fitted = clone(model).fit([p[0] for p in train], [p[1] for p in train])
        out[name] = score(fitted, pairs)
    return out


def main(argv=None):
    from surrogate.imaging import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", action="append", required=True, metavar="WORK",
                    help="a build's work folder (or dataset file) whose pairs the models are scored on; repeatable")
    ap.add_argument("--model", action="append", default=[], metavar="MODEL", help="a model file to score; repeatable")
    ap.add_argument("--pool", action="append", default=[], metavar="WORK",
                    help="builds pooled for leave-one-build-out fits of the first model's polynomial")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    results = {"scores": {}, "leave_one_build_out": {}}
    for model_path in args.model:
        model = load_model(model_path)
        for work in args.pairs:
            pairs = read_pairs(work)
            _check_microscope(model, pairs, work)
            r = score(model, pairs)
            results["scores"][f"{model_path} on {work}"] = r
            print(f"{model_path} on {work}: pooled 1 − R² {r['pooled_one_minus_r2']:.4f}, "
                  f"fractional RMS {r['pooled_frms']:.3f}")
            for row in r["images"]:
                print(f"  {row['family']:22s} {row['atoms']:5d} atoms, {row['thickness']:5.1f} Å thick: "
                      f"1 − R² {row['one_minus_r2']:.4f}, scale {row['scale']:.3f}, "
                      f"outside the training range {100 * row['out_of_domain']:.1f} %")
    if args.pool:
        if not args.model:
            raise SystemExit("--pool needs a --model (its polynomial settings are refitted)")
        model = load_model(args.model[0])
        pools = {w: read_pairs(w) for w in args.pool}
        for w, pairs in pools.items():
            _check_microscope(model, pairs, w)
        lobo = leave_one_build_out(model, pools)
        results["leave_one_build_out"] = lobo
        for name, r in lobo.items():
            print(f"fitted without {name}, scored on it: pooled 1 − R² {r['pooled_one_minus_r2']:.4f}")
            for row in r["images"]:
                print(f"  {row['family']:22s} {row['atoms']:5d} atoms: 1 − R² {row['one_minus_r2']:.4f}, "
                      f"scale {row['scale']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
