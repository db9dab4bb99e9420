"""Unit-check case shared by the column-start and distortion tests: a Pt octahedron on [110] and its image.

The image is the shipped surrogate's (a unit check, not a measure of accuracy), at 5e5 e/Å².
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase.cluster import Octahedron

from small_case import PIXEL, REALISTIC_DOSE, as_image

NN = 3.92 / np.sqrt(2)  # Å, Pt


@lru_cache(maxsize=1)
def zone_axis_case():
    """(atoms, clean image array, noisy ExperimentalImage): columns of 1..6 atoms along z, some vacancies."""
    from surrogate import default_model

    rng = np.random.default_rng(20190312)
    atoms = Octahedron("Pt", 6, 1, latticeconstant=3.92)
    atoms.rotate([1, 1, 0], [0, 0, 1])
    del atoms[rng.choice(len(atoms), 12, replace=False).tolist()]
    atoms.positions -= atoms.positions.min(axis=0) - 5.0
    shape = (int(atoms.positions[:, 0].max() / PIXEL) + 50, int(atoms.positions[:, 1].max() / PIXEL) + 50)
    clean = default_model().simulate(atoms, as_image(np.zeros(shape)).grid)
    n = REALISTIC_DOSE * PIXEL * PIXEL
    return atoms, clean, as_image(rng.poisson(np.clip(clean, 0, None) * n) / n)
