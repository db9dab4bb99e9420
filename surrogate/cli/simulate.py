"""``stem-refine simulate convolution|multislice STRUCTURE -o IMAGE``: a simulated HAADF image of a structure.

::

    stem-refine simulate convolution|multislice STRUCTURE -o IMAGE
        [--sampling Å --margin Å | --sampling Å --origin X0 Y0 --shape NX NY]
        [--sigma Å] [--method prism|multislice --interpolation F --phonons N --seed S --device cpu|gpu --threads N]
        [--json] [--no-progress]

STRUCTURE is any file ``ase.io`` reads. IMAGE is one file, ``.npy`` or
``.tif``/``.tiff`` (float64, ``image[i, j]`` = probe at ``origin + (i, j)·Δ``,
first axis x, Δ = ``--sampling``).

Pixel size and grid are always recorded:

* TIFF: the ImageDescription tag holds JSON (tifffile's "shaped" form, so
  ``tifffile.imread`` reads it back as a 2-D array)
  ``{"stem-refine": 1, "shape": [nx, ny], "kind": ..., "grid": {"origin": [x0, y0], "shape": [...],
  "pixel_size": Δ}, "units": "Å", "parameters": {...}}`` and the X/Y
  resolution tags hold 1e8/Δ pixels per cm (so ImageJ/Fiji shows Δ).
* NPY: the same JSON in a sidecar ``IMAGE.npy.json`` next to the file.

(:func:`surrogate.common.write_image`; ``stem-refine refine`` reads the
calibration back, so it needs no ``--pixel-size`` for these files.)
"""

from __future__ import annotations

from surrogate.cli.options import add_json, add_no_progress, add_out, add_sampling, add_seed

help = "simulate a convolution or multislice (abTEM) HAADF image of a structure"
description = __doc__


def add_arguments(parser):
    parser.add_argument("kind", choices=("convolution", "multislice"), help="simulation method")
    parser.add_argument("structure", metavar="STRUCTURE", help="structure file (any ase.io format)")
    add_out(parser, folder=False, metavar="IMAGE", help="the image to write (.npy, .tif, .tiff)")
    add_sampling(parser, "default 0.1", default=0.1)
    parser.add_argument("--margin", type=float, default=4.0, metavar="Å",
                        help="Å of vacuum around the particle (default 4)")
    parser.add_argument("--origin", type=float, nargs=2, metavar=("X0", "Y0"),
                        help="probe position of pixel (0, 0) in Å (default: particle extent minus margin)")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("NX", "NY"), help="pixels along x and y")
    add_json(parser, "a summary (image file, kind, shape, sampling)")
    add_no_progress(parser)
    g = parser.add_argument_group("convolution")
    g.add_argument("--sigma", type=float, default=0.38, metavar="Å", help="PSF σ in Å (default 0.38)")
    g = parser.add_argument_group("multislice")
    g.add_argument("--method", choices=("prism", "multislice"), default="prism", help="abTEM method (default prism)")
    g.add_argument("--interpolation", type=int, default=4, metavar="F",
                   help="PRISM interpolation factor (default 4)")
    g.add_argument("--phonons", type=int, default=16, metavar="N", help="frozen-phonon configurations (default 16)")
    add_seed(g, "the frozen-phonon displacements (default 0)")
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="abTEM device (gpu needs CuPy)")
    g.add_argument("--threads", type=int, metavar="N", help="threads (default: all cores)")


def _grid(args, atoms):
    from surrogate.common import InputError
    from surrogate.imaging import ProbeGrid

    if (args.origin is None) != (args.shape is None):
        raise InputError("--origin and --shape go together")
    if args.origin is not None:
        return ProbeGrid(tuple(args.origin), tuple(args.shape), args.sampling)
    return ProbeGrid.around(atoms, pixel_size=args.sampling, margin=args.margin)


def run(args) -> int:
    from surrogate.common import print_json, read_structure, write_image

    atoms = read_structure(args.structure)
    grid = _grid(args, atoms)
    if args.kind == "convolution":
        from surrogate.imaging import ConvolutionParameters, convolution_image

        params = ConvolutionParameters(sigma=args.sigma, pixel_size=args.sampling)
        image = convolution_image(atoms, grid, params)
        pdict = params.to_dict()
        units = "κ·Z^n per Å²"
    else:
        from surrogate.groundtruth import HAADFParameters, haadf_image

        params = HAADFParameters(method=args.method, interpolation=args.interpolation, phonons=args.phonons)
        image = haadf_image(atoms, grid, params, seed=args.seed, device=args.device, num_threads=args.threads,
                            progress=args.progress)
        pdict = dict(params.to_dict(), seed=args.seed, device=args.device)
        units = "fraction of incident beam"
    meta = {"kind": args.kind, "structure": str(args.structure), "intensity": units, "parameters": pdict}
    write_image(args.out, image, grid, meta=meta)
    if args.json:
        print_json({"output": str(args.out), "kind": args.kind, "structure": str(args.structure),
                    "shape": list(image.shape), "sampling": grid.pixel_size, "origin": list(grid.origin)})
    else:
        print(f"wrote {args.out}: {args.kind} image {image.shape[0]}x{image.shape[1]} pixels of "
              f"{grid.pixel_size:g} Å")
    return 0
