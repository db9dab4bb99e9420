"""``stem-refine``: one console command, one module per subcommand.

Each subcommand module defines ``help`` (one line), ``description``,
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen
inside ``run`` so that ``stem-refine --help`` stays fast. The surrogate's
commands (dataset, simulate, fit, cv, sweep, predict) live in
:mod:`surrogate.cli`, the refinement's (demo, refine, batch, ensemble,
compare, cost) in :mod:`refine.cli`.

One grammar: a flag means the same thing on every subcommand that has it
(:mod:`surrogate.cli.options` defines the shared ones once: ``-o/--out``,
``--json``, ``--no-progress``, ``--seed``, ``--workers``, ``--pixel-size``,
``--sampling``, ``-m/--model``), and flags are never abbreviated
(``allow_abbrev=False``), so that a shortened flag cannot silently mean a
longer one.

Errors: an :class:`~surrogate.common.errors.InputError` (bad file, bad value,
bad flag) ends in a one-line ``error: ...`` on stderr and exit status 2.
Anything else is a bug of ours, never disguised as bad input: a short
``internal error`` line that points to ``--debug`` and exit status 1.
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "COMMANDS", "build_parser"]

#: subcommand name -> module; the surrogate's commands are defined with the surrogate
COMMANDS = {
    "demo": "refine.cli.demo",
    "fit": "surrogate.cli.fit",
    "cv": "surrogate.cli.cv",
    "sweep": "surrogate.cli.sweep",
    "predict": "surrogate.cli.predict",
    "simulate": "surrogate.cli.simulate",
    "dataset": "surrogate.cli.dataset",
    "refine": "refine.cli.refine",
    "batch": "refine.cli.batch",
    "ensemble": "refine.cli.ensemble",
    "compare": "refine.cli.compare",
    "cost": "refine.cli.cost",
    "counts": "refine.cli.counts",
    "report": "refine.cli.report",
    "model": "surrogate.cli.model",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stem-refine")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``stem-refine`` parser: one sub-parser per entry of :data:`COMMANDS` (imports each module)."""
    parser = argparse.ArgumentParser(
        prog="stem-refine",
        description="Fast HAADF-STEM surrogate images and genetic-algorithm structure refinement.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        # the module docstrings are the descriptions, with their usage blocks laid out by hand
        p = sub.add_parser(name, help=mod.help, description=getattr(mod, "description", mod.help),
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``stem-refine`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from surrogate.common import InputError

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
    except InputError as exc:
        if args.debug:
            raise
        print(f"stem-refine {args.command}: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: say so, never as bad input
        if args.debug:
            raise
        print(f"stem-refine {args.command}: internal error ({type(exc).__name__}: {_first_line(exc)}); "
              "rerun with --debug for the traceback and please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
