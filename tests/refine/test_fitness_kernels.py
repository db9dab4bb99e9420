"""The fitness's jitted kernels against direct numpy computations (they are hand-vectorized).

Box sums and χ², the cubic sub-pixel shift, the 2×2 binning of the coarse
alignment, the running maximum, and the splat's exponential-free Gaussian rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from refine.cost.alignment import fit_intensity_map
from refine.cost.kernels import bin_box, box_sums, shift_cubic
from refine.cost.render import max_value
from surrogate.imaging import CUTOFF_SIGMAS, scratch_rows, splat_gaussians


def _reference_sums(sim, e, w, i0, j0, bg):
    """The 15 normal-equation sums of box_sums, by numpy on the box (neighbours outside = bg)."""
    s = sim - bg
    pad = np.pad(s, 1)  # zero outside the box: the neighbours there are bg
    gi = 0.5 * (pad[2:, 1:-1] - pad[:-2, 1:-1])
    gj = 0.5 * (pad[1:-1, 2:] - pad[1:-1, :-2])
    bi, bj = sim.shape
    ww = w[i0:i0 + bi, j0:j0 + bj]
    ev = e[i0:i0 + bi, j0:j0 + bj]
    one = np.ones_like(s)
    return np.array([(ww * x * y).sum() for x, y in
                     [(s, s), (s, one), (s, gi), (s, gj), (one, one), (gi, one), (gj, one), (gi, gi), (gi, gj),
                      (gj, gj), (s, ev), (one, ev), (gi, ev), (gj, ev), (ev, ev)]])


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 7), (17, 1), (40, 33)])
def test_box_sums_match_numpy(rng, shape):
    m, n = 45, 41
    e = rng.normal(size=(m, n))
    w = rng.uniform(0.5, 2.0, (m, n))
    w[rng.random((m, n)) < 0.2] = 0.0  # masked pixels
    sim = rng.normal(size=shape) + 0.3
    i0, j0 = 2, 5 if shape[1] < 30 else 1
    acc = np.empty(15)
    box_sums(sim, e, w, i0, j0, 0.3, acc)
    ref = _reference_sums(sim, e, w, i0, j0, 0.3)
    np.testing.assert_allclose(acc, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_chi2_equals_direct_numpy(rng):
    """fit_intensity_map's a, b and χ² (from the vectorized sums) against a direct weighted fit."""
    s = rng.normal(size=(63, 58))
    e = 2.5 * s + 0.7 + rng.normal(0, 0.3, s.shape)
    w = rng.uniform(0.2, 3.0, s.shape)
    w[:, :4] = 0.0
    e[:, :4] = np.nan  # masked pixels may hold anything
    a, b, chi2 = fit_intensity_map(s, e, w)
    ok = w > 0
    A = np.c_[s[ok], np.ones(ok.sum())] * np.sqrt(w[ok])[:, None]
    ra, rb = np.linalg.lstsq(A, e[ok] * np.sqrt(w[ok]), rcond=None)[0]
    assert (a, b) == pytest.approx((ra, rb), rel=1e-10)
    assert chi2 == pytest.approx(np.sum(w[ok] * (e[ok] - ra * s[ok] - rb) ** 2), rel=1e-10)


def test_bin_box_matches_loop(rng):
    for _ in range(200):
        B = int(rng.integers(1, 5))
        bi, bj = (int(v) for v in rng.integers(0, 25, 2))
        i0, j0 = (int(v) for v in rng.integers(0, 9, 2))
        sim = rng.random((bi, bj))
        out = np.full((40, 40), 7.0)
        bin_box(sim, i0, j0, 0.3, B, out)
        ref = np.zeros((40, 40))
        for a in range(bi):
            for b in range(bj):
                ref[(i0 + a) // B, (j0 + b) // B] += sim[a, b] - 0.3
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13)


def test_max_value(rng):
    for shape in [(1, 1), (3, 15), (4, 16), (5, 17), (60, 250)]:
        a = rng.normal(size=shape)
        assert max_value(a) == a.max()
        a[-1, -1] = 10.0  # in the remainder of the 16-wide loop
        assert max_value(a) == 10.0
    assert max_value(np.zeros((0, 5))) == -np.inf


def test_splat_matches_direct_gaussians(rng):
    """Window rows built from 3 exponentials per axis equal exp(−r²/2σ²) to ~1e-13, and exact zeros outside."""
    dx, sigma = 0.1, 0.38
    shape = (90, 84)
    x0, y0 = -1.0, 0.5
    # atoms on and off pixel centres, near half-pixel offsets (not at them: there, which pixel is
    # nearest depends on the last bit of (x − x0)/Δ), and partly outside the grid
    xy = np.c_[rng.uniform(x0 - 2, x0 + shape[0] * dx + 2, 40), rng.uniform(y0 - 2, y0 + shape[1] * dx + 2, 40)]
    xy[:4] = [[x0 + 30 * dx, y0 + 20 * dx], [x0 + 40.25 * dx, y0 + 10.75 * dx],
              [x0 + 50.4999999 * dx, y0 + 60.5000001 * dx], [x0 - 0.5, y0 + 3.0]]
    w = rng.uniform(100, 2000, len(xy))
    out = np.empty(shape)
    splat_gaussians(xy, w, x0, y0, dx, sigma, CUTOFF_SIGMAS, out, *scratch_rows(sigma, dx))

    half = int(np.ceil(CUTOFF_SIGMAS * sigma / dx)) + 1
    ref = np.zeros(shape)
    ii, jj = np.arange(shape[0]), np.arange(shape[1])
    for (x, y), wa in zip(xy, w):
        fi, fj = (x - x0) / dx, (y - y0) / dx
        ci, cj = int(np.floor(fi + 0.5)), int(np.floor(fj + 0.5))
        gx = np.where(np.abs(ii - ci) <= half, np.exp(-((ii - fi) * dx) ** 2 / (2 * sigma**2)), 0.0)
        gy = np.where(np.abs(jj - cj) <= half, np.exp(-((jj - fj) * dx) ** 2 / (2 * sigma**2)), 0.0)
        ref += wa / (2 * np.pi * sigma**2) * np.outer(gx, gy)
    assert np.array_equal(out == 0, ref == 0)  # the same windows: vacuum stays exactly 0
    nz = ref > 0
    np.testing.assert_allclose(out[nz], ref[nz], rtol=1e-12)


def _keys_weights(t):
    return np.array([-0.5 * t**3 + t**2 - 0.5 * t, 1.5 * t**3 - 2.5 * t**2 + 1.0,
                     -1.5 * t**3 + 2.0 * t**2 + 0.5 * t, 0.5 * t**3 - 0.5 * t**2])


@pytest.mark.parametrize("trial", range(60))
def test_shift_cubic_matches_direct_interpolation(rng, trial):
    """Boxes of every size from 1 px (all taps at the edges) to interior-dominated, any shift."""
    m, n, bg = 40, 37, 0.37
    bi, bj = (int(v) for v in rng.integers(1, 20, 2))
    i0, j0 = int(rng.integers(0, m - bi + 1)), int(rng.integers(0, n - bj + 1))
    di, dj = rng.uniform(-4, 4, 2)
    sim = rng.random((bi, bj)) + bg
    ni, nj = int(np.floor(di)), int(np.floor(dj))
    oi0, oi1 = max(i0 + ni - 1, 0), min(i0 + ni + bi + 2, m)
    oj0, oj1 = max(j0 + nj - 1, 0), min(j0 + nj + bj + 2, n)
    if oi1 <= oi0 or oj1 <= oj0:
        return
    out = np.empty((oi1 - oi0, oj1 - oj0))
    shift_cubic(sim, i0, j0, di, dj, oi0, oj0, bg, np.empty((oi1 - oi0, bj)), out)
    # reference: S on a canvas padded with bg, sampled at (i − di, j − dj) by the 4×4 Keys stencil
    P = 8
    canvas = np.full((m + 2 * P, n + 2 * P), bg)
    canvas[P + i0:P + i0 + bi, P + j0:P + j0 + bj] = sim
    ref = np.empty_like(out)
    for a in range(out.shape[0]):
        u = oi0 + a - di
        pi = int(np.floor(u))
        wi = _keys_weights(u - pi)
        for b in range(out.shape[1]):
            v = oj0 + b - dj
            pj = int(np.floor(v))
            wj = _keys_weights(v - pj)
            patch = canvas[P + pi - 1:P + pi + 3, P + pj - 1:P + pj + 3]
            ref[a, b] = wi @ patch @ wj
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13)
