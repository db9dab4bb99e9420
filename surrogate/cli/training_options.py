"""The options of the commands that fit or cross-validate a surrogate (fit, cv, sweep), and what they build.

Training data come from two paired folders (``--convolution-dir``,
``--multislice-dir``, files paired by number) or from one dataset file
(``--dataset``, made by ``stem-refine dataset build``);
:func:`load_training_data` reads either. The polynomial's hyper-parameters
(paper Eq. 5-8) become a :class:`~surrogate.imaging.PolynomialSurrogate`
through :func:`model_from_args`.
"""

from __future__ import annotations

from surrogate.cli.options import add_pixel_size
from surrogate.common import InputError

__all__ = ["add_training_data_args", "add_model_args", "load_training_data", "model_from_args"]


def add_training_data_args(parser):
    """``--convolution-dir DIR --multislice-dir DIR`` (with ``--pixel-size``, ``--elements``) or ``--dataset FILE``."""
    g = parser.add_argument_group("training data (paired folders, or a dataset file)")
    g.add_argument("--convolution-dir", metavar="DIR", help="folder of convolution images (.txt/.tif/.npy)")
    g.add_argument("--multislice-dir", metavar="DIR", help="folder of multislice images paired by file number")
    g.add_argument("--dataset", metavar="FILE", help="stem-refine dataset file (.npz) instead of folders")
    add_pixel_size(g, "the folders' image files in Å (default 0.1, the paper's; datasets record their own)")
    g.add_argument("--elements", default=None, metavar="LIST",
                   help="comma-separated elements of the training structures, e.g. Pt,Mo (datasets record their own)")


def add_model_args(parser):
    """The polynomial's hyper-parameters: ``--size``, ``--degree``, ``--[no-]log-term``, ... (paper Eq. 5-8)."""
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
    g.add_argument("--saturation", type=float, default=None, metavar="F",
                   help="input saturation: each convolution pixel x enters as x0*ln(1 + x/x0), x0 = F x the "
                        "largest training pixel, for columns whose intensity saturates with height "
                        "(default: none, the paper's polynomial)")


def _log_floor(value):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--log-floor must be a number or 'auto', got {value!r}") from None


def load_training_data(args, progress=True):
    """The training pairs the options name.

    Returns
    -------
    convolution_images, multislice_images : list of numpy.ndarray
        Paired images, each pair of one shape.
    info : dict
        ``source`` (what was read, for the model's provenance), ``elements``
        (list of str), ``convolution``
        (:class:`~surrogate.imaging.ConvolutionParameters` or None) and
        ``labels`` (one short description per pair: a dataset's formula and
        particle family, or a folder pair's file number).
    """
    from surrogate.imaging import ConvolutionParameters

    if args.dataset and (args.convolution_dir or args.multislice_dir):
        raise InputError("give either --dataset or --convolution-dir/--multislice-dir, not both")
    if args.dataset:
        from surrogate.training import read_dataset

        ds = read_dataset(args.dataset)
        elements = sorted({s for a in ds.atoms for s in a.get_chemical_symbols()})
        conv_params = ConvolutionParameters.from_dict(ds.meta["convolution"]) if "convolution" in ds.meta else None
        labels = [" ".join(str(x) for x in (p.get("formula"), (p.get("recipe") or {}).get("family")) if x)
                  or f"pair {k}" for k, p in enumerate(ds.meta["pairs"])]
        info = {"source": {"dataset": str(args.dataset), "n_pairs": len(ds)}, "elements": elements,
                "convolution": conv_params, "labels": labels}
        return list(ds.convolution_images), list(ds.multislice_images), info
    if not (args.convolution_dir and args.multislice_dir):
        raise InputError("training data needed: --convolution-dir DIR --multislice-dir DIR, or --dataset FILE")
    from surrogate.training import read_pairs

    nums, conv, ms = read_pairs(args.convolution_dir, args.multislice_dir, progress=progress)
    elements = [e.strip() for e in args.elements.split(",")] if args.elements else []
    from ase.data import atomic_numbers

    for e in elements:
        if e not in atomic_numbers:
            raise InputError(f"unknown element {e!r} in --elements")
    pixel = args.pixel_size if args.pixel_size is not None else 0.1
    info = {"source": {"convolution": str(args.convolution_dir), "multislice": str(args.multislice_dir),
                       "numbers": nums}, "elements": elements,
            "convolution": ConvolutionParameters(pixel_size=pixel), "labels": [f"file {n}" for n in nums]}
    return conv, ms, info


def model_from_args(args, convolution=None):
    """An unfitted :class:`~surrogate.imaging.PolynomialSurrogate` with the options' hyper-parameters."""
    from surrogate.imaging import PolynomialSurrogate

    return PolynomialSurrogate(size=args.size, degree=args.degree, log_term=args.log_term,
                               interactions=args.interactions, log_floor=_log_floor(args.log_floor),
                               ridge=args.ridge, convolution=convolution,
                               saturation=getattr(args, "saturation", None))
