"""The refinement's cost on an independent benchmark image, outside a run: for diagnoses and sweep checks.

:func:`case_cost` rebuilds what ``stem-refine refine`` scores a structure
with on one image of ``bench_independent.py``: the same noisy image (the
noise stream is fixed by case and dose), the shipped model, Poisson noise at
the dose plus the model-error term (the refine defaults), at a given α (a
run's final α, or the thermal α k_B·T/2 of the finishing stage).
:meth:`CaseCost.relaxation` makes the offspring relaxation (FIRE on
E + α·χ²) for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_independent import DOSES, noisy_image
from make_images import CASES, DATA


@dataclass
class CaseCost:
    """One benchmark image's truth and the refine defaults' cost on it (lengths in Å, costs in eV)."""

    truth: object
    info: dict
    fitness: object
    nn_distance: float
    calculator: object

    def relaxation(self, steps: int, seed: int = 2):
        """FIRE on E + α·χ² for ``steps`` steps (overlap repairs from ``seed``), as the run's offspring are relaxed."""
        from refine.search import LocalRelaxation
        from refine.search.relaxation import cost_calculator

        return LocalRelaxation(cost_calculator(self.fitness, self.calculator), steps=steps, fmax=0.02,
                               min_distance=0.75 * self.nn_distance, rng=np.random.default_rng(seed))

    def evaluate(self, atoms) -> float:
        """The cost of ``atoms`` (eV)."""
        return self.fitness.evaluate(atoms).cost


def case_cost(case: str, dose_name: str, *, alpha: float | None = None, data: Path | None = None) -> CaseCost:
    """The cost of case ``case`` (a–d) at dose ``dose_name`` (realistic, high); ``alpha`` None: thermal."""
    import surrogate
    from ase.io import read
    from refine.cost import Fitness
    from refine.cost.energy import make_calculator
    from refine.io import read_image
    from refine.search import nearest_neighbour_distance

    folder = Path(data or DATA) / CASES[case]
    meta = json.loads((folder / "image.json").read_text())
    truth = read(str(folder / "truth.xyz"))
    pixel = float(meta["pixel_size"])
    dose = DOSES[dose_name]
    model = surrogate.default_model()
    image = read_image(noisy_image(np.load(folder / "clean.npy"), dose, pixel, case, dose_name), pixel_size=pixel,
                       target_pixel_size=model.convolution_parameters.pixel_size)
    symbols = sorted(set(truth.get_chemical_symbols()))
    fit = Fitness(model, image, alpha=0.0, noise="poisson", dose=dose, calculator="auto", symbols=symbols,
                  model_error=True)
    fit.alpha = fit.thermal_alpha() if alpha is None else float(alpha)
    return CaseCost(truth, meta.get("truth_info", {}), fit, nearest_neighbour_distance(symbols),
                    make_calculator("auto", tuple(symbols)))
