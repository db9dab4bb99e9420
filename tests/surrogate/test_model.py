import json
import zipfile

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from surrogate.common.errors import InputError, NotFittedError
from surrogate.imaging.features import features
from surrogate.imaging.model import PolynomialSurrogate, load_model, save_model


def noisy_pairs(rng, n=3, shape=(30, 34)):
    """Well-conditioned data: rough positive images (neighbours not collinear)."""
    conv = [rng.uniform(0.01, 1.0, size=shape) for _ in range(n)]
    ms = [0.3 * c + c**2 + 0.1 * np.roll(c, 1, 0) * c + 0.01 * rng.standard_normal(shape) for c in conv]
    return conv, ms


@pytest.mark.parametrize("s,d,lg,inter", [(3, 2, True, True), (1, 3, True, False), (5, 1, False, False)])
def test_predictions_agree_with_sklearn_linear_regression(rng, s, d, lg, inter):
    conv, ms = noisy_pairs(rng)
    model = PolynomialSurrogate(size=s, degree=d, log_term=lg, interactions=inter, log_floor=1e-3).fit(conv, ms)
    h = model.border
    X = np.concatenate([features(c, s, d, lg, inter, 1e-3)[:, 1:] for c in conv])
    y = np.concatenate([m[h:m.shape[0] - h, h:m.shape[1] - h].ravel() for m in ms])
    ref = LinearRegression().fit(X, y)
    test = rng.uniform(0.01, 1.0, size=(25, 27))
    ours = model.predict(test).ravel()
    theirs = ref.predict(features(test, s, d, lg, inter, 1e-3)[:, 1:])
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-6


def test_exact_polynomial_is_recovered(rng):
    conv = [rng.uniform(0.1, 1.0, size=(20, 20)) for _ in range(2)]
    ms = [2.0 + 3 * c - 0.5 * c**2 for c in conv]
    model = PolynomialSurrogate(size=1, degree=2, log_term=False, interactions=False).fit(conv, ms)
    np.testing.assert_allclose(model.coef_, [2.0, 3.0, -0.5], atol=1e-9)
    assert model.score(conv, ms) == pytest.approx(1.0, abs=1e-12)


def test_predict_crops_border_and_keeps_pixel_alignment(small_model, pairs):
    conv, ms = pairs
    pred = small_model.predict(conv[0])
    assert pred.shape == (conv[0].shape[0] - 2, conv[0].shape[1] - 2)
    # the model fitted on the synthetic response predicts it well pixel by pixel
    target = ms[0][1:-1, 1:-1]
    assert np.corrcoef(pred.ravel(), target.ravel())[0, 1] > 0.99


def test_simulate_returns_image_on_requested_grid(small_model):
    from ase import Atoms
    from ase.cluster import Icosahedron

    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid

    atoms = Icosahedron("Pt", 2)
    grid = ProbeGrid.around(atoms)
    img = small_model.simulate(atoms, grid)
    assert img.shape == grid.shape
    conv = convolution_image(atoms, grid.padded(1), small_model.convolution_parameters)
    np.testing.assert_array_equal(img, small_model.predict(conv))
    # a single atom: the brightest pixel is the probe position nearest to it
    one = Atoms("Pt", positions=[(1.23, 0.77, 0.0)])
    g = ProbeGrid(origin=(0.0, 0.0), shape=(30, 30))
    i, j = np.unravel_index(np.argmax(small_model.simulate(one, g)), g.shape)
    assert (i, j) == (12, 8)


def test_unknown_element_for_the_model_is_refused(small_model):
    from ase import Atoms

    with pytest.raises(InputError, match="Mo"):
        small_model.simulate(Atoms("Mo", positions=[(1, 1, 0)]))


def test_sample_weight_zero_equals_dropping_pixels(rng):
    conv, ms = noisy_pairs(rng, n=2)
    w = [np.ones_like(conv[0]), np.zeros_like(conv[1])]
    a = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3).fit(conv, ms, sample_weight=w)
    b = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3).fit(conv[:1], ms[:1])
    np.testing.assert_allclose(a.predict(conv[1]), b.predict(conv[1]), rtol=1e-8)


def test_ridge_shrinks_coefficients(rng):
    conv, ms = noisy_pairs(rng)
    ols = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3).fit(conv, ms)
    ridge = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3, ridge=1e4).fit(conv, ms)
    assert np.linalg.norm(ridge.coef_[1:]) < np.linalg.norm(ols.coef_[1:])


def test_model_file_round_trip(tmp_path, small_model, pairs):
    path = save_model(small_model, tmp_path / "m.npz")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(pairs[0][1]), small_model.predict(pairs[0][1]))
    assert loaded.elements_ == ("Pt",)
    assert loaded.convolution_parameters == small_model.convolution_parameters
    assert loaded.input_range_ == small_model.input_range_
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: loading never unpickles
        header = json.loads(z["header"].tobytes())
    assert header["format"] == "stem-refine-surrogate" and header["n_terms"] == small_model.n_terms


def test_corrupt_and_mismatched_model_files(tmp_path, small_model):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        load_model(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.npz")
    # tamper with the coefficient count
    path = save_model(small_model, tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["coef"] = arrays["coef"][:-1]
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(InputError, match="coefficients"):
        load_model(tmp_path / "t.npz")
    # a different format string
    arrays = {k: v for k, v in np.load(path).items()}
    hdr = json.loads(arrays["header"].tobytes())
    hdr["format"] = "something-else"
    arrays["header"] = np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8)
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(InputError, match="not a stem-refine model"):
        load_model(tmp_path / "f.npz")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, small_model):
    save_model(small_model, tmp_path / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert zipfile.is_zipfile(tmp_path / "m.npz")


def test_bad_training_input(rng):
    m = PolynomialSurrogate(size=3, degree=1)
    with pytest.raises(InputError, match="shape"):
        m.fit([np.ones((10, 10))], [np.ones((10, 11))])
    nan = np.ones((10, 10))
    nan[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        m.fit([nan], [np.ones((10, 10))])
    with pytest.raises(InputError, match="no training images"):
        m.fit([], [])
    with pytest.raises(InputError, match="2 convolution images but 1"):
        m.fit([np.ones((9, 9))] * 2, [np.ones((9, 9))])
    with pytest.raises(InputError, match="odd"):
        PolynomialSurrogate(size=4).fit([np.ones((9, 9))], [np.ones((9, 9))])
    with pytest.raises(NotFittedError):
        PolynomialSurrogate().predict(np.ones((9, 9)))


def test_estimator_conventions():
    from sklearn.base import clone

    m = PolynomialSurrogate(size=3, degree=3, ridge=0.5)
    c = clone(m)
    assert c.get_params() == m.get_params()
    assert not hasattr(c, "coef_")


# -- the input saturation --------------------------------------------------------------------------

def test_saturated_model_is_the_polynomial_of_the_transformed_image(rng):
    # t(x) = x0·ln(1 + x/x0), x0 = F × the largest training pixel: the same fit as a plain model given t(C)
    conv, ms = noisy_pairs(rng)
    top = max(c.max() for c in conv)
    sat = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3, saturation=0.5).fit(conv, ms)
    x0 = 0.5 * top
    plain = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3).fit([x0 * np.log1p(c / x0) for c in conv], ms)
    assert sat.saturation_scale_ == pytest.approx(x0)
    assert sat.input_range_ == pytest.approx((min(c.min() for c in conv), top))  # raw units, for domain checks
    test = rng.uniform(0.0, 2.0, size=(12, 13))
    np.testing.assert_allclose(sat.predict(test), plain.predict(x0 * np.log1p(test / x0)), rtol=1e-9, atol=1e-12)
    # below 0 (vacuum round-off) t continues with slope 1: finite, and no kink at 0
    neg = np.array([[-1e-3, -1e-19, 0.0]])
    np.testing.assert_allclose(sat.transform_input(neg), neg, rtol=0, atol=1e-30)
    np.testing.assert_array_equal(sat.transform_derivative(neg), 1.0)


def test_saturated_model_extrapolates_a_saturating_response(rng):
    # a column-like response that saturates: trained on x ≤ 1, asked at x up to 3, the plain quadratic
    # bends over where the saturated polynomial keeps following the truth
    def truth(c):
        return 1.0 - np.exp(-1.2 * c)

    conv = [rng.uniform(0.0, 1.0, size=(30, 30)) for _ in range(3)]
    ms = [truth(c) for c in conv]
    test = np.linspace(1.0, 3.0, 60).reshape(6, 10)
    plain = PolynomialSurrogate(size=1, degree=2, log_term=False).fit(conv, ms)
    sat = PolynomialSurrogate(size=1, degree=2, log_term=False, saturation=1.0).fit(conv, ms)
    err_plain = np.abs(plain.predict(test) - truth(test)).max()
    err_sat = np.abs(sat.predict(test) - truth(test)).max()
    assert err_sat < 0.25 * err_plain


def test_saturated_model_file_round_trip_and_old_files(tmp_path, rng):
    conv, ms = noisy_pairs(rng)
    sat = PolynomialSurrogate(size=3, degree=2, log_floor=1e-3, saturation=0.7).fit(conv, ms)
    loaded = load_model(save_model(sat, tmp_path / "s.npz"))
    assert loaded.saturation == 0.7 and loaded.saturation_scale_ == sat.saturation_scale_
    np.testing.assert_array_equal(loaded.predict(conv[0]), sat.predict(conv[0]))
    # a file whose header lost the scale is refused, not read as an unsaturated model
    with np.load(tmp_path / "s.npz") as z:
        arrays = dict(z)
    hdr = json.loads(arrays["header"].tobytes())
    del hdr["saturation_scale"]
    arrays["header"] = np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8)
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(InputError, match="saturation"):
        load_model(tmp_path / "t.npz")
    # files from before the saturation existed (no keys at all) read as unsaturated
    del hdr["hyperparameters"]["saturation"]
    arrays["header"] = np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    assert load_model(tmp_path / "old.npz").saturation_scale_ is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), True, "strong"])
def test_bad_saturation_is_refused(bad):
    with pytest.raises(InputError, match="saturation"):
        PolynomialSurrogate(size=1, degree=1, saturation=bad).fit([np.ones((5, 5))], [np.ones((5, 5))])
