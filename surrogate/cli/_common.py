"""Arguments and helpers shared by the surrogate subcommands (fit, cv, sweep, predict)."""

from __future__ import annotations

import json
import sys

from surrogate.common import InputError

__all__ = ["add_training_data_args", "add_model_args", "load_training_data", "model_from_args", "emit_json",
           "git_free_command_line"]


def add_training_data_args(parser):
    g = parser.add_argument_group("training data (paired folders, or a dataset file)")
    g.add_argument("--convolution", metavar="DIR", help="folder of convolution images (.txt/.tif/.npy)")
    g.add_argument("--multislice", metavar="DIR", help="folder of multislice images paired by file number")
    g.add_argument("--dataset", metavar="FILE", help="stem-refine dataset file (.npz) instead of folders")
    g.add_argument("--pixel-size", type=float, default=None, metavar="Å",
                   help="pixel size of folder images in Å (default 0.1, the paper's; datasets record their own)")
    g.add_argument("--elements", default=None, metavar="LIST",
                   help="comma-separated elements of the training structures, e.g. Pt,Mo (datasets record their own)")


def add_model_args(parser):
    g = parser.add_argument_group("polynomial (paper Eq. 5-8)")
    g.add_argument("--size", "-s", type=int, default=5, help="input pixel grid side s, odd (default 5)")
    g.add_argument("--degree", "-d", type=int, default=2, help="polynomial degree (default 2)")
    g.add_argument("--log-term", dest="log_term", action="store_true", default=True,
                   help="include the log of the centre pixel (default)")
    g.add_argument("--no-log-term", dest="log_term", action="store_false")
    g.add_argument("--interactions", dest="interactions", action="store_true", default=True,
                   help="include all interaction terms (default)")
    g.add_argument("--no-interactions", dest="interactions", action="store_false")
    g.add_argument("--ridge", type=float, default=0.0, help="ridge penalty on standardized coefficients (default 0)")
    g.add_argument("--log-floor", default="auto",
                   help="floor of the log term in convolution units, or 'auto' (1e-3 x largest training pixel)")


def _log_floor(value):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--log-floor must be a number or 'auto', got {value!r}") from None


def load_training_data(args, progress=True):
    """Returns (convolution_images, multislice_images, info dict with source, elements, pixel_size, convolution)."""
    from surrogate.imaging import ConvolutionParameters

    if args.dataset and (args.convolution or args.multislice):
        raise InputError("give either --dataset or --convolution/--multislice, not both")
    if args.dataset:
        from surrogate.training import read_dataset

        ds = read_dataset(args.dataset)
        elements = sorted({s for a in ds.atoms for s in a.get_chemical_symbols()})
        conv_params = ConvolutionParameters.from_dict(ds.meta["convolution"]) if "convolution" in ds.meta else None
        info = {"source": {"dataset": str(args.dataset), "n_pairs": len(ds)}, "elements": elements,
                "convolution": conv_params}
        return list(ds.convolution_images), list(ds.multislice_images), info
    if not (args.convolution and args.multislice):
        raise InputError("training data needed: --convolution DIR --multislice DIR, or --dataset FILE")
    from surrogate.training import read_pairs

    nums, conv, ms = read_pairs(args.convolution, args.multislice, progress=progress)
    elements = [e.strip() for e in args.elements.split(",")] if args.elements else []
    from ase.data import atomic_numbers

    for e in elements:
        if e not in atomic_numbers:
            raise InputError(f"unknown element {e!r} in --elements")
    pixel = args.pixel_size if args.pixel_size is not None else 0.1
    info = {"source": {"convolution": str(args.convolution), "multislice": str(args.multislice),
                       "numbers": nums}, "elements": elements,
            "convolution": ConvolutionParameters(pixel_size=pixel)}
    return conv, ms, info


def model_from_args(args, convolution=None):
    from surrogate.imaging import PolynomialSurrogate

    return PolynomialSurrogate(size=args.size, degree=args.degree, log_term=args.log_term,
                               interactions=args.interactions, log_floor=_log_floor(args.log_floor),
                               ridge=args.ridge, convolution=convolution)


def emit_json(obj):
    json.dump(obj, sys.stdout, indent=2, default=float)
    sys.stdout.write("\n")


def git_free_command_line(argv=None):
    return "stem-refine " + " ".join(sys.argv[1:] if argv is None else argv)
