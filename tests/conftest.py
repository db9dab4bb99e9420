"""Shared fixtures: seeded randomness, the shared data folder, small fitted models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COMBS = SHARED / "data" / "combs2019-ptmo5"
EXPERIMENTAL = SHARED / "data" / "experimental"


@pytest.fixture
def seed() -> int:
    return 20190312  # the paper's publication date


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def combs_dir() -> Path:
    if not (COMBS / "convolution").is_dir() or not (COMBS / "multislice").is_dir():
        pytest.skip(f"shared Combs et al. data not found at {COMBS}")
    return COMBS


def synthetic_pairs(rng, n=4, shape=(40, 44), n_atoms=30):
    """Convolution images of random 2-D 'atoms' and a smooth nonlinear 'multislice' response."""
    from ase import Atoms

    from surrogate.imaging.convolution import ConvolutionParameters, convolution_image
    from surrogate.imaging.grid import ProbeGrid

    conv, ms = [], []
    grid = ProbeGrid(origin=(0.0, 0.0), shape=shape, pixel_size=0.1)
    for _ in range(n):
        xy = rng.uniform(0.3, 0.1 * np.array(shape) - 0.3, size=(n_atoms, 2))
        atoms = Atoms("Pt" * n_atoms, positions=np.c_[xy, rng.uniform(0, 10, n_atoms)])
        c = convolution_image(atoms, grid, ConvolutionParameters())
        # nonlinear, neighbourhood-dependent, plus noise: a stand-in for channelling
        blur = (np.roll(c, 1, 0) + np.roll(c, -1, 0) + np.roll(c, 1, 1) + np.roll(c, -1, 1)) / 4
        m = 0.5 * c + 30 * c * blur + 1e-4 + 1e-5 * rng.standard_normal(c.shape)
        conv.append(c)
        ms.append(m)
    return conv, ms


@pytest.fixture
def pairs(rng):
    return synthetic_pairs(rng)


@pytest.fixture(scope="session")
def small_model():
    """A 3x3, degree-2 model fitted on synthetic pairs (fast; for tests of users of the model)."""
    from surrogate.imaging.model import PolynomialSurrogate

    conv, ms = synthetic_pairs(np.random.default_rng(7), n=3)
    return PolynomialSurrogate(size=3, degree=2).fit(conv, ms, elements=["Pt"])


@pytest.fixture(scope="session")
def model_file(small_model, tmp_path_factory):
    """``small_model`` saved as a model file (read-only; a test that writes beside it makes its own)."""
    from surrogate.imaging.model import save_model

    return save_model(small_model, tmp_path_factory.mktemp("model") / "small.npz")


def _central_difference_force(atoms, i: int, c: int, h: float = 1e-5) -> float:
    """−∂E/∂x of atom ``i`` along axis ``c`` (eV/Å) by central differences; ``atoms`` is left where it was."""
    p = atoms.positions.copy()
    p[i, c] += h
    atoms.positions = p
    up = atoms.get_potential_energy()
    p[i, c] -= 2 * h
    atoms.positions = p
    down = atoms.get_potential_energy()
    p[i, c] += h
    atoms.positions = p
    return -(up - down) / (2 * h)


@pytest.fixture
def numerical_force():
    """The central-difference force of one coordinate (:func:`_central_difference_force`), for force checks."""
    return _central_difference_force
