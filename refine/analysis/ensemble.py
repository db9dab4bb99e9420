"""Ensembles of refinements of one image: consensus structure and per-atom spread.

A single projection does not determine a particle's 3-D structure uniquely,
so refinements of one image from different seeds disagree, most along the
beam. :func:`build_ensemble` puts the disagreement in numbers:

1. every pair of runs is aligned (rigid motion, mirror allowed, one-to-one
   assignment per element: :func:`refine.analysis.align.align_structures`) and the
   run with the smallest summed RMSD to the others, the *medoid*, becomes the
   reference;
2. every run is aligned onto the reference, atoms are matched, and the
   matched positions are averaged: the consensus;
3. steps of generalized Procrustes analysis: every run is re-aligned (from
   its current motion) and re-assigned onto the consensus, which is
   re-averaged, until the assignments stop changing.

The per-atom *spread* is the isotropic per-coordinate standard deviation of
the run positions around the consensus,
``sqrt(Σ_k |x_k − x̄|² / (3 (n − 1)))`` in Å, so that runs scattered with
Gaussian noise of standard deviation σ along each axis have spread ≈ σ. The
same along the beam alone (``spread_z``) and in the image plane
(``spread_xy``) are stored too. The consensus stays in the reference run's
frame (for refinements against one image: the image's frame, beam along z).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from refine.analysis.align import align_structures, formula, validate_atoms
from refine.analysis.plots import new_figure
from surrogate.common import InputError, atomic_path, save_figure, write_json

__all__ = ["Ensemble", "build_ensemble", "plot_ensemble", "write_ensemble", "write_atoms"]

log = logging.getLogger(__name__)

_MAX_ITERATIONS = 10


@dataclass(frozen=True)
class Ensemble:
    """Consensus and spread of several refinements of one image.

    Attributes
    ----------
    consensus : ase.Atoms
        Mean matched positions (Å) in the reference run's frame and atom
        order, with ``arrays["spread"]``, ``arrays["spread_xy"]`` and
        ``arrays["spread_z"]`` (Å) and a summary in ``info``.
    aligned : list of ndarray, shape (n_atoms, 3) each
        Every run moved onto the consensus, in the consensus atom order (Å).
    reference : int
        Index of the medoid run.
    pairwise_rmsd : ndarray, shape (n_runs, n_runs)
        RMSD (Å) after alignment of every pair of runs.
    rmsd_to_consensus : ndarray, shape (n_runs,)
        Å.
    mirrored : ndarray of bool, shape (n_runs,)
        Whether a run matched the consensus as its mirror image.
    iterations : int
        Procrustes iterations made.
    """

    consensus: Atoms
    aligned: list
    reference: int
    pairwise_rmsd: np.ndarray
    rmsd_to_consensus: np.ndarray
    mirrored: np.ndarray
    iterations: int

    @property
    def n_runs(self) -> int:
        return len(self.aligned)

    @property
    def spread(self) -> np.ndarray:
        """Per-atom spread (Å), shape (n_atoms,)."""
        return self.consensus.arrays["spread"]

    def aligned_runs(self) -> list[Atoms]:
        """The runs as Atoms in the consensus frame and order (``info["run"]`` their index)."""
        out = []
        for k, pos in enumerate(self.aligned):
            a = Atoms(self.consensus.get_chemical_symbols(), positions=pos)
            a.info.update(run=k, rmsd_to_consensus=float(self.rmsd_to_consensus[k]), mirrored=bool(self.mirrored[k]))
            out.append(a)
        return out

    def to_dict(self) -> dict:
        s = self.spread
        return {
            "n_runs": self.n_runs,
            "n_atoms": len(self.consensus),
            "formula": self.consensus.get_chemical_formula(),
            "reference": self.reference,
            "iterations": self.iterations,
            "mean_spread": float(s.mean()),
            "median_spread": float(np.median(s)),
            "max_spread": float(s.max()),
            "mean_spread_xy": float(self.consensus.arrays["spread_xy"].mean()),
            "mean_spread_z": float(self.consensus.arrays["spread_z"].mean()),
            "min_distance": float(self.consensus.info.get("min_distance", float("nan"))),
            "rmsd_to_consensus": self.rmsd_to_consensus.tolist(),
            "mirrored": self.mirrored.tolist(),
            "pairwise_rmsd": self.pairwise_rmsd.tolist(),
        }


def _validate_structures(structures) -> list[Atoms]:
    structures = list(structures)
    if len(structures) < 2:
        raise InputError(f"an ensemble needs at least 2 structures, got {len(structures)}")
    for k, a in enumerate(structures):
        validate_atoms(a, f"structure {k}")
    c0 = Counter(structures[0].get_chemical_symbols())
    for k, a in enumerate(structures[1:], 1):
        ck = Counter(a.get_chemical_symbols())
        if ck != c0:
            raise InputError(
                f"all structures of an ensemble need one composition: structure 0 is {formula(c0)}, "
                f"structure {k} is {formula(ck)}"
            )
    return structures


def build_ensemble(structures, *, mirror: bool = True, rotation: str = "full", progress=None) -> Ensemble:
    """Consensus structure and per-atom spread of several refinements of one image.

    Parameters
    ----------
    structures : sequence of ase.Atoms
        At least two structures of one composition (Å).
    mirror : bool
        Allow a run to match as its mirror image z → −z (one projection cannot
        tell them apart).
    rotation : {"full", "beam", "none"}
        Rotations allowed when aligning runs (see :mod:`refine.analysis.align`).
    progress : callable or None
        Called with no argument after each pairwise alignment (there are
        n(n−1)/2), e.g. a tqdm bar's ``update``.

    Returns
    -------
    Ensemble
    """
    structures = _validate_structures(structures)
    n = len(structures)
    pair = np.zeros((n, n))
    motions = {}
    for i in range(n):
        for j in range(i + 1, n):
            al = align_structures(structures[j], structures[i], mirror=mirror, rotation=rotation)
            pair[i, j] = pair[j, i] = al.rmsd
            motions[j, i] = (al.rotation, al.translation)
            if progress is not None:
                progress()
    ref = int(np.argmin(pair.sum(axis=1)))
    reference = structures[ref]
    n_atoms = len(reference)
    log.info("ensemble of %d runs: reference (medoid) is run %d", n, ref)

    # motions of every run onto the reference
    current = []
    for k in range(n):
        if k == ref:
            current.append((np.eye(3), np.zeros(3)))
        elif (k, ref) in motions:
            current.append(motions[k, ref])
        else:  # we know ref -> k: invert x_k ≈ A x_ref + b
            A, b = motions[ref, k]
            current.append((A.T, -A.T @ b))

    target = Atoms(reference.get_chemical_symbols(), positions=reference.positions.copy())
    assignments = None
    iterations = 0
    for iterations in range(1, _MAX_ITERATIONS + 1):
        aligns = [
            align_structures(s, target, mirror=mirror, rotation=rotation, initial=current[k])
            for k, s in enumerate(structures)
        ]
        X = np.stack([al.in_reference_order(n_atoms) for al in aligns])
        target = Atoms(reference.get_chemical_symbols(), positions=X.mean(axis=0))
        current = [(al.rotation, al.translation) for al in aligns]
        new = np.stack([al.reference_index for al in aligns])
        if assignments is not None and np.array_equal(new, assignments):
            break
        assignments = new
    mean = X.mean(axis=0)
    D = X - mean
    dof = max(n - 1, 1)
    spread = np.sqrt(np.sum(D * D, axis=(0, 2)) / (3 * dof))
    spread_xy = np.sqrt(np.sum(D[..., :2] ** 2, axis=(0, 2)) / (2 * dof))
    spread_z = np.sqrt(np.sum(D[..., 2] ** 2, axis=0) / dof)
    rmsd = np.sqrt(np.mean(np.sum(D * D, axis=2), axis=1))
    mirrored = np.array([al.mirrored for al in aligns])

    consensus = Atoms(reference.get_chemical_symbols(), positions=mean)
    min_distance = _min_distance(mean)
    if n_atoms > 1 and min_distance < 1.0:
        log.warning("the consensus has atoms %.2f Å apart: runs disagree on where some atoms are "
                    "(see the spread)", min_distance)
    consensus.arrays["spread"] = spread
    consensus.arrays["spread_xy"] = spread_xy
    consensus.arrays["spread_z"] = spread_z
    consensus.info.update(
        n_runs=n,
        reference_run=ref,
        mean_spread=float(spread.mean()),
        mean_spread_z=float(spread_z.mean()),
        mean_rmsd_to_consensus=float(rmsd.mean()),
        min_distance=min_distance,
    )
    return Ensemble(consensus, list(X), ref, pair, rmsd, mirrored, iterations)


def _min_distance(pos: np.ndarray) -> float:
    """Smallest interatomic distance (Å); inf for one atom."""
    if len(pos) < 2:
        return float("inf")
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    return float(d[:, 1].min())


def write_atoms(atoms, path) -> Path:
    """Write one structure or a list of them as extxyz, atomically."""
    from ase.io import write

    with atomic_path(path, suffix=".xyz") as tmp:
        write(tmp, atoms, format="extxyz")
    return Path(path)


def write_ensemble(ensemble: Ensemble, out_dir, *, figure: bool = True, sources=None) -> dict:
    """Write ``consensus.xyz``, ``aligned_runs.xyz``, ``ensemble.json`` and ``ensemble.png`` into ``out_dir``.

    Returns a dict of the written paths by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "consensus": write_atoms(ensemble.consensus, out / "consensus.xyz"),
        "aligned_runs": write_atoms(ensemble.aligned_runs(), out / "aligned_runs.xyz"),
    }
    summary = ensemble.to_dict()
    if sources is not None:
        summary["sources"] = [str(s) for s in sources]
    paths["summary"] = write_json(out / "ensemble.json", summary)
    if figure:
        plot_ensemble(ensemble, out / "ensemble.png")
        paths["figure"] = out / "ensemble.png"
    return {k: str(v) for k, v in paths.items()}


def plot_ensemble(ensemble: Ensemble, path=None):
    """Consensus seen along the beam and from the side, coloured by spread; RMSD of each run.

    Parameters
    ----------
    ensemble : Ensemble
    path : path-like or None
        PNG to write atomically; None to only return the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colors

    fig = new_figure((13, 4.4))
    ax0, ax1, ax2 = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 0.8])
    p = ensemble.consensus.positions
    s = ensemble.spread
    norm = colors.Normalize(0, max(float(s.max()), 1e-3))
    order = np.argsort(p[:, 2])  # draw far atoms first
    sc = ax0.scatter(p[order, 0], p[order, 1], c=s[order], s=40, cmap="magma_r", norm=norm, edgecolors="k", lw=0.3)
    ax0.set_title("along the beam (x, y)")
    ax0.set_xlabel("x (Å)")
    ax0.set_ylabel("y (Å)")
    order = np.argsort(-p[:, 1])
    ax1.scatter(p[order, 0], p[order, 2], c=s[order], s=40, cmap="magma_r", norm=norm, edgecolors="k", lw=0.3)
    ax1.set_title("side view (x, z); beam along z")
    ax1.set_xlabel("x (Å)")
    ax1.set_ylabel("z (Å)")
    for ax in (ax0, ax1):
        ax.set_aspect("equal")
    fig.colorbar(sc, ax=[ax0, ax1], label="spread across runs (Å)", shrink=0.8)
    k = np.arange(ensemble.n_runs)
    colours = ["C3" if m else "C0" for m in ensemble.mirrored]
    ax2.bar(k, ensemble.rmsd_to_consensus, color=colours)
    ax2.axhline(float(np.mean(ensemble.rmsd_to_consensus)), color="k", ls=":", lw=0.8)
    ax2.set_xticks(k)
    ax2.set_xlabel("run (red: mirrored)")
    ax2.set_ylabel("RMSD to consensus (Å)")
    ax2.set_title(f"{ensemble.n_runs} runs, reference {ensemble.reference}")
    if path is not None:
        save_figure(fig, path)
    return fig
