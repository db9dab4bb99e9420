"""``stem-refine predict``: surrogate image of a convolution image or of a structure.

::

    stem-refine predict INPUT [-m MODEL] -o IMAGE [--png PNG] [--margin Å] [--json]

INPUT is a convolution image (.txt/.tif/.npy, at the model's pixel size) or a
structure file (any ``ase.io`` format; its convolution image is made on a
probe grid around the atoms). The surrogate image goes to one file
(``-o``, .npy or .tif, with its grid recorded as ``stem-refine simulate``
records it).
"""

from __future__ import annotations

from pathlib import Path

from surrogate.cli.options import add_json, add_model, add_out
from surrogate.common import InputError

help = "surrogate HAADF image of a convolution image file or a structure file"
description = __doc__


def add_arguments(parser):
    parser.add_argument("input", metavar="INPUT",
                        help="convolution image (.txt/.tif/.npy) or structure (any ase.io format, e.g. .xyz)")
    add_model(parser)
    add_out(parser, folder=False, metavar="IMAGE", help="the surrogate image to write (.npy or .tif)")
    parser.add_argument("--png", metavar="PNG", help="also write a picture")
    parser.add_argument("--margin", type=float, default=4.0, metavar="Å",
                        help="structures: vacuum margin of the probe grid around the atoms (default 4 Å)")
    add_json(parser, "a summary (shape, pixel size, out-of-domain fraction)")


def _load_model(path):
    from surrogate import default_model
    from surrogate.imaging import load_model

    return load_model(path) if path else default_model()


def run(args) -> int:
    from surrogate.common import IMAGE_SUFFIXES, print_json, read_image_array, write_image
    from surrogate.imaging import ProbeGrid

    model = _load_model(args.model)
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input file {src} does not exist")
    pixel = model.convolution_parameters.pixel_size
    if src.suffix.lower() in IMAGE_SUFFIXES:
        conv = read_image_array(src)
        image = model.predict(conv)
        # the prediction covers the convolution image's interior (border h cropped)
        h = model.border
        grid = ProbeGrid.like(image, pixel, origin=(h * pixel, h * pixel))
        kind = "convolution image"
        n_ood = model.out_of_domain_fraction(conv)
    else:
        from surrogate.common import read_structure
        from surrogate.imaging import convolution_image

        atoms = read_structure(src)
        grid = ProbeGrid.around(atoms, pixel_size=pixel, margin=args.margin)
        image = model.simulate(atoms, grid)
        kind = f"structure of {len(atoms)} atoms"
        n_ood = model.out_of_domain_fraction(convolution_image(atoms, grid, model.convolution_parameters))
    out = write_image(args.out, image, grid, meta={"kind": "surrogate", "input": str(src)})
    if args.png:
        from surrogate.common import image_panels

        image_panels({"surrogate image": image}, args.png, pixel_size=pixel, title=src.name)
    summary = {"input": str(src), "kind": kind, "output": str(out), "shape": list(image.shape),
               "pixel_size": pixel, "out_of_domain_fraction": n_ood}
    if args.json:
        print_json(summary)
    else:
        print(f"surrogate image {image.shape[0]}x{image.shape[1]} of {kind} -> {out}")
        if n_ood > 0:
            print(f"warning: {100 * n_ood:.2f} % of convolution pixels lie outside the model's training range")
    return 0
