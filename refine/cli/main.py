"""``stem-refine``: one console command, one module per subcommand.

Each subcommand module defines ``help`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; heavy imports happen inside ``run`` so that
``stem-refine --help`` stays fast. User errors (bad files, bad values) end in
a one-line ``error: ...`` on stderr and exit status 2; ``--debug`` shows the
full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "COMMANDS", "CLIError"]

#: subcommand name -> module under refine.cli
COMMANDS = {
    "demo": "demo",
    "fit": "fit",
    "cv": "cv",
    "sweep": "sweep",
    "predict": "predict",
    "simulate": "simulate",
    "dataset": "dataset",
    "refine": "refine",
    "batch": "batch",
    "ensemble": "ensemble",
    "compare": "compare",
}


class CLIError(Exception):
    """A user error detected by the CLI itself (message shown as is)."""


def _user_errors():
    # Import lazily: the exception families live in the two packages.
    from surrogate.exceptions import SurrogateError

    errors = [CLIError, SurrogateError, ValueError, OSError, KeyError]
    try:
        from refine.exceptions import RefineError

        errors.append(RefineError)
    except ImportError:  # pragma: no cover - refine not yet importable
        pass
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stem-refine",
        description="Fast HAADF-STEM surrogate images and genetic-algorithm structure refinement.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(f"refine.cli.{modname}")
        except ModuleNotFoundError as exc:
            if exc.name == f"refine.cli.{modname}":
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=mod.help, description=getattr(mod, "description", mod.help))
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``stem-refine`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # the level on the console handler too: a run's log file (refine.log) lowers its loggers to INFO
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.level == logging.NOTSET:
            handler.setLevel(level)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = f"missing or unknown key {msg}"
        print(f"stem-refine {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
