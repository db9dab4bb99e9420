"""A 55-atom Pt icosahedron, a small fitted surrogate and its noisy image: shared by the image-force tests."""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Icosahedron

from refine.io.images import read_image

PIXEL = 0.1


@pytest.fixture(scope="module")
def truth():
    from asap3 import EMT
    from ase.optimize import FIRE

    a = Icosahedron("Pt", 3)  # 55 atoms, EMT-relaxed
    a.center(vacuum=5.0)
    a.calc = EMT()
    FIRE(a, logfile=None).run(fmax=1e-3, steps=500)
    a.calc = None
    a.cell = None
    a.pbc = False
    a.positions -= a.positions.mean(axis=0)
    a.rotate(23, "x")
    a.rotate(17, "z")
    return a


@pytest.fixture(scope="module")
def model(truth):
    """s=3, d=2 with log term and interactions, fitted on a nonlinear stand-in for multislice."""
    from scipy.ndimage import gaussian_filter

    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for k in range(3):
        a = truth.copy()
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 3.0))
        convs.append(c)
        ms.append(0.5 * np.sqrt(np.maximum(gaussian_filter(c, 1.0), 0.0)) + 0.01)
    return PolynomialSurrogate(size=3, degree=2).fit(convs, ms, elements=["Pt"])


@pytest.fixture(scope="module")
def image(model, truth):
    from surrogate.imaging.grid import ProbeGrid

    grid = ProbeGrid(origin=(-9.0, -8.5), shape=(170, 180), pixel_size=PIXEL)
    clean = model.simulate(truth, grid)
    noisy = 3.0 * clean + 0.2 + np.random.default_rng(1).normal(0, 0.01, clean.shape)
    return read_image(noisy, pixel_size=PIXEL, origin=grid.origin)
