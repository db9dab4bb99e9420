"""``stem-refine cv``: cross-validate a surrogate model (paper "Model assessment").

::

    stem-refine cv (--convolution-dir DIR --multislice-dir DIR | --dataset FILE) [--size S --degree D ...]
                   [--scheme image|block|pixel --folds K --repeats R --seed S] [--parity PNG] [--json]

Prints the pooled 1 - R² and fractional RMS error over the held-out pixels,
per fold and, for the image scheme, per image (its formula and particle
family when read from a dataset), so that one kind of particle the model
renders badly shows; ``--parity`` also draws multislice against predicted pixels
(like the paper's Fig. 5). It writes no other file.
"""

from __future__ import annotations

from surrogate.cli.options import add_json, add_no_progress, add_seed
from surrogate.cli.training_options import add_model_args, add_training_data_args, load_training_data, model_from_args

help = "cross-validate a surrogate: pooled 1-R2 and fractional RMS error over held-out pixels"
description = __doc__


def add_cv_args(parser):
    """The cross-validation scheme (shared with ``stem-refine sweep``), ``--seed`` included."""
    g = parser.add_argument_group("cross-validation")
    g.add_argument("--scheme", choices=("image", "block", "pixel"), default="image",
                   help="assign whole images, b x b blocks or pixels to folds (default image)")
    g.add_argument("--folds", "-k", type=int, default=2, help="number of folds (default 2)")
    g.add_argument("--repeats", "-r", type=int, default=2, help="repeats with new assignments (default 2)")
    g.add_argument("--block", type=int, default=7, help="block side in pixels for --scheme block (default 7)")
    g.add_argument("--leave-out", type=float, default=None, metavar="X",
                   help="image scheme: hold out X images (or a fraction < 1) per repeat instead of k-fold")
    add_seed(g, "the assignment to folds (default 0)")


def add_arguments(parser):
    add_training_data_args(parser)
    add_model_args(parser)
    add_cv_args(parser)
    add_json(parser, "the results")
    add_no_progress(parser)
    parser.add_argument("--parity", metavar="PNG", help="write a parity plot (multislice vs predicted), like Fig. 5")


def cv_kwargs(args):
    """Keyword arguments of :func:`surrogate.training.cross_validate` from the options of :func:`add_cv_args`."""
    leave_out = args.leave_out
    if leave_out is not None and leave_out >= 1:
        leave_out = int(leave_out)
    return dict(scheme=args.scheme, folds=args.folds, repeats=args.repeats, leave_out=leave_out,
                block=args.block, seed=args.seed)


def run(args) -> int:
    from surrogate.common import print_json
    from surrogate.training import cross_validate

    conv, ms, info = load_training_data(args, progress=args.progress)
    model = model_from_args(args, convolution=info["convolution"])
    res = cross_validate(model, conv, ms, progress=args.progress, keep_predictions=bool(args.parity),
                         **cv_kwargs(args))
    if args.parity:
        from surrogate.common import parity_plot

        parity_plot(res.targets, res.predictions, args.parity,
                    title=f"{res.n_terms}-term model, {res.scheme} CV: 1-R2 = {res.one_minus_r2:.4f}")
    out = res.to_dict()
    labels = info.get("labels") or []
    for row in out["per_image"]:
        if row["image"] < len(labels):
            row["label"] = labels[row["image"]]
    if args.json:
        print_json(out)
    else:
        print(f"{res.n_terms} terms, {res.scheme}-based {res.folds}-fold CV x {res.repeats}: "
              f"1-R2 = {res.one_minus_r2:.5f}, fractional RMS = {res.frms:.4f} over {res.n_pixels} held-out pixels")
        for row in res.per_fold:
            print(f"  repeat {row['repeat']} fold {row['fold']}: n_test={row['n_test']} "
                  f"1-R2={row['one_minus_r2']:.5f} FRMS={row['frms']:.4f}")
        for row in out["per_image"]:
            print(f"  image {row['image']} ({row.get('label', '')}): held out {row['held_out']}x, "
                  f"1-R2={row['one_minus_r2']:.5f} FRMS={row['frms']:.4f} RMSE={row['rmse']:.2e}")
    return 0
