"""One report from one run folder: read it, draw the figures, lay out the page, write it atomically.

:func:`build_report` returns the page and what it holds; :func:`write_report`
also writes it (default ``RUN_DIR/report.html``) through a temporary file
moved into place, so a failed or interrupted report never leaves half a page
(or replaces an earlier good one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from refine.report import figures
from refine.report.ensemble_spread import spread_for_run
from refine.report.page import render_page
from refine.report.run_folder import read_run_folder
from refine.report.viewer_data import viewer_data

__all__ = ["REPORT_NAME", "Report", "build_report", "write_report"]

log = logging.getLogger(__name__)

#: default file name of the report in the run folder
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class Report:
    """A built report page and what is on it.

    Attributes
    ----------
    html : str
        The self-contained page.
    info : dict
        ``run``, ``composition``, ``n_atoms`` (of best.xyz), ``colour_by``
        (the viewer's first colouring), ``ensemble`` (source and spread
        summary, or None), ``counts`` (summary of counts.csv, or None),
        ``sections`` (which figures are on the page).
    """

    html: str
    info: dict


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stem-refine")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown"


def build_report(run_dir, *, ensemble=None) -> Report:
    """Build the report page of the run folder ``run_dir``.

    Parameters
    ----------
    run_dir : path
        Output folder of ``stem-refine refine`` (holds ``summary.json`` and ``best.xyz``).
    ensemble : path, optional
        A consensus file of ``stem-refine ensemble`` (or its folder) whose
        per-atom spread colours the atoms; by default one is looked for
        (:mod:`refine.report.ensemble_spread`).

    Raises
    ------
    InputError
        Not a run folder, or a file in it unreadable (one-line message naming it).
    """
    run = read_run_folder(run_dir)
    spread = spread_for_run(run.path, run.best, ensemble)
    pixel = run.pixel_size
    figs = {"images": None, "history": None, "counts": None}
    if run.images and pixel:
        figs["images"] = figures.image_panels(run.images, run.origin, pixel)
    elif run.images:
        log.warning("%s records no pixel size: the images are left out of the report", run.path / "summary.json")
    if run.logbook is not None:
        figs["history"] = figures.history_figure(run.logbook, run.summary.get("n_valid_pixels"))
    if run.counts is not None and run.counts.n_columns:
        figs["counts"] = figures.counts_overlay(run.counts, run.images.get("experimental.npy"), run.origin, pixel)
    composition = str(run.summary.get("composition") or run.best.get_chemical_formula())
    view = viewer_data(run.best, spread=None if spread is None else spread.spread, title=composition)
    ens = spread.to_dict() if spread is not None else None
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = render_page(title=composition, run_path=str(run.path.resolve()), summary=run.summary, inputs=run.inputs,
                       figures=figs, counts=run.counts, viewer=view, ensemble=ens,
                       generated=f"made by stem-refine {_version()} report on {stamp}")
    info = {"run": str(run.path), "composition": composition, "n_atoms": len(run.best),
            "colour_by": view["default"], "ensemble": ens,
            "counts": run.counts.to_dict() if run.counts is not None else None,
            "sections": [k for k, v in figs.items() if v is not None] + ["structure"]}
    return Report(html=html, info=info)


def write_report(run_dir, out=None, *, ensemble=None) -> dict:
    """Build the report of ``run_dir`` and write it to ``out`` (default ``run_dir/report.html``), atomically.

    Returns
    -------
    dict
        ``{"report": path, "bytes": size}`` and :attr:`Report.info`.
    """
    from surrogate.common import InputError, atomic_write_text

    report = build_report(run_dir, ensemble=ensemble)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the report's file name (e.g. {path / REPORT_NAME})")
    try:
        atomic_write_text(path, report.html)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return {"report": str(path), "bytes": path.stat().st_size, **report.info}
