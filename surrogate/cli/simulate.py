"""``stem-refine simulate convolution|multislice STRUCTURE --out IMAGE``.

STRUCTURE is any file ``ase.io`` reads. IMAGE is ``.npy`` or ``.tif``/``.tiff``
(float64, ``image[i, j]`` = probe at ``origin + (i, j)·Δ``, first axis x).

Pixel size and grid are always recorded:

* TIFF: the ImageDescription tag holds JSON (tifffile's "shaped" form, so
  ``tifffile.imread`` reads it back as a 2-D array)
  ``{"stem-refine": 1, "shape": [nx, ny], "kind": ..., "grid": {"origin": [x0, y0], "shape": [...],
  "pixel_size": Δ}, "units": "Å", "parameters": {...}}`` and the X/Y
  resolution tags hold 1e8/Δ pixels per cm (so ImageJ/Fiji shows Δ).
* NPY: the same JSON in a sidecar ``IMAGE.npy.json`` next to the file.

(:func:`surrogate.training.pairs.write_image`; ``stem-refine refine`` reads the
calibration back.)
"""

from __future__ import annotations


help = "simulate a convolution or multislice (abTEM) HAADF image of a structure"


def add_arguments(parser):
    parser.add_argument("kind", choices=("convolution", "multislice"), help="simulation method")
    parser.add_argument("structure", metavar="STRUCTURE", help="structure file (any ase.io format)")
    parser.add_argument("--out", required=True, metavar="IMAGE", help="output image (.npy, .tif, .tiff)")
    parser.add_argument("--pixel-size", type=float, default=0.1, help="probe step in Å (default 0.1)")
    parser.add_argument("--margin", type=float, default=4.0, help="Å of vacuum around the particle (default 4)")
    parser.add_argument("--origin", type=float, nargs=2, metavar=("X0", "Y0"),
                        help="probe position of pixel (0, 0) in Å (default: particle extent minus margin)")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("NX", "NY"), help="pixels along x and y")
    g = parser.add_argument_group("convolution")
    g.add_argument("--sigma", type=float, default=0.38, help="PSF σ in Å (default 0.38)")
    g = parser.add_argument_group("multislice")
    g.add_argument("--method", choices=("prism", "multislice"), default="prism", help="abTEM method (default prism)")
    g.add_argument("--interpolation", type=int, default=4, help="PRISM interpolation factor (default 4)")
    g.add_argument("--phonons", type=int, default=16, help="frozen-phonon configurations (default 16)")
    g.add_argument("--seed", type=int, default=0, help="frozen-phonon seed (default 0)")
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="abTEM device (gpu needs CuPy)")
    g.add_argument("--threads", type=int, help="threads (default: all cores)")


def _grid(args, atoms):
    from surrogate.common import InputError
    from surrogate.imaging import ProbeGrid

    if (args.origin is None) != (args.shape is None):
        raise InputError("--origin and --shape go together")
    if args.origin is not None:
        return ProbeGrid(tuple(args.origin), tuple(args.shape), args.pixel_size)
    return ProbeGrid.around(atoms, pixel_size=args.pixel_size, margin=args.margin)


def run(args) -> int:
    from surrogate.training import write_image

    from refine.cli.structures import read_structure

    atoms = read_structure(args.structure)
    grid = _grid(args, atoms)
    if args.kind == "convolution":
        from surrogate.imaging import ConvolutionParameters, convolution_image

        params = ConvolutionParameters(sigma=args.sigma, pixel_size=args.pixel_size)
        image = convolution_image(atoms, grid, params)
        pdict = params.to_dict()
        units = "κ·Z^n per Å²"
    else:
        from surrogate.groundtruth import HAADFParameters, haadf_image

        params = HAADFParameters(method=args.method, interpolation=args.interpolation, phonons=args.phonons)
        image = haadf_image(atoms, grid, params, seed=args.seed, device=args.device, num_threads=args.threads,
                            progress=True)
        pdict = dict(params.to_dict(), seed=args.seed, device=args.device)
        units = "fraction of incident beam"
    meta = {"kind": args.kind, "structure": str(args.structure), "intensity": units, "parameters": pdict}
    write_image(args.out, image, grid, meta=meta)
    print(f"wrote {args.out}: {args.kind} image {image.shape[0]}x{image.shape[1]} pixels of {grid.pixel_size:g} Å")
    return 0
