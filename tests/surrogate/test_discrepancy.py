"""The surrogate's own error: calibration from residual images, and its place in the model file."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from surrogate.common import InputError
from surrogate.imaging import ModelDiscrepancy, load_model, save_model
from surrogate.training import calibrate_discrepancy, residual_images


def _images(rng, n=4, shape=(96, 96)):
    """Smooth 'predictions' (0–0.05) and residuals with σ = 0.05·I + 1e-4 and a chosen smoothness."""
    preds = []
    for _ in range(n):
        p = gaussian_filter(rng.uniform(0, 1, shape), 4)
        preds.append(0.05 * (p - p.min()) / np.ptp(p))
    return preds


def _residuals(rng, preds, smooth):
    out = []
    for p in preds:
        e = rng.normal(size=p.shape)
        if smooth:
            e = gaussian_filter(e, smooth)
        e /= e.std()
        out.append(e * (0.05 * p + 1e-4))
    return out


def test_sigma_table_follows_the_residuals_and_white_noise_has_unit_area():
    rng = np.random.default_rng(0)
    preds = _images(rng)
    d = calibrate_discrepancy(preds, _residuals(rng, preds, 0), atom_sigma=0.38, pixel_size=0.1)
    for i in (0.01, 0.02, 0.04):
        assert d.sigma(i) == pytest.approx(0.05 * i + 1e-4, rel=0.15)
    assert d.sigma(0.1) == pytest.approx(d.sigma(d.intensities[-1]) * 0.1 / d.intensities[-1])  # proportional beyond
    assert np.all(np.diff(d.sigmas) >= 0)
    # white residuals: an atom-sized difference is as informative as the diagonal χ² says
    assert d.correlation_area == pytest.approx(1.0, abs=0.3)


def test_correlated_residuals_have_a_larger_area_the_smoother_they_are():
    rng = np.random.default_rng(1)
    preds = _images(rng)
    areas = [calibrate_discrepancy(preds, _residuals(rng, preds, s), atom_sigma=0.38, pixel_size=0.1)
             .correlation_area for s in (1.0, 2.5)]
    assert 2.0 < areas[0] < areas[1]


def test_model_file_keeps_the_calibration(tmp_path):
    import surrogate

    model = surrogate.default_model()
    assert model.discrepancy_ is not None and model.discrepancy_.correlation_area > 1
    d = ModelDiscrepancy(intensities=(0.0, 0.01, 0.05), sigmas=(1e-4, 1e-3, 3e-3), correlation_area=12.5,
                         correlation_length=0.6, n_pixels=10, source="test")
    model.discrepancy_ = d
    back = load_model(save_model(model, tmp_path / "m.npz"))
    assert back.discrepancy_ == d
    model.discrepancy_ = None
    assert load_model(save_model(model, tmp_path / "none.npz")).discrepancy_ is None


@pytest.mark.parametrize("bad", [{"intensities": [0.0, 0.0], "sigmas": [1e-4, 1e-3]},
                                 {"intensities": [0.0, 0.1], "sigmas": [0.0, 1e-3]},
                                 {"intensities": [0.0, 0.1], "sigmas": [1e-4, 1e-3], "correlation_area": 0.5},
                                 {"sigmas": [1e-4]}])
def test_malformed_records_are_refused(bad):
    record = {"intensities": [0.0, 0.1], "sigmas": [1e-4, 1e-3], "correlation_area": 10.0,
              "correlation_length": 0.5, "n_pixels": 5, **bad}
    with pytest.raises(InputError):
        ModelDiscrepancy.from_dict(record)


def test_residual_images_are_out_of_fold():
    from surrogate.imaging import PolynomialSurrogate
    from surrogate.training import read_dataset
    import surrogate

    ds = read_dataset(surrogate.default_model_path().parent / "default_dataset.npz")
    template = PolynomialSurrogate(size=3, degree=1, log_term=False, interactions=False,
                                   convolution=surrogate.default_model().convolution)
    preds, res = residual_images(template, ds.convolution_images[:4], ds.multislice_images[:4], folds=2)
    assert len(preds) == 4 and all(p.shape == r.shape for p, r in zip(preds, res))
    fitted_on_all = PolynomialSurrogate(**template.get_params()).fit(ds.convolution_images[:4],
                                                                     ds.multislice_images[:4])
    in_sample = [np.asarray(m, float)[1:-1, 1:-1] - fitted_on_all.predict(c)
                 for c, m in zip(ds.convolution_images[:4], ds.multislice_images[:4])]
    # a model that has not seen an image fits it worse than one that has
    assert sum(np.sum(r ** 2) for r in res) > sum(np.sum(r ** 2) for r in in_sample)
