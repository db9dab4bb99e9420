"""The run's logbook: one record per generation, in memory (DEAP) and as ``logbook.csv``.

Columns (:data:`LOGBOOK_COLUMNS`): generation, evaluations, the best
individual's cost, χ² and E, the population's minimum and mean of each,
its diversity (Å) and number of distinct individuals, α and the wall time
(s, summed over resumed segments).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from deap import tools

from surrogate.common import atomic_write_bytes
from refine.search.evaluation import best_key, cost_of
from refine.search.selection import diversity, unique

__all__ = ["LOGBOOK_NAME", "LOGBOOK_COLUMNS", "new_logbook", "generation_record", "write_logbook_csv"]

LOGBOOK_NAME = "logbook.csv"

#: columns of the logbook (and of logbook.csv), in order
LOGBOOK_COLUMNS = (
    "gen", "nevals", "best_cost", "best_chi2", "best_energy",
    "min_cost", "mean_cost", "min_chi2", "mean_chi2", "min_energy", "mean_energy",
    "diversity", "n_unique", "alpha", "elapsed_s",
)


def new_logbook() -> tools.Logbook:
    """An empty :class:`deap.tools.Logbook` with the columns :data:`LOGBOOK_COLUMNS`."""
    logbook = tools.Logbook()
    logbook.header = list(LOGBOOK_COLUMNS)
    return logbook


def generation_record(gen, nevals, population, alpha, elapsed, similar) -> dict:
    """The logbook record of generation ``gen`` (``nevals`` evaluations, ``elapsed`` s, duplicates by ``similar``)."""
    costs = np.array([cost_of(i) for i in population])
    chi2 = np.array([i.info.get("chi2", math.nan) for i in population], dtype=float)
    energy = np.array([i.info.get("energy", math.nan) for i in population], dtype=float)
    b = min(range(len(population)), key=lambda k: best_key(population[k]))

    def nanstat(f, a):
        return float(f(a)) if np.isfinite(a).any() else math.nan

    distinct, _ = unique(population, similar)
    return {
        "gen": gen, "nevals": nevals,
        "best_cost": float(costs[b]), "best_chi2": float(chi2[b]), "best_energy": float(energy[b]),
        "min_cost": float(costs.min()) if np.isfinite(costs).any() else math.nan,
        "mean_cost": nanstat(np.nanmean, np.where(np.isfinite(costs), costs, np.nan)),
        "min_chi2": nanstat(np.nanmin, chi2), "mean_chi2": nanstat(np.nanmean, chi2),
        "min_energy": nanstat(np.nanmin, energy), "mean_energy": nanstat(np.nanmean, energy),
        "diversity": diversity(population), "n_unique": len(distinct),
        "alpha": math.nan if alpha is None else float(alpha), "elapsed_s": round(elapsed, 3),
    }


def write_logbook_csv(path: Path, logbook) -> None:
    """Write ``logbook`` to ``path`` as CSV with the columns :data:`LOGBOOK_COLUMNS`, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LOGBOOK_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in logbook:
        writer.writerow({k: rec.get(k) for k in LOGBOOK_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())
