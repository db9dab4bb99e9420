"""Reading a refinement's output folder for the report, with one-line errors for anything wrong.

A run folder is what ``stem-refine refine -o RUN`` writes
(:mod:`refine.workflows.outputs`); ``summary.json`` is written last, so its
presence means the run finished and is what makes a folder a run folder.
:func:`read_run_folder` reads what the report shows:

* ``summary.json`` (required) and ``inputs.json`` (optional): the header;
* ``best.xyz`` (required): the 3-D view;
* ``experimental.npy``, ``simulated.npy``, ``difference.npy`` (optional,
  ``image[i, j]`` at ``(x0 + iΔ, y0 + jΔ)``, NaN where masked): the images;
* ``logbook.csv`` (optional): the fitness history;
* ``counts.csv`` (optional): the column counts (:mod:`refine.report.counts`).

Optional files that are absent become ``None`` and the page says so; files
that are present but unreadable (truncated, wrong shape, not JSON) are an
:class:`~surrogate.common.InputError` naming the file, because a report
that silently drops a broken result would mislead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from refine.report.counts import ColumnCountTable, read_counts
from surrogate.common import InputError

__all__ = ["IMAGE_FILES", "RunFolder", "read_run_folder"]

#: the image arrays of a run, in the order the page shows them
IMAGE_FILES = ("experimental.npy", "simulated.npy", "difference.npy")


@dataclass(frozen=True)
class RunFolder:
    """What the report needs from one run folder.

    Attributes
    ----------
    path : Path
        The run folder.
    summary : dict
        ``summary.json``.
    inputs : dict or None
        ``inputs.json`` (absent in runs made before it existed).
    best : ase.Atoms
        ``best.xyz``: the refined structure on the image (Å, beam along z).
    images : dict
        File name (:data:`IMAGE_FILES`) → ndarray of shape ``(nx, ny)``, for
        the files present.
    logbook : Path or None
        ``logbook.csv``, when present (checked to have a header and rows).
    counts : ColumnCountTable or None
        ``counts.csv``, when present.
    """

    path: Path
    summary: dict
    inputs: dict | None
    best: Atoms
    images: dict
    logbook: Path | None
    counts: ColumnCountTable | None

    @property
    def pixel_size(self) -> float | None:
        """Å per pixel of the image refined against (from ``summary.json``), or None when not recorded."""
        v = (self.summary.get("image") or {}).get("pixel_size")
        if v is None and self.inputs:
            v = self.inputs.get("pixel_size")
        return float(v) if v is not None else None

    @property
    def origin(self) -> tuple[float, float]:
        """``(x0, y0)`` in Å of pixel ``[0, 0]`` (from ``summary.json``; (0, 0) when not recorded)."""
        o = (self.summary.get("image") or {}).get("origin") or (0.0, 0.0)
        return float(o[0]), float(o[1])


def _read_json(path: Path, *, required: bool) -> dict | None:
    if not path.is_file():
        if required:
            raise InputError(f"{path.parent} is not a refinement folder (no {path.name}; "
                             "it is written when a run finishes)")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} should hold a JSON object, got {type(value).__name__}")
    return value


def _read_image(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        data = np.load(path, allow_pickle=False)  # never pickle: a result file must not run code
    except (OSError, ValueError, EOFError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path}: {why}") from None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.size == 0 or data.dtype.kind not in "fiu":
        raise InputError(f"{path} should hold a 2-D array of numbers, got "
                         f"{getattr(data, 'shape', type(data).__name__)} {getattr(data, 'dtype', '')}".rstrip())
    return np.asarray(data, dtype=float)


def _check_logbook(path: Path) -> Path | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header = fh.readline().strip().split(",")
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if "gen" not in header or "best_cost" not in header:
        raise InputError(f"{path} is not a GA logbook (its header has no 'gen' and 'best_cost' columns)")
    return path if first.strip() else None


def _read_best(path: Path) -> Atoms:
    from surrogate.common import read_structure

    if not path.is_file():
        raise InputError(f"run folder {path.parent} has no {path.name} (the refined structure)")
    return read_structure(path)


def read_run_folder(run_dir) -> RunFolder:
    """Read the files the report shows from the run folder ``run_dir``.

    Raises
    ------
    InputError
        ``run_dir`` is not a folder, has no ``summary.json`` or ``best.xyz``,
        or one of its files is unreadable; the message names the file.
    """
    path = Path(run_dir)
    if not path.exists():
        raise InputError(f"run folder {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{path} is not a folder (give the output folder of 'stem-refine refine')")
    summary = _read_json(path / "summary.json", required=True)
    inputs = _read_json(path / "inputs.json", required=False)
    best = _read_best(path / "best.xyz")
    images = {}
    for name in IMAGE_FILES:
        data = _read_image(path / name)
        if data is not None:
            images[name] = data
    shapes = {a.shape for a in images.values()}
    if len(shapes) > 1:
        raise InputError(f"the images of {path} differ in shape: "
                         + ", ".join(f"{k} {v.shape}" for k, v in images.items()))
    return RunFolder(path=path, summary=summary, inputs=inputs, best=best, images=images,
                     logbook=_check_logbook(path / "logbook.csv"), counts=read_counts(path / "counts.csv"))
