"""The options that say what an image is and how noisy: shared by ``refine``, ``cost`` and friends.

One definition, so that ``--pixel-size``, ``--mask``, ``--no-resample``,
``--dose``, ``--noise`` and ``--no-model-error`` mean the same on every
command that reads an experimental image. A light module (no heavy imports).
"""

from __future__ import annotations

from surrogate.cli.options import add_pixel_size

__all__ = ["add_image_arguments", "add_noise_arguments", "alpha_arg", "noise_arg"]


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


def add_image_arguments(parser):
    """``--pixel-size``, ``--mask``, ``--no-resample`` in an "image" group of ``parser``."""
    g = parser.add_argument_group("image")
    add_pixel_size(g, "IMAGE in Å (needed when the file has no calibration; overrides it)")
    g.add_argument("--mask", metavar="FILE", default=None,
                   help="array file of IMAGE's shape, non-zero = pixel used; or 'zeros' to drop pixels equal to 0")
    g.add_argument("--no-resample", dest="resample", action="store_false",
                   help="refuse an image whose pixel size differs from the model's instead of resampling it")
    return g


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
