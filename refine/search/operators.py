"""Genetic operators on nanoparticle structures: crossover and mutations.

Every operator is a small class built with an injected
:class:`numpy.random.Generator` (never the global random state) and follows
DEAP's contract: it is called with one individual (mutations) or two
(crossover), modifies them **in place** and returns them as a tuple. The GA
clones parents before varying them (:func:`refine.search.toolbox.make_toolbox`).
Individuals are :class:`ase.Atoms` (or the GA's ``Atoms`` subclass); the
number of atoms never changes.

After its move every operator repairs the structure to a minimum interatomic
distance (:func:`refine.search.geometry.repair_min_distance`), and operators
that can change the species counts (crossover, mirror) restore the exact
composition (:func:`refine.search.geometry.repair_composition`). The
operator's name is recorded in ``atoms.info["operator"]``.
:class:`MutationSelector` draws one mutation by weight (DEAP's ``mutate``).

Lengths in Å, energies in eV.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from surrogate.common import InputError
from surrogate.common.geometry import coordination_numbers
from refine.search.difference import smoothed_difference
from refine.search.geometry import (
    MIN_DISTANCE_FRACTION,
    NEIGHBOUR_FACTOR,
    best_site,
    hollow_sites,
    random_unit_vectors,
    repair_composition,
    repair_min_distance,
)
from refine.search.sites import beyond_line_of_sight, depth_sides

__all__ = [
    "Operator",
    "CutSpliceCrossover",
    "RattleMutation",
    "PermutationMutation",
    "SurfaceMoveMutation",
    "ImageGuidedMutation",
    "RotationMutation",
    "MirrorMutation",
    "DepthFlipMutation",
    "DepthMoveMutation",
    "MutationSelector",
]


class Operator:
    """Base of all operators: an injected generator and the minimum-distance repair.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness of this operator.
    min_distance : float
        Minimum interatomic distance (Å) every result is repaired to.
    nn_distance : float, optional
        Nearest-neighbour distance (Å) for site finding; default
        ``min_distance / 0.75``.
    """

    name = "operator"

    def __init__(self, rng: np.random.Generator, min_distance: float, *, nn_distance: float | None = None):
        if not isinstance(rng, np.random.Generator):
            raise TypeError("operators need a numpy.random.Generator")
        if not (np.isfinite(min_distance) and min_distance > 0):
            raise InputError(f"minimum distance must be a positive number of Å, got {min_distance!r}")
        self.rng = rng
        self.min_distance = float(min_distance)
        self.nn_distance = float(nn_distance) if nn_distance else self.min_distance / MIN_DISTANCE_FRACTION

    def _finish(self, atoms):
        repair_min_distance(atoms, self.min_distance, self.rng, nn_distance=self.nn_distance)
        atoms.info["operator"] = self.name
        return atoms

    def __repr__(self):
        return f"{type(self).__name__}(min_distance={self.min_distance:g})"


class CutSpliceCrossover(Operator):
    """Deaven–Ho cut-and-splice crossover with exact composition repair.

    Both parents are put on a common centre of mass; a random plane through
    it (random normal) cuts them. Child 1 takes the ``k`` atoms of parent 1
    farthest on the + side and the ``n − k`` atoms of parent 2 farthest on
    the − side; child 2 the complement (parent 2's + side, parent 1's − side).
    ``k`` is drawn uniformly in ``[n/4, 3n/4]``. The particle orientation is
    kept (it matters for the image). Species counts are then repaired,
    relabelling atoms near the cut first, and overlaps at the cut removed.

    With probability ``beam_parallel`` the plane contains the beam direction
    (its normal has no z component): both parents then keep their own part of
    the projection, so two parents that each match the image give children
    that still match it, with the depth (z) arrangement of one parent on one
    side and of the other on the other side.

    Parameters
    ----------
    composition : mapping
        Target species counts, e.g. ``{"Pt": 557, "Mo": 29}``.
    beam_parallel : float
        Probability of a cut plane parallel to the beam (z).
    """

    name = "cut_splice"

    def __init__(self, rng, min_distance, composition: Mapping[str, int], *, beam_parallel: float = 0.0, **kw):
        super().__init__(rng, min_distance, **kw)
        self.composition = dict(composition)
        if not 0.0 <= beam_parallel <= 1.0:
            raise InputError(f"beam_parallel must be a probability in [0, 1], got {beam_parallel!r}")
        self.beam_parallel = float(beam_parallel)

    def __call__(self, ind1, ind2):
        n = len(ind1)
        if len(ind2) != n:
            raise InputError(f"crossover parents differ in size ({n} and {len(ind2)} atoms)")
        p1 = np.array(ind1.positions, dtype=float)
        p2 = np.array(ind2.positions, dtype=float)
        z1, z2 = np.array(ind1.numbers), np.array(ind2.numbers)
        c1 = p1.mean(axis=0)
        if self.beam_parallel > 0.0 and self.rng.random() < self.beam_parallel:
            # keep both parents where they are in x, y (both are aligned on the image)
            p2[:, 2] += c1[2] - p2[:, 2].mean()
            phi = self.rng.uniform(0.0, 2.0 * np.pi)
            normal = np.array([np.cos(phi), np.sin(phi), 0.0])
        else:
            p2 = p2 - p2.mean(axis=0) + c1
            normal = random_unit_vectors(self.rng, 1)[0]
        k = int(self.rng.integers(max(n // 4, 1), max(3 * n // 4, 1) + 1)) if n > 1 else n
        s1 = np.argsort(-((p1 - c1) @ normal), kind="stable")  # + side first
        s2 = np.argsort(-((p2 - c1) @ normal), kind="stable")
        # child 1: top k of parent 1, bottom n-k of parent 2; child 2: top k of parent 2, bottom n-k of parent 1
        a_idx, b_idx = s1[:k], s2[k:]
        c_idx, d_idx = s2[:k], s1[k:]
        children = []
        for (pa, za, ia), (pb, zb, ib) in (((p1, z1, a_idx), (p2, z2, b_idx)), ((p2, z2, c_idx), (p1, z1, d_idx))):
            pos = np.concatenate([pa[ia], pb[ib]])
            num = np.concatenate([za[ia], zb[ib]])
            # atoms nearest the cut plane are relabelled first
            near_cut = np.argsort(np.abs((pos - c1) @ normal), kind="stable")[: max(n // 5, 1)]
            children.append((pos, num, near_cut))
        for ind, (pos, num, near_cut) in zip((ind1, ind2), children):
            ind.numbers = num
            ind.positions = pos
            repair_composition(ind, self.composition, self.rng, candidates=near_cut)
            self._finish(ind)
        return ind1, ind2


class RattleMutation(Operator):
    """Displace a random fraction of the atoms by Gaussian noise.

    Parameters
    ----------
    sigma : float
        Standard deviation of each displacement component, Å.
    fraction : float
        Probability that an atom moves (at least one atom always moves).
    """

    name = "rattle"

    def __init__(self, rng, min_distance, *, sigma: float = 0.25, fraction: float = 0.25, **kw):
        super().__init__(rng, min_distance, **kw)
        self.sigma, self.fraction = float(sigma), float(fraction)

    def __call__(self, ind):
        n = len(ind)
        move = self.rng.random(n) < self.fraction
        if not move.any():
            move[self.rng.integers(n)] = True
        pos = np.array(ind.positions)
        pos[move] += self.rng.normal(scale=self.sigma, size=(int(move.sum()), 3))
        ind.positions = pos
        return (self._finish(ind),)


class PermutationMutation(Operator):
    """Swap the species of random pairs of unlike atoms (alloys; a no-op for one element).

    Parameters
    ----------
    n_swaps : int
        Number of swaps; default ``max(1, round(0.05 × n_minority))``.
    """

    name = "permutation"

    def __init__(self, rng, min_distance, *, n_swaps: int | None = None, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_swaps = n_swaps

    def __call__(self, ind):
        numbers = np.array(ind.numbers)
        species = np.unique(numbers)
        if len(species) < 2:
            ind.info["operator"] = self.name
            return (ind,)
        minority = min(np.count_nonzero(numbers == z) for z in species)
        n_swaps = self.n_swaps or max(1, int(round(0.05 * minority)))
        for _ in range(n_swaps):
            i = int(self.rng.integers(len(numbers)))
            others = np.flatnonzero(numbers != numbers[i])
            j = int(others[self.rng.integers(len(others))])
            numbers[i], numbers[j] = numbers[j], numbers[i]
        ind.numbers = numbers
        return (self._finish(ind),)


class SurfaceMoveMutation(Operator):
    """Move low-coordinated atoms to the best-coordinated free hollow site on the surface.

    The atom is drawn with probability ∝ exp(−0.7·(CN − CN_min)) and placed
    on a site of maximal coordination among random hollow sites of the
    rest of the cluster (not its own old site).

    Parameters
    ----------
    n_moves : int
        Atoms moved per call.
    """

    name = "surface_move"

    def __init__(self, rng, min_distance, *, n_moves: int = 1, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_moves = int(n_moves)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        for _ in range(self.n_moves):
            cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * self.nn_distance)
            w = np.exp(-0.7 * (cn - cn.min()))
            k = int(self.rng.choice(len(pos), p=w / w.sum()))
            others = np.delete(pos, k, axis=0)
            site = best_site(others, self.nn_distance, self.rng, min_distance=self.min_distance, avoid=pos[k])
            if site is not None:
                pos[k] = site
        ind.positions = pos
        return (self._finish(ind),)


class ImageGuidedMutation(Operator):
    """Move an atom from where the simulated image is too bright to where it is too dark.

    Parameters
    ----------
    difference : callable
        ``difference(atoms) -> (diff, grid)``: the simulated minus the
        experimental image (after the fitness's alignment and intensity map),
        shape ``grid.shape``, on a :class:`surrogate.ProbeGrid` in the
        atoms' frame (``diff[i, j]`` at ``x0 + iΔ, y0 + jΔ``); NaN (masked)
        pixels count as 0. :class:`refine.search.difference.FitnessDifference` builds it
        from a :class:`refine.cost.fitness.Fitness`.
    n_moves : int
        Atoms moved per call.
    power : float
        Pixel (target) and atom (source) choice probabilities ∝ (excess)^power.
    smooth : float
        Å; the difference image is smoothed by a Gaussian of this σ first
        (a matched filter for atom-sized blobs; 0: raw pixels).

    Notes
    -----
    Source: an atom with probability ∝ max(diff at its (x, y), 0)^power
    (uniform if no atom sits on a too-bright pixel). Target column: a pixel
    with probability ∝ max(−diff, 0)^power. Along that column the height z
    with the highest coordination that keeps the minimum distance is chosen
    (scanned in 0.1 Å steps over the local extent of the particle ± one
    nearest-neighbour distance).
    """

    name = "image_guided"

    def __init__(self, rng, min_distance, difference: Callable, *, n_moves: int = 1, power: float = 2.0,
                 smooth: float = 0.3, **kw):
        super().__init__(rng, min_distance, **kw)
        self.difference = difference
        self.n_moves = int(n_moves)
        self.power = float(power)
        self.smooth = float(smooth)

    def __call__(self, ind):
        diff, sample = smoothed_difference(self.difference, ind, self.smooth)
        pos = np.array(ind.positions, dtype=float)
        dark = np.clip(-diff, 0.0, None) ** self.power
        total = dark.sum()
        if not np.isfinite(total) or total <= 0:
            ind.info["operator"] = self.name
            return (self._finish(ind),)
        pix_p = (dark / total).ravel()
        grid = sample.grid
        dx = grid.pixel_size
        x0, y0 = grid.origin
        cutoff = NEIGHBOUR_FACTOR * self.nn_distance
        for _ in range(self.n_moves):
            bright = np.clip(sample(pos), 0.0, None) ** self.power
            if bright.sum() > 0:
                k = int(self.rng.choice(len(pos), p=bright / bright.sum()))
            else:
                k = int(self.rng.integers(len(pos)))
            flat = int(self.rng.choice(pix_p.size, p=pix_p))
            ti, tj = np.unravel_index(flat, diff.shape)
            x, y = x0 + ti * dx, y0 + tj * dx
            others = np.delete(pos, k, axis=0)
            near = np.hypot(others[:, 0] - x, others[:, 1] - y) < 2.0 * self.nn_distance
            zs = others[near, 2] if near.any() else others[:, 2]
            zgrid = np.arange(zs.min() - self.nn_distance, zs.max() + self.nn_distance + 1e-9, 0.1)
            cand = np.column_stack([np.full_like(zgrid, x), np.full_like(zgrid, y), zgrid])
            tree = cKDTree(others)
            dist, _ = tree.query(cand)
            ok = dist >= self.min_distance
            if ok.any():
                cand = cand[ok]
                coord = np.asarray(tree.query_ball_point(cand, cutoff, return_length=True))
                best = np.flatnonzero(coord == coord.max())
                pos[k] = cand[best[self.rng.integers(len(best))]]
            else:  # the column is full: the hollow site nearest to it in projection
                sites, _ = hollow_sites(others, self.nn_distance, self.rng, min_distance=self.min_distance)
                if len(sites):
                    pos[k] = sites[np.argmin(np.hypot(sites[:, 0] - x, sites[:, 1] - y))]
        ind.positions = pos
        return (self._finish(ind),)


class RotationMutation(Operator):
    """Rotate the whole particle about its centre of mass.

    With probability ``in_plane_probability`` the rotation is about the beam
    (z) axis, else about a uniformly random axis; the angle is uniform in
    ``[−max_angle, max_angle]`` (radians).
    """

    name = "rotation"

    def __init__(self, rng, min_distance, *, max_angle: float = np.pi / 6, in_plane_probability: float = 0.5, **kw):
        super().__init__(rng, min_distance, **kw)
        self.max_angle = float(max_angle)
        self.in_plane_probability = float(in_plane_probability)

    def __call__(self, ind):
        if self.rng.random() < self.in_plane_probability:
            axis = np.array([0.0, 0.0, 1.0])
        else:
            axis = random_unit_vectors(self.rng, 1)[0]
        angle = self.rng.uniform(-self.max_angle, self.max_angle)
        pos = np.array(ind.positions, dtype=float)
        com = pos.mean(axis=0)
        ind.positions = Rotation.from_rotvec(angle * axis).apply(pos - com) + com
        return (self._finish(ind),)


class MirrorMutation(Operator):
    """Keep one half of the particle and replace the other half by its mirror image.

    A random plane through the median projection (random normal) splits the
    atoms; the ``⌈n/2⌉`` atoms on the + side are kept and the ``⌊n/2⌋`` of
    them farthest from the plane are reflected through it (for odd ``n`` the
    kept atom nearest the plane is not duplicated). Species follow their
    atom; the exact composition is then restored.
    """

    name = "mirror"

    def __init__(self, rng, min_distance, composition: Mapping[str, int], **kw):
        super().__init__(rng, min_distance, **kw)
        self.composition = dict(composition)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        num = np.array(ind.numbers)
        n = len(pos)
        if n < 2:
            return (self._finish(ind),)
        normal = random_unit_vectors(self.rng, 1)[0]
        proj = pos @ normal
        order = np.argsort(-proj, kind="stable")
        keep = order[: (n + 1) // 2]
        plane = 0.5 * (proj[order[(n + 1) // 2 - 1]] + proj[order[min((n + 1) // 2, n - 1)]])
        mirrored = keep[: n // 2]  # farthest from the plane
        refl = pos[mirrored] - 2.0 * ((pos[mirrored] @ normal) - plane)[:, None] * normal
        ind.positions = np.concatenate([pos[keep], refl])
        ind.numbers = np.concatenate([num[keep], num[mirrored]])
        repair_composition(ind, self.composition, self.rng)
        return (self._finish(ind),)


class DepthFlipMutation(Operator):
    """Reflect the depth (z) of the atoms on one side of a beam-parallel plane.

    One projection cannot tell z from −z: flipping the depth order of a part
    of the particle keeps its image exactly and changes only its 3D
    structure (and energy). A random plane containing the beam direction
    splits the atoms at a random quantile in [1/4, 3/4] (or, with
    probability ``whole``, the whole particle is flipped); the atoms on the +
    side get z → 2·z̄ − z, z̄ their mean depth. Overlaps at the cut are
    repaired.

    Parameters
    ----------
    whole : float
        Probability of flipping the whole particle (its mirror image along the beam).
    """

    name = "depth_flip"

    def __init__(self, rng, min_distance, *, whole: float = 0.0, **kw):
        super().__init__(rng, min_distance, **kw)
        self.whole = float(whole)

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        n = len(pos)
        if self.rng.random() < self.whole or n < 4:
            part = np.arange(n)
        else:
            phi = self.rng.uniform(0.0, 2.0 * np.pi)
            proj = pos[:, 0] * np.cos(phi) + pos[:, 1] * np.sin(phi)
            k = int(self.rng.integers(n // 4, 3 * n // 4 + 1))
            part = np.argsort(-proj, kind="stable")[:k]
        zbar = pos[part, 2].mean()
        pos[part, 2] = 2.0 * zbar - pos[part, 2]
        ind.positions = pos
        return (self._finish(ind),)


class DepthMoveMutation(Operator):
    """Move surface atoms to the other end of their line of sight (same x, y; other z).

    An atom on the top surface and one at the same x, y on the bottom
    surface give the same image: only the energy tells them apart, and local
    moves cannot carry an atom through the particle. This mutation takes a
    low-coordinated atom (probability ∝ exp(−0.7·(CN − CN_min))), finds the
    atoms within ``column_radius`` of its x, y (its column along the beam)
    and puts it one bond length beyond the far end of that column, keeping
    its x, y — its projection. Overlaps are repaired.

    Parameters
    ----------
    n_moves : int
        Atoms moved per call.
    column_radius : float, optional
        Å; default half the nearest-neighbour distance.
    """

    name = "depth_move"

    def __init__(self, rng, min_distance, *, n_moves: int = 1, column_radius: float | None = None, **kw):
        super().__init__(rng, min_distance, **kw)
        self.n_moves = int(n_moves)
        self.column_radius = float(column_radius) if column_radius else 0.5 * self.nn_distance

    def __call__(self, ind):
        pos = np.array(ind.positions, dtype=float)
        if len(pos) < 2:
            return (self._finish(ind),)
        for _ in range(self.n_moves):
            cn = coordination_numbers(pos, NEIGHBOUR_FACTOR * self.nn_distance)
            w = np.exp(-0.7 * (cn - cn.min()))
            k = int(self.rng.choice(len(pos), p=w / w.sum()))
            self.move(pos, k)
        ind.positions = pos
        return (self._finish(ind),)

    def move(self, pos: np.ndarray, k: int) -> None:
        """Move atom ``k`` of ``pos`` (n, 3) to the far end of its column, in place."""
        side = depth_sides(pos[k], pos, self.column_radius)[0]
        pos[k, 2] = beyond_line_of_sight(pos, pos[k, :2], self.column_radius, -side, self.nn_distance)

    def polish(self, ind, relax: Callable, evaluate: Callable, *, max_atoms: int = 60, cost: float | None = None):
        """Deterministic sweep: try the depth move of each of the ``max_atoms`` least-coordinated atoms.

        Each trial is relaxed with ``relax(atoms)`` and scored with
        ``evaluate(atoms) -> cost``; a trial that lowers the cost is kept
        (and the sweep goes on from it). ``cost``: the cost of ``ind`` when
        already known (else it is evaluated). Returns ``(best, cost,
        n_trials, n_accepted)``; ``ind`` is not changed.
        """
        best = ind.copy()
        best_cost = evaluate(best) if cost is None else float(cost)
        cn = coordination_numbers(best.positions, NEIGHBOUR_FACTOR * self.nn_distance)
        order = np.argsort(cn, kind="stable")[:max_atoms]
        n_trials = n_accepted = 0
        for k in order:
            trial = best.copy()
            pos = np.array(trial.positions)
            self.move(pos, int(k))
            trial.positions = pos
            self._finish(trial)
            relax(trial)
            cost = evaluate(trial)
            n_trials += 1
            if cost < best_cost:
                best, best_cost = trial, cost
                n_accepted += 1
        return best, best_cost, n_trials, n_accepted


class MutationSelector:
    """Apply one of several mutations, drawn with given weights (DEAP ``mutate``).

    Parameters
    ----------
    rng : numpy.random.Generator
    operators : sequence of (weight, operator)
    """

    def __init__(self, rng: np.random.Generator, operators: Sequence[tuple[float, Callable]]):
        self._weighted = [(float(w), op) for w, op in operators]
        ops = [(w, op) for w, op in self._weighted if w > 0]
        if not ops:
            raise InputError("need at least one mutation with a positive weight")
        self.rng = rng
        self.operators = [op for _, op in ops]
        w = np.array([w for w, _ in ops])
        self.probabilities = w / w.sum()

    def __call__(self, ind):
        k = int(self.rng.choice(len(self.operators), p=self.probabilities))
        return self.operators[k](ind)

    def reweighted(self, weights: Mapping[str, float]) -> "MutationSelector":
        """A selector over the same operators (same generator) with the named weights replaced."""
        return MutationSelector(self.rng, [(float(weights.get(op.name, w)), op) for w, op in self._weighted])

    def __repr__(self):
        parts = ", ".join(f"{p:.2f}:{op.name}" for p, op in zip(self.probabilities, self.operators))
        return f"MutationSelector({parts})"
