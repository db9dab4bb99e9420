"""``stem-refine report RUN_DIR``: one self-contained HTML page of a refinement, to open in any browser.

::

    stem-refine report RUN_DIR [-o FILE] [--ensemble FILE|DIR] [--json]

Writes ``RUN_DIR/report.html`` (or FILE): the run's inputs and results
(composition, image, pixel size, model, noise model, α, generations, wall
time, final cost, χ²/px, E), the experimental, simulated and difference
images, the fitness history, the column counts of ``counts.csv`` (when the
run has them) and an interactive 3-D view of ``best.xyz`` (drag to rotate,
wheel to zoom). The atoms are coloured by their spread across an ensemble
of runs when one is found (``--ensemble``: the output folder of
``stem-refine ensemble`` or its ``consensus.xyz``; by default one in
RUN_DIR, or a sibling folder whose ensemble lists this run), otherwise by
coordination; depth along the beam is one click away. Everything is inside
the one file (inline CSS and JavaScript, images as data URIs): it opens
offline and can be mailed as it is.
"""

from __future__ import annotations

from surrogate.cli.options import add_json, add_out

help = "one self-contained HTML page of a refinement: images, history, column counts, 3-D view"
description = __doc__


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output folder of 'stem-refine refine' (with summary.json)")
    add_out(parser, folder=False, required=False, help="the HTML page (default RUN_DIR/report.html)")
    parser.add_argument("--ensemble", default=None, metavar="FILE",
                        help="consensus.xyz of 'stem-refine ensemble' (or its folder): colour atoms by their spread "
                             "(default: look in RUN_DIR and beside it)")
    add_json(parser, "the report's path and contents")


def run(args) -> int:
    from refine.report import write_report
    from refine.analysis.count_files import resolved_agreement
    from surrogate.common import print_json

    result = write_report(args.run_dir, args.out, ensemble=args.ensemble)
    if args.json:
        print_json(result)
        return 0
    print(f"report   {result['report']}  ({result['bytes'] / 1e6:.2f} MB, open it in a browser)")
    print(f"atoms    {result['n_atoms']} of {result['composition']}, coloured by {result['colour_by']}")
    if result["ensemble"]:
        e = result["ensemble"]
        print(f"ensemble {e['source']}: mean spread {e['mean_spread']:.3f} Å, max {e['max_spread']:.3f} Å")
    c = result["counts"]
    if c:
        print(f"counts   {c['n_columns']} columns: {c['fraction_equal']:.1%} agree, "
              f"{c['fraction_within_1']:.1%} within ±1 atom")
        resolved = resolved_agreement(c)
        if resolved:
            print(f"         {resolved}")
    else:
        print("counts   no column counts in this run")
    return 0
