"""Experimental image reading: formats, calibration, checks, mask, crop, resampling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from surrogate.common.errors import InputError
from refine.io.images import ExperimentalImage, read_image, read_sigma_map, resample

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EXPERIMENTAL = SHARED / "data" / "experimental"
PTIR = EXPERIMENTAL / "ptir-statstem" / "ExamplePtIr_dx0_1211.txt"
AU_EMD = EXPERIMENTAL / "au-temul" / "example_Au_nanoparticle.emd"


@pytest.fixture
def seed():
    return 20261125


def blob(shape, pixel, centre, sigma=0.4, origin=(0.0, 0.0)):
    """A Gaussian of width ``sigma`` Å at ``centre`` Å, sampled at the probe positions."""
    x = origin[0] + pixel * np.arange(shape[0])
    y = origin[1] + pixel * np.arange(shape[1])
    return np.exp(-((x[:, None] - centre[0]) ** 2 + (y[None, :] - centre[1]) ** 2) / (2 * sigma**2))


# --------------------------------------------------------------------------- formats

def test_npy_needs_pixel_size_then_reads(tmp_path):
    img = blob((40, 30), 0.1, (2.0, 1.5))
    np.save(tmp_path / "a.npy", img)
    with pytest.raises(InputError, match="no pixel-size calibration"):
        read_image(tmp_path / "a.npy")
    out = read_image(tmp_path / "a.npy", pixel_size=0.1)
    assert isinstance(out, ExperimentalImage)
    np.testing.assert_array_equal(out.data, img)
    assert out.pixel_size == 0.1 and out.mask.all() and out.origin == (0.0, 0.0)
    assert out.source.endswith("a.npy")


def test_text_comma_and_whitespace(tmp_path):
    img = np.arange(12.0).reshape(3, 4)
    np.savetxt(tmp_path / "c.txt", img, delimiter=",")
    np.savetxt(tmp_path / "w.dat", img)
    for name in ("c.txt", "w.dat"):
        np.testing.assert_array_equal(read_image(tmp_path / name, pixel_size=0.2).data, img)


def test_calibrated_tiff_in_nm_is_converted_to_angstrom(tmp_path):
    from rsciio.tiff import file_writer

    data = (1000 * blob((64, 48), 0.05, (1.0, 1.2))).astype(np.float32)
    axes = [{"name": "y", "size": 64, "scale": 0.005, "offset": 0.0, "units": "nm", "navigate": False},
            {"name": "x", "size": 48, "scale": 0.005, "offset": 0.0, "units": "nm", "navigate": False}]
    file_writer(str(tmp_path / "cal.tif"), {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}})
    out = read_image(tmp_path / "cal.tif")
    assert out.pixel_size == pytest.approx(0.05, rel=1e-4)
    assert out.metadata["calibration"] == "file"
    np.testing.assert_allclose(out.data, data)
    # an explicit pixel size wins over the file's
    assert read_image(tmp_path / "cal.tif", pixel_size=0.06).pixel_size == 0.06


def test_uncalibrated_tiff_needs_pixel_size(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "raw.tif", (100 * blob((20, 20), 0.1, (1, 1))).astype(np.uint16))
    with pytest.raises(InputError, match="pixel size"):
        read_image(tmp_path / "raw.tif")
    assert read_image(tmp_path / "raw.tif", pixel_size=0.1).shape == (20, 20)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.weird").write_text("1 2")
    with pytest.raises(InputError, match="unknown image format"):
        read_image(tmp_path / "x.weird", pixel_size=0.1)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.npy", pixel_size=0.1)


# --------------------------------------------------------------------------- refused images

@pytest.mark.parametrize("bad, match", [
    (np.full((10, 10), 3.0), "constant"),
    (np.zeros((0, 5)), "empty"),
    (np.ones(10), "2-D"),
    (np.ones((4, 5, 3)), "RGB"),
    (np.ones((6, 5, 5)), "stack"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
])
def test_bad_arrays_are_refused(bad, match):
    with pytest.raises(InputError, match=match):
        read_image(bad, pixel_size=0.1)


def test_nan_image_is_refused_with_position(seed):
    img = np.random.default_rng(seed).random((8, 9))
    img[3, 4] = np.nan
    with pytest.raises(InputError, match=r"NaN.*\[3, 4\]"):
        read_image(img, pixel_size=0.1)


@pytest.mark.parametrize("pixel", [0.0, -1.0, np.nan, "abc"])
def test_bad_pixel_size(pixel):
    with pytest.raises(InputError, match="pixel_size"):
        read_image(np.eye(4), pixel_size=pixel)


def test_stack_frame_selection():
    stack = np.stack([np.eye(5), 2 * np.eye(5) + 1])
    np.testing.assert_array_equal(read_image(stack, pixel_size=0.1, frame=1).data, 2 * np.eye(5) + 1)


# --------------------------------------------------------------------------- mask, crop, offset

def test_mask_zeros_array_and_file(tmp_path, seed):
    rng = np.random.default_rng(seed)
    img = rng.random((20, 20)) + 0.1
    img[:5] = 0.0
    out = read_image(img, pixel_size=0.1, mask="zeros")
    assert not out.mask[:5].any() and out.mask[5:].all() and out.n_valid == 300
    m = np.ones((20, 20), bool)
    m[:, :3] = False
    np.save(tmp_path / "m.npy", m)
    np.testing.assert_array_equal(read_image(img, pixel_size=0.1, mask=tmp_path / "m.npy").mask, m)
    np.testing.assert_array_equal(read_image(img, pixel_size=0.1, mask=m.astype(int)).mask, m)


def test_mask_shape_mismatch_and_empty_mask():
    img = np.random.default_rng(0).random((10, 12))
    with pytest.raises(InputError, match=r"mask shape \(12, 10\) does not match the image shape \(10, 12\)"):
        read_image(img, pixel_size=0.1, mask=np.ones((12, 10), bool))
    with pytest.raises(InputError, match="excludes every pixel"):
        read_image(img, pixel_size=0.1, mask=np.zeros((10, 12), bool))


def test_constant_valid_region_is_refused():
    img = np.zeros((10, 10))
    img[2:5, 2:5] = 7.0
    with pytest.raises(InputError, match="constant"):
        read_image(img, pixel_size=0.1, mask="zeros")


def test_crop_moves_origin_and_offset(seed):
    img = np.random.default_rng(seed).random((30, 40)) + 5.0
    out = read_image(img, pixel_size=0.2, crop=(5, 25, 10, 30), origin=(1.0, -2.0), offset="min")
    assert out.shape == (20, 20)
    assert out.origin == pytest.approx((1.0 + 5 * 0.2, -2.0 + 10 * 0.2))
    np.testing.assert_allclose(out.data, img[5:25, 10:30] - img[5:25, 10:30].min())
    assert out.metadata["offset_subtracted"] == pytest.approx(img[5:25, 10:30].min())
    with pytest.raises(InputError, match="outside the image"):
        read_image(img, pixel_size=0.2, crop=(0, 31, 0, 10))


# --------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("old, new", [(0.05, 0.1), (0.1211, 0.1), (0.075, 0.1)])
def test_resampling_matches_the_analytic_image(old, new, caplog):
    centre, sigma = (3.03, 2.71), 0.45
    n = int(round(6.0 / old))
    img = blob((n, n), old, centre, sigma)
    with caplog.at_level(logging.INFO, logger="refine.io.images"):
        out = read_image(img, pixel_size=old, target_pixel_size=new)
    assert "resampled" in caplog.text
    assert out.pixel_size == new
    expect = blob(out.shape, new, centre, sigma)
    # pixel 0 stays at the origin and the field of view is kept
    assert (out.shape[0] - 1) * new <= (n - 1) * old + 1e-9 < out.shape[0] * new
    # down-sampling is anti-aliased (slight blur): a few % of the peak at most
    tol = 0.002 if new < old else 0.06
    assert np.max(np.abs(out.data - expect)) < tol


def test_resampling_can_be_forbidden():
    with pytest.raises(InputError, match="resampling is turned off"):
        read_image(blob((30, 30), 0.12, (1, 1)), pixel_size=0.12, target_pixel_size=0.1, resample_images=False)
    # within rtol nothing happens
    out = read_image(blob((30, 30), 0.1, (1, 1)), pixel_size=0.10001, target_pixel_size=0.1, rtol=1e-3)
    assert out.pixel_size == 0.10001 and "resampled" not in out.metadata


def test_resampled_mask_is_conservative():
    img = blob((60, 60), 0.05, (1.5, 1.5)) + 0.1
    img[:, 30:] = 0.0
    data, mask = resample(img, 2.0, mask=img != 0)
    assert mask.shape == data.shape == (30, 30)
    # every valid output pixel samples only the valid half (column 15 sits on the edge)
    assert not mask[:, 14:].any() and mask[:, :10].all()


def test_a_sigma_map_follows_the_image_through_crop_and_resampling(tmp_path):
    img = blob((60, 60), 0.05, (1.5, 1.5)) + 0.1
    sigma = 0.01 + 0.02 * (np.arange(60)[:, None] >= 30) * np.ones((1, 60))  # two bands of σ along axis 0
    np.save(tmp_path / "sigma.npy", sigma)
    out = read_image(img, pixel_size=0.05, target_pixel_size=0.1, crop=(0, 60, 10, 50))
    s = read_sigma_map(tmp_path / "sigma.npy", out)
    assert s.shape == out.shape == (30, 20)
    # the bands stay where they were, in Å: rows at x < 1.3 Å have σ 0.01, rows at x > 1.7 Å σ 0.03
    x = out.origin[0] + out.pixel_size * np.arange(out.shape[0])
    np.testing.assert_allclose(s[x < 1.3], 0.01, rtol=1e-9)
    np.testing.assert_allclose(s[x > 1.7], 0.03, rtol=1e-9)
    same = read_image(img, pixel_size=0.05)
    np.testing.assert_array_equal(read_sigma_map(sigma, same), sigma)


@pytest.mark.parametrize("sigma, match", [
    (np.full((10, 10), 0.01), "does not match"),
    (np.where(np.eye(40, dtype=bool), -1.0, 0.01), "positive and finite"),
    (np.where(np.eye(40, dtype=bool), np.nan, 0.01), "positive and finite"),
    (np.full((40, 40), "a"), "needs numbers"),
])
def test_bad_sigma_maps_are_refused(sigma, match):
    image = read_image(blob((40, 40), 0.1, (2, 2)), pixel_size=0.1)
    with pytest.raises(InputError, match=match):
        read_sigma_map(sigma, image)


def test_corrupt_files_are_one_input_error(tmp_path):
    for name, content in (("empty.npy", b""), ("junk.npz", b"PK\x03\x04 not a zip"), ("junk.tif", b"II*\x00junk"),
                          ("junk.dm3", b"\x00\x00\x00\x03junk")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name, pixel_size=0.1)


# --------------------------------------------------------------------------- real data

@pytest.mark.skipif(not PTIR.exists(), reason="shared StatSTEM Pt-Ir example absent")
def test_real_ptir_text_image():
    out = read_image(PTIR, pixel_size=0.1211, mask="zeros", target_pixel_size=0.1)
    assert out.metadata["file_shape"] == [512, 512]
    assert out.shape == (619, 619) and out.pixel_size == 0.1
    # the particle region (non-zero) is ~a third of the field; the mask is kept through resampling
    assert 0.15 < out.n_valid / out.data.size < 0.4
    assert 0 < out.data[out.mask].mean() < 1  # normalized to the incident beam
    cx, cy = out.centroid()
    assert 10 < cx < 52 and 10 < cy < 52


@pytest.mark.skipif(not AU_EMD.exists(), reason="shared TEMUL Au EMD example absent")
def test_real_velox_emd_calibration():
    pytest.importorskip("h5py", reason="rosettasciio's EMD reader needs h5py")
    out = read_image(AU_EMD, crop=(634, 1113, 1260, 1764), offset="median")
    assert out.metadata["calibration"] == "file" and out.metadata["title"] == "HAADF"
    assert out.pixel_size == pytest.approx(0.074984, rel=1e-4)  # 7.498 pm
    assert out.shape == (479, 504)
    assert out.origin[0] == pytest.approx(-76.78363 + 634 * 0.074984, abs=1e-3)


def test_reciprocal_units_are_not_a_calibration(tmp_path):
    from rsciio.tiff import file_writer

    data = blob((32, 32), 0.1, (1.0, 1.0)).astype(np.float32)
    axes = [{"name": n, "size": 32, "scale": 0.1, "offset": 0.0, "units": "1/nm", "navigate": False}
            for n in ("y", "x")]
    file_writer(str(tmp_path / "fft.tif"), {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}})
    with pytest.raises(InputError, match="no pixel-size calibration"):
        read_image(tmp_path / "fft.tif")
