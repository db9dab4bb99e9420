"""``stem-refine counts``: atoms per projected column of a structure against the image's own count.

::

    stem-refine counts STRUCTURE IMAGE -o DIR [-m MODEL] [--pixel-size Å --mask FILE --no-resample]
        [--tolerance Å --radius Å --scale model|total|X] [--json]

Counts the atoms of every projected column (beam along z) of STRUCTURE (any
ase.io format, its first frame, in the image's frame in Å: a run's best.xyz
is) from IMAGE's scattering cross-sections (the intensity integrated over the
column's cell, in units of the incident beam), against a library of
σ(n) made with the surrogate MODEL (:mod:`refine.analysis.cross_sections`),
and writes DIR/counts.csv (``x,y,atoms_3d,atoms_image,cross_section,disagree,resolved``),
DIR/counts.png (the image, each column labelled with its count from the
image, the columns where STRUCTURE disagrees highlighted) and
DIR/counts.json (the summary). Prints the summary: columns, fraction equal,
fraction within ±1, and both over the columns the image resolves where some
are not (``--json``: counts.json's contents).
"""

from __future__ import annotations

import sys

from refine.cli.image_options import add_image_arguments, prepared_image
from surrogate.cli.options import add_json, add_model, add_out

help = "atoms per projected column of a structure, counted from an image's scattering cross-sections"
description = __doc__


def _scale(text):
    """'model', 'total' or a positive number."""
    import argparse

    if text in ("model", "total"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'model', 'total' or a number, got {text!r}") from None


def add_arguments(parser):
    from refine.analysis.cross_sections import DEFAULT_COUNT_TOLERANCE

    parser.add_argument("structure", metavar="STRUCTURE",
                        help="structure file (any ase.io format; the last frame), in IMAGE's frame (Å)")
    parser.add_argument("image", metavar="IMAGE", help="image in units of the incident beam (as for 'stem-refine refine')")
    add_out(parser, folder=True, help="counts.csv, counts.png, counts.json")
    add_model(parser)
    add_image_arguments(parser)
    g = parser.add_argument_group("counting")
    g.add_argument("--tolerance", type=float, default=DEFAULT_COUNT_TOLERANCE, metavar="Å",
                   help=f"projected atoms closer than this share a column (default {DEFAULT_COUNT_TOLERANCE:g})")
    g.add_argument("--radius", type=float, default=None, metavar="Å",
                   help="largest distance of a cell's pixel from its column's atoms (default: half the typical "
                        "column spacing)")
    g.add_argument("--scale", type=_scale, default="model", metavar="model|total|X",
                   help="factor on the library: 'model' (1, default), 'total' (the counts add up to STRUCTURE's "
                        "atoms) or a number")
    add_json(parser, "the summary (counts.json)")


def run(args) -> int:
    from pathlib import Path

    from refine.analysis import column_count_table, write_counts
    from refine.analysis.count_files import resolved_agreement
    from refine.workflows.inputs import load_model_or_default
    from surrogate.common import InputError, print_json, read_structure, write_json

    for name in ("tolerance", "radius"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise InputError(f"--{name} must be a positive number of Å, got {v}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {str(out)!r} exists and is not a folder")
    atoms = read_structure(args.structure)
    model, _ = load_model_or_default(args.model)
    image = prepared_image(args, model)
    table = column_count_table(atoms, image, model, tolerance=args.tolerance, radius=args.radius, scale=args.scale)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(table.summary(), structure=str(args.structure), image=str(args.image))
    write_counts(table, image, out)
    write_json(out / "counts.json", summary)
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['n_columns']} columns: {summary['fraction_equal']:.1%} of the counts from the image equal "
          f"STRUCTURE's, {summary['fraction_within_1']:.1%} within ±1 (atoms: {summary['atoms_3d']} in STRUCTURE, "
          f"{summary['atoms_image']} from the image; library scale {table.scale:.4g})", file=sys.stdout)
    resolved = resolved_agreement(summary)
    if resolved:
        print(resolved, file=sys.stdout)
    print(f"results in {out}: counts.csv, counts.png, counts.json", file=sys.stdout)
    return 0
