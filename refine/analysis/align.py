"""Rigid alignment of two structures: rotation (optionally mirrored), translation and atom assignment.

:func:`align_structures` finds the rigid motion (rotation, optional mirror,
translation) and the one-to-one, per-element assignment of atoms that bring
one structure closest to another; :class:`Alignment` holds the answer. The
comparison with the truth (:mod:`refine.analysis.comparison`) and the
ensembles of runs (:mod:`refine.analysis.ensemble`) are built on it.

Alignment
---------
Atom order in a refined structure is arbitrary, so alignment and assignment
are solved together, iterated like ICP: for a fixed rigid motion the
assignment that minimizes the summed loss (below) is found with the
Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`), element by
element; for a fixed assignment the best rigid motion is Kabsch's SVD solution.
Both steps lower the same sum, so the loop ends when the assignment stops
changing. The loop finds only a local optimum (its basin is ~10° of rotation
for a 2-nm particle: beyond that, atoms snap to neighbouring sites), so it is
started from many orientations, per handedness: the identity, the four
principal-axes alignments of the two structures, and the 64 best of 8000
quasi-uniform rotations (super-Fibonacci, Alexa 2022) ranked by the capped
nearest-neighbour distances of ~24 atoms near the centre (whose
displacement under a rotation error is small, so the right orientation
stands out on the grid). Those starts are refined in one batch by
nearest-neighbour ICP on ~96 atoms; the best three distinct ones are then
refined to convergence with the Hungarian assignment, and the lowest loss
wins (ties, as in symmetric particles: no mirror, then the smallest rotation).
Symmetric particles (icosahedra, decahedra) have several equivalent
answers; the statistics do not depend on which is returned. About 0.2–0.5 s
for 600 atoms.

Which sum? By default (``robust=True``) not the sum of squared distances:
under least squares a refined structure with a few atoms in wrong places
is matched by *chains* of shifted partners (several atoms moved by 2 Å cost
less than one by 6 Å) and tilted towards the wrong atoms, so that good atoms
look displaced. The default loss is Tukey's biweight with scale c = 1.5 Å
(about half the Pt–Pt distance),

    ρ(d) = c²/6 · [1 − (1 − d²/c²)³]  for d < c,   c²/6  beyond,

plus 10⁻³·d² to order the far atoms among themselves. The Hungarian step
minimizes Σρ exactly; the motion step is iteratively reweighted Kabsch
(weights (1 − d²/c²)² + 2·10⁻³), which also never increases Σρ. Atoms far
from their partner then barely move the alignment, and "fraction within
0.5 Å" counts the atoms that are right. ``robust=False`` gives the classic
minimum-RMSD motion and assignment. RMSD and maximum displacement are
always reported over all matched pairs.

``rotation`` chooses the motions allowed:

``"full"`` (default)
    any 3-D rotation. Use this to ask "is it the same structure?".
``"beam"``
    rotations about the beam (z) axis only: the refined structure's pose
    relative to the beam is kept, as fits a refinement against one
    projection whose orientation the GA already searched.
``"none"``
    translation only.

``mirror=True`` (default) also tries the mirror image z → −z of the refined
structure (combined with the allowed rotations this is any improper rotation
in ``"full"`` mode). One projection cannot tell a particle from its mirror
image through a plane normal to the beam: both give the same image.

Conventions: lengths in Å; the beam travels along z, so "projected" means the
(x, y) coordinates in the *truth's* frame, into which the refined structure is
moved.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from surrogate.common import InputError

__all__ = ["Alignment", "ROTATION_MODES", "align_structures", "check_composition", "formula", "validate_atoms"]

log = logging.getLogger(__name__)

#: allowed values of ``rotation``
ROTATION_MODES = ("full", "beam", "none")

_MIRROR = np.diag([1.0, 1.0, -1.0])
#: "full" mode: quasi-uniform rotations scanned (per handedness), atoms used,
#: only atoms within this fraction of the largest radius, cap on a distance (Å),
#: and how many of the best scanned rotations start the ICP
_N_SCAN = 8000
_N_SCAN_ATOMS = 24
_SCAN_INNER = 0.6
_SCAN_CAP = 1.5
_N_SCAN_KEEP = 64
#: starting angles about z in "beam" mode (per handedness)
_N_STARTS_BEAM = 72
#: atoms used for the batched coarse stage
_N_COARSE_ATOMS = 96
_COARSE_ITERATIONS = 6
#: Å; Tukey scale of the robust loss, and the weight of its least-squares tie-breaker
_ROBUST_SCALE = 1.5
_ROBUST_EPS = 1e-3
#: starts refined with the Hungarian assignment
_N_FINE = 3
_MAX_FINE_ITERATIONS = 30


# --------------------------------------------------------------------------- validation


def validate_atoms(atoms, name: str) -> Atoms:
    """``atoms`` if it is a non-empty ``ase.Atoms`` with finite positions, else :class:`InputError` naming it."""
    if not isinstance(atoms, Atoms):
        raise InputError(f"{name} must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InputError(f"{name} has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError(f"{name} has non-finite atom positions")
    return atoms


def _validate_rotation(rotation: str) -> str:
    if rotation not in ROTATION_MODES:
        raise InputError(f"rotation must be one of {', '.join(ROTATION_MODES)}; got {rotation!r}")
    return rotation


def formula(counts: Counter) -> str:
    """A composition as text, elements in alphabetical order (``Counter({"Pt": 55})`` → ``"Pt55"``)."""
    return "".join(f"{el}{n}" for el, n in sorted(counts.items())) or "(empty)"


# --------------------------------------------------------------------------- rigid motions


def _kabsch(P: np.ndarray, Q: np.ndarray, mode: str, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best proper rigid motion ``x -> R x + t`` taking rows of P onto Q (weighted least squares).

    Batched: P and Q have shape ``(K, m, 3)`` (or ``(m, 3)``), weights ``w``
    ``(K, m)`` (or ``(m,)``, default all 1); returns R ``(K, 3, 3)`` and t
    ``(K, 3)`` (or unbatched shapes).
    """
    single = P.ndim == 2
    if single:
        P, Q = P[None], Q[None]
        if w is not None:
            w = w[None]
    if w is None:
        cp = P.mean(axis=1)
        cq = Q.mean(axis=1)
        Pc = P - cp[:, None]
    else:
        sw = w.sum(axis=1, keepdims=True)
        cp = np.einsum("km,kmi->ki", w, P) / sw
        cq = np.einsum("km,kmi->ki", w, Q) / sw
        Pc = (P - cp[:, None]) * w[..., None]
    Qc = Q - cq[:, None]
    K = P.shape[0]
    if mode == "none":
        R = np.broadcast_to(np.eye(3), (K, 3, 3)).copy()
    elif mode == "beam":
        s = np.einsum("km,km->k", Pc[..., 0], Qc[..., 1]) - np.einsum("km,km->k", Pc[..., 1], Qc[..., 0])
        c = np.einsum("km,km->k", Pc[..., 0], Qc[..., 0]) + np.einsum("km,km->k", Pc[..., 1], Qc[..., 1])
        R = _rot_z(np.arctan2(s, c))
    else:
        H = np.einsum("kmi,kmj->kij", Pc, Qc)
        U, _, Vt = np.linalg.svd(H)
        V = np.swapaxes(Vt, 1, 2)
        d = np.sign(np.linalg.det(V @ np.swapaxes(U, 1, 2)))
        d[d == 0] = 1.0
        D = np.zeros((K, 3, 3))
        D[:, 0, 0] = 1.0
        D[:, 1, 1] = 1.0
        D[:, 2, 2] = d
        R = V @ D @ np.swapaxes(U, 1, 2)
    t = cq - np.einsum("kij,kj->ki", R, cp)
    if single:
        return R[0], t[0]
    return R, t


def _robust_cost(d2: np.ndarray) -> np.ndarray:
    """Tukey's biweight ρ(d) + ε·d² of squared distances d² (Å²); see the module docstring."""
    c2 = _ROBUST_SCALE**2
    v = np.multiply(d2, -1.0 / c2)
    v += 1.0
    np.maximum(v, 0.0, out=v)  # v = 1 - min(d²/c², 1)
    cube = v * v
    cube *= v
    cube *= -c2 / 6.0
    cube += c2 / 6.0
    cube += _ROBUST_EPS * d2
    return cube


def _robust_weights(d2: np.ndarray) -> np.ndarray:
    """IRLS weights ρ'(d)/d of :func:`_robust_cost` (up to a factor 1)."""
    u = np.minimum(d2 / _ROBUST_SCALE**2, 1.0)
    return (1.0 - u) ** 2 + 2.0 * _ROBUST_EPS


def _rot_z(theta: np.ndarray) -> np.ndarray:
    theta = np.atleast_1d(theta)
    c, s = np.cos(theta), np.sin(theta)
    R = np.zeros((len(theta), 3, 3))
    R[:, 0, 0] = c
    R[:, 0, 1] = -s
    R[:, 1, 0] = s
    R[:, 1, 1] = c
    R[:, 2, 2] = 1.0
    return R


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _super_fibonacci(n: int) -> np.ndarray:
    """n quasi-uniform rotations (Alexa, CVPR 2022), shape ``(n, 3, 3)``."""
    phi = np.sqrt(2.0)
    psi = 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r = np.sqrt(s / n)
    R = np.sqrt(1.0 - s / n)
    alpha = 2 * np.pi * s / phi
    beta = 2 * np.pi * s / psi
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), R * np.sin(beta), R * np.cos(beta)], axis=1)
    return _quat_to_matrix(q)


@functools.lru_cache(maxsize=None)
def _scan_rotations() -> np.ndarray:
    return _super_fibonacci(_N_SCAN)


def _principal_starts(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The 4 proper rotations taking P's principal axes onto Q's (both centred)."""
    _, Vp = np.linalg.eigh(P.T @ P)
    _, Vq = np.linalg.eigh(Q.T @ Q)
    out = []
    for sx in (1.0, -1.0):
        for sy in (1.0, -1.0):
            D = np.diag([sx, sy, 1.0])
            R = Vq @ D @ Vp.T
            if np.linalg.det(R) < 0:
                D[2, 2] = -1.0
                R = Vq @ D @ Vp.T
            out.append(R)
    return np.array(out)


def _scan(P: np.ndarray, groups, trees, n_keep: int) -> np.ndarray:
    """Rank a dense quasi-uniform set of rotations by a capped nearest-neighbour score; keep the best.

    P is centred, ``trees`` hold the centred reference atoms per element. Only a few atoms near the centre are used: their
    displacement under a rotation error is small, so the score's peak around
    the right orientation is wide enough for the grid's spacing.
    """
    R = _scan_rotations()
    r = np.linalg.norm(P, axis=1)
    score = np.zeros(len(R))
    n_total = sum(len(ip) for _, ip, _ in groups)
    for el, ip, _ in groups:
        m = max(1, int(round(_N_SCAN_ATOMS * len(ip) / n_total)))
        inner = ip[r[ip] <= _SCAN_INNER * r.max()]
        if len(inner) < m:
            inner = ip
        inner = inner[np.argsort(r[inner], kind="stable")]
        sel = inner[np.linspace(0, len(inner) - 1, min(m, len(inner))).round().astype(int)]
        X = np.einsum("kij,mj->kmi", R, P[sel])
        d, _ = trees[el].query(X.reshape(-1, 3), distance_upper_bound=_SCAN_CAP)
        d = np.minimum(d, _SCAN_CAP)
        score += (d * d).reshape(len(R), len(sel)).sum(axis=1)
    return R[np.argsort(score, kind="stable")[:n_keep]]


def _starts(P: np.ndarray, Q: np.ndarray, mode: str, aligner) -> np.ndarray:
    """Starting rotations about the centroids for centred P (moving) and Q (reference)."""
    if mode == "none":
        return np.eye(3)[None]
    if mode == "beam":
        return _rot_z(np.arange(_N_STARTS_BEAM) * 2 * np.pi / _N_STARTS_BEAM)
    scanned = _scan(P, aligner.groups, aligner.centred_trees, _N_SCAN_KEEP)
    # the identity first: among equally good (symmetry-equivalent) answers the
    # least motion wins, so a structure compared with itself keeps its order
    return np.concatenate([np.eye(3)[None], _principal_starts(P, Q), scanned])


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """A rigid motion and an assignment taking ``moving`` onto ``reference``.

    ``aligned = moving.positions @ rotation.T + translation``; ``rotation``
    has determinant −1 when ``mirrored``.

    Attributes
    ----------
    rotation : ndarray, shape (3, 3)
        Orthogonal matrix (proper, or improper when mirrored).
    translation : ndarray, shape (3,)
        Å.
    mirrored : bool
        Whether the mirror image (z → −z, then rotation) matched better.
    reference_index : ndarray of int, shape (n_moving,)
        Reference atom assigned to each moving atom; −1 when unmatched.
    positions : ndarray, shape (n_moving, 3)
        The moving atoms after the motion (Å).
    displacements : ndarray, shape (n_moving,)
        Distance to the assigned reference atom (Å); NaN when unmatched.
    """

    rotation: np.ndarray
    translation: np.ndarray
    mirrored: bool
    reference_index: np.ndarray
    positions: np.ndarray
    displacements: np.ndarray

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask of the moving atoms that have a partner."""
        return self.reference_index >= 0

    @property
    def rmsd(self) -> float:
        """Root-mean-square distance over matched pairs (Å)."""
        d = self.displacements[self.matched]
        return float(np.sqrt(np.mean(d * d))) if len(d) else float("nan")

    def in_reference_order(self, n_reference: int) -> np.ndarray:
        """Aligned positions reordered to the reference's atoms, shape ``(n_reference, 3)``; NaN rows for unmatched."""
        out = np.full((n_reference, 3), np.nan)
        m = self.matched
        out[self.reference_index[m]] = self.positions[m]
        return out


class _Aligner:
    """Arrays and per-element index sets shared by all starts of one alignment."""

    def __init__(self, moving: Atoms, reference: Atoms, mode: str, robust: bool = True):
        self.mode = mode
        self.robust = robust
        self.P0 = np.asarray(moving.positions, dtype=float)
        self.Q = np.asarray(reference.positions, dtype=float)
        sym_p = np.asarray(moving.get_chemical_symbols())
        sym_q = np.asarray(reference.get_chemical_symbols())
        self.groups = []  # (element, moving indices, reference indices)
        for el in sorted(set(sym_p) & set(sym_q)):
            self.groups.append((el, np.flatnonzero(sym_p == el), np.flatnonzero(sym_q == el)))
        self.cp = self.P0.mean(axis=0)
        self.cq = self.Q.mean(axis=0)
        self.trees = {el: cKDTree(self.Q[iq]) for el, _, iq in self.groups}
        self.ref_positions = {el: self.Q[iq] for el, _, iq in self.groups}
        self.centred_trees = {el: cKDTree(self.Q[iq] - self.cq) for el, _, iq in self.groups}

    # -- coarse stage: batched nearest-neighbour ICP on a subset of atoms
    def _subset(self, P: np.ndarray) -> tuple[np.ndarray, list]:
        """Deterministic subset covering every radial shell, with its element groups."""
        chosen = []
        n_total = sum(len(ip) for _, ip, _ in self.groups)
        for el, ip, _ in self.groups:
            k = max(1, int(round(_N_COARSE_ATOMS * len(ip) / max(n_total, 1))))
            if len(ip) > k:
                r = np.linalg.norm(P[ip] - P.mean(axis=0), axis=1)
                order = ip[np.argsort(r, kind="stable")]
                ip = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
            chosen.append(ip)
        idx = np.concatenate(chosen)
        groups, start = [], 0
        for (el, _, _), ip in zip(self.groups, chosen):
            groups.append((el, np.arange(start, start + len(ip))))
            start += len(ip)
        return idx, groups

    def coarse(self, P: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine starting rotations R (K,3,3) about the centroids; return R, t, mean squared NN distance."""
        idx, groups = self._subset(P)
        Ps = P[idx]
        K = len(R)
        t = self.cq - np.einsum("kij,j->ki", R, P.mean(axis=0))
        Y = np.empty((K, len(idx), 3))
        d2 = np.empty((K, len(idx)))
        for _ in range(_COARSE_ITERATIONS):
            X = np.einsum("kij,mj->kmi", R, Ps) + t[:, None, :]
            for el, sel in groups:
                d, j = self.trees[el].query(X[:, sel].reshape(-1, 3))
                Y[:, sel] = self.ref_positions[el][j].reshape(K, len(sel), 3)
                d2[:, sel] = (d * d).reshape(K, len(sel))
            R, t = _kabsch(np.broadcast_to(Ps, X.shape), Y, self.mode)
        X = np.einsum("kij,mj->kmi", R, Ps) + t[:, None, :]
        for el, sel in groups:
            d, _ = self.trees[el].query(X[:, sel].reshape(-1, 3))
            d2[:, sel] = (d * d).reshape(K, len(sel))
        return R, t, d2.mean(axis=1)

    # -- fine stage: Hungarian assignment <-> Kabsch until the assignment is stable
    def assign(self, X: np.ndarray) -> np.ndarray:
        ref = np.full(len(X), -1, dtype=np.intp)
        for _, ip, iq in self.groups:
            C = cdist(X[ip], self.Q[iq], "sqeuclidean")
            if self.robust:
                C = _robust_cost(C)
            rows, cols = linear_sum_assignment(C)
            ref[ip[rows]] = iq[cols]
        return ref

    def loss(self, d2: np.ndarray) -> float:
        return float(np.sum(_robust_cost(d2))) if self.robust else float(np.sum(d2))

    def fine(self, P: np.ndarray, R: np.ndarray, t: np.ndarray):
        """Alternate assignment and (weighted) Kabsch from (R, t) until neither changes the loss."""
        ref = None
        best = np.inf
        for _ in range(_MAX_FINE_ITERATIONS):
            new = self.assign(P @ R.T + t)
            if ref is not None and np.array_equal(new, ref):
                break
            ref = new
            m = ref >= 0
            Pm, Qm = P[m], self.Q[ref[m]]
            # with the assignment fixed: one Kabsch (least squares), or IRLS to convergence (robust)
            for _ in range(_MAX_FINE_ITERATIONS if self.robust else 1):
                w = _robust_weights(np.sum((Pm @ R.T + t - Qm) ** 2, axis=1)) if self.robust else None
                R, t = _kabsch(Pm, Qm, self.mode, w)
                loss = self.loss(np.sum((Pm @ R.T + t - Qm) ** 2, axis=1))
                if loss > best - 1e-12 * (1.0 + best):
                    best = min(best, loss)
                    break
                best = loss
        X = P @ R.T + t
        m = ref >= 0
        d = np.full(len(P), np.nan)
        d[m] = np.linalg.norm(X[m] - self.Q[ref[m]], axis=1)
        loss = self.loss(d[m] ** 2) / max(np.count_nonzero(m), 1) if m.any() else np.inf
        return R, t, ref, X, d, loss


def check_composition(moving: Atoms, reference: Atoms, allow_unmatched: bool, names=("refined", "truth")):
    """Refuse structures of different compositions (:class:`InputError`), unless ``allow_unmatched``.

    With ``allow_unmatched`` the difference is logged, and only structures
    without an element in common are refused.
    """
    cm = Counter(moving.get_chemical_symbols())
    cr = Counter(reference.get_chemical_symbols())
    if cm != cr:
        msg = (
            f"the structures have different compositions: {names[0]} {formula(cm)}, "
            f"{names[1]} {formula(cr)}"
        )
        if not allow_unmatched:
            raise InputError(msg + " (allow unmatched atoms to compare the common atoms)")
        if not set(cm) & set(cr):
            raise InputError(msg + "; no element in common")
        log.info("%s; unmatched atoms are reported", msg)


def align_structures(
    moving: Atoms,
    reference: Atoms,
    *,
    mirror: bool = True,
    rotation: str = "full",
    allow_unmatched: bool = False,
    robust: bool = True,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
) -> Alignment:
    """Best rigid motion and one-to-one, per-element assignment of ``moving`` onto ``reference``.

    Parameters
    ----------
    moving, reference : ase.Atoms
        Structures to align (positions in Å). ``reference`` stays put.
    mirror : bool
        Also try the mirror image z → −z of ``moving`` (see module docstring).
    rotation : {"full", "beam", "none"}
        Rotations allowed (see module docstring).
    allow_unmatched : bool
        When the compositions differ, assign as many atoms of each element as
        both have and leave the rest unmatched (reference index −1); when
        False, raise :class:`InputError`.
    robust : bool
        Minimize the robust loss (Tukey biweight, see the module docstring)
        instead of the RMSD: atoms far from any partner do not pull the
        alignment or the assignment of the others.
    initial : (ndarray (3, 3), ndarray (3,)) or None
        A known approximate motion ``x -> A x + b`` (det A = ±1): skip the
        global search and refine only from there.

    Returns
    -------
    Alignment
    """
    validate_atoms(moving, "moving structure")
    validate_atoms(reference, "reference structure")
    mode = _validate_rotation(rotation)
    check_composition(moving, reference, allow_unmatched, names=("moving", "reference"))
    al = _Aligner(moving, reference, mode, robust=robust)
    if initial is not None:
        A, b = (np.asarray(v, dtype=float) for v in initial)
        flip = np.linalg.det(A) < 0
        M = _MIRROR if flip else np.eye(3)
        P = al.P0 @ M.T
        # A = R M  =>  R = A M^-1 = A M
        R, t, ref, X, d, _ = al.fine(P, A @ M, b)
        return Alignment(R @ M, t, bool(flip), ref, X, d)

    handedness = (False, True) if mirror else (False,)
    candidates = []
    for flip in handedness:
        M = _MIRROR if flip else np.eye(3)
        P = al.P0 @ M.T
        starts = _starts(P - P.mean(axis=0), al.Q - al.cq, mode, al)
        R, t, score = al.coarse(P, starts)
        # scores equal to ~1e-10 Å² are ties: keep the start order (identity first)
        order = np.argsort(np.round(score, 10), kind="stable")
        kept = []
        for k in order:
            if any(_angle(R[k], R[j]) < 0.1 for j in kept):
                continue  # same basin as a better start
            kept.append(k)
            if len(kept) == _N_FINE:
                break
        for k in kept:
            candidates.append((flip, M, P, R[k], t[k], score[k]))
    results = []
    for flip, M, P, R0, t0, _ in candidates:
        R, t, ref, X, d, loss = al.fine(P, R0, t0)
        results.append((flip, M, R, t, ref, X, d, loss))
    # ties (symmetric particles): prefer no mirror, then the smallest rotation
    lowest = min(r[-1] for r in results)
    tied = [r for r in results if r[-1] <= lowest + 1e-9 * (1.0 + lowest)]
    flip, M, R, t, ref, X, d, _ = min(tied, key=lambda r: (r[0], _angle(r[2] @ r[1], np.eye(3))))
    return Alignment(R @ M, t, bool(flip), ref, X, d)


def _angle(R1: np.ndarray, R2: np.ndarray) -> float:
    c = (np.trace(R1.T @ R2) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))
