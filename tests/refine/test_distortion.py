"""Linear scan distortion measured on the column lattice and undone (refine.io.distortion)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import affine_transform

from refine.io.distortion import correct_distortion, lattice_families, measure_distortion, undistort
from refine.io.peaks import find_columns
from refine.workflows.inputs import validate_image
from surrogate.common import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_case import PIXEL, as_image  # noqa: E402
from zone_axis_case import NN, zone_axis_case  # noqa: E402


def _distorted(clean, d):
    """``clean`` as a scan with the symmetric distortion ``d`` about its centre (pixel (i, j) sees d⁻¹·r)."""
    d_inv = np.linalg.inv(d)
    centre = 0.5 * (np.array(clean.shape, dtype=float) - 1.0)
    return affine_transform(clean, d_inv, offset=centre - d_inv @ centre, order=3, mode="constant", cval=0.0)


def _family_lengths(image):
    xy, height = find_columns(image, NN)
    return np.sort(np.hypot(*lattice_families(xy[height >= 0.3 * height.max()]).T))


# a stretch of 5 % along a direction 30° from the first axis and 2 % across it: a scan's drift and pixel error
_ROT = np.array([[np.cos(np.pi / 6), -np.sin(np.pi / 6)], [np.sin(np.pi / 6), np.cos(np.pi / 6)]])
D = _ROT @ np.diag([1.05, 0.98]) @ _ROT.T


def test_the_ideal_lattice_is_left_alone():
    _, clean, _ = zone_axis_case()
    image = as_image(clean)
    corrected, distortion = correct_distortion(image, NN)
    assert distortion.zone_axis == "[110]"
    np.testing.assert_allclose(distortion.matrix, np.eye(2), atol=0.015)


def test_a_known_distortion_is_measured_and_undone():
    _, clean, _ = zone_axis_case()
    image = as_image(_distorted(clean, D))
    before = _family_lengths(image)
    # [110] columns: two families 0.866 bonds long, one a bond long; the distortion spreads them
    ideal = np.sort([0.866 * NN, 0.866 * NN, NN])
    assert np.max(np.abs(before - ideal)) > 0.06
    corrected, distortion = correct_distortion(image, NN)
    np.testing.assert_allclose(distortion.matrix, np.linalg.inv(D), atol=0.015)
    np.testing.assert_allclose(_family_lengths(corrected), ideal, atol=0.03)
    step = corrected.metadata["preparation"][-1]
    assert step["step"] == "undistort" and step["values"]["zone_axis"] == "[110]"
    assert corrected.shape == image.shape and corrected.pixel_size == image.pixel_size
    assert corrected.mask.sum() < image.mask.sum()  # pixels from outside the scan are not made up


def test_undistort_with_the_identity_changes_nothing_but_the_record():
    _, clean, image = zone_axis_case()
    from refine.io.distortion import Distortion

    same = undistort(image, Distortion(np.eye(2), "[110]", np.zeros((3, 2)), np.zeros((3, 2)), 0.0))
    np.testing.assert_allclose(same.data, image.data, atol=1e-9)
    np.testing.assert_array_equal(same.mask, image.mask)


def test_an_image_without_a_lattice_is_refused_in_one_line():
    rng = np.random.default_rng(3)
    blobs = np.zeros((200, 200))
    ii, jj = rng.integers(20, 180, size=(2, 40))
    blobs[ii, jj] = 1.0
    from scipy.ndimage import gaussian_filter

    with pytest.raises(InputError, match="zone axis|lattice|columns"):
        correct_distortion(as_image(gaussian_filter(blobs, 4.0)), NN)
    with pytest.raises(InputError, match="too few"):
        measure_distortion(np.zeros((3, 2)), NN)


def test_the_refinement_reads_the_image_undistorted_when_asked():
    from surrogate import default_model

    _, clean, _ = zone_axis_case()
    data = _distorted(clean, D)
    img = validate_image(data, default_model(), pixel_size=PIXEL, mask=None, resample=True, undistort=True)
    steps = [s["step"] for s in img.metadata["preparation"]]
    assert steps[-1] == "undistort"
    np.testing.assert_allclose(np.array(img.metadata["preparation"][-1]["values"]["matrix"]), np.linalg.inv(D),
                               atol=0.015)
    plain = validate_image(data, default_model(), pixel_size=PIXEL, mask=None, resample=True)
    assert "undistort" not in [s["step"] for s in plain.metadata.get("preparation") or []]


@pytest.mark.parametrize("angle, cut", [(0.61, 0.0), (1.0, 0.0), (1.0, 2.0)])
def test_a_twinned_particle_is_measured_on_one_grain(angle, cut):
    """Two [110] grains ``angle`` rad apart, scanned with the distortion D. Their neighbour directions mixed
    match no zone axis (0.61 rad), or one with the wrong correction (1.0 rad: 0.05-0.07 off D⁻¹, measured);
    measured on one grain, the correction undoes D."""
    a1, a2 = np.array([1.96, 1.385]) * NN / 2.77, np.array([1.96, -1.385]) * NN / 2.77  # Pt [110] primitive vectors
    m = np.array([(i, j) for i in range(-9, 10) for j in range(-9, 10)], dtype=float)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    grain_a = m @ np.array([a1, a2])
    grain_b = m @ np.array([rot @ a1, rot @ a2]) + (0.6, 0.0)
    xy = np.vstack([grain_a[(np.hypot(*grain_a.T) < 14) & (grain_a[:, 1] < cut)],
                    grain_b[(np.hypot(*grain_b.T) < 14) & (grain_b[:, 1] >= cut + 1.0)]])
    xy = xy @ D.T + 20.0  # the scan's distortion acts on every column alike
    n = 400
    ii, jj = np.mgrid[0:n, 0:n] * PIXEL
    image = np.zeros((n, n))
    for x, y in xy:
        image += np.exp(-((ii - x) ** 2 + (jj - y) ** 2) / (2 * 0.45 ** 2))
    _, distortion = correct_distortion(as_image(image), NN)
    np.testing.assert_allclose(distortion.matrix, np.linalg.inv(D), atol=0.02)


def _blob_lattice(step, n=360, scale=1.0):
    """A [110] Pt lattice of Gaussian columns whose spacing is ``scale`` × the true one, at pixel size ``step``."""
    a1, a2 = np.array([1.96, 1.385]) * NN / 2.77, np.array([1.96, -1.385]) * NN / 2.77
    m = np.array([(i, j) for i in range(-12, 13) for j in range(-12, 13)], dtype=float)
    xy = scale * (m @ np.array([a1, a2]))
    xy = xy[np.hypot(*xy.T) < 13] + n * step / 2
    ii, jj = np.mgrid[0:n, 0:n] * step
    return sum(np.exp(-((ii - x) ** 2 + (jj - y) ** 2) / (2 * 0.45 ** 2)) for x, y in xy)


def test_a_pixel_size_the_lattice_contradicts_is_warned_about(caplog):
    """The file says 0.1 Å/px, but its columns are 10 % closer than Pt [110]'s: the true pixel size is 0.111."""
    import logging

    from refine.io.calibration import check_pixel_size

    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        right = check_pixel_size(as_image(_blob_lattice(PIXEL)), NN, element="Pt")
    assert right.zone_axis == "[110]" and abs(right.factor - 1.0) < 0.02 and not caplog.text
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        off = check_pixel_size(as_image(_blob_lattice(PIXEL, scale=1 / 1.11)), NN, element="Pt")
    assert off.factor == pytest.approx(1.11, rel=0.02)
    assert "pixel size" in caplog.text and "0.111" in caplog.text


def test_no_lattice_no_word_about_the_pixel_size(caplog):
    import logging

    from scipy.ndimage import gaussian_filter

    from refine.io.calibration import check_pixel_size

    rng = np.random.default_rng(3)
    blobs = np.zeros((200, 200))
    ii, jj = rng.integers(20, 180, size=(2, 40))
    blobs[ii, jj] = 1.0
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        assert check_pixel_size(as_image(gaussian_filter(blobs, 4.0)), NN) is None
    assert not caplog.text


def test_the_refinement_warns_when_the_pixel_size_given_contradicts_the_lattice(caplog):
    """A zone-axis image read with a pixel size 12 % too small (the lattice looks 12 % too tight)."""
    import logging

    from surrogate import default_model

    _, clean, _ = zone_axis_case()
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        validate_image(clean, default_model(), pixel_size=PIXEL / 1.12, mask=None, resample=True)
    assert "pixel size: the columns are spaced" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        validate_image(clean, default_model(), pixel_size=PIXEL, mask=None, resample=True)
    assert "pixel size" not in caplog.text
