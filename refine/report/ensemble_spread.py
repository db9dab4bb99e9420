"""The per-atom spread of an ensemble, put onto the atoms of one run's ``best.xyz``.

``stem-refine ensemble RUN... -o DIR`` writes ``DIR/consensus.xyz``: the
consensus structure with each atom's spread across the runs (Å) in its
``spread``, ``spread_xy`` and ``spread_z`` arrays, in the medoid run's frame
and atom order (:mod:`refine.analysis.ensemble`). The report colours the
atoms of *this* run's answer, so the consensus is matched to ``best.xyz``
atom by atom with the ensemble's own alignment
(:func:`refine.analysis.align_structures`: rotation, mirror z → −z allowed,
one-to-one per element) and each atom of ``best.xyz`` takes the spread of
its partner.

Where the ensemble comes from (:func:`find_ensemble`), first found wins:

1. ``--ensemble PATH``: a consensus file, or a folder holding
   ``consensus.xyz``; an error when it is missing, has no ``spread`` or does
   not match the run's composition.
2. ``best.xyz`` itself carrying a ``spread`` array.
3. ``RUN_DIR/consensus.xyz``, then ``RUN_DIR/*/consensus.xyz``.
4. A sibling folder ``RUN_DIR/../*/`` whose ``ensemble.json`` lists this run
   (its ``best.xyz`` or the folder) among its sources: the layout that
   ``stem-refine ensemble runs/s1 runs/s2 -o runs/ensemble`` makes.

Found ensembles (2–4) that do not fit the run (other composition) are
skipped with a warning; the atoms are then coloured by coordination.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from surrogate.common import InputError

__all__ = ["CONSENSUS_NAME", "EnsembleSpread", "find_ensemble", "spread_for_run"]

log = logging.getLogger(__name__)

CONSENSUS_NAME = "consensus.xyz"


@dataclass(frozen=True)
class EnsembleSpread:
    """Per-atom spread across an ensemble, in the atom order of the run's ``best.xyz``.

    Attributes
    ----------
    spread, spread_xy, spread_z : ndarray, shape (n_atoms,)
        Å (see :mod:`refine.analysis.ensemble`); ``spread_xy``/``spread_z``
        NaN when the file has none.
    source : str
        The consensus file, or ``best.xyz`` when it carried the spread.
    rmsd : float
        RMSD (Å) of ``best.xyz`` to the consensus after alignment (0 when read from ``best.xyz``).
    n_runs : int or None
        Runs in the ensemble (from ``ensemble.json`` beside the consensus), when known.
    """

    spread: np.ndarray
    spread_xy: np.ndarray
    spread_z: np.ndarray
    source: str
    rmsd: float
    n_runs: int | None

    def to_dict(self) -> dict:
        return {"source": self.source, "n_runs": self.n_runs, "rmsd_to_consensus": self.rmsd,
                "mean_spread": float(np.mean(self.spread)), "max_spread": float(np.max(self.spread))}


def _consensus_file(path: Path) -> Path:
    return path / CONSENSUS_NAME if path.is_dir() else path


def _listed_sources(summary_file: Path) -> list[Path]:
    try:
        sources = json.loads(summary_file.read_text(encoding="utf-8")).get("sources") or []
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for s in sources:
        p = Path(str(s))
        # sources are recorded as typed, relative to where 'stem-refine ensemble' ran: try the likely places
        bases = [Path.cwd(), summary_file.parent.parent, summary_file.parent] if not p.is_absolute() else [Path("/")]
        out.extend((b / p).resolve() for b in bases)
    return out


def find_ensemble(run_dir, explicit=None) -> list[Path]:
    """Candidate consensus files for the run in ``run_dir``, in the order of the module docstring (2 excluded).

    With ``explicit`` the list is that one file (an :class:`InputError` when it does not exist).
    """
    run_dir = Path(run_dir)
    if explicit is not None:
        f = _consensus_file(Path(explicit))
        if not f.is_file():
            raise InputError(f"ensemble {explicit}: no {CONSENSUS_NAME} there" if Path(explicit).is_dir()
                             else f"ensemble file {explicit} does not exist")
        return [f]
    found = [run_dir / CONSENSUS_NAME] + sorted(run_dir.glob(f"*/{CONSENSUS_NAME}"))
    run_ids = {(run_dir / "best.xyz").resolve(), run_dir.resolve()}
    for sib in sorted(run_dir.resolve().parent.glob("*/ensemble.json")):
        if sib.parent != run_dir.resolve() and run_ids & set(_listed_sources(sib)):
            found.append(sib.parent / CONSENSUS_NAME)
    return [f for f in found if f.is_file()]


def _n_runs(consensus_file: Path) -> int | None:
    try:
        n = json.loads((consensus_file.parent / "ensemble.json").read_text(encoding="utf-8")).get("n_runs")
        return int(n) if n is not None else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _array(atoms: Atoms, name: str) -> np.ndarray:
    a = atoms.arrays.get(name)
    return np.asarray(a, dtype=float).reshape(-1) if a is not None else np.full(len(atoms), np.nan)


def _match(best: Atoms, consensus_file: Path) -> EnsembleSpread:
    from refine.analysis import align_structures
    from surrogate.common import read_structure

    consensus = read_structure(consensus_file)
    if "spread" not in consensus.arrays:
        raise InputError(f"{consensus_file} has no per-atom 'spread' (write it with 'stem-refine ensemble')")
    if sorted(consensus.get_chemical_symbols()) != sorted(best.get_chemical_symbols()):
        raise InputError(f"ensemble {consensus_file} is of {consensus.get_chemical_formula()}, "
                         f"the run of {best.get_chemical_formula()}")
    al = align_structures(best, consensus, mirror=True, rotation="full")
    idx = al.reference_index  # one-to-one: the compositions are equal
    return EnsembleSpread(spread=_array(consensus, "spread")[idx], spread_xy=_array(consensus, "spread_xy")[idx],
                          spread_z=_array(consensus, "spread_z")[idx], source=str(consensus_file), rmsd=al.rmsd,
                          n_runs=_n_runs(consensus_file))


def spread_for_run(run_dir, best: Atoms, explicit=None) -> EnsembleSpread | None:
    """The ensemble spread of ``best`` (the run's ``best.xyz``), or None when no ensemble is found.

    Raises
    ------
    InputError
        ``explicit`` is given but missing, unreadable, without ``spread``
        or of another composition.
    """
    if explicit is None and "spread" in best.arrays:
        return EnsembleSpread(spread=_array(best, "spread"), spread_xy=_array(best, "spread_xy"),
                              spread_z=_array(best, "spread_z"), source=str(Path(run_dir) / "best.xyz"),
                              rmsd=0.0, n_runs=None)
    for f in find_ensemble(run_dir, explicit):
        try:
            return _match(best, f)
        except InputError as exc:
            if explicit is not None:
                raise
            log.warning("ignoring ensemble %s: %s", f, exc)
    return None
