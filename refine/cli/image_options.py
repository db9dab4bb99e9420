"""The options that say what an image is and how noisy: shared by ``refine``, ``cost`` and friends.

One definition, so that ``--pixel-size``, ``--mask``, ``--no-resample``,
the preparation of a raw image (``--background``, ``--detector-scale`` /
``--detector-levels``, ``--crop``, ``--particle-margin``: see
:mod:`refine.io.preparation`), ``--dose``, ``--noise`` and
``--no-model-error`` mean the same on every command that reads an
experimental image. A light module (the grammar's parsers are imported when
an option is parsed). :func:`image_keywords` turns the parsed options into
the keywords of :class:`refine.workflows.ImageSettings`.
"""

from __future__ import annotations

from surrogate.cli.options import add_pixel_size

__all__ = ["add_image_arguments", "add_noise_arguments", "alpha_arg", "background_arg", "crop_arg",
           "detector_levels_arg", "detector_scale_arg", "image_keywords", "noise_arg", "prepared_image"]


def alpha_arg(text):
    """'auto', 'thermal' or a number (eV per unit χ²): the --alpha of every command that has one."""
    import argparse

    if text in ("auto", "thermal"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'thermal' or a number, got {text!r}") from None


def noise_arg(text):
    """'estimate', 'uniform', 'poisson', a σ (a number) or a σ-map file (anything else)."""
    if text in ("estimate", "uniform", "poisson"):
        return text
    try:
        return float(text)
    except ValueError:
        return text  # a σ map file: read (and checked) with the image


def _parsed(parse, text):
    """``parse(text)``, its InputError as argparse's error (``error: argument --x: ...``, exit 2)."""
    import argparse

    from surrogate.common import InputError

    try:
        return parse(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def background_arg(text):
    """'none', 'vacuum' or a number (file units): the --background of every command that reads an image."""
    from refine.io.preparation import parse_background

    return _parsed(parse_background, text)


def crop_arg(text):
    """'i0:i1,j0:j1' (file pixels), 'auto' or 'particle:K', kept as text once checked."""
    from refine.io.preparation import parse_crop

    return str(_parsed(parse_crop, text))


def detector_scale_arg(text):
    """A positive scale S: image units per fraction of the incident beam."""
    from refine.io.preparation import parse_detector

    return _parsed(parse_detector, text).scale


def detector_levels_arg(text):
    """'VAC,BEAM': the detector scan's vacuum and beam levels (BEAM > VAC), as a pair of floats."""
    from refine.io.preparation import parse_detector

    d = _parsed(parse_detector, text)
    if d.vacuum is None:
        import argparse

        raise argparse.ArgumentTypeError(f"give two levels VAC,BEAM, got {text!r} (one number is --detector-scale)")
    return (d.vacuum, d.beam)


def add_image_arguments(parser):
    """The image's calibration, mask, resampling and preparation in an "image" group of ``parser``."""
    g = parser.add_argument_group("image")
    add_pixel_size(g, "IMAGE in Å (needed when the file has no calibration; overrides it)")
    g.add_argument("--mask", metavar="FILE|zeros|auto", default=None,
                   help="array file of IMAGE's shape, non-zero = pixel used; 'zeros' to drop pixels equal to 0; "
                        "'auto': the particle (the cropped one, else the largest) and --particle-margin of vacuum, "
                        "without its neighbours")
    g.add_argument("--no-resample", dest="resample", action="store_false",
                   help="refuse an image whose pixel size differs from the model's instead of resampling it")
    g.add_argument("--background", type=background_arg, default=None, metavar="none|vacuum|VALUE",
                   help="subtract the mean of the vacuum pixels ('vacuum', found automatically) or VALUE "
                        "(file units) first; default none (the fitness fits an offset)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--detector-scale", dest="detector", type=detector_scale_arg, default=None, metavar="S",
                   help="normalise IMAGE to a fraction of the incident beam: (I − background) / S")
    d.add_argument("--detector-levels", dest="detector", type=detector_levels_arg, default=None, metavar="VAC,BEAM",
                   help="normalise with a detector scan's vacuum and beam levels: (I − VAC) / (BEAM − VAC) "
                        "(the measured vacuum replaces VAC with --background vacuum); default: neither, the "
                        "fitness fits the scale")
    g.add_argument("--crop", type=crop_arg, default=None, metavar="i0:i1,j0:j1|auto|particle:K",
                   help="keep file pixels i0:i1 (first axis), j0:j1; or 'auto': the largest particle wholly in view, "
                        "its edge and --particle-margin of vacuum; 'particle:K' the K-th largest")
    g.add_argument("--particle-margin", type=float, default=None, metavar="Å",
                   help="vacuum kept beyond the particle's edge by --crop auto and --mask auto, and the least "
                        "distance of a vacuum pixel from a particle's edge (default 5 Å)")
    g.add_argument("--undistort", action="store_true",
                   help="measure the linear scan distortion (drift, shear, pixel size) on the image's zone-axis "
                        "column lattice and undo it, last; logged and kept in summary.json")
    g.add_argument("--pixel-size-from-lattice", dest="lattice_pixel_size", action="store_true",
                   help="set the pixel size from the image's zone-axis column lattice and the element's bond "
                        "length (the file's or --pixel-size's value is the start); an isotropic scale where "
                        "--undistort also corrects shear; logged and kept in summary.json")
    return g


def image_keywords(args) -> dict:
    """The :class:`refine.workflows.ImageSettings` keywords of parsed image options (flat keywords too)."""
    keywords = {name: getattr(args, name, None) for name in ("pixel_size", "mask", "background", "detector", "crop")}
    keywords["resample"] = getattr(args, "resample", True)
    keywords["undistort"] = bool(getattr(args, "undistort", False))
    keywords["lattice_pixel_size"] = bool(getattr(args, "lattice_pixel_size", False))
    if getattr(args, "particle_margin", None) is not None:
        keywords["particle_margin"] = args.particle_margin
    return keywords


def prepared_image(args, model):
    """``args.image`` read and prepared by the parsed image options, at ``model``'s pixel size."""
    from refine.workflows import ImageSettings
    from refine.workflows.inputs import validate_image_settings

    return validate_image_settings(args.image, model, ImageSettings(**image_keywords(args)))


def add_noise_arguments(parser):
    """``--dose``, ``--noise``, ``--no-model-error`` in a "noise" group of ``parser``."""
    g = parser.add_argument_group("noise")
    g.add_argument("--dose", type=float, default=None, metavar="e/Å²",
                   help="electron dose: Poisson noise model, IMAGE in units of the incident beam")
    g.add_argument("--noise", type=noise_arg, default=None, metavar="MODEL|FILE",
                   help="noise model: 'estimate' (default: a variance growing with intensity, fitted to the "
                        "image), 'uniform' (one σ from the image), 'poisson' (IMAGE in counts), a σ in image "
                        "units, or an array file of IMAGE's shape with σ per pixel (resampled with IMAGE)")
    g.add_argument("--no-model-error", dest="model_error", action="store_false",
                   help="weigh χ² by the noise alone, leaving out the surrogate's own error (calibrated in the "
                        "model file); at high dose the refinement then fits the surrogate's error")
    return g
