"""Who breeds and who survives: parent tournaments, duplicate control, survival.

* :class:`Tournament` (cost) and :class:`ParetoTournament` (NSGA-II rank,
  crowding): parent selection with the injected generator (DEAP's
  ``selTournament`` draws from Python's global ``random``).
* :class:`Fingerprint`, :class:`SimilarityCriterion`, :func:`unique`,
  :func:`diversity`: duplicates and how different a population is.
* :class:`Survival`: the next population from parents and offspring —
  (μ+λ) truncation, generational replacement with an elite, or NSGA-II.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from deap import tools

from refine.search.evaluation import cost_of
from refine.search.settings import GASettings

__all__ = ["Tournament", "ParetoTournament", "Fingerprint", "SimilarityCriterion", "unique", "diversity",
           "Survival"]


class Tournament:
    """Tournament selection on the cost with the injected generator (DEAP's uses ``random``)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, int(size)

    def __call__(self, population, k):
        costs = np.array([cost_of(ind) for ind in population])
        chosen = []
        for _ in range(k):
            idx = self.rng.integers(len(population), size=self.size)
            chosen.append(population[int(idx[np.argmin(costs[idx])])])
        return chosen


class ParetoTournament:
    """Binary tournament on (non-domination rank, −crowding distance), NSGA-II style."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, population, k):
        rank, crowd = _rank_and_crowding(population)
        chosen = []
        for _ in range(k):
            a, b = (int(v) for v in self.rng.integers(len(population), size=2))
            if (rank[a], -crowd[a]) <= (rank[b], -crowd[b]):
                chosen.append(population[a])
            else:
                chosen.append(population[b])
        return chosen


def _rank_and_crowding(population):
    """NSGA-II non-domination rank and crowding distance of each individual, shapes ``(n,)``."""
    fronts = tools.sortNondominated(population, len(population))
    pos = {id(ind): i for i, ind in enumerate(population)}
    rank = np.zeros(len(population), dtype=int)
    crowd = np.zeros(len(population))
    for r, front in enumerate(fronts):
        # crowding distance on copies of the fitnesses, so nothing is stored on individuals
        fits = [copy.deepcopy(ind.fitness) for ind in front]
        _crowding(fits)
        for ind, fit in zip(front, fits):
            rank[pos[id(ind)]] = r
            crowd[pos[id(ind)]] = fit.crowding_dist
    return rank, crowd


def _crowding(fitnesses):
    """DEAP's crowding distance, set as ``crowding_dist`` on each of the fitness objects given."""
    n = len(fitnesses)
    dist = [0.0] * n
    values = [f.values for f in fitnesses]
    for m in range(len(values[0]) if n else 0):
        order = sorted(range(n), key=lambda i: values[i][m])
        dist[order[0]] = dist[order[-1]] = math.inf
        span = values[order[-1]][m] - values[order[0]][m]
        if span == 0:
            continue
        for a, b, c in zip(order[:-2], order[1:-1], order[2:]):
            dist[b] += (values[c][m] - values[a][m]) / span
    for f, d in zip(fitnesses, dist):
        f.crowding_dist = d


class Fingerprint:
    """Sorted distances of the atoms from the centre of mass (Å), shape ``(n,)``.

    Invariant to atom order, rotation and translation; cheap (O(n log n)).
    """

    def __call__(self, atoms) -> np.ndarray:
        pos = np.asarray(atoms.positions, dtype=float)
        return np.sort(np.linalg.norm(pos - pos.mean(axis=0), axis=1))


class SimilarityCriterion:
    """Two individuals are duplicates when both their costs and fingerprints agree.

    ``|cost₁ − cost₂| ≤ cost_tol · max(1, |cost₁|)`` and the RMS difference of
    their :class:`Fingerprint` ≤ ``fingerprint_tol`` Å. The cost (from
    ``atoms.info["cost"]``, set by the GA after evaluation) is orientation
    dependent, so the same particle in a different pose is not a duplicate.
    Picklable; usable as DEAP ``HallOfFame(similar=...)``.
    """

    def __init__(self, cost_tol: float = 1e-6, fingerprint_tol: float = 0.02):
        self.cost_tol = float(cost_tol)
        self.fingerprint_tol = float(fingerprint_tol)
        self._fp = Fingerprint()

    def __call__(self, a, b) -> bool:
        if len(a) != len(b):
            return False
        ca, cb = a.info.get("cost"), b.info.get("cost")
        if ca is not None and cb is not None and abs(ca - cb) > self.cost_tol * max(1.0, abs(ca)):
            return False
        fa, fb = self._fp(a), self._fp(b)
        return float(np.sqrt(np.mean((fa - fb) ** 2))) <= self.fingerprint_tol


def diversity(population, max_pairs: int = 2000) -> float:
    """Mean RMS fingerprint difference (Å) over pairs of individuals (all pairs up to ``max_pairs``).

    Deterministic: when there are more pairs, a fixed stride through them is used.
    """
    fp = Fingerprint()
    prints = [fp(a) for a in population]
    m = len(prints)
    if m < 2:
        return 0.0
    iu, ju = np.triu_indices(m, k=1)
    if len(iu) > max_pairs:
        step = int(np.ceil(len(iu) / max_pairs))
        iu, ju = iu[::step], ju[::step]
    F = np.asarray(prints)
    return float(np.mean(np.sqrt(np.mean((F[iu] - F[ju]) ** 2, axis=1))))


def unique(individuals, similar) -> tuple[list, list]:
    """Split into (distinct, duplicates), scanning in cost order (the best copy is kept)."""
    order = sorted(range(len(individuals)), key=lambda i: cost_of(individuals[i]))
    kept, dups = [], []
    for i in order:
        ind = individuals[i]
        if any(similar(ind, other) for other in kept):
            dups.append(ind)
        else:
            kept.append(ind)
    return kept, dups


class Survival:
    """``survive(parents, offspring, hall_of_fame) -> population``: the next μ individuals.

    ``"plus"`` replacement: duplicates (``similar``) are removed from parents
    + offspring and the best μ survive, duplicates only filling up when
    there are fewer than μ distinct. ``"generational"``: the ``elite`` best
    of the hall of fame (copies) plus the best distinct offspring. Multi-
    objective mode: NSGA-II (:func:`deap.tools.selNSGA2`) on the distinct
    parents + offspring.
    """

    def __init__(self, settings: GASettings, similar):
        self.settings, self.similar = settings, similar

    def __call__(self, parents, offspring, hall_of_fame):
        s = self.settings
        mu = s.population_size
        if s.multi_objective:
            distinct, dups = unique(list(parents) + list(offspring), self.similar)
            pool = distinct if len(distinct) >= mu else distinct + dups[: mu - len(distinct)]
            return tools.selNSGA2(pool, mu)
        if s.selection.replacement == "generational":
            elites = [copy.deepcopy(h) for h in list(hall_of_fame)[: s.selection.elite]]
            distinct, dups = unique(offspring, self.similar)
            rest = [ind for ind in distinct if not any(self.similar(ind, e) for e in elites)]
            pool = elites + rest + dups
            return pool[:mu]
        distinct, dups = unique(list(parents) + list(offspring), self.similar)
        return (distinct + dups)[:mu]
