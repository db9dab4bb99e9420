"""The report of a refinement: one self-contained HTML page a microscopist opens (``stem-refine report``).

In data-flow order:

* :mod:`~refine.report.run_folder`: read a run folder (summary, inputs, best.xyz, images, logbook, counts),
  one-line errors for anything unreadable.
* :mod:`~refine.report.counts`: ``counts.csv`` (atoms per column from the 3-D answer and from the image).
* :mod:`~refine.report.ensemble_spread`: find an ensemble of the run and put its per-atom spread on best.xyz.
* :mod:`~refine.report.viewer_data`: what the 3-D viewer draws (positions, radii, colour fields and legends).
* :mod:`~refine.report.figures`: the figures as PNG ``data:`` URIs (matplotlib Agg).
* :mod:`~refine.report.page`: the HTML page (inline ``style.css`` and ``viewer.js``, a canvas viewer of
  shaded spheres, no libraries, no network).
* :mod:`~refine.report.build`: all of it for one folder, written atomically (:func:`write_report`).
"""

from refine.report.build import REPORT_NAME, Report, build_report, write_report
from refine.report.counts import COUNTS_COLUMNS, ColumnCountTable, read_counts
from refine.report.ensemble_spread import EnsembleSpread, spread_for_run
from refine.report.page import NO_COUNTS
from refine.report.run_folder import RunFolder, read_run_folder
from refine.report.viewer_data import viewer_data

__all__ = ["COUNTS_COLUMNS", "ColumnCountTable", "EnsembleSpread", "NO_COUNTS", "REPORT_NAME", "Report", "RunFolder",
           "build_report", "read_counts", "read_run_folder", "spread_for_run", "viewer_data", "write_report"]
