"""Self-consistency benchmark of the refinement (issue 5, "must show" 1).

The "experimental" images are surrogate images, with Poisson noise at a
stated dose, of EMT-relaxed ~300-atom Pt particles generated here; the
genetic algorithm starts from random compact clusters and must find the
particle again. The issue's three cases and a glass:

(a) ``decahedron``: a Marks decahedron tilted ``--tilt`` degrees off its zone axis;
(b) ``icosahedron``: a 309-atom icosahedron with 6 surface (vertex) atoms moved
    to hollow sites on the far side (lowest z; the beam travels along +z) —
    an ideal icosahedron in the right pose would already score ~98 %, so the
    number of the 6 moved atoms found (partner within 0.5 Å) is reported;
(c) ``annealed``: a truncated octahedron annealed by Langevin MD with asap3 EMT
    at ``--anneal-temperature`` K (1400) for ``--anneal-time`` ps (10),
    quenched at ``--cooling-rate`` K/ps (3) to 300 K and relaxed. The particle
    melts at 1400 K and recrystallises on the way down, with stacking faults
    and twins (30 % of its atoms fcc or hcp, the rest surface and defects);
(g) ``glass`` (not one of the issue's cases, reported without a goal): the
    same particle and the same melt, quenched at ``--glass-cooling-rate``
    K/ps (100), which freezes it into a glass (2 of 300 atoms fcc or hcp).
    Sessions 1–3 ran this as case (c). 100 K/ps is 10^14 K/s; no particle
    that reaches a microscope cools that fast (3 K/ps is still 10^4–10^6
    times faster than splat cooling, the fastest experimental quench), so
    the recrystallised particle is the realistic "annealed and quenched" one. ``examples/truth_basin.py`` shows
    why the glass is out of the search's reach.

For each case it reports, after optimal rigid alignment (mirror z → −z
allowed: one projection cannot tell a particle from its mirror image) and
one-to-one assignment (:func:`refine.analysis.compare.compare_structures`), the
fraction of atoms within 0.3 Å and 0.5 Å of the truth, the final χ² per
pixel next to the χ² per pixel of the *true* structure against the same
noisy image (the noise level: ≈ 1 under a correct Poisson model), and the
wall time. Goals: (a) ≥ 98 % within 0.5 Å in ≤ 15 min; (b) ≥ 4 of the 6 moved
atoms found; (c) ≥ 80 % within 0.5 Å; (g) none.

Model: ``--model FILE``, else the shipped default model. Both the images and the
refinement use the same model, so this tests the search, not the surrogate.

Run from the repository root::

    python examples/self_consistency.py                 # (a), (b), (c), 15 min each
    python examples/self_consistency.py --cases g       # the glass
    python examples/self_consistency.py --quick         # case (a), 4 minutes, smaller population
    python examples/self_consistency.py --cases b --time-limit 600 --json

Results (table on stdout, ``results.json`` and every run's folder) go to ``--work``.

Measured with ``--search anneal`` (the default; the recipe of
``refine/recipes.py``: offspring relaxed by 20 FIRE steps on E + α·χ², α = 2
× auto, beam-parallel cuts, depth flips and depth moves, image-restrained
annealing of 2 individuals every 3 generations — 1500 → 300 K over 20000
steps of 5 fs — on 2 worker processes, a polish of the best every 5
generations (interior vacancies filled, then depth moves), and a finishing
stage over the last 15 % of the run that selects at the thermal α =
k_B·300 K/2 = 0.0129 eV with image-guided moves ×4; shipped default model,
dose 1e5 e/Å², population 24, random starts, 890 s of GA wall time per case,
one case at a time on the 2 cores; ``xy≤0.5Å``: the projected positions
alone, one-to-one in the image frame)::

    python tests/benchmarks/bench_self_consistency.py --cases a,b,c,g --work /tmp/s4_final

    case              atoms  ≤0.3Å   ≤0.5Å  xy≤0.5Å  RMSD  χ²/px  χ²/px truth  E eV  E truth  gens  wall s
    (a) decahedron      300  93.7%   96.7%    99.0%  1.84  0.686        0.691  76.6     72.9    57     892
    (b) icosahedron     309  99.4%   99.4%    97.1%  0.64  0.647        0.652  80.7     80.6    63     894   4/6 moved found
    (c) annealed        300  98.0%   98.0%    99.0%  1.44  0.634        0.636  83.0     79.9    46     893
    (g) glass           300   3.7%   10.0%    83.0%  3.35  0.760        0.618 108.1     92.3    65     903

The same recipe in earlier runs (session 3: ``--work /tmp/s3_final``, where
(c) was the glass; ``--cases c`` alone)::

    (a) decahedron      300 100.0%  100.0%   100.0%  0.03  0.678        0.691  73.1     72.9    55     893
    (b) icosahedron     309  99.4%   99.4%    98.4%  0.76  0.647        0.652  81.2     80.6    63     894   5/6 moved found
    (c) annealed        300  98.7%   99.0%   100.0%  0.64  0.626        0.636  82.6     79.9    44     893
    (g) glass           300   3.3%    8.7%    81.3%  3.58  0.764        0.618 105.9     92.3    60     902

Session 7 (a slower machine: 26–38 generations instead of 50–60; the polish
now also slides whole-column regions one period along the tilted columns,
``refine.search.operators.shift_sectors``; ``--work /tmp/bench8/...``, one case per
command)::

    (a) decahedron      300 100.0%  100.0%   100.0%  0.04  0.678        0.691  73.1     72.9    26     897
    (a) --seed 1        300 100.0%  100.0%   100.0%  0.03  0.643        0.651  72.1     72.0    30     930
    (b) icosahedron     309 100.0%  100.0%   100.0%  0.03  0.641        0.652  80.7     80.6    38     896   6/6 moved found

    (a) --seed 1 rerun  300 100.0%  100.0%   100.0%  0.03  0.643        0.651  72.1     72.0    24     897

(the 930 s: a last polish that ran past the limit; polishes are now skipped
when the last one's duration would do that — the rerun below it.)

Session 8 (same machine; every goal met in each run: ``--cases c``,
``--cases a --seed 2``, ``--cases b --seed 1``, ``--cases a --seed 3``; seed 1 of (b) needed the
far-side site search to ease its depth, see :func:`icosahedron_with_adatoms`)::

    (c) annealed        300 100.0%  100.0%   100.0%  0.04  0.624        0.636  80.0     79.9    28     899
    (a) --seed 2        300  98.7%   99.3%   100.0%  0.45  0.666        0.674  73.6     72.9    31     898
    (b) --seed 1        309 100.0%  100.0%   100.0%  0.03  0.639        0.653  80.7     80.6    33     897   6/6 moved found
    (a) --seed 3        300 100.0%  100.0%   100.0%  0.03  0.659        0.669  72.4     72.2    38     898

and case (a) with ``--seed 1`` (another decahedron pose and tilt axis;
``python tests/benchmarks/bench_self_consistency.py --cases a --seed 1``)::

    (a) decahedron      300 100.0%  100.0%   100.0%  0.03  0.643        0.651  72.1     72.0    51     892

Goals (b) and (c) are met in every run, (a) in three of four: the third
(seed 0) left a patch of 10 surface atoms on the bottom of the particle that belongs
on its top (the projection 99 % right, the energy 3.7 eV above the
truth's). The glass (g) is out of reach: its projection is roughly found
but not its depth order, at an energy 13.6 eV above the truth's (a search
failure). ``python examples/truth_basin.py /tmp/s4_final/g-glass`` runs the
GA's own annealing (1500 → 300 K over 100 ps at the run's α) from the truth
and from the answer: from the truth it comes back (96.3 %, 96.0 % within
0.5 Å), from the answer it stays away (9.0 %, 8.7 %). The truth is a narrow
basin, and nothing crystalline leads the annealings into it.

Session 5, on a slower machine (an annealing MD step 7–9 ms against the
earlier 2.5–5 ms, so 25–32 generations in 890 s instead of ~57), with the
polish's patch sweep (``polish_patches`` 4)::

    (a) decahedron      300  95.3%   95.7%    91.7%  2.91  0.734        0.691  84.9     72.9    25     894
    (a) decahedron      300  88.3%   89.7%    95.0%  3.32  0.712        0.691  81.7     72.9    31     899   float32 image force
    (a) decahedron      300  67.7%   76.7%    90.0%  3.77  0.755        0.691  94.8     72.9    25     927   --ga anneal_steps=10000
    (b) icosahedron     309  99.4%   99.4%    98.4%  1.63  0.647        0.652  81.3     80.6    32     894   4/6 moved found
    (c) annealed        300  96.7%   96.7%    90.3%  3.12  0.666        0.636  84.2     79.9    20     903

(b) and (c) meet their goals. On this machine (a) misses: the annealing gets 4–5 rounds instead of ~19.
The 95.7 % run left a region one layer spacing too low along the beam with
a 12-atom patch under it (a grain shifted along the beam; the patch sweep
moves surface patches, not grains). ``examples/patch_transfer.py`` measures
the patch sweep alone on a deliberately misplaced island of case (a):
96.7 → 99.3 % (10 atoms), 97.7 → 100 % (7 atoms, seed 1).

Earlier runs on the way (900 s of GA time; (g) was called (c) then)::

    variant                                   case  ≤0.5Å  xy≤0.5Å  E eV (truth)  note
    anneal recipe, no finishing stage          (a)  95.7%    91.0%  78.5 (72.9)
    the same + matched filter, depth sweep     (a)  90.0%    90.7%  80.7 (72.9)
    the same                                   (b)  97.7%    91.3%  79.7 (80.6)  0/6 moved atoms found
    the same                                   (g)   8.7%    78.7%  101.8 (92.3)
    + finishing stage                          (a)  96.7%   100.0%  79.2 (72.9)
    + finishing stage                          (b) 100.0%   100.0%  80.7 (80.6)  6/6 moved atoms found
    + vacancy fill in the polish               (a) 100.0%   100.0%  73.1 (72.9)  903 s wall
    --alpha thermal for the whole run          (a)   6.3%    93.7%  170.6 (72.9)
    final recipe, --time-limit 1200            (g)   9.0%    84.0%  111.2 (92.3)  more time alone does not help

What each step fixed. Without the finishing stage, (b) finds the ideal
icosahedron but none of the 6 moved atoms: its energy is *lower* than the
truth's and at α = 2 × auto its cost only 0.18 eV higher; at the thermal α
(χ² is −2 ln likelihood, E/k_BT the Boltzmann prior) the truth wins by 15
eV. The finishing stage selects at that α while the relaxation keeps the
search's (a large α in the relaxation strains the particle to fit the
noise): 6 of 6. In (a) the finishing stage puts every atom at its right
x, y; what was left were two empty sites *inside* the particle whose atoms
sat on the bottom surface (same projection, 3.3 eV more energy); the vacancy
fill of the polish moves them in. A whole run at the thermal α fails: the
landscape is too rough for the search (the projection is found, 93.7 %, at
an energy 98 eV above the truth's).

Earlier, with ``--search plain`` (the plain GA: α = 10 × auto, 5 FIRE steps per
offspring on E alone, 50 per random start, 900 s of GA wall time per case;
the three cases ran at the same time on 2 shared cores, load average ≈
4–10, so each got ≈ 410 s of CPU)::

    case              atoms  ≤0.3Å   ≤0.5Å  RMSD  χ²/px  χ²/px truth  E eV  E truth  gens  evals
    (a) decahedron      300   3.7%   13.0%  2.39  1.260        0.691  134.8    72.9  2946  70728
    (b) icosahedron     309   1.9%    9.4%  2.18  1.455        0.652  132.6    80.6  2984  71640   0/6 moved found
    (g) glass           300   2.0%   10.3%  1.89  1.274        0.618  116.7    92.3  2964  71160

With the plain GA none of the goals is met. The true structure has both a lower χ² and a lower
energy than the GA's answer in every case, so the cost function is not the
problem: the search is. The population's diversity collapses within a few
hundred generations (logbook ``diversity`` 0.17 → 0.04 while ``n_unique``
stays at μ) and the GA then creeps along one basin (see each run's
``fitness_history.png``).

Search variants tried on case (a) (``--time-limit 240`` unless stated, seed 0
unless stated, 2 shared cores, one run each; ``--ga KEY=VALUE`` sets any
:class:`refine.search.GASettings` setting by its flat name)::

    variant                                            ≤0.5Å   χ²/px  cost  gens
    defaults (5 FIRE steps per offspring)              12.3%   1.382   608  1137
    --relax-steps 50                                   13.0%   2.336   895   328
    fingerprint-only duplicates (tol 0.1) + 2 immigrants  7.0%   1.420   598  1315
    --image-guided-weight 5                            14.3%   1.276   565  1496
    --image-guided-weight 5 --image-guided-moves 3     13.0%   1.205   546  1457
    the same + fingerprint-only duplicates + immigrants  9.0%   1.424   621  1225
    defaults, seed 1                                   12.7%   1.358   328  1766
    image-guided 5 × 3 moves, seed 1                    9.7%   1.260   309  1462
    defaults, 600 s                                    12.0%   1.267   562  3843
    image-guided 5 × 3 moves, 600 s                    10.0%   1.136   520  3244

Stronger image-guided moves lower the cost and χ² consistently, but no
variant moved the fraction of atoms within 0.5 Å off its chance level
(≈ 10–14 %), so the defaults are unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from surrogate.common.atomic import atomic_write_with  # noqa: E402
from surrogate.common.jsonio import write_json  # noqa: E402

log = logging.getLogger("self_consistency")

CASES = {"a": "decahedron", "b": "icosahedron", "c": "annealed", "g": "glass"}
PIXEL = 0.1
MARGIN = 3.0


# --------------------------------------------------------------------------- the model

def get_model(path):
    """(model, description): the model file ``path``, else the shipped default model."""
    from refine.workflows import load_model_or_default

    return load_model_or_default(path)


# --------------------------------------------------------------------------- the truths

def _relax(atoms, steps=500, fmax=0.02):
    from surrogate.groundtruth.particles import relax

    relax(atoms, fmax=fmax, steps=steps)
    atoms.calc = None
    atoms.cell = None
    atoms.pbc = False
    return atoms


def _rotate(atoms, axis, degrees):
    from scipy.spatial.transform import Rotation

    com = atoms.positions.mean(axis=0)
    atoms.positions = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, float)).apply(
        atoms.positions - com) + com


def decahedron(rng, n_atoms=300, tilt=10.0):
    """EMT-relaxed Marks decahedron, five-fold axis tilted ``tilt`` degrees off the beam."""
    from surrogate.groundtruth.particles import make_particle

    atoms = _relax(make_particle("marks_decahedron", n_atoms, rng, orientation="zone"))
    axis = rng.normal(size=3)
    axis[2] = 0.0
    _rotate(atoms, axis / np.linalg.norm(axis), tilt)
    _rotate(atoms, (0, 0, 1), rng.uniform(0, 360))
    return atoms, {"tilt_degrees": tilt}


def icosahedron_with_adatoms(rng, n_moved=6):
    """EMT-relaxed 309-atom icosahedron; ``n_moved`` vertex atoms moved to hollow sites on the far side (low z)."""
    from scipy.spatial import cKDTree

    from refine.search.geometry import hollow_sites
    from surrogate.groundtruth.particles import make_particle

    atoms = _relax(make_particle("icosahedron", 309, rng, orientation="random"))
    pos = atoms.positions.copy()
    nn = 2.77
    cn = np.array([len(v) - 1 for v in cKDTree(pos).query_ball_point(pos, 1.2 * nn)])
    z = pos[:, 2] - pos[:, 2].mean()
    radius = np.linalg.norm(pos - pos.mean(axis=0), axis=1).max()
    # the atoms that move: low-coordinated (vertex/edge) atoms on the near half
    movers = [i for i in np.argsort(cn + 0.01 * rng.random(len(pos))) if z[i] > 0][:n_moved]
    rest = np.setdiff1d(np.arange(len(pos)), movers)
    far = rest[z[rest] < -0.55 * radius]
    sites, coord = hollow_sites(pos[rest], nn, rng, n_triples=4000, anchors=np.searchsorted(rest, far))
    centre = pos.mean(axis=0)
    outward = np.linalg.norm(sites - centre, axis=1) > np.linalg.norm(pos[far] - centre, axis=1).mean()
    # hollow sites deep on the far side, two bonds apart; some poses have fewer than n_moved of them below
    # 0.6 radii (seed 1: five), so the depth asked for eases off in steps (seed 0 takes the first, as before)
    for depth in (0.6, 0.5, 0.4):
        ok = (coord == 3) & (sites[:, 2] - centre[2] < -depth * radius) & outward
        chosen = []
        for k in rng.permutation(int(ok.sum())):
            site = sites[ok][k]
            if all(np.linalg.norm(site - s) > 2.0 * nn for s in chosen):
                chosen.append(site)
            if len(chosen) == n_moved:
                break
        if len(chosen) == n_moved:
            break
    else:
        raise RuntimeError(f"found only {len(chosen)} far-side hollow sites")
    pos[movers] = np.array(chosen)
    atoms.positions = pos
    _relax(atoms, steps=300)
    return atoms, {"moved": [int(i) for i in movers]}


def crystalline_fraction(atoms) -> float:
    """Fraction of atoms with an fcc or hcp neighbourhood (asap3 restricted common-neighbour analysis)."""
    from asap3.analysis.localstructure import RestrictedCNA

    work = atoms.copy()
    work.calc = None
    work.cell = np.diag(np.ptp(work.positions, axis=0) + 20.0)
    work.center()
    work.pbc = False
    RestrictedCNA(work, 3.3)  # cut-off between the first (2.77 Å) and second (3.92 Å) shells of Pt
    return float(np.mean(work.get_tags() < 2))


def annealed(rng, n_atoms=300, temperature=1400.0, anneal_time=10.0, cooling_rate=3.0):
    """A truncated octahedron annealed at ``temperature`` K for ``anneal_time`` ps (asap3 EMT), cooled, relaxed.

    A 300-atom Pt particle melts at 1400 K under EMT. Cooled at 3 K/ps it
    recrystallises with stacking faults and twins (case c); quenched at
    100 K/ps it freezes into a glass with no fcc atom at all (case g).
    """
    from surrogate.groundtruth.particles import make_particle, melt_quench

    atoms = make_particle("truncated_octahedron", n_atoms, rng, orientation="random")
    melt_quench(atoms, rng, melt_temperature=temperature, melt_time=anneal_time, cooling_rate=cooling_rate)
    atoms.calc = None
    atoms.cell = None
    atoms.pbc = False
    atoms.set_momenta(None)
    return atoms, {"anneal_temperature_K": temperature, "anneal_time_ps": anneal_time,
                   "cooling_rate_K_per_ps": cooling_rate, "crystalline_fraction": crystalline_fraction(atoms)}


def make_truth(case, rng, args):
    if case == "a":
        atoms, info = decahedron(rng, args.atoms, args.tilt)
    elif case == "b":
        atoms, info = icosahedron_with_adatoms(rng)
    else:
        rate = args.glass_cooling_rate if case == "g" else args.cooling_rate
        atoms, info = annealed(rng, args.atoms, args.anneal_temperature, args.anneal_time, rate)
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms, info


def noisy_image(model, truth, dose, rng):
    """Surrogate image of ``truth`` (moved into the image frame, in place) with Poisson noise at ``dose`` e/Å²."""
    from refine.io.images import ExperimentalImage
    from surrogate.imaging.grid import ProbeGrid

    grid = ProbeGrid.around(truth, pixel_size=PIXEL, margin=MARGIN)
    truth.positions[:, 0] -= grid.origin[0]
    truth.positions[:, 1] -= grid.origin[1]
    grid = ProbeGrid(origin=(0.0, 0.0), shape=grid.shape, pixel_size=PIXEL)
    clean = model.simulate(truth, grid)
    per_pixel = dose * PIXEL ** 2
    counts = rng.poisson(np.clip(clean, 0.0, None) * per_pixel)
    data = counts / per_pixel
    return ExperimentalImage(data=data, pixel_size=PIXEL, mask=np.ones(data.shape, bool), origin=(0.0, 0.0),
                             source=f"surrogate + Poisson({dose:g} e/Å²)"), clean


# --------------------------------------------------------------------------- one case

def run_case(case, model, args, work: Path) -> dict:
    from ase.io import write

    from refine.analysis import compare_structures
    from refine.workflows import CostSettings, RunSettings, StartSettings, refine_image

    # (g) draws from (c)'s stream: the same particle and the same melt, only the quench differs
    rng = np.random.default_rng([args.seed, ord("c" if case == "g" else case)])
    t0 = time.perf_counter()
    truth, info = make_truth(case, rng, args)
    image, clean = noisy_image(model, truth, args.dose, rng)
    t_truth = time.perf_counter() - t0
    out = work / f"{case}-{CASES[case]}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out / "truth.xyz", lambda p: write(p, truth, format="extxyz"))
    atomic_write_with(out / "clean.npy", lambda p: np.save(p, clean))
    run_dir = out / "refinement"
    if run_dir.exists() and not args.resume:
        import shutil

        shutil.rmtree(run_dir)
    t1 = time.perf_counter()
    c1 = time.process_time()
    k1 = os.times()  # annealing workers' CPU counts once the pool has been joined
    result = refine_image(image, f"Pt{len(truth)}", model=model, out_dir=run_dir, search=_search(args),
                          cost=CostSettings(alpha=_alpha(args), alpha_scale=args.alpha_factor, dose=args.dose),
                          start=StartSettings(source=args.start, relax_steps=args.start_relax_steps),
                          run=RunSettings(seed=args.seed, workers=args.workers, resume=args.resume,
                                          progress=not args.no_progress))
    wall = time.perf_counter() - t1
    k2 = os.times()
    cpu = time.process_time() - c1 + (k2.children_user - k1.children_user) + (k2.children_system - k1.children_system)
    truth_fit = result.fitness.evaluate(truth)
    cmp = compare_structures(result.best, truth, mirror=True)
    # the projection alone: both are in the image frame; one-to-one in x, y
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    d_xy = cdist(truth.positions[:, :2], result.best.positions[:, :2])
    ri, ci = linear_sum_assignment(d_xy)
    row = {
        "case": f"({case}) {CASES[case]}",
        "n_atoms": len(truth),
        "within_0.3": cmp.within[0.3],
        "within_0.5": cmp.within[0.5],
        "xy_within_0.5": float(np.mean(d_xy[ri, ci] < 0.5)),
        "rmsd": cmp.rmsd,
        "mirrored": cmp.mirrored,
        "chi2_per_pixel": result.summary["chi2_per_pixel"],
        "chi2_per_pixel_truth": truth_fit.chi2_per_pixel,
        "energy": result.summary["energy"],
        "energy_truth": truth_fit.energy,
        "generations": result.summary["generations"],
        "evaluations": result.summary["evaluations"],
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),
        "truth_and_image_s": round(t_truth, 1),
        "stop_reason": result.summary["stop_reason"],
        "domain_warning": result.summary["domain_warning"],
        "alpha": result.summary["alpha"],
        "out_dir": str(run_dir),
        **info,
    }
    if case == "b":
        d_truth = np.full(len(truth), np.inf)
        idx = cmp.truth_index
        ok = idx >= 0
        d_truth[idx[ok]] = cmp.displacements[ok]
        moved = np.array(info["moved"])
        row["moved_found"] = int(np.count_nonzero(d_truth[moved] < 0.5))
        row["moved_displacements"] = [round(float(v), 3) for v in d_truth[moved]]
    return row


#: search recipes: example arguments and the recipe (refine.search.recipes)
SEARCHES = {
    "anneal": {
        "args": {"relax_steps": 20, "alpha_factor": 2.0, "workers": 2},
        "ga": "anneal",
    },
    "ga": {"args": {"relax_steps": 5, "alpha_factor": 10.0, "workers": 1}, "ga": "plain"},
}


def _search(args):
    """The GASettings: the recipe, the run's size, the image-guided options, then ``--ga KEY=VALUE`` pairs."""
    from refine.search import search_settings

    return search_settings(SEARCHES[args.search]["ga"], population_size=args.population,
                           generations=args.generations, time_limit=args.time_limit, relax_steps=args.relax_steps,
                           **_ga_options(args))


def _ga_options(args):
    """Flat GASettings names: the image-guided options, then ``--ga KEY=VALUE`` pairs (VALUE as JSON)."""
    from refine.search import search_settings

    recipe = search_settings(SEARCHES[args.search]["ga"])
    opts = {"image_guided_moves": args.image_guided_moves,
            "mutation_weights": {**recipe.variation.mutation_weights, "image_guided": args.image_guided_weight}}
    for item in args.ga or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--ga expects KEY=VALUE, got {item!r}")
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    return opts


def _alpha(args):
    if args.alpha in ("auto", "thermal"):
        return args.alpha
    return float(args.alpha)


def _table(rows, file=sys.stdout):
    head = (f"{'case':18s} {'atoms':>5s} {'≤0.3Å':>7s} {'≤0.5Å':>7s} {'xy≤0.5Å':>8s} {'RMSD':>6s} {'χ²/px':>8s} "
            f"{'χ²/px truth':>11s} {'E eV':>7s} {'E truth':>7s} {'gens':>5s} {'evals':>7s} {'wall s':>7s} "
            f"{'CPU s':>6s}  note")
    print(head, file=file)
    for r in rows:
        note = f"moved atoms found: {r['moved_found']}/6" if "moved_found" in r else ""
        if "crystalline_fraction" in r:
            note += f"truth {100 * r['crystalline_fraction']:.0f} % fcc/hcp, cooled at {r['cooling_rate_K_per_ps']:g} K/ps"
        if r.get("domain_warning"):
            note += " (out of model domain)"
        print(f"{r['case']:18s} {r['n_atoms']:5d} {100 * r['within_0.3']:6.1f}% {100 * r['within_0.5']:6.1f}% "
              f"{100 * r['xy_within_0.5']:7.1f}% {r['rmsd']:6.2f} {r['chi2_per_pixel']:8.3f} "
              f"{r['chi2_per_pixel_truth']:11.3f} {r['energy']:7.1f} {r['energy_truth']:7.1f} {r['generations']:5d} "
              f"{r['evaluations']:7d} {r['wall_time_s']:7.0f} {r.get('cpu_time_s', float('nan')):6.0f}  {note}", file=file)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="a,b,c",
                   help="comma-separated subset of a,b,c,g (default a,b,c: the issue's three; g, the glass, "
                        "is reported without a goal)")
    p.add_argument("--quick", action="store_true",
                   help="case (a) only unless --cases is given, 240 s, population 16 (a smoke run)")
    p.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    p.add_argument("--atoms", type=int, default=300, help="atoms for cases a and c (default 300; b has 309)")
    p.add_argument("--dose", type=float, default=1e5, help="electron dose e/Å² (default 1e5)")
    p.add_argument("--tilt", type=float, default=10.0, help="case a: degrees off the zone axis (default 10)")
    p.add_argument("--anneal-temperature", type=float, default=1400.0)
    p.add_argument("--anneal-time", type=float, default=10.0, help="ps")
    p.add_argument("--cooling-rate", type=float, default=3.0,
                   help="case c: K/ps from the anneal temperature to 300 K (default 3: the particle recrystallises)")
    p.add_argument("--glass-cooling-rate", type=float, default=100.0,
                   help="case g: K/ps (default 100: the melt freezes into a glass)")
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--generations", type=int, default=100000, help="upper bound; the time limit usually stops")
    p.add_argument("--time-limit", type=float, default=890.0,
                   help="GA seconds per case (default 890: with the setup and the generation that crosses the "
                        "limit, a case stays within 15 min of wall time)")
    p.add_argument("--search", choices=sorted(SEARCHES), default="anneal",
                   help="search recipe (default anneal): 'anneal' = offspring relaxed on E + α·χ² (image forces), "
                        "depth moves, beam-parallel cuts and image-restrained simulated annealing every 3 "
                        "generations on --workers processes; 'plain' = the plain GA (EMT relaxation of offspring)")
    p.add_argument("--relax-steps", type=int, default=None, help="FIRE steps per offspring (recipe default)")
    p.add_argument("--start-relax-steps", type=int, default=50, help="FIRE steps per random start (default 50)")
    p.add_argument("--alpha", default="auto", help="'auto' or a number (weight of χ²)")
    p.add_argument("--alpha-factor", type=float, default=None,
                   help="with --alpha auto: multiply the automatic α by this (recipe default: 2 for anneal — "
                        "with image forces the projection is matched anyway and a larger α only strains the "
                        "particle (240 s tests: 29 %% within 0.5 Å at x2, 20 %% at x10); 10 for ga, where the "
                        "IQR-balanced α lets the energy collapse the population onto compact wrong structures)")
    p.add_argument("--start", default="random",
                   help="starting population: random (the benchmark's), shapes, mixed or image")
    p.add_argument("--image-guided-weight", type=float, default=1.0,
                   help="relative weight of the image-guided mutation (the others weigh 1, mirror 0.5; default 1). "
                        "5 (with --image-guided-moves 3) lowered the final cost and χ² (600 s: χ²/px 1.136 vs "
                        "1.267) but not the fraction of atoms found, so it is not the default")
    p.add_argument("--image-guided-moves", type=int, default=1,
                   help="atoms moved per image-guided mutation (default 1)")
    p.add_argument("--ga", action="append", metavar="KEY=VALUE",
                   help="a further refine.search.GASettings setting by its flat name, VALUE as JSON (repeatable), "
                        "e.g. --ga immigrants=2 "
                        "--ga 'mutation_weights={\"image_guided\": 4}'")
    p.add_argument("--workers", type=int, default=None, help="processes for the annealings (default: 2 for anneal)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/stem-refine-self-consistency"))
    p.add_argument("--resume", action="store_true", help="continue earlier runs in --work")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for key, value in SEARCHES[args.search]["args"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    explicit_cases = any(a.startswith("--cases") for a in (argv if argv is not None else sys.argv[1:]))
    if args.quick:
        if not explicit_cases:
            args.cases = "a"
        defaults = {"time_limit": 890.0, "population": 24}
        if args.time_limit == defaults["time_limit"]:
            args.time_limit = 240.0
        if args.population == defaults["population"]:
            args.population = 16
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from a, b, c, g")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    model, model_desc = get_model(args.model)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for c in cases:
        log.info("case (%s) %s", c, CASES[c])
        rows.append(run_case(c, model, args, args.work))
        _table(rows[-1:], file=sys.stderr)
    report = {"model": model_desc, "dose_e_per_A2": args.dose, "pixel_size": PIXEL, "cpus": cpus,
              "load_average": os.getloadavg(), "command": "python examples/self_consistency.py " +
              " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "cases": rows}
    write_json(args.work / "results.json", report)  # write_json writes anything else JSON cannot hold as text
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"model: {model_desc}; dose {args.dose:g} e/Å², Δ = {PIXEL} Å; {cpus} CPUs "
              f"(load average {os.getloadavg()[0]:.1f}); GA time limit {args.time_limit:g} s per case")
        _table(rows)
        print(f"details: {args.work / 'results.json'}")
    return report


if __name__ == "__main__":
    main()
