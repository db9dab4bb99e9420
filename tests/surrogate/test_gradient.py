"""The surrogate's adjoint (surrogate.imaging.adjoint) against finite differences."""

import numpy as np
import pytest

from surrogate.imaging.convolution import ConvolutionParameters, convolution_from_positions
from surrogate.imaging.adjoint import SurrogateGradient, positions_vjp
from surrogate.imaging.grid import ProbeGrid
from surrogate.imaging.model import PolynomialSurrogate



def _pairs(rng, n=3, shape=(40, 44), n_atoms=30):
    # convolution images of random atoms and a nonlinear, neighbourhood-dependent response
    grid = ProbeGrid(origin=(0.0, 0.0), shape=shape, pixel_size=0.1)
    conv, ms = [], []
    for _ in range(n):
        xy = rng.uniform(0.3, 0.1 * np.array(shape) - 0.3, size=(n_atoms, 2))
        c = convolution_from_positions(xy, np.full(n_atoms, 1e-3), grid, 0.38)
        blur = (np.roll(c, 1, 0) + np.roll(c, -1, 0) + np.roll(c, 1, 1) + np.roll(c, -1, 1)) / 4
        conv.append(c)
        ms.append(0.5 * c + 30 * c * blur + 1e-4 + 1e-5 * rng.standard_normal(c.shape))
    return conv, ms


@pytest.fixture(scope="module")
def models():
    conv, ms = _pairs(np.random.default_rng(3))
    return {
        "s3 d2 log inter": PolynomialSurrogate(size=3, degree=2).fit(conv, ms),
        "s3 d3 log inter": PolynomialSurrogate(size=3, degree=3, ridge=1e-8).fit(conv, ms),
        "s5 d2 no log": PolynomialSurrogate(size=5, degree=2, log_term=False).fit(conv, ms),
        "s3 d3 pure powers": PolynomialSurrogate(size=3, degree=3, interactions=False).fit(conv, ms),
        "s3 d2 saturated": PolynomialSurrogate(size=3, degree=2, saturation=0.3).fit(conv, ms),
        "s3 d3 saturated": PolynomialSurrogate(size=3, degree=3, ridge=1e-8, saturation=0.3).fit(conv, ms),
    }


@pytest.mark.parametrize("name", ["s3 d2 log inter", "s3 d3 log inter", "s5 d2 no log", "s3 d3 pure powers",
                                  "s3 d2 saturated", "s3 d3 saturated"])
def test_convolution_vjp_matches_finite_differences(models, name, rng):
    model = models[name]
    h = model.border
    conv = rng.uniform(0.0, 0.01, size=(12 + 2 * h, 11 + 2 * h))
    conv[:, :2] = 0.0  # vacuum columns: the log floor applies there
    up = rng.normal(size=(12, 11))
    d = SurrogateGradient(model).convolution_vjp(conv, up)
    assert d.shape == conv.shape

    def f(c):
        return float((model.predict(c) * up).sum())

    eps = 1e-7
    picks = [(0, 0), (h, h), (5, 6), (conv.shape[0] - 1, conv.shape[1] - 1), (4, 2), (7, 1)]
    for i, j in picks:
        cp, cm = conv.copy(), conv.copy()
        cp[i, j] += eps
        cm[i, j] -= eps
        fd = (f(cp) - f(cm)) / (2 * eps)
        assert d[i, j] == pytest.approx(fd, rel=1e-4, abs=1e-6 * np.abs(d).max())


def test_convolution_vjp_is_linear_in_the_upstream_image(models, rng):
    g = SurrogateGradient(models["s3 d2 log inter"])
    conv = rng.uniform(0.0, 0.01, size=(10, 10))
    u1, u2 = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    np.testing.assert_allclose(g.convolution_vjp(conv, 2 * u1 - u2),
                               2 * g.convolution_vjp(conv, u1) - g.convolution_vjp(conv, u2), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="upstream shape"):
        g.convolution_vjp(conv, u1[:-1])


@pytest.mark.parametrize("name", ["s3 d2 log inter", "s5 d2 no log", "s3 d2 saturated"])
def test_single_precision_vjp_agrees_with_double(models, name, rng):
    # float32 through the polynomial (the annealing's MD forces): the same adjoint to ~1e-6 relative
    model = models[name]
    h = model.border
    conv = rng.uniform(0.0, 0.01, size=(30 + 2 * h, 27 + 2 * h))
    conv[:, :3] = 0.0
    up = rng.normal(size=(30, 27))
    exact = SurrogateGradient(model).convolution_vjp(conv, up)
    single = SurrogateGradient(model, single_precision=True).convolution_vjp(conv, up)
    assert single.dtype == np.float64 and single.shape == exact.shape
    err = np.abs(single - exact).max() / np.abs(exact).max()
    assert 0.0 < err < 1e-5  # float32 rounding, not another formula


def test_positions_vjp_matches_finite_differences(rng):
    params = ConvolutionParameters()
    grid = ProbeGrid(origin=(-0.4, 0.3), shape=(60, 50), pixel_size=0.1)
    xy = rng.uniform(1.0, 4.5, size=(7, 2))
    xy[0] = (-0.2, 0.5)  # an atom whose window is clipped by the image edge
    w = rng.uniform(0.5, 2.0, size=7)
    dconv = rng.normal(size=grid.shape)

    def f(p):
        c = convolution_from_positions(p, w, grid, params.sigma)
        return float((c * dconv).sum())

    g = positions_vjp(xy, w, grid.origin, grid.pixel_size, params.sigma, dconv)
    eps = 1e-6
    for k in range(len(xy)):
        for ax in (0, 1):
            p1, p2 = xy.copy(), xy.copy()
            p1[k, ax] += eps
            p2[k, ax] -= eps
            assert g[k, ax] == pytest.approx((f(p1) - f(p2)) / (2 * eps), rel=1e-5, abs=1e-8)
