"""``stem-refine sweep``: CV error vs number of terms over hyper-parameters (paper Fig. 4)."""

from __future__ import annotations

from surrogate.cli._common import add_training_data_args, emit_json, load_training_data
from surrogate.cli.cv import add_cv_args, cv_kwargs
from surrogate.common import InputError

help = "cross-validate many (s, degree, log, interactions) models: CSV + error-vs-terms figure"


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
    parser.add_argument("--out", "-o", default="sweep", metavar="DIR", help="writes DIR/sweep.csv and DIR/sweep.png")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args) -> int:
    import csv
    import io
    from pathlib import Path

    from surrogate.common import atomic_write_text

    from surrogate.imaging import PolynomialSurrogate
    from surrogate.common import sweep_plot
    from surrogate.training import sweep

    conv, ms, info = load_training_data(args)
    rows = sweep(PolynomialSurrogate(convolution=info["convolution"]), conv, ms, sizes=_ints(args.sizes),
                 degrees=_ints(args.degrees), max_terms=args.max_terms, progress=True, **cv_kwargs(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    sweep_plot(rows, out / "sweep.png", title=f"{args.scheme} CV")
    if args.json:
        emit_json(rows)
    else:
        for r in rows:
            print(f"s={r['size']} d={r['degree']} log={int(r['log_term'])} inter={int(r['interactions'])} "
                  f"terms={r['n_terms']:5d}  1-R2={r['one_minus_r2']:.5f}  FRMS={r['frms']:.4f}")
        print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0
