import numpy as np
import pytest
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

from surrogate.imaging.convolution import (COMBS2019_CROSS_SECTION, ConvolutionParameters, atom_weights,
                                   convolution_image)
from surrogate.common.errors import InputError
from surrogate.imaging.grid import ProbeGrid

RAW = ConvolutionParameters(cross_section=None)


def test_single_atom_matches_analytic_gaussian_and_integrates_to_weight():
    x, y = 2.537, 1.912  # off-grid on purpose
    atoms = Atoms("Pt", positions=[(x, y, 0.0)])
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(52, 41), pixel_size=0.1)
    img = convolution_image(atoms, grid, RAW)
    sigma = 0.38
    gx, gy = np.meshgrid(grid.x, grid.y, indexing="ij")
    analytic = 78**1.7 / (2 * np.pi * sigma**2) * np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(img, analytic, rtol=0, atol=1e-9 * analytic.max())
    # integral Σ I Δ² equals the weight Z^1.7
    assert abs(img.sum() * 0.01 / 78**1.7 - 1) < 1e-6
    # peak position from the intensity-weighted centroid, in pixels
    ci = (img * gx).sum() / img.sum()
    cj = (img * gy).sum() / img.sum()
    assert abs(ci - x) / 0.1 < 0.01 and abs(cj - y) / 0.1 < 0.01


def test_pixel_convention_first_axis_is_x():
    atoms = Atoms("Au", positions=[(1.0, 3.0, 0.0)])
    grid = ProbeGrid(origin=(0.5, 0.5), shape=(40, 40), pixel_size=0.1)
    img = convolution_image(atoms, grid)
    assert np.unravel_index(np.argmax(img), img.shape) == (5, 25)


def test_matches_fft_convolution_of_delta_image(rng):
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(128, 120), pixel_size=0.1)
    # atoms exactly on pixel centres, > 10 sigma from the border (FFT is periodic)
    idx = rng.integers(40, 80, size=(25, 2))
    numbers = rng.choice([78, 42, 79], size=25)
    atoms = Atoms(numbers=numbers, positions=np.c_[idx * 0.1, np.zeros(25)])
    img = convolution_image(atoms, grid, RAW)
    delta = np.zeros(grid.shape)
    np.add.at(delta, (idx[:, 0], idx[:, 1]), numbers.astype(float) ** 1.7)
    kx = np.fft.fftfreq(grid.shape[0]) * grid.shape[0] * 0.1
    ky = np.fft.fftfreq(grid.shape[1]) * grid.shape[1] * 0.1
    r2 = kx[:, None] ** 2 + ky[None, :] ** 2
    psf = np.exp(-r2 / (2 * 0.38**2)) / (2 * np.pi * 0.38**2)
    ref = np.real(np.fft.ifft2(np.fft.fft2(delta) * np.fft.fft2(psf)))
    np.testing.assert_allclose(img, ref, atol=1e-9 * ref.max())


def test_cross_section_scaling_and_weight_override():
    atoms = Atoms("PtMo", positions=[(2, 2, 0), (4, 4, 0)])
    grid = ProbeGrid(origin=(0, 0), shape=(70, 70))
    raw = convolution_image(atoms, grid, RAW)
    scaled = convolution_image(atoms, grid, ConvolutionParameters())
    np.testing.assert_allclose(scaled, raw * COMBS2019_CROSS_SECTION)
    w = atom_weights(atoms.numbers, 1.7, {"Mo": 5.0})
    assert w[1] == 5.0 and w[0] == pytest.approx(78**1.7)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_translation_by_whole_pixels_shifts_the_image(dx, dy):
    atoms = Atoms("Pt2", positions=[(2.0 + dx, 2.0 + dy, 0), (3.1 + dx, 2.4 + dy, 1)])
    grid = ProbeGrid(origin=(dx, dy), shape=(60, 60))
    shifted = atoms.copy()
    shifted.positions[:, :2] += 0.5  # 5 pixels
    g2 = ProbeGrid(origin=(dx + 0.5, dy + 0.5), shape=(60, 60))
    np.testing.assert_allclose(convolution_image(atoms, grid), convolution_image(shifted, g2), atol=1e-12)


def test_bad_inputs():
    with pytest.raises(InputError, match="sigma"):
        ConvolutionParameters(sigma=-1)
    with pytest.raises(InputError, match="unknown element"):
        ConvolutionParameters(weights={"Qq": 1.0})
    with pytest.raises(InputError, match="unknown element"):
        convolution_image(Atoms(numbers=[0], positions=[(0, 0, 0)]), ProbeGrid((0, 0), (10, 10)))
    with pytest.raises(InputError, match="pixel size"):
        ProbeGrid((0, 0), (10, 10), pixel_size=0)
    with pytest.raises(InputError, match="no atoms"):
        ProbeGrid.around(Atoms())


def test_reuses_out_buffer():
    atoms = Atoms("Pt", positions=[(1, 1, 0)])
    grid = ProbeGrid((0, 0), (20, 20))
    buf = np.full(grid.shape, 7.0)
    out = convolution_image(atoms, grid, out=buf)
    assert out is buf and out.min() >= 0
