"""Noise models of χ²: the signal-dependent default, and the surrogate's own error on top."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from refine.cost.noise import estimate_signal_dependent_noise, noise_weights
from refine.io import read_image
from surrogate.common import InputError
from surrogate.imaging import ModelDiscrepancy


def _columns(shape=(160, 160), seed=0):
    """A smooth image of bright 'columns' on vacuum, fraction of the beam (0–0.05)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape)
    for _ in range(60):
        i, j = rng.integers(20, shape[0] - 20, size=2)
        img[i, j] += rng.uniform(0.5, 1.0)
    img = gaussian_filter(img, 4.0)
    return 0.05 * img / img.max() + 1e-4


@pytest.mark.parametrize("dose", [5e5, 2e7])
def test_estimate_recovers_the_poisson_gain_from_the_image_alone(dose):
    clean = _columns()
    n = dose * 0.01  # electrons per pixel (0.1 Å pixels)
    noisy = np.random.default_rng(1).poisson(clean * n) / n
    gain, var0, level = estimate_signal_dependent_noise(noisy)
    assert gain == pytest.approx(1.0 / n, rel=0.2)  # Poisson: σ² = I/n
    assert level < 0.002
    # the weights of the default then match the Poisson model's where there is signal
    w, info = noise_weights(read_image(noisy, pixel_size=0.1), "estimate")
    w_poisson, _ = noise_weights(read_image(noisy, pixel_size=0.1), "poisson", dose=dose)
    bright = clean > 0.01
    assert np.median(w[bright] / w_poisson[bright]) == pytest.approx(1.0, rel=0.25)
    assert info["model"] == "signal-dependent"


def test_uniform_estimate_is_still_available_and_unknown_models_are_refused():
    img = read_image(_columns() + np.random.default_rng(2).normal(0, 1e-3, (160, 160)), pixel_size=0.1)
    _, info = noise_weights(img, "uniform")
    assert info["model"] == "uniform" and info["sigma"] == pytest.approx(1e-3, rel=0.15)
    with pytest.raises(InputError, match="uniform"):
        noise_weights(img, "gaussian")


def test_model_error_adds_correlated_variance_and_lowers_the_effective_pixel_count():
    clean = _columns()
    img = read_image(clean, pixel_size=0.1)
    d = ModelDiscrepancy(intensities=(1e-4, 0.05), sigmas=(1e-4, 5e-3), correlation_area=20.0,
                         correlation_length=0.6, n_pixels=1)
    w0, info0 = noise_weights(img, "poisson", dose=2e7)
    w1, info1 = noise_weights(img, "poisson", dose=2e7, discrepancy=d, beam_scale=(1.0, 0.0))
    var_model = 20.0 * d.sigma(clean) ** 2
    np.testing.assert_allclose(1 / w1, 1 / w0 + var_model, rtol=1e-10)
    assert info0["n_effective"] == img.n_valid
    # where the model error dominates, each pixel counts ≈ 1/A
    assert img.n_valid / 20.0 < info1["n_effective"] < img.n_valid / 2.0
    # an image in other units: the same weights once the scale is given
    w2, _ = noise_weights(read_image(1000 * clean, pixel_size=0.1), 1000 * np.sqrt(1 / w0),
                          discrepancy=d, beam_scale=(1000.0, 0.0))
    np.testing.assert_allclose(w2, w1 / 1e6, rtol=1e-10)
    with pytest.raises(InputError, match="scale"):
        noise_weights(img, "poisson", dose=2e7, discrepancy=d)
