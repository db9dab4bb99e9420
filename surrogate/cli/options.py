"""The options every ``stem-refine`` subcommand spells the same way, defined once.

Each flag has one meaning across the CLI (``tests/test_cli.py`` walks every
subcommand's parser and checks it):

``-o/--out``
    Where the results go. A command that makes one artefact (fit: a model,
    predict/simulate: an image, dataset build: a dataset) takes a FILE; a
    command that makes a set of results (demo, refine, batch, ensemble,
    sweep) takes a folder, DIR.
``--json``
    The command's result as JSON on stdout (:func:`surrogate.common.print_json`)
    instead of the human-readable lines.
``--no-progress``
    No progress bar (on the commands with long work).
``--seed S``
    Seed of the ``numpy.random.Generator`` of the command's randomness.
``--workers N``
    Number of local worker processes.
``--pixel-size Å``
    Pixel size of the input image files (when a file has no calibration of its
    own, or to override it).
``--sampling Å``
    Probe step of the images a command simulates (its output).
``-m/--model FILE``
    Surrogate model file (default: the shipped default model).
"""

from __future__ import annotations

import shlex
import sys

__all__ = ["add_out", "add_json", "add_no_progress", "add_seed", "add_workers", "add_pixel_size", "add_sampling",
           "add_model", "command_line"]


def add_out(parser, *, folder: bool, help: str, required: bool = True, default=None, metavar: str | None = None):
    """``-o/--out``: the output folder (``folder=True``) or file of a command; ``help`` says what goes there."""
    kind = "output folder" if folder else "output file"
    parser.add_argument("-o", "--out", dest="out", required=required, default=default,
                        metavar=metavar or ("DIR" if folder else "FILE"), help=f"{kind}: {help}")


def add_json(parser, what: str):
    """``--json``: print ``what`` as JSON on stdout instead of the human-readable lines."""
    parser.add_argument("--json", dest="json", action="store_true", help=f"print {what} as JSON on stdout")


def add_no_progress(parser):
    """``--no-progress``: sets ``args.progress`` to False."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_seed(parser, what: str, default=0):
    """``--seed S``: seed of the numpy Generator of ``what``."""
    parser.add_argument("--seed", dest="seed", type=int, default=default, metavar="S",
                        help=f"seed of the numpy Generator of {what}")


def add_workers(parser, what: str, default=None):
    """``--workers N``: local worker processes; ``what`` says for what, and the default."""
    parser.add_argument("--workers", dest="workers", type=int, default=default, metavar="N",
                        help=f"local worker processes ({what})")


def add_pixel_size(parser, what: str):
    """``--pixel-size Å``: pixel size of the input image files (``what`` says which files, and the default)."""
    parser.add_argument("--pixel-size", dest="pixel_size", type=float, default=None, metavar="Å",
                        help=f"pixel size of {what}")


def add_sampling(parser, help: str, default=None):
    """``--sampling Å``: probe step of the images the command simulates."""
    parser.add_argument("--sampling", dest="sampling", type=float, default=default, metavar="Å",
                        help=f"probe step of the simulated images in Å ({help})")


def add_model(parser):
    """``-m/--model FILE``: surrogate model file, default the shipped model."""
    parser.add_argument("-m", "--model", dest="model", default=None, metavar="FILE",
                        help="surrogate model file (default: the shipped default model)")


def command_line(argv=None) -> str:
    """The command as typed, for provenance records: ``stem-refine`` and the shell-quoted arguments."""
    return "stem-refine " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
