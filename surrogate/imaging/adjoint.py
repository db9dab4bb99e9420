"""Gradients of the surrogate image: vector–Jacobian products (adjoints).

A refinement that moves atoms to lower χ² needs ∂χ²/∂rᵢ. With the
surrogate image S = f(C) (the polynomial of the s×s input pixel grid of the
convolution image C) and C = Σᵢ wᵢ G(r − rᵢ), the chain rule runs backwards
through two steps, each a *vector–Jacobian product* with an upstream image
U = ∂χ²/∂S (shape of S):

1. :meth:`SurrogateGradient.convolution_vjp` — ∂χ²/∂C (shape of C, i.e. S
   plus the border h on each side)::

       ∂χ²/∂C[q] = Σ_p U[p] · ∂f(x(p))/∂x_v   with q = p + offset(v),

   plus, with the log term x_p = log(max(x_c, floor)), U[p]·∂f/∂x_p / x_c at
   the centre pixel (0 where the floor applies); with the model's input
   saturation the polynomial reads t(C), so the result is multiplied by
   dt/dC pixel by pixel;
2. :func:`positions_vjp` — ∂χ²/∂(xᵢ, yᵢ) in 1/Å from ∂χ²/∂C, through the
   same separable Gaussian window as the splat of
   :mod:`surrogate.imaging.convolution` (``CUTOFF_SIGMAS``)::

       ∂C[q]/∂xᵢ = wᵢ G(q − rᵢ) (X_q − xᵢ)/σ².

The convolution image depends only on x and y: the beam direction z gets no
image gradient (the energy term alone places atoms along the beam).

For degree 2 (the paper's and the shipped model's choice), ∂f/∂x = l + Q·x
with a dense symmetric V×V matrix Q, computed for all pixels as one matrix
product (V×V)·(V×pixels) in BLAS between a gather of the inputs and a
scatter of the result: 3.1× faster than a per-row jitted loop, which ran
into misaligned vector loads (5.5 vs 17.3 ms for a 266×273 image of a
300-atom particle, float32, one core); other degrees use the general term tree.
Both are checked against finite differences in the tests.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from surrogate.imaging.convolution import CUTOFF_SIGMAS, atom_window
from surrogate.imaging.features import term_tree, term_tuples

__all__ = ["SurrogateGradient", "positions_vjp"]

#: limits BLAS to one thread around the degree-2 product (a process-wide library handle)
_BLAS = ThreadpoolController()


class SurrogateGradient:
    """Adjoint of a fitted :class:`~surrogate.imaging.model.PolynomialSurrogate`.

    Parameters
    ----------
    model : PolynomialSurrogate
        Fitted model (``coef_``, ``size``, ``degree``, ``log_term``,
        ``interactions``, ``log_floor_``).
    single_precision : bool
        Degree 2 only: run :meth:`convolution_vjp` in float32 (input,
        matrices and output are converted; the result is returned as
        float64): twice the SIMD width of the product Q·x (see
        ``tests/benchmarks/bench_anneal_step.py``); relative error ~1e-6 of
        the largest entry — ample for molecular-dynamics forces, not for
        finite-difference checks.
    """

    def __init__(self, model, *, single_precision: bool = False):
        if not hasattr(model, "coef_"):
            raise ValueError("the surrogate model is not fitted")
        self.model = model
        self.single_precision = bool(single_precision)
        hyper = (int(model.size), int(model.degree), bool(model.log_term), bool(model.interactions))
        self.size, self.degree, self.log_term, self.interactions = hyper
        self.h = (self.size - 1) // 2
        tuples = term_tuples(*hyper)
        coef = np.asarray(model.coef_, dtype=np.float64)
        n_var = self.size * self.size + int(self.log_term)
        self.n_var = n_var
        parent, last, _, offsets = term_tree(*hyper)
        self._parent, self._last, self._offsets = parent, last, offsets
        self.log_floor = float(model.log_floor_) if self.log_term else 1.0
        if self.degree == 2:
            # f = c0 + Σ l_v x_v + Σ_{u≤v} q_uv x_u x_v  ⇒  ∂f/∂x = l + Q x, Q symmetric, Q_vv = 2 q_vv
            lin = np.zeros(n_var)
            Q = np.zeros((n_var, n_var))
            for t, tup in enumerate(tuples):
                if len(tup) == 1:
                    lin[tup[0]] += coef[t]
                elif len(tup) == 2:
                    u, v = tup
                    if u == v:
                        Q[u, u] += 2.0 * coef[t]
                    else:
                        Q[u, v] += coef[t]
                        Q[v, u] += coef[t]
            self._lin, self._Q = lin, np.ascontiguousarray(Q)
            self._lin32, self._Q32 = lin.astype(np.float32), self._Q.astype(np.float32)
        else:
            index = {tup: t for t, tup in enumerate(tuples)}
            var, sub, c = [], [], []
            for t, tup in enumerate(tuples):
                if not tup or coef[t] == 0.0:
                    continue
                for v in sorted(set(tup)):
                    rest = list(tup)
                    rest.remove(v)
                    var.append(v)
                    sub.append(index[tuple(rest)])
                    c.append(coef[t] * tup.count(v))
            self._pair_var = np.array(var, dtype=np.int64)
            self._pair_sub = np.array(sub, dtype=np.int64)
            self._pair_coef = np.array(c, dtype=np.float64)
        self._x = np.zeros(n_var)
        self._dv = np.zeros(n_var)
        self._rows = None
        self._f = np.zeros(len(tuples))

    def convolution_vjp(self, convolution_image: np.ndarray, upstream: np.ndarray,
                        out: np.ndarray | None = None) -> np.ndarray:
        """∂χ²/∂C from ∂χ²/∂S.

        Parameters
        ----------
        convolution_image : ndarray, shape (M, N)
            C-contiguous float64 convolution image the surrogate image was predicted from.
        upstream : ndarray, shape (M − 2h, N − 2h)
            ∂χ²/∂S for each predicted pixel.
        out : ndarray, shape (M, N), optional
            Written (not accumulated into).

        Returns
        -------
        ndarray, shape (M, N)
        """
        conv = np.ascontiguousarray(convolution_image, dtype=np.float64)
        # with the input saturation the polynomial reads t(C): ∂χ²/∂C = ∂χ²/∂t · dt/dC, pixel by pixel
        slope = self.model.transform_derivative(conv) if hasattr(self.model, "transform_derivative") else None
        if slope is not None:
            conv = self.model.transform_input(conv)
        h = self.h
        if upstream.shape != (conv.shape[0] - 2 * h, conv.shape[1] - 2 * h):
            raise ValueError(f"upstream shape {upstream.shape} does not match a convolution image of "
                             f"shape {conv.shape} with border {h}")
        if out is None:
            out = np.zeros(conv.shape)
        else:
            out[:, :] = 0.0
        up = np.ascontiguousarray(upstream, dtype=np.float64)
        if self.degree == 2:
            dtype = np.float32 if self.single_precision else np.float64
            shape = (self.n_var,) + up.shape
            if self._rows is None or self._rows[0].shape != shape or self._rows[0].dtype != dtype:
                self._rows = (np.empty(shape, dtype), np.empty(shape, dtype))
            X, D = self._rows
            if self.single_precision:
                conv_t, up_t = _flushed32(conv), _flushed32(up)
                lin, Q, floor, out_t = self._lin32, self._Q32, np.float32(self.log_floor), np.zeros(conv.shape,
                                                                                                   np.float32)
            else:
                conv_t, up_t, lin, Q, floor, out_t = conv, up, self._lin, self._Q, self.log_floor, out
            _gather_inputs(conv_t, h, self._offsets, self.log_term, floor, X)
            # ∂f/∂x − l = Q·x for every pixel at once: one (V×V)·(V×pixels) product, which BLAS runs
            # at full SIMD width; kept to one thread, since the annealings already fill the cores.
            with _BLAS.limit(limits=1, user_api="blas"):
                np.matmul(Q, X.reshape(self.n_var, -1), out=D.reshape(self.n_var, -1))
            _scatter_gradient(D, lin, up_t, conv_t, h, self._offsets, self.log_term, floor, out_t)
            if out_t is not out:
                out[:, :] = out_t
        else:
            _vjp_general(conv, up, h, self._offsets, self.log_term, self.log_floor, self._parent, self._last,
                         self._pair_var, self._pair_sub, self._pair_coef, self._x, self._dv, self._f, out)
        if slope is not None:
            out *= slope
        return out


def _flushed32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 with subnormal values set to 0.

    The Gaussian tails of the convolution image in vacuum fall below float32's
    smallest normal number (1.2e-38); arithmetic on subnormals takes a slow
    microcode path on x86, and an image with some vacuum made the whole
    gradient 17× slower (5.4 → 92 ms for a 284×287 image). Values this small
    contribute nothing the float32 result could hold anyway.
    """
    out = a.astype(np.float32)
    out[np.abs(out) < np.finfo(np.float32).tiny] = 0.0
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _gather_inputs(conv, h, offsets, log_term, log_floor, X):  # pragma: no cover - jitted
    # X[v] = the input pixel v of the s×s grid of every output pixel (plus the log of the centre).
    n_var, bi, bj = X.shape
    n_pix = offsets.shape[0]
    for v in range(n_pix):
        r0 = h + offsets[v, 0]
        c0 = h + offsets[v, 1]
        for a in range(bi):
            for b in range(bj):
                X[v, a, b] = conv[r0 + a, c0 + b]
    if log_term:
        for a in range(bi):
            for b in range(bj):
                xc = conv[a + h, b + h]
                X[n_pix, a, b] = math.log(xc if xc > log_floor else log_floor)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _scatter_gradient(QX, lin, up, conv, h, offsets, log_term, log_floor, out):  # pragma: no cover - jitted
    # out[p + offset(v)] += U[p]·(l_v + (Q·x(p))_v); the log variable goes to the centre pixel through 1/x_c.
    n_var, bi, bj = QX.shape
    n_pix = offsets.shape[0]
    for v in range(n_pix):
        r0 = h + offsets[v, 0]
        c0 = h + offsets[v, 1]
        lv = lin[v]
        for a in range(bi):
            for b in range(bj):
                out[r0 + a, c0 + b] += (QX[v, a, b] + lv) * up[a, b]
    if log_term:
        lv = lin[n_pix]
        for a in range(bi):
            for b in range(bj):
                xc = conv[a + h, b + h]
                if xc > log_floor:
                    out[a + h, b + h] += (QX[n_pix, a, b] + lv) * up[a, b] / xc


@numba.njit(cache=True, nogil=True, fastmath=True)
def _vjp_general(conv, up, h, offsets, log_term, log_floor, parent, last, pair_var, pair_sub, pair_coef, x, dv, f,
                 out):  # pragma: no cover - jitted
    bi, bj = up.shape
    n_pix = offsets.shape[0]
    n_var = x.shape[0]
    c = n_pix // 2
    for a in range(bi):
        for b in range(bj):
            u = up[a, b]
            if u == 0.0:
                continue
            for v in range(n_pix):
                x[v] = conv[a + h + offsets[v, 0], b + h + offsets[v, 1]]
            xc = x[c]
            if log_term:
                x[n_pix] = math.log(xc if xc > log_floor else log_floor)
            f[0] = 1.0
            for t in range(1, f.shape[0]):
                f[t] = f[parent[t]] * x[last[t]]
            for v in range(n_var):
                dv[v] = 0.0
            for k in range(pair_var.shape[0]):
                dv[pair_var[k]] += pair_coef[k] * f[pair_sub[k]]
            for v in range(n_pix):
                out[a + h + offsets[v, 0], b + h + offsets[v, 1]] += u * dv[v]
            if log_term and xc > log_floor:
                out[a + h, b + h] += u * dv[n_pix] / xc


def positions_vjp(xy: np.ndarray, weights: np.ndarray, origin, pixel_size: float, sigma,
                  dconv: np.ndarray, out: np.ndarray | None = None, *, sigma_out: np.ndarray | None = None
                  ) -> np.ndarray:
    """∂χ²/∂(x, y) of each atom (1/Å · units of χ²) from ∂χ²/∂C.

    With one PSF width per atom (``sigma`` of shape (n,): a depth-blur model,
    :func:`surrogate.imaging.convolution.atom_sigmas`) ``sigma_out`` (n,), if
    given, receives ∂χ²/∂σᵢ as well, from which the caller makes the z
    gradient (σᵢ depends on the atom's depth).

    Parameters
    ----------
    xy : ndarray, shape (n, 2)
        Atom positions in Å (the same frame as ``origin``).
    weights : ndarray, shape (n,)
        Atom weights as splatted (κ·Z^n, see :func:`surrogate.imaging.convolution.atom_weights`).
    origin : (float, float)
        Position in Å of ``dconv[0, 0]``.
    pixel_size : float
        Å.
    sigma : float
        Gaussian PSF σ in Å.
    dconv : ndarray, shape (M, N)
        ∂χ²/∂C, e.g. from :meth:`SurrogateGradient.convolution_vjp`.
    out : ndarray, shape (n, 2), optional

    Returns
    -------
    ndarray, shape (n, 2)
    """
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    if out is None:
        out = np.zeros((len(xy), 2))
    if np.ndim(sigma) == 1:
        sig = np.ascontiguousarray(sigma, dtype=np.float64)
        widest = float(sig.max()) if sig.size else 1.0
        half = int(np.ceil(CUTOFF_SIGMAS * widest / pixel_size)) + 1
        grads = np.zeros((len(xy), 3))
        _positions_vjp_varying(xy, np.ascontiguousarray(weights, dtype=np.float64), sig, float(origin[0]),
                               float(origin[1]), float(pixel_size), float(CUTOFF_SIGMAS), np.ascontiguousarray(dconv),
                               grads, np.empty((5, 2 * half + 1)))
        out[:, :] = grads[:, :2]
        if sigma_out is not None:
            sigma_out[:] = grads[:, 2]
        return out
    half = int(np.ceil(CUTOFF_SIGMAS * sigma / pixel_size)) + 1
    scratch = np.empty((4, 2 * half + 1))
    _positions_vjp(xy, np.ascontiguousarray(weights, dtype=np.float64), float(origin[0]), float(origin[1]),
                   float(pixel_size), float(sigma), float(CUTOFF_SIGMAS), np.ascontiguousarray(dconv), out, scratch)
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _positions_vjp(xy, weights, x0, y0, dx, sigma, cutoff_sigmas, dconv, out, scratch):  # pragma: no cover - jitted
    # The same window and normalisation as surrogate.imaging.convolution._splat_gaussians:
    # C[i, j] += w/(2πσ²) · gx(i) · gy(j),  gx(i) = exp(−(X_i − x)²/2σ²).
    nx, ny = dconv.shape
    half = int(np.ceil(cutoff_sigmas * sigma / dx)) + 1
    norm = 1.0 / (2.0 * np.pi * sigma * sigma)
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    inv_s2 = 1.0 / (sigma * sigma)
    gx = scratch[0]
    gy = scratch[1]
    dgx = scratch[2]
    dgy = scratch[3]
    for a in range(xy.shape[0]):
        fi, fj, ci, cj, i0, i1, j0, j1 = atom_window(xy[a, 0], xy[a, 1], x0, y0, dx, half, nx, ny)
        out[a, 0] = 0.0
        out[a, 1] = 0.0
        if i0 >= i1 or j0 >= j1:
            continue
        wa = weights[a] * norm
        for i in range(i0, i1):
            d = (i - fi) * dx
            g = math.exp(-d * d * inv2s2)
            gx[i - i0] = g
            dgx[i - i0] = g * d * inv_s2  # ∂gx/∂x: d = X_i − x
        for j in range(j0, j1):
            d = (j - fj) * dx
            g = math.exp(-d * d * inv2s2)
            gy[j - j0] = g
            dgy[j - j0] = g * d * inv_s2
        sx = 0.0
        sy = 0.0
        n = j1 - j0
        for i in range(i0, i1):
            row = dconv[i, j0:j1]
            r_g = 0.0
            r_dg = 0.0
            for k in range(n):
                r_g += row[k] * gy[k]
                r_dg += row[k] * dgy[k]
            sx += dgx[i - i0] * r_g
            sy += gx[i - i0] * r_dg
        out[a, 0] = wa * sx
        out[a, 1] = wa * sy


@numba.njit(cache=True, nogil=True, fastmath=True)
def _positions_vjp_varying(xy, weights, sigmas, x0, y0, dx, cutoff_sigmas, dconv, out, scratch):  # pragma: no cover
    # As _positions_vjp with σ per atom (the splat of convolution.splat_gaussians_varying), plus ∂/∂σ:
    # ∂/∂σ [w/(2πσ²)·exp(−r²/2σ²)] = w/(2πσ²)·exp(−r²/2σ²)·(r²/σ³ − 2/σ), r² = dx² + dy² (separable sums).
    nx, ny = dconv.shape
    gx = scratch[0]
    gy = scratch[1]
    dgx = scratch[2]
    dgy = scratch[3]
    d2y = scratch[4]
    for a in range(xy.shape[0]):
        sigma = sigmas[a]
        half = int(np.ceil(cutoff_sigmas * sigma / dx)) + 1
        fi, fj, ci, cj, i0, i1, j0, j1 = atom_window(xy[a, 0], xy[a, 1], x0, y0, dx, half, nx, ny)
        out[a, 0] = 0.0
        out[a, 1] = 0.0
        out[a, 2] = 0.0
        if i0 >= i1 or j0 >= j1:
            continue
        wa = weights[a] / (2.0 * np.pi * sigma * sigma)
        inv2s2 = 1.0 / (2.0 * sigma * sigma)
        inv_s2 = 1.0 / (sigma * sigma)
        for i in range(i0, i1):
            d = (i - fi) * dx
            g = math.exp(-d * d * inv2s2)
            gx[i - i0] = g
            dgx[i - i0] = g * d * inv_s2
        for j in range(j0, j1):
            d = (j - fj) * dx
            g = math.exp(-d * d * inv2s2)
            gy[j - j0] = g
            dgy[j - j0] = g * d * inv_s2
            d2y[j - j0] = g * d * d
        sx = 0.0
        sy = 0.0
        s_r2 = 0.0
        s_0 = 0.0
        n = j1 - j0
        for i in range(i0, i1):
            row = dconv[i, j0:j1]
            r_g = 0.0
            r_dg = 0.0
            r_d2 = 0.0
            for k in range(n):
                r_g += row[k] * gy[k]
                r_dg += row[k] * dgy[k]
                r_d2 += row[k] * d2y[k]
            di = (i - fi) * dx
            sx += dgx[i - i0] * r_g
            sy += gx[i - i0] * r_dg
            s_r2 += gx[i - i0] * (di * di * r_g + r_d2)
            s_0 += gx[i - i0] * r_g
        out[a, 0] = wa * sx
        out[a, 1] = wa * sy
        out[a, 2] = wa * (s_r2 / (sigma * sigma * sigma) - 2.0 * s_0 / sigma)
