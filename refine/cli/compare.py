"""``stem-refine compare``: a refined structure against the truth, or against its image by multislice.

Two forms (both may be combined)::

    stem-refine compare REFINED TRUTH [--json] [--figure PNG] [--aligned XYZ]
    stem-refine compare REFINED --image IMAGE [--pixel-size Å] [-m MODEL]
                        [--with-multislice --method prism --phonons N --seed S --device cpu] [--json]

The first aligns REFINED onto TRUTH (rotation, mirror z → −z allowed by
default, one-to-one assignment per element) and reports RMSD, maximum
displacement, the fractions of atoms within 0.3 / 0.5 / 1.0 Å, atom counts
per projected column and coordination numbers. The second simulates REFINED
with abTEM on the image's grid, for the microscope MODEL was built for (its
voltage, convergence, Cs, detector, source size; PRISM f = 4 and 16
phonons unless ``--method``/``--phonons`` say otherwise), and reports 1 − R² and fractional RMS against
the image, plus the surrogate's own error on this structure (surrogate image
vs multislice image of the same atoms). Without ``--with-multislice`` only
the surrogate image is compared with IMAGE.

The results are printed (``--json``: as JSON on stdout); files are written
only when asked for: ``--figure PNG`` and ``--aligned XYZ``.
"""

from __future__ import annotations

import sys

from surrogate.cli.options import add_json, add_model, add_no_progress, add_pixel_size, add_seed

help = "compare a refined structure with the truth, or simulate it by multislice and compare with the image"
description = __doc__


def add_arguments(parser):
    parser.add_argument("refined", metavar="REFINED", help="refined structure (any ase.io format, e.g. best.xyz)")
    parser.add_argument("truth", metavar="TRUTH", nargs="?", help="true structure to compare with")
    add_json(parser, "the results")
    parser.add_argument("--figure", metavar="PNG", help="write a figure (structure overlay; with --image, images)")
    parser.add_argument("--aligned", metavar="XYZ",
                        help="write REFINED aligned onto TRUTH as extxyz, with per-atom displacement")
    g = parser.add_argument_group("structure comparison")
    g.add_argument("--rotation", choices=("full", "beam", "none"), default="full",
                   help="rotations allowed: any 3-D (default), about the beam (z) only, or none")
    g.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="do not allow the mirror image z -> -z (allowed by default: one projection "
                        "cannot tell a particle from its mirror image)")
    g.add_argument("--least-squares", dest="robust", action="store_false",
                   help="minimum-RMSD alignment and assignment instead of the robust (Tukey) default, "
                        "in which a few misplaced atoms do not pull the others")
    g.add_argument("--allow-unmatched", action="store_true",
                   help="compare different compositions: match the common atoms, report the rest")
    g.add_argument("--column-tolerance", type=float, default=0.5, metavar="Å",
                   help="projected atoms closer than this share a column (default 0.5 Å)")
    g.add_argument("--cutoff", type=float, default=None, metavar="Å",
                   help="neighbour cutoff for coordination numbers (default 1.2 x sum of covalent radii)")
    g.add_argument("--per-atom", action="store_true", help="include per-atom displacements in --json")
    g = parser.add_argument_group("image comparison")
    g.add_argument("--image", metavar="IMAGE", help="experimental image the structure was refined against")
    g.add_argument("--with-multislice", dest="with_multislice", action="store_true",
                   help="also simulate REFINED with abTEM (slow)")
    add_model(g)
    add_pixel_size(g, "IMAGE in Å (needed when the file has no calibration; overrides it)")
    g.add_argument("--method", choices=("prism", "multislice"), default=None, help="abTEM method (default prism)")
    g.add_argument("--phonons", type=int, default=None, metavar="N", help="frozen-phonon configurations (default 16)")
    g.add_argument("--interpolation", type=int, default=None, metavar="F", help="PRISM interpolation factor")
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="abTEM device (default cpu)")
    add_seed(g, "the frozen-phonon displacements (default 0)")
    add_no_progress(g)


def _check(args):
    from surrogate.common import InputError

    if args.with_multislice and args.image is None:
        raise InputError("--with-multislice needs --image IMAGE")
    if args.truth is None and args.image is None:
        raise InputError("nothing to compare with: give TRUTH, or --image IMAGE [--with-multislice]")
    if args.image is None and any(v is not None for v in (args.method, args.phonons, args.interpolation, args.model)):
        raise InputError("--model/--method/--phonons/--interpolation only apply with --image IMAGE")
    if args.phonons is not None and args.phonons < 1:
        raise InputError(f"--phonons must be a positive integer, got {args.phonons}")
    if args.column_tolerance <= 0:
        raise InputError(f"--column-tolerance must be positive, got {args.column_tolerance}")
    if args.cutoff is not None and args.cutoff <= 0:
        raise InputError(f"--cutoff must be positive, got {args.cutoff}")


def _print_structure(d, out):
    print(f"RMSD               {d['rmsd']:.4f} Å over {d['n_matched']} matched atoms"
          + (" (mirror image)" if d["mirrored"] else ""), file=out)
    print(f"max displacement   {d['max_displacement']:.4f} Å", file=out)
    for key in sorted(k for k in d if k.startswith("within_")):
        print(f"{key:<18} {100 * d[key]:.1f} %", file=out)
    if d["unmatched_refined"] or d["unmatched_truth"]:
        print(f"unmatched          {len(d['unmatched_refined'])} refined, {len(d['unmatched_truth'])} truth atoms",
              file=out)
    c = d["columns"]
    print(f"columns            {c['n_columns_truth']} in truth; {100 * c['fraction_equal']:.1f} % with the same "
          f"atom count, mean |Δn| {c['mean_abs_difference']:.2f}", file=out)
    cn = d["coordination"]
    print(f"coordination       truth {cn['truth']}", file=out)
    print(f"  (index = CN)     refined {cn['refined']}; same CN for {100 * cn['fraction_same']:.1f} % of pairs",
          file=out)


def _print_image(d, out):
    for key in ("multislice_vs_image", "surrogate_vs_image", "surrogate_vs_multislice"):
        if key in d:
            m = d[key]
            print(f"{key.replace('_', ' '):<24} 1-R² {m['one_minus_r2']:.4g}   fRMS {m['frms']:.4g}", file=out)
            beyond = m.get("beyond_training_range")
            if beyond and beyond["pixels"] > 0:
                print(f"  beyond the model's training range: {100 * beyond['pixels']:.2g} % of the pixels, "
                      f"{100 * beyond['error_share']:.0f} % of the squared error (the polynomial extrapolates)",
                      file=out)
    if "multislice_seconds" in d:
        print(f"multislice time          {d['multislice_seconds']:.1f} s", file=out)


def run(args) -> int:
    from surrogate.common import InputError, print_json, read_structure

    _check(args)
    refined = read_structure(args.refined)
    result = {"refined": str(args.refined)}
    figure_done = False
    if args.truth is not None:
        from refine.analysis import compare_structures, plot_comparison

        truth = read_structure(args.truth)
        cmp = compare_structures(refined, truth, mirror=args.mirror, rotation=args.rotation,
                                 allow_unmatched=args.allow_unmatched, robust=args.robust,
                                 column_tolerance=args.column_tolerance,
                                 cutoff=args.cutoff)
        result["truth"] = str(args.truth)
        result.update(cmp.to_dict(per_atom=args.per_atom))
        if args.figure:
            plot_comparison(cmp, args.figure)
            figure_done = True
        if args.aligned:
            from refine.analysis import write_atoms

            write_atoms(cmp.aligned, args.aligned)
    if args.image is not None:
        import surrogate
        from refine.analysis import compare_with_image, plot_image_comparison
        from refine.io import read_image

        if args.model:
            from surrogate.imaging import load_model

            model = load_model(args.model)
        else:
            model = surrogate.default_model()
        image = read_image(args.image, pixel_size=args.pixel_size,
                           target_pixel_size=model.convolution_parameters.pixel_size)
        try:
            img = compare_with_image(refined, image, model, multislice=args.with_multislice, method=args.method,
                                     phonons=args.phonons, interpolation=args.interpolation, device=args.device,
                                     seed=args.seed, progress=args.progress)
        except ImportError as exc:  # e.g. CuPy for --device gpu
            raise InputError(f"cannot simulate: {exc}") from None
        if args.figure:
            path = args.figure
            if figure_done:  # keep the structure figure; put the images next to it
                from pathlib import Path

                p = Path(path)
                path = p.with_name(p.stem + "_images" + (p.suffix or ".png"))
            plot_image_comparison(img, path)
        img.pop("images")
        result["image"] = str(args.image)
        result.update(img)
    if args.json:
        print_json(result)
    else:
        out = sys.stdout
        if args.truth is not None:
            _print_structure(result, out)
        if args.image is not None:
            _print_image(result, out)
    return 0
