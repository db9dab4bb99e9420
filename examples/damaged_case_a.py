"""Case (a) of the self-consistency benchmark, damaged on purpose: the shared set-up of the polish checks.

``examples/patch_transfer.py``, ``examples/image_guided_sweep.py`` and
``examples/column_shift.py`` each damage the truth of case (a)
(``examples/self_consistency.py``: a 300-atom EMT-relaxed Marks decahedron
tilted 10° off its zone axis, surrogate image with Poisson noise at
1e5 e/Å², the shipped model) in the way one sweep of the GA's polish is
meant to repair, and measure the repair without a 15-minute search. This
module makes the truth, the cost at the finishing stage's thermal α and the
GA's offspring relaxation, and prints the comparison table.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

NN = 2.77  # Å, Pt


def add_case_arguments(parser, *, seed: bool = True) -> None:
    """The options every check shares: ``--seed`` (case (a)'s, unless ``seed=False``) and ``--search-alpha``."""
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="case (a) seed, as in examples/self_consistency.py")
    parser.add_argument("--search-alpha", type=float, default=0.000995,
                        help="α of the offspring relaxation, eV (default: 2 × auto of the seed-0 benchmark run)")


def case_a_setup(seed: int, search_alpha: float):
    """Case (a)'s truth and cost: ``(truth, fitness, relax, relaxed, evaluate)``.

    ``fitness`` scores at the finishing stage's thermal α; ``relax(atoms)``
    is the GA's offspring relaxation (20 FIRE steps on E + α·χ² at
    ``search_alpha``, eV), ``relaxed(atoms)`` four of them, ``evaluate(atoms)``
    the GA's evaluation (cost, atoms aligned on the image in place).
    """
    import self_consistency as sc
    from refine.cost.energy import make_calculator
    from refine.cost.fitness import Fitness
    from refine.search.relaxation import LocalRelaxation, cost_calculator

    model, _ = sc.get_model(None)
    rng = np.random.default_rng([seed, ord("a")])
    truth, _ = sc.make_truth("a", rng, types.SimpleNamespace(atoms=300, tilt=10.0))
    image, _ = sc.noisy_image(model, truth, 1e5, rng)
    fit = Fitness(model, image, alpha=0.0, noise="poisson", dose=1e5, calculator="auto", symbols=["Pt"])
    fit.alpha = fit.thermal_alpha()  # the finishing stage's criterion
    calc = cost_calculator(fit, make_calculator("auto", ("Pt",)), alpha=lambda: search_alpha)
    relax = LocalRelaxation(calc, steps=20, fmax=0.05, min_distance=0.75 * NN, rng=np.random.default_rng(2))

    def relaxed(atoms):
        for _ in range(4):
            relax(atoms)
        return atoms

    def evaluate(atoms):  # the GA's evaluation: cost, and the atoms aligned on the image
        r = fit.evaluate(atoms)
        atoms.positions = fit.aligned(atoms, r).positions
        return r.cost

    return truth, fit, relax, relaxed, evaluate


def report(fit, truth, structures) -> dict:
    """Print and return cost, E, χ²/px and the fraction within 0.5 Å of the truth for ``{name: atoms}``."""
    from refine.analysis import compare_structures

    rows = {}
    print(f"{'structure':28s} {'cost':>8s} {'E eV':>7s} {'χ²/px':>7s} {'≤0.5Å':>7s}")
    for name, atoms in structures.items():
        r = fit.evaluate(atoms)
        within = compare_structures(atoms, truth, mirror=True).within[0.5]
        rows[name] = {"cost": r.cost, "energy": r.energy, "chi2_per_pixel": r.chi2_per_pixel, "within_0.5": within}
        print(f"{name:28s} {r.cost:8.2f} {r.energy:7.2f} {r.chi2_per_pixel:7.4f} {100 * within:6.1f}%")
    return rows
