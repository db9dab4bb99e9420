"""Depth blur (β) and input saturation (F) of the surrogate, scored on columns taller than the training set's.

The paper's convolution image does not see depth, and one polynomial of it
cannot follow a column whose HAADF intensity saturates with height: models
trained on particles of ≤ 7–16 atoms per column are 1 − R² = 0.08–0.5 off
abTEM on taller columns (docs/benchmarks.md). This scans the two options of
:class:`surrogate.imaging.ConvolutionParameters` (``depth_blur``) and
:class:`surrogate.imaging.PolynomialSurrogate` (``saturation``) on image pairs
made by abTEM, refitting the same simulations for every setting (the
convolution images are made again from the stored structures):

* ``cv``: 2-fold × 2 image cross-validation (seed 0), as ``model build``
  reports it, on the training pairs;
* ``held_out``: 1 − R² of the model fitted on all training pairs on each
  held-out pair (``--held-out``: datasets of taller columns), and on the
  committed 800-atom Pt [110] reference (``--pt-reference``, 9–10 atoms per
  column, 8 phonons) when the pairs are Pt at the paper's microscope;
* with ``--held-out``, also ``cv_merged``: the same CV with the held-out pairs
  in the training set.

::

    python tests/benchmarks/bench_depth_blur.py --dataset surrogate/data/default_dataset.npz --pt-reference \\
        --beta 0,0.005,0.01,0.015,0.02 --saturation none,1,0.5
    python tests/benchmarks/bench_depth_blur.py --dataset au.npz.work/dataset.npz --held-out tall.npz \\
        --beta 0,0.01,0.02 --saturation none,0.5 --write-models DIR

The held-out tall Au rods: ``stem-refine dataset build --spec SPEC -o tall.npz``
with the Au build's spec (``au.npz.work/dataset.npz.work/spec.json``), its
particles replaced by four ``column_rod`` of 150–220 atoms with
``column_heights`` [14, 24] and seed 24 (four images, ~40 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
PT_REFERENCE = HERE.parents[0] / "data" / "tall" / "abtem_110_800_f4_p8.npy"


def _values(text: str) -> list:
    return [None if v.strip().lower() == "none" else float(v) for v in text.split(",") if v.strip()]


def _pt_reference():
    """The 800-atom Pt [110] truncated octahedron and its committed abTEM image (bench_tall_columns.py)."""
    from bench_tall_columns import test_particle

    return test_particle("110", 800, "Pt"), np.load(PT_REFERENCE)


def main(argv=None) -> int:
    from surrogate.imaging import PolynomialSurrogate, ProbeGrid, convolution_image, save_model
    from surrogate.imaging.convolution import ConvolutionParameters
    from surrogate.training import cross_validate, pooled_metrics, read_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True, help="the training pairs (a dataset .npz)")
    p.add_argument("--held-out", type=Path, action="append", default=[], help="datasets of taller columns")
    p.add_argument("--pt-reference", action="store_true",
                   help="also score the committed 800-atom Pt [110] abTEM image (paper's microscope)")
    p.add_argument("--beta", default="0,0.01", help="depth blurs β to try (default 0,0.01)")
    p.add_argument("--saturation", default="none", help="input saturations F to try, 'none' for none")
    p.add_argument("--size", type=int, default=5)
    p.add_argument("--degree", type=int, default=2)
    p.add_argument("--write-models", type=Path, default=None,
                   help="folder for the fitted models (training pairs only; with held-out pairs too: '+held')")
    args = p.parse_args(argv)

    ds = read_dataset(args.dataset)
    held = [read_dataset(path) for path in args.held_out]
    base = ConvolutionParameters.from_dict(ds.meta["convolution"])
    ref = _pt_reference() if args.pt_reference else None
    if ref is not None and not PT_REFERENCE.is_file():
        p.error(f"{PT_REFERENCE} is missing")
    rows = []
    for beta in _values(args.beta):
        params = replace(base, depth_blur=float(beta or 0.0))
        conv = [convolution_image(a, g, params) for a, g in zip(ds.atoms, ds.grids)]
        ms = [np.asarray(m, float) for m in ds.multislice_images]
        hconv = [convolution_image(a, g, params) for h in held for a, g in zip(h.atoms, h.grids)]
        hms = [np.asarray(m, float) for h in held for m in h.multislice_images]
        for sat in _values(args.saturation):
            kw = dict(size=args.size, degree=args.degree, saturation=sat, convolution=params)
            row = {"beta": params.depth_blur, "saturation": sat}
            row["cv"] = cross_validate(PolynomialSurrogate(**kw), conv, ms, scheme="image", folds=2, repeats=2,
                                       seed=0).one_minus_r2
            model = PolynomialSurrogate(**kw).fit(conv, ms, elements=sorted({s for a in ds.atoms
                                                                             for s in a.get_chemical_symbols()}))
            h = model.border
            row["held_out"] = [pooled_metrics(m[h:-h, h:-h].ravel(), model.predict(c).ravel())["one_minus_r2"]
                               for c, m in zip(hconv, hms)]
            if held:
                res = cross_validate(PolynomialSurrogate(**kw), conv + hconv, ms + hms, scheme="image", folds=2,
                                     repeats=2, seed=0)
                row["cv_merged"] = res.one_minus_r2
            if ref is not None:
                atoms, image = ref
                grid = ProbeGrid.around(atoms, pixel_size=params.pixel_size)
                pred = model.simulate(atoms, grid)
                near = image > 0.02 * image.max()  # the particle's pixels
                row["pt_800"] = pooled_metrics(image[near], pred[near])["one_minus_r2"]
            if args.write_models:
                args.write_models.mkdir(parents=True, exist_ok=True)
                tag = f"b{params.depth_blur:g}_F{sat if sat is None else f'{sat:g}'}"
                save_model(model, args.write_models / f"model_{tag}.npz")
                if held:
                    both = PolynomialSurrogate(**kw).fit(conv + hconv, ms + hms, elements=model.elements_)
                    save_model(both, args.write_models / f"model_{tag}+held.npz")
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else
                                  [round(x, 3) for x in v] if isinstance(v, list) else v) for k, v in row.items()}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
