"""Fused prediction kernels (surrogate.imaging.kernels) against the feature-matrix product."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.imaging import kernels as _predict
from surrogate.imaging.features import features, n_terms
from surrogate.imaging.model import PolynomialSurrogate

# (s, d, log term, interactions); all of these get a generated kernel, and the
# general Horner kernel is checked on the same models by switching the fast path off.
STRUCTURES = [
    (1, 1, False, False),
    (3, 3, True, False),
    (5, 2, True, True),
    (3, 2, False, True),
    (3, 3, True, True),
    (5, 1, True, False),
]


def _images(rng, n=3, shape=(23, 37)):
    """Positive smooth-ish images with a hole of exact zeros, negative and tiny pixels."""
    out = []
    for _ in range(n):
        img = np.abs(rng.normal(1.0, 0.5, shape)) * rng.uniform(0.5, 2.0)
        img[rng.uniform(size=shape) < 0.05] *= -1e-3  # slightly negative (below the log floor)
        img[rng.uniform(size=shape) < 0.05] = 1e-19  # background-like, below the floor
        out.append(img)
    return out


def _random_model(rng, s, d, lg, inter):
    """A fitted model whose coefficients are then replaced by random ones of mixed scale."""
    conv = _images(rng, n=2)
    ms = [c + 0.1 * c * c for c in conv]
    model = PolynomialSurrogate(size=s, degree=d, log_term=lg, interactions=inter, log_floor=1e-3)
    model.fit(conv, ms)
    nt = n_terms(s, d, lg, inter)
    model.coef_ = rng.normal(size=nt) * 10.0 ** rng.uniform(-3, 1, nt)
    model._compile()
    return model


def _reference(model, img):
    h = model.border
    f = features(img, model.size, model.degree, model.log_term, model.interactions, model.log_floor_)
    return (f @ model.coef_).reshape(img.shape[0] - 2 * h, img.shape[1] - 2 * h)


def _general(model, img):
    """The general Horner kernel on the same model (fast path switched off)."""
    fast = model._unrolled
    try:
        model._unrolled = None
        return model.predict(img)
    finally:
        model._unrolled = fast


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("s,d,lg,inter", STRUCTURES)
def test_fused_prediction_equals_feature_matrix_product(rng, s, d, lg, inter):
    model = _random_model(rng, s, d, lg, inter)
    assert model._unrolled is not None  # these structures take the generated kernel
    for img in _images(rng, n=2, shape=(21 + s, 30 + 2 * s)):
        ref = _reference(model, img)
        fast = model.predict(img)
        assert fast.shape == ref.shape
        assert _rel(fast, ref) < 1e-10
        # pixel by pixel too, relative to the image's scale
        assert np.max(np.abs(fast - ref)) < 1e-10 * np.max(np.abs(ref))
        general = _general(model, img)
        assert _rel(general, ref) < 1e-10


@pytest.mark.parametrize("width", [1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 71, 72, 130])
def test_every_output_column_is_right_for_any_width(rng, width):
    # chunks of 64 pixels trimmed to whole vectors of 8, plus an overlapping last vector
    model = _random_model(rng, 3, 2, True, True)
    img = _images(rng, n=1, shape=(6, width + 2))[0]
    ref = _reference(model, img)
    out = np.full(ref.shape, np.nan)
    assert model.predict_into(img, out) is out
    assert np.all(np.isfinite(out))
    assert _rel(out, ref) < 1e-10


@pytest.mark.parametrize("s,d,lg,inter", [(5, 2, True, True), (3, 3, True, False), (3, 2, False, True)])
def test_vacuum_pixels_get_the_polynomial_at_zero_input(rng, s, d, lg, inter):
    model = _random_model(rng, s, d, lg, inter)
    h = model.border
    img = np.zeros((40, 150))
    img[20:24, 100:104] = rng.uniform(0.5, 1.5, (4, 4))  # one "atom"
    img[30, 10] = -0.0  # negative zero is vacuum too
    for name, pred in (("fast", model.predict(img)), ("general", _general(model, img))):
        # the polynomial at zero input, from the feature definition
        at_zero = features(np.zeros((s, s)), s, d, lg, inter, model.log_floor_)[0] @ model.coef_
        assert model._background == pytest.approx(at_zero, rel=1e-12, abs=1e-300)
        # output pixels whose s×s input grid is all zero get exactly that constant
        ii, jj = np.meshgrid(np.arange(pred.shape[0]), np.arange(pred.shape[1]), indexing="ij")
        touched = (ii + 2 * h >= 20) & (ii <= 23) & (jj + 2 * h >= 100) & (jj <= 103)
        assert np.all(pred[~touched] == model._background), name
        # and the pixels near the atom are evaluated, matching the feature product
        ref = _reference(model, img)
        np.testing.assert_allclose(pred[touched], ref[touched], rtol=1e-10,
                                   atol=1e-10 * np.abs(ref).max(), err_msg=name)
        assert np.any(pred[touched] != model._background)


def test_all_vacuum_image_and_all_rows(rng):
    model = _random_model(rng, 5, 2, True, True)
    pred = model.predict(np.zeros((30, 30)))
    assert np.all(pred == model._background)


def test_non_contiguous_input_takes_the_general_path_with_the_same_result(rng):
    model = _random_model(rng, 5, 2, True, True)
    img = _images(rng, n=1, shape=(30, 60))[0]
    view = np.asfortranarray(img)
    out = np.empty((26, 56))
    model.predict_into(view, out)  # general kernel (not C-contiguous)
    np.testing.assert_allclose(out, model.predict(img), rtol=1e-12, atol=1e-12 * np.abs(out).max())


def test_vectorizable_log_is_within_one_ulp_of_numpy(rng):
    x = np.concatenate([10.0 ** rng.uniform(-300, 300, 20000), rng.uniform(0.5, 2.0, 20000),
                        1 + rng.uniform(-1e-9, 1e-9, 1000), [0.0, -0.0, -1.0, 1e-19, 1.0, 2.0, np.sqrt(0.5)]])
    floor = 1e-3
    dst, mbuf, kbuf = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    _predict._log_floored(x, 0, len(x), _predict.floor_bits(floor), dst, mbuf, kbuf)
    ref = np.log(np.maximum(x, floor))
    assert np.all(np.abs(dst - ref) <= np.spacing(np.abs(ref)))
    # no floor in the way: the full range of normal numbers
    small = _predict.floor_bits(_predict._MIN_NORMAL)
    _predict._log_floored(x, 0, len(x), small, dst, mbuf, kbuf)
    pos = x > 0
    assert np.all(np.abs(dst[pos] - np.log(x[pos])) <= np.spacing(np.abs(np.log(x[pos]))))


def test_subnormal_log_floor_falls_back_to_the_general_kernel(rng):
    conv = _images(rng, n=2)
    model = PolynomialSurrogate(size=3, degree=2, log_floor=1e-310).fit(conv, [c * 2 for c in conv])
    assert model._unrolled is None
    img = conv[0]
    assert _rel(model.predict(img), _reference(model, img)) < 1e-10


def test_large_models_use_the_general_kernel():
    assert _predict.unrolled_kernel(5, 3, True, True) is None  # 3654 terms
    assert n_terms(5, 3, True, True) > _predict.UNROLL_MAX_TERMS


def test_kernel_source_compiles_in_memory_when_the_cache_folder_is_unusable(tmp_path, monkeypatch, rng):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STEM_REFINE_KERNEL_CACHE", str(blocker / "kernels"))
    source = _predict.kernel_source(1, 1, False, False)
    kernel = _predict._load_module("_stem_refine_test_kernel", source).kernel
    img = rng.uniform(size=(5, 11))
    out = np.empty((5, 11))
    kernel(img, np.array([0.5, 2.0]), _predict.floor_bits(1.0), 0.5, out)
    np.testing.assert_allclose(out, 0.5 + 2.0 * img, rtol=1e-15)


def test_prediction_agrees_with_fitted_model_on_real_scale_data(small_model, pairs):
    # the session model (fitted, not random coefficients) on synthetic convolution images
    conv = pairs[0][0]
    assert _rel(small_model.predict(conv), _reference(small_model, conv)) < 1e-10
