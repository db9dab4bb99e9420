"""abTEM HAADF wrapper: pixel alignment with the convolution image, seeding, checks."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from surrogate.imaging.convolution import convolution_image
from surrogate.common.errors import InputError
from surrogate.imaging.grid import ProbeGrid
from surrogate.groundtruth.multislice import FWHM_TO_SIGMA, HAADFParameters, haadf_image, max_scattering_angle

# Cheap but physical: full detector range, PRISM f=2, one phonon configuration
# without displacements (so peaks sit exactly on the atoms), 1 thread.
STATIC = dict(method="prism", interpolation=2, phonons=1, phonon_sigmas={"Pt": 0.0}, slice_thickness=2.0)


def _subpixel_peak(image, ij, window=4):
    """Maximum near ``ij`` refined by a parabola through log-intensities (pixels)."""
    i, j = ij
    w = image[i - window:i + window + 1, j - window:j + window + 1]
    di, dj = np.unravel_index(np.argmax(w), w.shape)
    i, j = i + di - window, j + dj - window
    L = np.log(np.clip(image[i - 1:i + 2, j - 1:j + 2], 1e-300, None))
    fi = 0.5 * (L[0, 1] - L[2, 1]) / (L[0, 1] - 2 * L[1, 1] + L[2, 1])
    fj = 0.5 * (L[1, 0] - L[1, 2]) / (L[1, 0] - 2 * L[1, 1] + L[1, 2])
    return np.array([i + fi, j + fj])


def _expected_pixel(grid, xy):
    return (np.asarray(xy) - np.asarray(grid.origin)) / grid.pixel_size


def test_single_atom_peak_matches_convolution_image():
    # Off-pixel position and a grid origin that is not a multiple of the pixel size.
    atoms = Atoms("Pt", positions=[(1.037, -0.462, 0.0)])
    grid = ProbeGrid(origin=(-1.213, -2.771), shape=(46, 41), pixel_size=0.1)
    ms = haadf_image(atoms, grid, seed=0, num_threads=1, **STATIC)
    conv = convolution_image(atoms, grid)
    expected = _expected_pixel(grid, atoms.positions[0, :2])
    start = tuple(np.round(expected).astype(int))
    p_ms = _subpixel_peak(ms, start)
    p_conv = _subpixel_peak(conv, start)
    assert np.abs(p_ms - p_conv).max() < 0.05
    assert np.abs(p_ms - expected).max() < 0.05


def test_small_particle_columns_line_up():
    # Three columns of different heights ~4 Å apart: every column's peak in the
    # multislice image is where the convolution image has it.
    cols = [((0.0, 0.0), 3), ((3.93, 1.12), 2), ((1.41, 3.87), 1), ((-2.6, 3.1), 4)]
    pos = [(x, y, 2.0 * k) for (x, y), n in cols for k in range(n)]
    atoms = Atoms(f"Pt{len(pos)}", positions=pos)
    grid = ProbeGrid.around(atoms, margin=2.5)
    ms = haadf_image(atoms, grid, seed=0, num_threads=1, **STATIC)
    conv = convolution_image(atoms, grid)
    for (xy, _) in cols:
        start = tuple(np.round(_expected_pixel(grid, xy)).astype(int))
        assert np.abs(_subpixel_peak(ms, start) - _subpixel_peak(conv, start)).max() < 0.05
    # thicker columns are brighter (HAADF Z-contrast sanity)
    peaks = [ms[tuple(np.round(_expected_pixel(grid, xy)).astype(int))] for xy, _ in cols]
    assert np.argsort(peaks).tolist() == [2, 1, 0, 3]


def test_seeded_simulation_is_reproducible():
    atoms = Atoms("Pt3", positions=[(0, 0, 0), (2.0, 0.5, 0), (0.5, 2.2, 1.0)])
    grid = ProbeGrid.around(atoms, margin=1.5, pixel_size=0.2)
    kw = dict(method="prism", interpolation=4, phonons=2, num_threads=1)
    a = haadf_image(atoms, grid, seed=7, **kw)
    b = haadf_image(atoms, grid, seed=np.random.default_rng(7), **kw)
    c = haadf_image(atoms, grid, seed=7, **kw)
    b2 = haadf_image(atoms, grid, seed=np.random.default_rng(7), **kw)
    d = haadf_image(atoms, grid, seed=8, **kw)
    assert a.shape == grid.shape and a.dtype == np.float64
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(b, b2, rtol=1e-5, atol=1e-9)
    # a different seed displaces the atoms differently
    assert np.abs(a - d).max() > 1e-4 * a.max()


def test_intensity_is_a_fraction_of_the_beam():
    atoms = Atoms("Pt", positions=[(0, 0, 0)])
    grid = ProbeGrid((-1.0, -1.0), (21, 21), 0.1)
    img = haadf_image(atoms, grid, seed=0, num_threads=1, **STATIC)
    assert 0.0 < img.max() < 0.1  # one Pt atom scatters a few % into 50-150 mrad
    assert img.min() >= 0.0


def test_detector_outside_simulated_angles_is_a_clear_error():
    limit = max_scattering_angle(200e3, 0.1)
    assert 80 < limit < 90  # 2/3 of Nyquist at 0.1 Å and 200 kV
    with pytest.raises(InputError, match="potential sampling"):
        HAADFParameters(potential_sampling=0.1)
    HAADFParameters(potential_sampling=0.055)  # 150 mrad fits


def test_source_size_is_fwhm():
    p = HAADFParameters()
    assert p.source_fwhm == 0.88
    assert p.source_sigma == pytest.approx(0.88 * FWHM_TO_SIGMA)
    assert p.source_sigma == pytest.approx(0.3737, abs=1e-4)


@pytest.mark.parametrize("bad", [dict(method="bloch"), dict(interpolation=0), dict(phonons=0),
                                 dict(detector=(150, 50)), dict(energy=-1)])
def test_bad_parameters(bad):
    with pytest.raises(InputError):
        HAADFParameters(**bad)


def test_bad_inputs():
    with pytest.raises(InputError):
        haadf_image(Atoms(), ProbeGrid((0, 0), (4, 4)))
    with pytest.raises(InputError, match="unknown HAADF parameter"):
        haadf_image(Atoms("Pt"), ProbeGrid((0, 0), (4, 4)), voltage=3)


def test_gpu_without_cupy_is_an_input_error():
    pytest.importorskip("abtem")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy present")
    except ImportError:
        pass
    with pytest.raises(InputError, match="CuPy"):
        haadf_image(Atoms("Pt"), ProbeGrid((0, 0), (4, 4)), device="gpu")


def test_parameters_roundtrip():
    p = HAADFParameters(interpolation=2, phonons=3, phonon_sigmas={"Pt": 0.05})
    assert HAADFParameters.from_dict(p.to_dict()) == p


def test_simulate_cli_records_the_grid(tmp_path):
    import json

    import tifffile
    from ase.io import write

    from refine.cli.main import main

    xyz = tmp_path / "pt.xyz"
    write(xyz, Atoms("Pt2", positions=[(0, 0, 0), (2.5, 1.0, 0)]))
    tif = tmp_path / "c.tif"
    assert main(["simulate", "convolution", str(xyz), "--out", str(tif), "--margin", "2"]) == 0
    with tifffile.TiffFile(tif) as t:
        meta = json.loads(t.pages[0].description)
        image = t.asarray()
    grid = ProbeGrid.from_dict(meta["grid"])
    assert grid.pixel_size == 0.1 and image.shape == grid.shape
    np.testing.assert_allclose(image, convolution_image(Atoms("Pt2", positions=[(0, 0, 0), (2.5, 1.0, 0)]), grid))
    npy = tmp_path / "m.npy"
    assert main(["simulate", "multislice", str(xyz), "--out", str(npy), "--sampling", "0.2", "--margin", "1.5",
                 "--phonons", "1", "--interpolation", "4", "--threads", "1"]) == 0
    meta = json.loads((tmp_path / "m.npy.json").read_text())
    assert meta["grid"]["pixel_size"] == 0.2 and meta["parameters"]["phonons"] == 1
    assert np.load(npy).shape == tuple(meta["grid"]["shape"])
    assert main(["simulate", "convolution", str(tmp_path / "missing.xyz"), "--out", str(tif)]) == 2
    assert main(["simulate", "convolution", str(xyz), "--out", str(tmp_path / "x.png")]) == 2
