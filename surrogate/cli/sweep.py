"""``stem-refine sweep``: CV error vs number of terms over hyper-parameters (paper Fig. 4).

::

    stem-refine sweep (--convolution-dir DIR --multislice-dir DIR | --dataset FILE)
                      [--sizes 1,3,5 --degrees 1,2,3 --max-terms N] [cross-validation options] [-o DIR] [--json]

Cross-validates every (s, degree, log term, interactions) model with at most
``--max-terms`` terms and writes ``DIR/sweep.csv`` and ``DIR/sweep.png``
(default DIR: ./sweep).
"""

from __future__ import annotations

from surrogate.cli.cv import add_cv_args, cv_kwargs
from surrogate.cli.options import add_json, add_no_progress, add_out
from surrogate.cli.training_options import add_training_data_args, load_training_data
from surrogate.common import InputError

help = "cross-validate many (s, degree, log, interactions) models: CSV + error-vs-terms figure"
description = __doc__


def _ints(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser):
    add_training_data_args(parser)
    add_cv_args(parser)
    parser.add_argument("--sizes", default="1,3,5", help="input pixel grid sides (default 1,3,5)")
    parser.add_argument("--degrees", default="1,2,3", help="degrees (default 1,2,3)")
    parser.add_argument("--max-terms", type=int, default=1000, help="skip models with more terms (default 1000)")
    add_out(parser, folder=True, required=False, default="sweep",
            help="gets sweep.csv and sweep.png (default ./sweep)")
    add_json(parser, "the rows")
    add_no_progress(parser)


def run(args) -> int:
    import csv
    import io
    from pathlib import Path

    from surrogate.common import atomic_write_text, print_json, sweep_plot
    from surrogate.imaging import PolynomialSurrogate
    from surrogate.training import sweep

    conv, ms, info = load_training_data(args, progress=args.progress)
    rows = sweep(PolynomialSurrogate(convolution=info["convolution"]), conv, ms, sizes=_ints(args.sizes),
                 degrees=_ints(args.degrees), max_terms=args.max_terms, progress=args.progress, **cv_kwargs(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    sweep_plot(rows, out / "sweep.png", title=f"{args.scheme} CV")
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            print(f"s={r['size']} d={r['degree']} log={int(r['log_term'])} inter={int(r['interactions'])} "
                  f"terms={r['n_terms']:5d}  1-R2={r['one_minus_r2']:.5f}  FRMS={r['frms']:.4f}")
        print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0
