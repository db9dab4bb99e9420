"""The Numba kernels of the image fit: normal-equation sums, the closed-form map, the shift search.

Plain arrays in, no allocation per call (the caller owns every buffer); used
by :class:`refine.cost.alignment.Aligner` and :func:`refine.cost.alignment.fit_intensity_map`.
In data-flow order:

* :func:`box_sums`: the 4×4 normal-equation sums of (I, 1, ∂ᵢI, ∂ⱼI) over a
  rendered box, against the mean-centred experimental image;
* :func:`fit_from_sums`: the weighted least-squares map a·I + b (and the
  Gauss–Newton shift terms) and its χ², from those sums plus the vacuum
  outside the box;
* :func:`shift_cubic`, :func:`shifted_box`: a box moved by a sub-pixel shift
  (separable Keys cubic convolution);
* :func:`gauss_newton`: the whole safeguarded sub-pixel search, one call;
* :func:`bin_box`, :func:`correlation_peak`: the coarse FFT
  cross-correlation's binning and peak (the FFT itself is scipy's).

They are written so that LLVM vectorizes them: branch-free interior loops
with the box edges handled apart (:func:`box_sums`, :func:`shift_cubic`).

Numba flags are part of the numerics: ``fastmath`` kernels are compiled
into their callers, so the kernels :func:`gauss_newton` calls live in this
module with it, and :func:`gauss_newton` alone is not cached (see the
comment above it).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["bin_box", "box_sums", "correlation_peak", "fit_from_sums", "gauss_newton", "shift_cubic", "shifted_box"]


# --------------------------------------------------------------------------- the closed-form fit

@numba.njit(cache=True, nogil=True, fastmath=True)
def box_sums(sim, e, w, i0, j0, bg, acc):  # pragma: no cover - jitted
    """Accumulate the 4×4 normal-equation sums of (I, 1, ∂ᵢI, ∂ⱼI) over the box.

    Parameters
    ----------
    sim : ndarray, shape (bi, bj)
        The rendered box I (image units), placed at pixel (i0, j0) of the image.
    e, w : ndarray, shape (M, N)
        The experimental image (mean-centred) and the χ² weights 1/σ² (0: excluded).
    i0, j0 : int
        Image pixel of ``sim[0, 0]``.
    bg : float
        The value of I outside the box (the surrogate's vacuum value c₀).
    acc : ndarray, shape (15,)
        Overwritten: [sII, sI, sIgi, sIgj, s1, sgi, sgj, sgigi, sgigj, sgjgj,
        eI, e1, egi, egj, ee] (``s`` = Σw·, g = central differences in pixels).

    I is measured from ``bg`` (I − bg: 0 outside the box, which keeps the
    sums well conditioned). Neighbours outside the box are ``bg``. Pixels of
    weight 0 contribute nothing (``e`` must be finite there). The interior of
    each row is one branch-free loop that vectorizes; the two end pixels,
    whose j-neighbour lies outside the box, are added separately.
    """
    bi, bj = sim.shape
    for k in range(15):
        acc[k] = 0.0
    if bi == 0 or bj == 0:
        return
    zero = np.zeros(bj)  # the row outside the box, measured from bg
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = 0.0
    r0 = r1 = r2 = r3 = r4 = 0.0
    for a in range(bi):
        wr = w[i0 + a, j0:j0 + bj]
        er = e[i0 + a, j0:j0 + bj]
        s_row = sim[a]
        up = sim[a - 1] if a > 0 else zero
        dn = sim[a + 1] if a + 1 < bi else zero
        bu = bg if a > 0 else 0.0  # what to subtract from up/dn (the zero row is already relative)
        bd = bg if a + 1 < bi else 0.0
        for b in range(1, bj - 1):
            ww = wr[b]
            s = s_row[b] - bg
            gi = 0.5 * ((dn[b] - bd) - (up[b] - bu))
            gj = 0.5 * (s_row[b + 1] - s_row[b - 1])
            ev = er[b]
            ws = ww * s
            wgi = ww * gi
            wgj = ww * gj
            wev = ww * ev
            a0 += ws * s
            a1 += ws
            a2 += ws * gi
            a3 += ws * gj
            a4 += ww
            a5 += wgi
            a6 += wgj
            a7 += wgi * gi
            a8 += wgi * gj
            a9 += wgj * gj
            r0 += ws * ev
            r1 += wev
            r2 += wgi * ev
            r3 += wgj * ev
            r4 += wev * ev
        # the end pixels b = 0 and b = bj − 1 (one pixel when bj == 1)
        for b in range(0, bj, max(bj - 1, 1)):
            ww = wr[b]
            s = s_row[b] - bg
            gi = 0.5 * ((dn[b] - bd) - (up[b] - bu))
            tp = s_row[b + 1] - bg if b + 1 < bj else 0.0
            tm = s_row[b - 1] - bg if b > 0 else 0.0
            gj = 0.5 * (tp - tm)
            ev = er[b]
            ws = ww * s
            wgi = ww * gi
            wgj = ww * gj
            wev = ww * ev
            a0 += ws * s
            a1 += ws
            a2 += ws * gi
            a3 += ws * gj
            a4 += ww
            a5 += wgi
            a6 += wgj
            a7 += wgi * gi
            a8 += wgi * gj
            a9 += wgj * gj
            r0 += ws * ev
            r1 += wev
            r2 += wgi * ev
            r3 += wgj * ev
            r4 += wev * ev
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    acc[4] = a4
    acc[5] = a5
    acc[6] = a6
    acc[7] = a7
    acc[8] = a8
    acc[9] = a9
    acc[10] = r0
    acc[11] = r1
    acc[12] = r2
    acc[13] = r3
    acc[14] = r4


@numba.njit(cache=True, nogil=True)
def _solve_sym(g, r, n, x):  # pragma: no cover - jitted
    """Solve the leading n×n block of g·x = r (Gaussian elimination, partial pivoting, in place).

    Returns False when the block is singular (relative pivot < 1e-12).
    """
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(g[i, i]))
    if scale == 0.0:
        return False
    for i in range(n):
        x[i] = r[i]
    for c in range(n):
        p = c
        for k in range(c + 1, n):
            if abs(g[k, c]) > abs(g[p, c]):
                p = k
        if abs(g[p, c]) <= 1e-12 * scale:
            return False
        if p != c:
            for k in range(n):
                t = g[c, k]
                g[c, k] = g[p, k]
                g[p, k] = t
            t = x[c]
            x[c] = x[p]
            x[p] = t
        for k in range(c + 1, n):
            f = g[k, c] / g[c, c]
            for m in range(c, n):
                g[k, m] -= f * g[c, m]
            x[k] -= f * x[c]
    for c in range(n - 1, -1, -1):
        s = x[c]
        for m in range(c + 1, n):
            s -= g[c, m] * x[m]
        x[c] = s / g[c, c]
    return True


@numba.njit(cache=True, nogil=True)
def fit_from_sums(acc, bg, w_tot, we_tot, wee_tot, n, g, r, x):  # pragma: no cover - jitted
    """Weighted least squares of E on (I, 1[, ∂ᵢI, ∂ⱼI]) from box sums plus the vacuum outside.

    Parameters
    ----------
    acc : ndarray, shape (15,)
        The box sums of :func:`box_sums`.
    bg : float
        I outside the box, measured as in the sums (0 when the sums are of I − c₀).
    w_tot, we_tot, wee_tot : float
        Σw, Σw·E and Σw·E² over the whole image.
    n : {2, 4}
        Parameters: the map (a, b) alone, or with the shift terms (c_i, c_j).
    g, r, x : ndarray, shapes (4, 4), (4,), (4,)
        Scratch, overwritten.

    Returns
    -------
    (a, b, c_i, c_j, chi2)
        a ≥ 0 (an anti-correlated or singular fit becomes the flat map
        b = weighted mean); c_i = −a·d_i, c_j = −a·d_j (0 when n = 2);
        the weighted χ² ≥ 0.
    """
    w_out = w_tot - acc[4]
    we_out = we_tot - acc[11]
    # full sums = box + outside (outside: I = bg, gradients 0)
    sII = acc[0] + w_out * bg * bg
    sI = acc[1] + w_out * bg
    s1 = w_tot
    eI = acc[10] + we_out * bg
    e1 = we_tot
    g[0, 0] = sII
    g[0, 1] = sI
    g[1, 0] = sI
    g[1, 1] = s1
    r[0] = eI
    r[1] = e1
    if n == 4:
        g[0, 2] = acc[2]
        g[2, 0] = acc[2]
        g[0, 3] = acc[3]
        g[3, 0] = acc[3]
        g[1, 2] = acc[5]
        g[2, 1] = acc[5]
        g[1, 3] = acc[6]
        g[3, 1] = acc[6]
        g[2, 2] = acc[7]
        g[2, 3] = acc[8]
        g[3, 2] = acc[8]
        g[3, 3] = acc[9]
        r[2] = acc[12]
        r[3] = acc[13]
    for k in range(4):
        x[k] = 0.0
    ok = _solve_sym(g, r, n, x)
    if n == 4 and not ok:
        # singular with the alignment columns (no gradient): retry without them
        g[0, 0] = sII
        g[0, 1] = sI
        g[1, 0] = sI
        g[1, 1] = s1
        r[0] = eI
        r[1] = e1
        ok = _solve_sym(g, r, 2, x)
        x[2] = 0.0
        x[3] = 0.0
    if (not ok) or x[0] < 0.0:
        # flat image: b = weighted mean
        x[0] = 0.0
        x[1] = e1 / s1
        x[2] = 0.0
        x[3] = 0.0
    a = x[0]
    b = x[1]
    ci = x[2]
    cj = x[3]
    # χ² = Σw e² − 2 pᵀr + pᵀ G p with the full (unreduced) G and r
    chi2 = wee_tot - 2.0 * (a * eI + b * e1 + ci * acc[12] + cj * acc[13])
    chi2 += a * a * sII + b * b * s1 + 2.0 * a * b * sI
    chi2 += ci * ci * acc[7] + cj * cj * acc[9] + 2.0 * ci * cj * acc[8]
    chi2 += 2.0 * (a * ci * acc[2] + a * cj * acc[3] + b * ci * acc[5] + b * cj * acc[6])
    if chi2 < 0.0:
        chi2 = 0.0
    return a, b, ci, cj, chi2


# --------------------------------------------------------------------------- sub-pixel shift

@numba.njit(cache=True, nogil=True, inline="always")
def _keys(t):  # pragma: no cover - jitted
    """Keys (1981) cubic-convolution weights (a = −1/2) of taps p−1, p, p+1, p+2 at p + t."""
    t2 = t * t
    t3 = t2 * t
    return (-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2)


@numba.njit(cache=True, nogil=True, fastmath=True)
def shift_cubic(sim, i0, j0, di, dj, oi0, oj0, bg, tmp, out):  # pragma: no cover - jitted
    """out[a, b] = S(oi0 + a − di, oj0 + b − dj) where S is ``sim`` placed at (i0, j0) and ``bg`` elsewhere.

    Separable Keys cubic convolution: along i into ``tmp`` (rows of out × columns of sim), then along j.
    The weights sum to 1, so the background stays exactly ``bg``. Rows and columns whose four taps
    all lie inside the box take a branch-free loop over contiguous slices (it vectorizes); only the
    edges test each tap.
    """
    bi, bj = sim.shape
    ri, rj = out.shape
    # along i: source row coordinate u = (oi0 + a − di) − i0 = p + t, same t for every a
    u0 = oi0 - di - i0
    p0 = math.floor(u0)
    w0, w1, w2, w3 = _keys(u0 - p0)
    for a in range(ri):
        p = p0 + a
        trow = tmp[a]
        if 1 <= p and p + 2 < bi:
            r0 = sim[p - 1]
            r1 = sim[p]
            r2 = sim[p + 1]
            r3 = sim[p + 2]
            for b in range(bj):
                trow[b] = w0 * r0[b] + w1 * r1[b] + w2 * r2[b] + w3 * r3[b]
        else:
            for b in range(bj):
                acc = 0.0
                q = p - 1
                acc += w0 * (sim[q, b] if 0 <= q < bi else bg)
                q = p
                acc += w1 * (sim[q, b] if 0 <= q < bi else bg)
                q = p + 1
                acc += w2 * (sim[q, b] if 0 <= q < bi else bg)
                q = p + 2
                acc += w3 * (sim[q, b] if 0 <= q < bi else bg)
                trow[b] = acc
    # along j: output column b reads tmp columns q0 + b − 1 … q0 + b + 2; all inside for lo ≤ b < hi
    v0 = oj0 - dj - j0
    q0 = math.floor(v0)
    w0, w1, w2, w3 = _keys(v0 - q0)
    lo = min(max(1 - q0, 0), rj)
    hi = max(min(bj - 2 - q0, rj), lo)
    for a in range(ri):
        row = tmp[a]
        orow = out[a]
        src = row[q0 + lo - 1: q0 + hi + 2]
        dst = orow[lo:hi]
        for b in range(hi - lo):
            dst[b] = w0 * src[b] + w1 * src[b + 1] + w2 * src[b + 2] + w3 * src[b + 3]
        for b in range(0, lo):
            q = q0 + b
            acc = 0.0
            acc += w0 * (row[q - 1] if 0 <= q - 1 < bj else bg)
            acc += w1 * (row[q] if 0 <= q < bj else bg)
            acc += w2 * (row[q + 1] if 0 <= q + 1 < bj else bg)
            acc += w3 * (row[q + 2] if 0 <= q + 2 < bj else bg)
            orow[b] = acc
        for b in range(hi, rj):
            q = q0 + b
            acc = 0.0
            acc += w0 * (row[q - 1] if 0 <= q - 1 < bj else bg)
            acc += w1 * (row[q] if 0 <= q < bj else bg)
            acc += w2 * (row[q + 1] if 0 <= q + 1 < bj else bg)
            acc += w3 * (row[q + 2] if 0 <= q + 2 < bj else bg)
            orow[b] = acc


@numba.njit(cache=True, nogil=True)
def shifted_box(sim, i0, j0, di, dj, m, n, bg, tmp_buf, out_buf):  # pragma: no cover - jitted
    """The box moved by (di, dj) pixels, clipped to the m×n image.

    Parameters
    ----------
    sim : ndarray, shape (bi, bj)
        The box, at image pixel (i0, j0); ``bg`` outside it.
    di, dj : float
        Shift in pixels.
    m, n : int
        Image shape.
    tmp_buf, out_buf : ndarray, 1-D
        Flat scratch buffers of at least (bi + 3)·bj and (bi + 3)·(bj + 3) elements.

    Returns
    -------
    (box, i0, j0)
        A view of ``out_buf`` (shape ≤ (bi + 3, bj + 3); empty when the box left
        the image) and its image pixel.
    """
    bi, bj = sim.shape
    ni = math.floor(di)
    nj = math.floor(dj)
    oi0 = max(i0 + ni - 1, 0)
    oi1 = min(i0 + ni + bi + 2, m)
    oj0 = max(j0 + nj - 1, 0)
    oj1 = min(j0 + nj + bj + 2, n)
    if oi1 <= oi0 or oj1 <= oj0:
        return out_buf[:0].reshape((0, 0)), 0, 0
    tmp = tmp_buf[: (oi1 - oi0) * bj].reshape((oi1 - oi0, bj))
    out = out_buf[: (oi1 - oi0) * (oj1 - oj0)].reshape((oi1 - oi0, oj1 - oj0))
    shift_cubic(sim, i0, j0, di, dj, oi0, oj0, bg, tmp, out)
    return out, oi0, oj0


# --------------------------------------------------------------------------- the search

# Not cached, unlike the other kernels: its object code holds its own copies of the fastmath callees
# (box_sums, shifted_box), optimised in its context. A cached copy was compiled in whatever process wrote
# the cache, and which copy a process then used depended on which kernel it called first — a resumed run
# differed from an uninterrupted one in the last bits of every alignment (3e-7 Å after 10 generations).
# Compiled in every process (≈ 1.2 s, once) it is the same machine code everywhere, and resumes are exact
# (tests/refine/test_refine_cli.py, the kill-and-resume test of the default search).
@numba.njit(cache=False, nogil=True)
def gauss_newton(sim, i0, j0, e, w, bg, w_tot, we_tot, wee_tot, m, n, tol, lim, it0, max_iter, ti, tj,
                 want_coarse, tmp_buf, out_buf, acc, g, r, x, res):  # pragma: no cover - jitted
    """The safeguarded Gauss–Newton search of :meth:`refine.cost.alignment.Aligner.align_interpolated`.

    From shift (ti, tj) pixels, on the box ``sim`` at (i0, j0) against the
    mean-centred image ``e`` with weights ``w`` (shape (m, n)), moving the box
    by :func:`shifted_box`; ``tol`` and ``lim`` are pixels (converged step,
    largest step taken). ``tmp_buf, out_buf, acc, g, r, x`` are the scratch of
    :func:`shifted_box`, :func:`box_sums` and :func:`fit_from_sums`; ``res``
    (5,) receives the answer.

    Iterations it0 … max_iter. Each visited shift's 2-parameter χ² is
    compared with the best so far (a worse one halves the step back towards
    it); the 4-parameter fit gives the step. Returns ``(status, it)``:

    * 0: ``res`` = (a, b', χ², di, dj): converged (last small step applied to
      first order) or, without convergence, the best visited shift;
    * 1: the step at iteration ``it`` is larger than ``lim`` and ``want_coarse``:
      the caller places the particle by cross-correlation and calls again
      from ``it + 1`` (the search restarts);
    * 2: nothing usable (no visited shift had a finite fit).

    b' is the offset of the centred problem (see :meth:`refine.cost.alignment.Aligner.fit_box`).
    """
    best_set = False
    best_chi2 = best_a = best_b = best_i = best_j = 0.0
    for it in range(it0, max_iter + 1):
        if ti == 0.0 and tj == 0.0:
            box, bi0, bj0 = sim, i0, j0
        else:
            box, bi0, bj0 = shifted_box(sim, i0, j0, ti, tj, m, n, bg, tmp_buf, out_buf)
        if box.size:
            box_sums(box, e, w, bi0, bj0, bg, acc)
        else:
            acc[:] = 0.0
        a2, b2, _, _, chi2_2 = fit_from_sums(acc, 0.0, w_tot, we_tot, wee_tot, 2, g, r, x)
        if best_set and chi2_2 > best_chi2:
            # worse than the best shift so far: halve the step back towards it
            ti = 0.5 * (ti + best_i)
            tj = 0.5 * (tj + best_j)
            continue
        best_set = True
        best_chi2, best_a, best_b, best_i, best_j = chi2_2, a2, b2, ti, tj
        a, b, ci, cj, chi2 = fit_from_sums(acc, 0.0, w_tot, we_tot, wee_tot, 4, g, r, x)
        if a > 0:
            di = -ci / a
            dj = -cj / a
        else:
            di = dj = np.inf
        big = not (abs(di) <= lim and abs(dj) <= lim)
        if big and want_coarse:
            return 1, it
        if not np.isfinite(di):
            break
        if abs(di) <= tol and abs(dj) <= tol:
            # converged: accept the last, small step to first order (χ² includes it)
            res[0], res[1], res[2], res[3], res[4] = a, b, chi2, ti + di, tj + dj
            return 0, it
        # damp large Gauss–Newton steps
        ti += min(max(di, -lim), lim)
        tj += min(max(dj, -lim), lim)
    if best_set:
        res[0], res[1], res[2], res[3], res[4] = best_a, best_b, best_chi2, best_i, best_j
        return 0, max_iter
    return 2, max_iter


# --------------------------------------------------------------------------- coarse alignment

@numba.njit(cache=True, nogil=True, fastmath=True)
def bin_box(sim, i0, j0, bg, B, out):  # pragma: no cover - jitted
    """out := 0, then out[(i0+a)//B, (j0+b)//B] += sim[a, b] − bg (B×B binning of a box).

    Whole bins of a row are summed in one loop without integer divisions; the
    partial bins at the row's ends (box edges not on a bin boundary) apart.
    """
    out[:, :] = 0.0
    bi, bj = sim.shape
    if bi == 0 or bj == 0:
        return
    qa = -(-j0 // B)  # first whole bin
    qb = (j0 + bj) // B  # one past the last whole bin
    lead = min(qa * B - j0, bj)
    tail = max(qb * B - j0, lead)
    off = qa * B - j0
    for a in range(bi):
        orow = out[(i0 + a) // B]
        srow = sim[a]
        for b in range(0, lead):
            orow[(j0 + b) // B] += srow[b] - bg
        if B == 2:
            for q in range(qb - qa):
                orow[qa + q] += (srow[off + 2 * q] - bg) + (srow[off + 2 * q + 1] - bg)
        else:
            for q in range(qb - qa):
                t = 0.0
                for k in range(B):
                    t += srow[off + q * B + k] - bg
                orow[qa + q] += t
        for b in range(tail, bj):
            orow[(j0 + b) // B] += srow[b] - bg


@numba.njit(cache=True, nogil=True)
def correlation_peak(corr, B):  # pragma: no cover - jitted
    """Shift (di, dj) in pixels from a circular cross-correlation of B×B-binned images.

    corr[k] = Σ_r sim(r + k)·ref(r) peaks at k = −d when exp(r) ≈ sim(r − d),
    so the peak (first maximum, refined by a parabola through it and its two
    neighbours along each axis; lags past half the size wrap to negative) is
    negated and scaled back to pixels.
    """
    L0, L1 = corr.shape
    k0 = 0
    k1 = 0
    c = corr[0, 0]
    for i in range(L0):
        for j in range(L1):
            if corr[i, j] > c:
                c = corr[i, j]
                k0 = i
                k1 = j
    out = np.empty(2)
    for ax in range(2):
        if ax == 0:
            L, kk = L0, k0
            cm = corr[(k0 - 1) % L0, k1]
            cp = corr[(k0 + 1) % L0, k1]
        else:
            L, kk = L1, k1
            cm = corr[k0, (k1 - 1) % L1]
            cp = corr[k0, (k1 + 1) % L1]
        den = cm - 2 * c + cp
        frac = 0.5 * (cm - cp) / den if den < 0 else 0.0
        v = kk + frac
        if v > L / 2:
            v -= L
        out[ax] = -v * B
    return out[0], out[1]
