"""A refinement's log file in its output folder (``refine.log``).

A run validates its inputs before it creates the output folder (bad input
leaves nothing behind), so :func:`run_log` holds the records back until the
run opens the file (:meth:`FolderLogHandler.open`); from then on every record
is appended and flushed at once, so a killed run keeps its log. Records of a
run that fails before that are dropped with it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RUN_LOG_NAME", "FolderLogHandler", "run_log"]

#: the log file a refinement writes into its output folder
RUN_LOG_NAME = "refine.log"


class FolderLogHandler(logging.Handler):
    """Appends INFO and above to ``path`` once :meth:`open` is called; holds them until then."""

    def __init__(self, path):
        super().__init__(logging.INFO)
        self.path = Path(path)
        self.pending: list[str] = []
        self.opened = False
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def open(self):
        """Start writing (the folder exists now): the held-back records first."""
        self.opened = True
        self._flush_pending()

    def _flush_pending(self):
        if self.pending:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(self.pending) + "\n")
            self.pending.clear()

    def emit(self, record):
        try:
            self.pending.append(self.format(record))
            if self.opened:
                self._flush_pending()
        except Exception:  # noqa: BLE001 - logging must never end a run
            self.handleError(record)


@contextmanager
def run_log(out_dir, loggers=("refine", "surrogate")):
    """Log INFO and above of ``loggers`` to ``out_dir/refine.log`` (appended) while the block runs.

    Yields the :class:`FolderLogHandler`; call its ``open()`` once the folder
    exists. The named loggers are lowered to INFO for the block (and restored
    after): handlers elsewhere that have no level of their own see those
    records too — the CLI gives its console handler its own level.
    """
    handler = FolderLogHandler(Path(out_dir) / RUN_LOG_NAME)
    saved = []
    for name in loggers:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
