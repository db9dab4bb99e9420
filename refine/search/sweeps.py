"""Deterministic sweeps: try a family of moves on one structure, keep what lowers the cost.

Each sweep makes its trial structures from the current best, repairs them,
relaxes them with ``relax(atoms)`` (in place), scores them with
``evaluate(atoms) -> cost`` and keeps a trial only when it beats the current
cost. They undo what one projection cannot tell apart and local moves cannot
reach:

* :func:`fill_vacancies`: a surface atom into each interior vacancy;
* :func:`image_guided_sweep`: surface atoms from too-bright to too-dark
  spots of the difference image;
* :func:`dark_site_sweep`: for each too-dark spot, whichever surface atom
  fills it best, at either end of its line of sight;
* :func:`far_site_sweep`: low-coordinated atoms to the best empty site at
  the other end of their line of sight;
* :func:`adatom_flip`: every adatom to the other end of its line of sight
  at once, then the dark sites filled (a joint move: islands of adatoms
  whose single moves do not pay);
* :func:`transfer_patches`: islands of surface atoms carried through the
  particle under the same columns;
* :func:`shift_sectors`: wedges and caps slid along the columns by one
  lattice period;
* (:meth:`refine.search.operators.DepthMoveMutation.polish`: single atoms to
  the other end of their line of sight).

Every sweep returns ``(best, cost, n_trials, n_accepted)`` and leaves its
input unchanged. Their only randomness is in the overlap repairs, from the
``rng`` passed in (a generator, or an int that seeds a fresh one; default
0): the same input gives the same sweep. :mod:`refine.search.polish` chains
them. Lengths in Å, costs in the fitness's units (eV).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from surrogate.common.geometry import coordination_numbers
from refine.search.difference import smoothed_difference
from refine.search.geometry import NEIGHBOUR_FACTOR, repair_min_distance
from refine.search.sites import (
    beam_column,
    beam_sectors,
    depth_sides,
    interior_vacancies,
    surface_hollows,
    surface_patches,
    surface_sites,
    transfer_patch,
)

__all__ = ["fill_vacancies", "image_guided_sweep", "dark_site_sweep", "far_site_sweep", "adatom_flip",
           "transfer_patches", "shift_sectors"]


def _best_trial(trials, relax: Callable, evaluate: Callable):
    """Relax (``relax(atoms)``, in place) and score (``evaluate(atoms) -> cost``) each trial structure.

    Returns ``((cost, atoms) of the lowest cost or None, number of trials)``; the sweeps below keep it
    only when it beats their current cost.
    """
    best, n = None, 0
    for trial in trials:
        relax(trial)
        cost = evaluate(trial)
        n += 1
        if best is None or cost < best[0]:
            best = (cost, trial)
    return best, n


def _with_atom_at(ind, positions, k: int, site):
    """A copy of ``ind`` with ``positions`` (Å, shape ``(n, 3)``) and atom ``k`` put on ``site``."""
    trial = ind.copy()
    p = np.array(positions, dtype=float)
    p[k] = site
    trial.positions = p
    return trial


def _settle(trial, relax: Callable, evaluate: Callable, min_distance: float, rng, nn_distance: float) -> float:
    """Repair ``trial`` to ``min_distance``, relax it (in place) and return its cost."""
    repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
    relax(trial)
    return evaluate(trial)


def _greedy_rounds(best, best_cost: float, rounds: int, trials_of: Callable, relax: Callable, evaluate: Callable):
    """Rounds of a sweep: the best of ``trials_of(best)`` (relaxed, scored) replaces ``best`` while it is better.

    ``trials_of(best)`` yields the trial structures of one round, or returns None when there are none. At
    most ``rounds`` rounds (at least one). Returns ``(best, cost, n_trials, n_accepted)``.
    """
    n_trials = n_accepted = 0
    for _ in range(max(1, int(rounds))):
        trials = trials_of(best)
        if trials is None:
            break
        trial_best, n = _best_trial(trials, relax, evaluate)
        n_trials += n
        if trial_best is None or not trial_best[0] < best_cost:
            break
        best_cost, best = trial_best
        n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def transfer_patches(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                     seeds: int = 6, sizes: Sequence[int] = (3, 5, 7, 10, 14), rounds: int = 2,
                     cost: float | None = None, rng: np.random.Generator | int = 0):
    """Deterministic sweep: move each :func:`surface_patches` patch to the far side; keep what lowers the cost.

    A refinement can put a whole island of surface atoms on the wrong side
    of the particle along the beam: the projection is right, the energy a
    few eV too high, and every single-atom depth move makes an adatom and
    is rejected. Each trial moves one patch (:func:`transfer_patch`),
    repairs the minimum distance, is relaxed with ``relax(atoms)`` and
    scored with ``evaluate(atoms) -> cost``; the best trial is kept when it
    beats the current cost, and the sweep starts again from it (at most
    ``rounds`` sweeps). ``cost``: the cost of ``ind`` when already known.
    ``rng`` only feeds the overlap repair: a generator, or an int that
    seeds a fresh one (default 0, so the sweep is deterministic). Returns
    ``(best, cost, n_trials, n_accepted)``; ``ind`` is not changed.
    """
    rng = np.random.default_rng(rng)
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)

    def transfers(best):
        for patch in surface_patches(best.positions, nn_distance, sizes=sizes, seeds=seeds):
            trial = best.copy()
            trial.positions = transfer_patch(best.positions, patch, nn_distance)
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            yield trial

    return _greedy_rounds(best, best_cost, rounds, transfers, relax, evaluate)


def fill_vacancies(ind, relax: Callable, evaluate: Callable, nn_distance: float, *,
                   column_radius: float | None = None, candidates: int = 2):
    """Deterministic sweep: fill each interior vacancy of ``ind`` with a surface atom if the cost drops.

    For each site of :func:`interior_vacancies`, the ``candidates``
    least-coordinated atoms of its column along the beam (within
    ``column_radius`` of its x, y, default half a bond: moving one of them
    keeps the projection nearly unchanged) and the ``candidates``
    least-coordinated atoms overall are tried in turn; each trial is relaxed
    with ``relax(atoms)`` and scored with ``evaluate(atoms) -> cost``, and
    the best one is kept when it beats the current cost. A vacancy inside a
    particle and an adatom on its surface give nearly the same projection,
    and local moves cannot carry an atom inside. Returns ``(best, cost,
    n_trials, n_accepted)``; ``ind`` is not changed.
    """
    best = ind.copy()
    best_cost = evaluate(best)
    radius = 0.5 * nn_distance if column_radius is None else float(column_radius)
    n_trials = n_accepted = 0
    for site in interior_vacancies(best.positions, nn_distance):
        pos = np.array(best.positions)
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        column = np.flatnonzero(np.hypot(pos[:, 0] - site[0], pos[:, 1] - site[1]) <= radius)
        movers = list(column[np.argsort(cn[column], kind="stable")][:candidates])
        movers += list(np.argsort(cn, kind="stable")[:candidates])
        def fills(best=best, site=site):
            for k in dict.fromkeys(int(m) for m in movers):
                if cn[k] >= 12:  # an interior atom: moving it only moves the vacancy
                    continue
                trial = best.copy()
                p = np.array(trial.positions)
                p[k] = site
                trial.positions = p
                yield trial

        trial_best, n = _best_trial(fills(), relax, evaluate)
        n_trials += n
        if trial_best is not None and trial_best[0] < best_cost:
            best_cost, best = trial_best
            n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def _one_per_line_of_sight(points, order, radius: float, limit: int, *, min_separation: float = 0.0) -> list[int]:
    """Indices from ``order`` (best first), at most one per line of sight (x, y within ``radius``), ≤ ``limit``."""
    chosen: list[int] = []
    for k in order:
        k = int(k)
        if all(np.hypot(*(points[k, :2] - points[j, :2])) > radius
               and np.linalg.norm(points[k] - points[j]) > min_separation for j in chosen):
            chosen.append(k)
            if len(chosen) >= limit:
                break
    return chosen


def image_guided_sweep(ind, relax: Callable, evaluate: Callable, difference: Callable, nn_distance: float, *,
                       min_distance: float, sizes: Sequence[int] = (1, 2, 4, 8, 16), rounds: int = 4,
                       smooth: float = 0.3, max_coordination: int = 9, significance: float = 0.25,
                       cost: float | None = None, rng: np.random.Generator | int = 0):
    """Deterministic sweep: move surface atoms from too-bright spots of the difference image onto too-dark sites.

    The deterministic counterpart of
    :class:`refine.search.operators.ImageGuidedMutation`. A
    refinement can end with a dozen surface atoms in the wrong lines of
    sight: an island on the bottom facet where the image wants the atoms
    on top of other columns, each misplaced atom a bright blob in the
    simulated − experimental difference and each missing one a dark blob.
    Moved one at a time by the random mutation, such atoms are rarely all
    found before the run ends. Here, from the difference image smoothed by
    ``smooth`` Å (:func:`smoothed_difference`):

    * sources: surface atoms (coordination ≤ ``max_coordination``) where
      the difference is at least ``significance`` times its largest value
      at an atom, brightest first (then least coordinated), one per line of
      sight (x, y within half a bond);
    * sinks: empty surface lattice sites (:func:`surface_sites`) where it
      is at most ``significance`` times its most negative value at a site,
      darkest first, one per line of sight (the most coordinated site of
      that line) and ≥ 0.9 bonds apart;

    and each trial moves the first n sources onto the first n sinks, for
    n in ``sizes`` (a trial with fewer pairs than n is the last). Trials
    are repaired to ``min_distance``, relaxed with ``relax(atoms)`` and
    scored with ``evaluate(atoms) -> cost``; the best is kept when it
    beats the current cost, and the sweep starts again from it with a new
    difference image (at most ``rounds`` times). ``cost``: the cost of
    ``ind`` when already known. ``rng`` only feeds the overlap repair: a
    generator, or an int that seeds a fresh one (default 0, so the sweep is
    deterministic). Returns ``(best, cost, n_trials, n_accepted)``; ``ind``
    is not changed.
    """
    rng = np.random.default_rng(rng)
    sizes = sorted({int(n) for n in sizes if int(n) >= 1})
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    n_trials = n_accepted = 0
    if not sizes:
        return best, best_cost, n_trials, n_accepted
    line = 0.5 * nn_distance

    def moves(best):
        _, sample = smoothed_difference(difference, best, smooth)
        pos = np.array(best.positions, dtype=float)
        excess = sample(pos)
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        # the tails of a misplaced atom's blob reach its neighbours: only clear excesses and deficits count
        floor = significance * excess.max()
        order = [k for k in np.lexsort((cn, -excess)) if excess[k] > 0 and excess[k] >= floor
                 and cn[k] <= max_coordination]
        sources = _one_per_line_of_sight(pos, order, line, sizes[-1])
        sites = surface_sites(pos, nn_distance)
        if not sources or not len(sites):
            return None
        deficit = sample(sites)
        count = np.asarray(cKDTree(pos).query_ball_point(sites, NEIGHBOUR_FACTOR * nn_distance, return_length=True))
        # darkest first; on one line of sight the most coordinated site (an island's edge, not an adatom)
        ceiling = significance * deficit.min()
        dark = [i for i in np.lexsort((-count, deficit)) if deficit[i] < 0 and deficit[i] <= ceiling]
        best_on_line = [int(min(np.flatnonzero(np.hypot(*(sites[:, :2] - sites[i, :2]).T) <= line),
                                key=lambda j: (-count[j], deficit[j]))) for i in dark]
        sinks = _one_per_line_of_sight(sites, list(dict.fromkeys(best_on_line)), line, sizes[-1],
                                       min_separation=0.9 * nn_distance)
        return _moves(best, sources, sites[sinks])

    def _moves(best, sources, targets):
        for n in sizes:
            m = min(n, len(sources), len(targets))
            if m == 0:
                return
            trial = best.copy()
            p = np.array(trial.positions)
            p[sources[:m]] = targets[:m]
            trial.positions = p
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            yield trial
            if m < n:
                return

    return _greedy_rounds(best, best_cost, rounds, moves, relax, evaluate)


def dark_site_sweep(ind, relax: Callable, evaluate: Callable, difference: Callable, nn_distance: float, *,
                    min_distance: float, sites: int = 6, keep: int = 3, smooth: float = 0.3,
                    max_coordination: int = 9, significance: float = 0.25, cost: float | None = None,
                    rng: np.random.Generator | int = 0):
    """Deterministic sweep: fill each too-dark spot of the difference image with whichever surface atom fits best.

    The image-guided sweep pairs the brightest atoms with the darkest
    sites. An atom left on a facet where the truth has none is often not
    bright, though: on top of a thick column its excess hardly shows
    (the column's intensity saturates), while the empty site it belongs on
    is clearly dark. On the far-side case (c) of the independent benchmark
    its misplaced atoms ranked 0, 12, 75 and 215 of 309 by excess. So this
    sweep starts from the dark sites. For each of the ``sites`` darkest
    lines of sight (smoothed by ``smooth`` Å, :func:`smoothed_difference`;
    only deficits of at least ``significance`` times the most negative
    one; a new difference image after each accepted move), the empty
    surface sites (:func:`surface_sites`) at both ends of the line (one
    projection cannot tell them apart) are each offered every surface
    atom (coordination ≤ ``max_coordination``) not on that line. All these
    moves are scored unrelaxed with ``evaluate(atoms) -> cost`` (a site is
    an empty lattice site, so an unrelaxed move is already near its
    minimum, and the ranking costs one evaluation per move, not a
    relaxation; an end closer than ``min_distance`` to an atom is not
    tried); the ``keep`` best are repaired to ``min_distance``, relaxed
    with ``relax(atoms)`` and scored, and the best of them replaces the
    current structure when it lowers the cost. ``cost``: the cost of
    ``ind`` when already known. ``rng`` only feeds the overlap repair: a
    generator, or an int that seeds a fresh one (default 0, so the sweep is
    deterministic). Returns ``(best, cost, n_trials, n_accepted)`` with
    every evaluation counted; ``ind`` is not changed.
    """
    rng = np.random.default_rng(rng)
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    line = 0.5 * nn_distance
    tried: list[np.ndarray] = []
    n_trials = n_accepted = 0
    for _ in range(max(0, int(sites))):
        _, sample = smoothed_difference(difference, best, smooth)
        pos = np.array(best.positions, dtype=float)
        empty = surface_sites(pos, nn_distance)
        if not len(empty):
            break
        deficit = sample(empty)
        ceiling = significance * deficit.min()
        dark = [int(i) for i in np.argsort(deficit, kind="stable") if deficit[i] < 0 and deficit[i] <= ceiling
                and all(np.hypot(*(empty[i, :2] - xy)) > line for xy in tried)]
        if not dark:
            break
        xy = empty[dark[0], :2].copy()
        tried.append(xy)
        on_line = np.flatnonzero(np.hypot(*(empty[:, :2] - xy).T) <= line)
        ends = sorted({int(on_line[np.argmax(empty[on_line, 2])]), int(on_line[np.argmin(empty[on_line, 2])])})
        # an unrelaxed trial must already be a valid structure: no end closer than min_distance to an atom
        ends = [e for e in ends if cKDTree(pos).query(empty[e])[0] >= min_distance]
        cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
        movers = np.flatnonzero((cn <= max_coordination) & (np.hypot(*(pos[:, :2] - xy).T) > line))
        ranked = []
        for end in ends:
            for k in movers:
                ranked.append((evaluate(_with_atom_at(best, pos, k, empty[end])), len(ranked), int(k), end))
        n_trials += len(ranked)
        ranked.sort()
        found = None
        for _, _, k, end in ranked[:max(1, int(keep))]:
            trial = _with_atom_at(best, pos, k, empty[end])
            c = _settle(trial, relax, evaluate, min_distance, rng, nn_distance)
            n_trials += 1
            if found is None or c < found[0]:
                found = (c, trial)
        if found is not None and found[0] < best_cost:
            best_cost, best = found
            n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def far_site_sweep(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                   atoms: int = 60, radius: float | None = None, cost: float | None = None,
                   rng: np.random.Generator | int = 0):
    """Deterministic sweep: move each low-coordinated atom to the best empty site at the other end of its line of sight.

    An adatom on a near-side facet and one in a hollow under the same
    column on the far side give nearly the same image; at realistic dose
    their costs differ by a few hundredths of an eV. The depth move
    (:class:`refine.search.operators.DepthMoveMutation`) puts the atom one
    bond beyond the column's far end at the same x, y: on a tilted facet
    that is rarely a hollow site, and a short relaxation leaves it where a
    hollow's worth of energy decides against the move. Here, for each of
    the ``atoms`` least-coordinated atoms in turn, the empty surface sites
    (:func:`surface_sites` of the particle without it) on the other side of
    its line of sight whose x, y lie within ``radius`` Å of its own
    (default 0.6 bonds) are scored unrelaxed (a lattice site is already
    near its minimum); the best is repaired to ``min_distance``, relaxed
    with ``relax(atoms)`` and kept when it lowers the cost. ``cost``: the
    cost of ``ind`` when already known. ``rng`` only feeds the overlap
    repair (a generator, or an int that seeds a fresh one). Returns
    ``(best, cost, n_trials, n_accepted)`` with every evaluation counted;
    ``ind`` is not changed.
    """
    rng = np.random.default_rng(rng)
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    line = 0.5 * nn_distance
    radius = 0.6 * nn_distance if radius is None else float(radius)
    cn = coordination_numbers(np.asarray(best.positions, dtype=float), NEIGHBOUR_FACTOR * nn_distance)
    n_trials = n_accepted = 0
    for k in np.argsort(cn, kind="stable")[:max(0, int(atoms))]:
        pos = np.array(best.positions, dtype=float)
        others = np.delete(pos, k, axis=0)
        side = depth_sides(pos[k], others, line)[0]
        empty = surface_sites(others, nn_distance)
        if not len(empty):
            continue
        near = np.hypot(*(empty[:, :2] - pos[k, :2]).T) <= radius
        near &= depth_sides(empty, others, line) == -side
        ranked = []
        for site in empty[near]:
            ranked.append((evaluate(_with_atom_at(best, pos, k, site)), len(ranked), site))
        if not ranked:
            continue
        n_trials += len(ranked) + 1
        _, _, site = min(ranked)
        trial = _with_atom_at(best, pos, k, site)
        c = _settle(trial, relax, evaluate, min_distance, rng, nn_distance)
        if c < best_cost:
            best, best_cost = trial, c
            n_accepted += 1
    return best, best_cost, n_trials, n_accepted


def adatom_flip(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                difference: Callable | None = None, dark_sites: int = 6, max_coordination: int = 5,
                max_adatoms: int = 12, radius: float | None = None, cost: float | None = None,
                rng: np.random.Generator | int = 0):
    """Joint move: every adatom to the best hollow at the other end of its line of sight, at once; then dark sites.

    Adatoms on a far-side facet and the same number on the near side
    under the same columns make nearly the same image. When the near-side
    ones touch (an island) and the far-side ones do not, each single move
    breaks bonds that only the last move pays back: on case (c) of the
    independent benchmark at 5e5 e/Å² the five missed moves raised the
    cost by +0.22 eV one at a time and lowered it by 0.30 together
    (``diagnose_answer.py --oracle``, docs/benchmarks.md), so every
    single-atom sweep stops short. Here the ``max_adatoms``
    least-coordinated atoms with at most ``max_coordination`` neighbours
    are lifted off; for each, the hollow sites of the rest
    (:func:`surface_hollows`: both hollows of a facet, where
    :func:`surface_sites` has one) within ``radius`` Å of its x, y
    (default 0.6 bonds) and beyond the mid-point of its line of sight
    (the atoms within half a bond of its x, y) are ranked unrelaxed with
    it alone moved there (a hollow is near its minimum), and it takes the
    best one not within ``min_distance`` of a site already taken. All
    these moves make one trial, repaired to ``min_distance`` and relaxed
    with ``relax(atoms)``; then, with a ``difference`` function and
    ``dark_sites`` > 0, a :func:`dark_site_sweep` of the trial fills what
    the flip left dark (an adatom whose far site is across the facet, not
    under it); then each flipped adatom still on its far site is put back
    in turn (relaxed, scored) and left back where that lowers the cost (an
    adatom that was right already). The trial replaces ``ind`` when its
    cost is lower.
    ``cost``: the cost of ``ind`` when already known. ``rng`` only feeds
    the overlap repairs (a generator, or an int that seeds a fresh one).
    Returns ``(best, cost, n_trials, n_accepted)`` with every evaluation
    counted; ``ind`` is not changed.
    """
    rng = np.random.default_rng(rng)
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    pos = np.array(best.positions, dtype=float)
    cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * nn_distance)
    adatoms = [int(k) for k in np.argsort(cn, kind="stable")[:max(0, int(max_adatoms))] if cn[k] <= max_coordination]
    if not adatoms:
        return best, best_cost, 0, 0
    line = 0.5 * nn_distance
    radius = 0.6 * nn_distance if radius is None else float(radius)
    base = np.delete(pos, adatoms, axis=0)
    hollows = surface_hollows(base, nn_distance)
    if not len(hollows):
        return best, best_cost, 0, 0
    moved = pos.copy()
    taken: list[np.ndarray] = []
    flipped: list[int] = []
    n_trials = 0
    for k in adatoms:
        sight = base[np.hypot(*(base[:, :2] - pos[k, :2]).T) <= line, 2]
        if not len(sight):
            continue  # beyond the particle's edge: no other end
        mid = 0.5 * (sight.min() + sight.max())
        far = (np.hypot(*(hollows[:, :2] - pos[k, :2]).T) <= radius) & (
            np.sign(hollows[:, 2] - mid) == -np.sign(pos[k, 2] - mid))
        ranked = []
        for site in hollows[far]:
            if any(np.linalg.norm(site - t) < min_distance for t in taken):
                continue
            ranked.append((evaluate(_with_atom_at(best, pos, k, site)), len(ranked), site))
        n_trials += len(ranked)
        if ranked:
            site = min(ranked, key=lambda r: (r[0], r[1]))[2]
            moved[k] = site
            taken.append(site)
            flipped.append(k)
    if not flipped:
        return best, best_cost, n_trials, 0
    trial = best.copy()
    trial.positions = moved
    trial_cost = _settle(trial, relax, evaluate, min_distance, rng, nn_distance)
    n_trials += 1
    if difference is not None and dark_sites > 0:
        trial, trial_cost, n, _ = dark_site_sweep(trial, relax, evaluate, difference, nn_distance,
                                                  min_distance=min_distance, sites=dark_sites, cost=trial_cost,
                                                  rng=rng)
        n_trials += n
    # adatoms that were right where they were: each flipped one put back in turn, kept back when that is cheaper
    for k in flipped:
        p = np.array(trial.positions)
        if np.linalg.norm(p[k] - moved[k]) > 0.5 * nn_distance or np.any(
                np.linalg.norm(np.delete(p, k, axis=0) - pos[k], axis=1) < min_distance):
            continue  # moved on by the dark-site sweep, or its old place taken
        back = _with_atom_at(trial, p, k, pos[k])
        c = _settle(back, relax, evaluate, min_distance, rng, nn_distance)
        n_trials += 1
        if c < trial_cost:
            trial, trial_cost = back, c
    if trial_cost < best_cost:
        return trial, trial_cost, n_trials, 1
    return best, best_cost, n_trials, 0


def shift_sectors(ind, relax: Callable, evaluate: Callable, nn_distance: float, *, min_distance: float,
                  finish: Callable | None = None, keep: int = 2, widths: Sequence[float] = (72.0, 144.0, 180.0),
                  step: float = 24.0, caps: Sequence[float] = (0.15, 0.3, 0.45), cost: float | None = None,
                  rank: Callable | None = None, rng: np.random.Generator | int = 0):
    """Slide whole wedges and caps of the particle along its columns by one period; keep what lowers the cost.

    A grain, or the edge of one, can sit one lattice period too high along
    the beam: every column of it holds the right atoms, so the projection
    is right, but its top and bottom facets are stepped against the
    neighbouring grains' (several eV). No local move repairs this. Each
    region of :func:`beam_sectors` (wedges about the column axis, and the
    ``caps`` fractions of atoms at an edge) is shifted by ± the column
    vector (:func:`beam_column`: a lattice translation, tilted with the
    particle, so that every column stays on its line) and repaired to
    ``min_distance``; the candidates are ranked unrelaxed by
    ``rank(atoms) -> float`` (default: ``evaluate``; the energy, eV, where
    the particle is tilted: the columns' end atoms then move 0.5 Å
    sideways, an image-term change that the relaxation undoes but that
    outweighs the stepped surfaces' several eV unrelaxed — the energy
    alone put the undoing shift first in all four damaged cases of
    ``examples/column_shift.py``'s check), and the ``keep`` best are relaxed with
    ``relax(atoms)`` and, when given, finished by ``finish(atoms, cost) ->
    (atoms, cost, n_evaluations)`` (a region's edges rarely match a
    grain's: atoms left on the wrong side need the other sweeps) before
    the cost decides. Returns ``(best, cost, n_trials, n_accepted)`` where
    ``n_trials`` counts every evaluation; ``ind`` is not changed. Nothing
    is tried where the particle has no column along the beam. ``rng`` only
    feeds the overlap repairs: a generator, or an int that seeds a fresh one
    (default 0, so the sweep is deterministic).
    """
    rng = np.random.default_rng(rng)
    best = ind.copy()
    best_cost = evaluate(best) if cost is None else float(cost)
    pos = np.array(best.positions, dtype=float)
    column = beam_column(pos, nn_distance)
    if column is None or keep < 1:
        return best, best_cost, 0, 0
    ranked = []
    for inside in beam_sectors(pos, axis=column, widths=widths, step=step, caps=caps):
        for sign in (1.0, -1.0):
            trial = best.copy()
            p = pos.copy()
            p[inside] += sign * column
            trial.positions = p
            repair_min_distance(trial, min_distance, rng, nn_distance=nn_distance)
            ranked.append(((rank or evaluate)(trial), len(ranked), trial))
    n_trials = len(ranked)
    ranked.sort(key=lambda r: (r[0], r[1]))
    n_accepted = 0
    start_cost = best_cost
    for _, _, trial in ranked[:keep]:
        relax(trial)
        trial_cost = evaluate(trial)
        n_trials += 1
        if finish is not None:
            trial, trial_cost, n = finish(trial, trial_cost)
            n_trials += n
        if trial_cost < best_cost:
            best, best_cost = trial, trial_cost
    if best_cost < start_cost:
        n_accepted = 1
    return best, best_cost, n_trials, n_accepted
