"""The refinement's cost: energy plus α·χ² of the surrogate image (Yu et al., ACS Nano 10, 4031, 2016).

    C(s) = E(s) + α · χ²[I(s), I_exp]

For a candidate structure s (positions in Å, atomic numbers):

1. **Surrogate image on the experimental grid.** The convolution image is
   splatted only inside the box the particle can reach (atoms' xy extent plus
   the PSF cutoff plus the model's border h), into a preallocated buffer; the
   fitted polynomial (:meth:`PolynomialSurrogate.predict_into`) fills the
   matching output box. Every pixel outside the box is exactly the model's
   vacuum value c₀ (the polynomial of an all-zero input pixel grid), so its
   contribution to the fit below comes from precomputed image sums: the
   cost scales with the particle, not with the field of view.

2. **Alignment (sub-pixel translation).** ``align="auto"`` (default) takes a
   Gauss–Newton step from the candidate's own position; when that step is
   larger than ``coarse_threshold`` pixels (or the fit is degenerate) a
   coarse FFT cross-correlation with a parabolic peak fit places the
   particle first. ``"fft"`` always starts with the cross-correlation,
   ``"local"`` never does, ``"none"`` turns alignment off. The Gauss–Newton
   step linearizes the shifted image,

       a·I(r − d) + b ≈ a·I + b − a·d·∇I,

   so the intensity map and the shift are one linear least-squares problem in
   (a, b, −a·dx, −a·dy) with regressors (I, 1, ∂ᵢI, ∂ⱼI) (central
   differences), solved from sums over the box. A trial shift is applied to
   the rendered image by separable Keys cubic-convolution interpolation
   (``shift_method="interpolate"``, default: one render per evaluation; the
   image is smooth on the pixel scale, σ/Δ = 3.8 for the paper's model, so
   the interpolation error is ~1e-4 of the peak), or by re-rendering the
   convolution at shifted atom positions (``"render"``: exact, since the
   convolution is analytic, but one render per step). Steps repeat until
   below ``tol`` pixels; the last, small step is applied to first order
   (error O(d²)). ``FitnessResult.shift`` is the total (dx, dy) in Å to add
   to the atoms' xy; :meth:`Fitness.simulated_image` re-renders exactly there.

3. **Intensity map** a·I + b in closed form: weighted linear least squares
   under the noise model and mask (2×2, or 4×4 with the alignment terms,
   normal equations). A negative a (an anti-correlated candidate) is clamped
   to a = 0 (a flat image), so anti-correlation is never rewarded.

4. **Noise model → χ² = Σ w·(I_exp − a·I − b)²** over the valid pixels, with
   w = 1/σ²:

   - ``noise=<float>``: uniform σ (image units);
   - ``noise=<array>``: a σ map of the image's shape;
   - ``noise="poisson"`` with ``dose`` (e/Å²): the image is a fraction of the
     incident beam (as the surrogate's), so the counts are I·dose·Δ² and
     σ² = max(I_exp, 1/(dose·Δ²)) / (dose·Δ²) (Neyman's χ²: the variance from
     the data, which keeps the fit in closed form); without ``dose`` the
     image is taken as counts, σ² = max(I_exp, 1);
   - ``noise="estimate"`` (default): uniform σ estimated from the image by
     Immerkær's Laplacian estimator (Comput. Vis. Image Underst. 64, 300,
     1996) over the valid pixels, logged.

   ``chi2_per_pixel`` = χ² / (number of valid pixels); ≈ 1 for a perfect
   structure under a correct noise model.

5. **Energy** (:class:`refine.cost.energy.Energy`): total eV by default (as Yu et
   al.), eV/atom with ``per_atom_energy=True``; ``calculator=None`` drops
   the term (E = 0).

6. **α.** A number, or ``"auto"``: :meth:`Fitness.calibrate_alpha` sets

       α = IQR(E) / IQR(χ²)   over a population (the initial one),

   so that both terms spread over the same range across the population and
   neither dominates selection (falls back to standard deviations when an
   interquartile range is 0, and to α = 1 when χ² does not vary). The value
   is logged. With ``"auto"``, :meth:`evaluate` raises
   :class:`StemRefineError` until α is calibrated.

   Or ``"thermal"``: α = k_B·T/2 with T = ``prior_temperature`` (300 K:
   0.0129 eV). χ² under a correct noise model is −2 ln(likelihood), and a
   Boltzmann prior exp(−E/k_BT) on the structures makes E + (k_BT/2)·χ² the
   negative log-posterior in units of k_BT: its minimum is the most probable
   structure given the image. It weighs the image much more than ``"auto"``
   does (×5–25 on ~300-atom particles): right for the final choice between
   structures, too rough a landscape for a search from random starts (see
   the GA's finishing stage, :class:`refine.search.ga.GASettings` ``finish_alpha``).

``mode="pareto"`` makes the DEAP-style call ``fitness(atoms)`` return
``(χ², E)`` for NSGA-II instead of ``(cost,)``.

**Domain warning.** The first time a candidate's convolution image has a
pixel above the model's training input range (``model.input_range_``,
which bounds every degree-1 feature; convolution pixels are never below
the training minimum 0) by more than ``domain_tolerance`` of the range
(checked on the box only, one pass over the buffer; the higher-degree
feature ranges are not checked per evaluation), a warning is logged once and
:attr:`Fitness.out_of_domain` becomes True; :attr:`Fitness.n_out_of_domain`
counts such evaluations (for the run summary).

Hot path: per evaluation nothing image-sized is allocated (conv and output
buffers and the xy array are reused; views of the buffers cover the box);
only the FFT path of the coarse alignment allocates its spectra. The whole
Gauss–Newton search is one numba call (:func:`_gauss_newton`; Python only
steps in for the FFT), and its kernels are written so that LLVM vectorizes
them: branch-free interior loops with the box edges handled apart
(:func:`_box_sums`, :func:`_shift_cubic`), several running maxima
(:func:`_max_value`). ``tests/benchmarks/bench_fitness.py`` times each part.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numba
import numpy as np

from surrogate.imaging import CUTOFF_SIGMAS, atom_weights, splat_gaussians

from refine.cost.energy import Energy
from surrogate.common import InputError, StemRefineError
from refine.io import ExperimentalImage

__all__ = ["Fitness", "FitnessResult", "estimate_noise", "noise_weights", "fit_intensity_map"]

log = logging.getLogger(__name__)

ALIGN_MODES = ("auto", "fft", "local", "none")


@dataclass(frozen=True)
class FitnessResult:
    """One evaluation.

    Attributes
    ----------
    cost : float
        E + α·χ² with α as when evaluated (NaN only in ``mode="pareto"``
        before α is known).
    chi2 : float
        Weighted χ² over the valid pixels (dimensionless).
    chi2_per_pixel : float
        χ² / number of valid pixels.
    energy : float
        eV (total, or per atom; see :class:`Fitness`).
    scale, offset : float
        a, b of the intensity map a·I_sim + b (experimental image units).
    shift : (float, float)
        (dx, dy) in Å added to the atoms' xy for the best alignment.
    out_of_domain : bool
        This candidate's convolution image left the model's training range.
    """

    cost: float
    chi2: float
    chi2_per_pixel: float
    energy: float
    scale: float
    offset: float
    shift: tuple
    out_of_domain: bool = False


# --------------------------------------------------------------------------- noise

def estimate_noise(data: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Uniform Gaussian noise σ of an image (Immerkær 1996), image units.

    σ = √(π/2) · mean|L ⊛ I| / 6 with L = [[1,−2,1],[−2,4,−2],[1,−2,1]], over
    pixels whose 3×3 neighbourhood is entirely valid.
    """
    d = np.asarray(data, dtype=float)
    lap = (d[:-2, :-2] - 2 * d[:-2, 1:-1] + d[:-2, 2:]
           - 2 * d[1:-1, :-2] + 4 * d[1:-1, 1:-1] - 2 * d[1:-1, 2:]
           + d[2:, :-2] - 2 * d[2:, 1:-1] + d[2:, 2:])
    if mask is not None and not np.all(mask):
        from scipy.ndimage import binary_erosion

        ok = binary_erosion(mask, structure=np.ones((3, 3), bool))[1:-1, 1:-1]
        lap = lap[ok]
    if lap.size == 0:
        raise InputError("too few valid pixels to estimate the noise; give noise=σ")
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(lap)) / 6.0)


def noise_weights(image: ExperimentalImage, noise="estimate", dose: float | None = None) -> tuple[np.ndarray, dict]:
    """Per-pixel χ² weights w = mask/σ², shape ``image.shape``, and a description dict."""
    data, mask = image.data, image.mask
    info: dict = {}
    if isinstance(noise, str):
        key = noise.lower()
        if key == "estimate":
            sigma = estimate_noise(data, mask)
            span = float(np.ptp(data[mask]))
            floor = 1e-9 * span
            if sigma <= floor:
                log.warning("estimated noise σ=%g is ~0 (noiseless image?); using %g", sigma, floor)
                sigma = floor
            log.info("noise: uniform σ = %.6g (estimated from the image)", sigma)
            var = np.full(data.shape, sigma * sigma)
            info = {"model": "uniform", "sigma": sigma, "estimated": True}
        elif key == "poisson":
            if dose is not None:
                dose = float(dose)
                if not (np.isfinite(dose) and dose > 0):
                    raise InputError(f"dose must be a positive number of e/Å², got {dose!r}")
                per_pixel = dose * image.pixel_size ** 2
                var = np.maximum(data, 1.0 / per_pixel) / per_pixel
                info = {"model": "poisson", "dose": dose, "electrons_per_pixel": per_pixel}
            else:
                var = np.maximum(data, 1.0)
                info = {"model": "poisson", "dose": None, "units": "counts"}
        else:
            raise InputError(f"noise must be 'estimate', 'poisson', a σ or a σ map, got {noise!r}")
    elif np.ndim(noise) == 0:
        sigma = float(noise)
        if not (np.isfinite(sigma) and sigma > 0):
            raise InputError(f"noise σ must be a positive number, got {noise!r}")
        var = np.full(data.shape, sigma * sigma)
        info = {"model": "uniform", "sigma": sigma}
    else:
        s = np.asarray(noise, dtype=float)
        if s.shape != data.shape:
            raise InputError(f"σ map shape {s.shape} does not match the image shape {data.shape}")
        if not np.all(np.isfinite(s[mask])) or np.any(s[mask] <= 0):
            raise InputError("σ map must be positive and finite on every valid pixel")
        var = np.where(mask, s, 1.0) ** 2
        info = {"model": "map"}
    w = np.where(mask, 1.0 / var, 0.0)
    return np.ascontiguousarray(w), info


# --------------------------------------------------------------------------- kernels

@numba.njit(cache=True, nogil=True, fastmath=True)
def _box_sums(sim, e, w, i0, j0, bg, acc):  # pragma: no cover - jitted
    """Accumulate the 4×4 normal-equation sums of (I, 1, ∂ᵢI, ∂ⱼI) over the box.

    acc (15,): [sII, sI, sIgi, sIgj, s1, sgi, sgj, sgigi, sgigj, sgjgj, eI, e1, egi, egj, ee]
    with I measured from ``bg`` (I − bg: 0 outside the box, which keeps the
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
def _fit(acc, bg, w_tot, we_tot, wee_tot, n, g, r, x):  # pragma: no cover - jitted
    """Weighted LS of E on (I, 1[, ∂ᵢI, ∂ⱼI]) from box sums plus the vacuum outside.

    Returns (a, b, c_i, c_j, chi2). Writes the scratch g (4×4), r (4), x (4).
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


@numba.njit(cache=True, nogil=True)
def _xy_box(pos, shift_x, shift_y, x0, y0, dx, reach, m, n, xy):  # pragma: no cover - jitted
    """Shifted xy into ``xy``; returns the image-pixel box (i0, i1, j0, j1) the atoms reach (may be empty)."""
    imin = 1e300
    imax = -1e300
    jmin = 1e300
    jmax = -1e300
    for k in range(pos.shape[0]):
        x = pos[k, 0] + shift_x
        y = pos[k, 1] + shift_y
        xy[k, 0] = x
        xy[k, 1] = y
        fi = (x - x0) / dx
        fj = (y - y0) / dx
        imin = min(imin, fi)
        imax = max(imax, fi)
        jmin = min(jmin, fj)
        jmax = max(jmax, fj)
    i0 = max(int(math.floor(imin)) - reach, 0)
    i1 = min(int(math.ceil(imax)) + reach + 1, m)
    j0 = max(int(math.floor(jmin)) - reach, 0)
    j1 = min(int(math.ceil(jmax)) + reach + 1, n)
    return i0, max(i1, i0), j0, max(j1, j0)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _bin_box(sim, i0, j0, bg, B, out):  # pragma: no cover - jitted
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


@numba.njit(cache=True, nogil=True, inline="always")
def _keys(t):  # pragma: no cover - jitted
    """Keys (1981) cubic-convolution weights (a = −1/2) of taps p−1, p, p+1, p+2 at p + t."""
    t2 = t * t
    t3 = t2 * t
    return (-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _shift_cubic(sim, i0, j0, di, dj, oi0, oj0, bg, tmp, out):  # pragma: no cover - jitted
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
def _shifted_box(sim, i0, j0, di, dj, m, n, bg, tmp_buf, out_buf):  # pragma: no cover - jitted
    """The box moved by (di, dj) pixels into views of the flat buffers, clipped to the m×n image: (box, i0, j0)."""
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
    _shift_cubic(sim, i0, j0, di, dj, oi0, oj0, bg, tmp, out)
    return out, oi0, oj0


# Not cached, unlike the other kernels: its object code holds its own copies of the fastmath callees
# (_box_sums, _shifted_box), optimised in its context. A cached copy was compiled in whatever process wrote
# the cache, and which copy a process then used depended on which kernel it called first — a resumed run
# differed from an uninterrupted one in the last bits of every alignment (3e-7 Å after 10 generations).
# Compiled in every process (≈ 1.2 s, once) it is the same machine code everywhere, and resumes are exact
# (tests/refine/test_refine_cli.py, the kill-and-resume test of the default search).
@numba.njit(cache=False, nogil=True)
def _gauss_newton(sim, i0, j0, e, w, bg, w_tot, we_tot, wee_tot, m, n, tol, lim, it0, max_iter, ti, tj,
                  want_coarse, tmp_buf, out_buf, acc, g, r, x, res):  # pragma: no cover - jitted
    """The safeguarded Gauss–Newton search of :meth:`Fitness._align_interpolate`, from shift (ti, tj) px.

    Iterations it0 … max_iter. Each visited shift's 2-parameter χ² is compared
    with the best so far (a worse one halves the step back towards it); the
    4-parameter fit gives the step. Returns ``(status, it)``:

    * 0: ``res`` = (a, b', χ², di, dj): converged (last small step applied to
      first order) or, without convergence, the best visited shift;
    * 1: the step at iteration ``it`` is larger than ``lim`` and ``want_coarse``:
      the caller places the particle by cross-correlation and calls again
      from ``it + 1`` (the search restarts);
    * 2: nothing usable (no visited shift had a finite fit).

    b' is the offset of the centred problem (see :meth:`Fitness._fit_box`).
    """
    best_set = False
    best_chi2 = best_a = best_b = best_i = best_j = 0.0
    for it in range(it0, max_iter + 1):
        if ti == 0.0 and tj == 0.0:
            box, bi0, bj0 = sim, i0, j0
        else:
            box, bi0, bj0 = _shifted_box(sim, i0, j0, ti, tj, m, n, bg, tmp_buf, out_buf)
        if box.size:
            _box_sums(box, e, w, bi0, bj0, bg, acc)
        else:
            acc[:] = 0.0
        a2, b2, _, _, chi2_2 = _fit(acc, 0.0, w_tot, we_tot, wee_tot, 2, g, r, x)
        if best_set and chi2_2 > best_chi2:
            # worse than the best shift so far: halve the step back towards it
            ti = 0.5 * (ti + best_i)
            tj = 0.5 * (tj + best_j)
            continue
        best_set = True
        best_chi2, best_a, best_b, best_i, best_j = chi2_2, a2, b2, ti, tj
        a, b, ci, cj, chi2 = _fit(acc, 0.0, w_tot, we_tot, wee_tot, 4, g, r, x)
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


@numba.njit(cache=True, nogil=True)
def _correlation_peak(corr, B):  # pragma: no cover - jitted
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


@numba.njit(cache=True, nogil=True, fastmath=True)
def _max_value(a):  # pragma: no cover - jitted
    """Largest element of a finite 2-D array (−inf when empty).

    Sixteen running maxima, so that the loop vectorizes (a single running
    maximum is a serial dependency LLVM does not vectorize).
    """
    n = a.shape[1]
    acc = np.full(16, -np.inf)
    for i in range(a.shape[0]):
        row = a[i]
        j = 0
        while j + 16 <= n:
            for k in range(16):
                v = row[j + k]
                acc[k] = v if v > acc[k] else acc[k]
            j += 16
        for k in range(j, n):
            v = row[k]
            acc[0] = v if v > acc[0] else acc[0]
    m = acc[0]
    for k in range(1, 16):
        m = acc[k] if acc[k] > m else m
    return m


def fit_intensity_map(simulated, experimental, weights=None) -> tuple[float, float, float]:
    """Closed-form weighted least squares ``experimental ≈ a·simulated + b``.

    Parameters
    ----------
    simulated, experimental : ndarray, shape (M, N)
    weights : ndarray, shape (M, N), optional
        1/σ² per pixel, 0 for excluded pixels (default all 1).

    Returns
    -------
    (a, b, chi2)
        a ≥ 0 (clamped, see module docstring) and the weighted χ².
    """
    s = np.ascontiguousarray(simulated, dtype=float)
    e = np.ascontiguousarray(experimental, dtype=float)
    if s.shape != e.shape:
        raise InputError(f"simulated {s.shape} and experimental {e.shape} images differ in shape")
    w = np.ones_like(e) if weights is None else np.ascontiguousarray(weights, dtype=float)
    if w.shape != e.shape:
        raise InputError(f"weights {w.shape} and experimental {e.shape} images differ in shape")
    # the sums multiply by w instead of skipping w == 0: excluded pixels may hold anything
    s = np.where(w != 0, s, 0.0)
    e = np.where(w != 0, e, 0.0)
    acc = np.empty(15)
    _box_sums(s, e, w, 0, 0, 0.0, acc)
    g, r, x = np.zeros((4, 4)), np.zeros(4), np.zeros(4)
    a, b, _, _, chi2 = _fit(acc, 0.0, acc[4], acc[11], acc[14], 2, g, r, x)
    return float(a), float(b), float(chi2)


# --------------------------------------------------------------------------- Fitness

class Fitness:
    """Cost of candidate structures against one experimental image.

    Parameters
    ----------
    model : PolynomialSurrogate
        Fitted surrogate; its pixel size must equal the image's (read the image
        with ``target_pixel_size=model.convolution_parameters.pixel_size``).
    image : ExperimentalImage
    alpha : "auto", "thermal" or float
        Weight of χ², eV per unit χ² (see module docstring).
    prior_temperature : float
        K; the temperature of the Boltzmann prior behind ``alpha="thermal"``
        and :meth:`thermal_alpha`.
    noise : "estimate", "poisson", float or ndarray
        Noise model (see module docstring).
    dose : float, optional
        e/Å² for ``noise="poisson"``.
    calculator : str, ASE calculator or None
        Energy calculator (:func:`refine.cost.energy.make_calculator`); None: no energy term.
    symbols : iterable of str, optional
        Elements of the candidates (to build the calculator up front; else on first use).
    align : {"auto", "fft", "local", "none"} or bool
        True = "auto", False = "none".
    per_atom_energy : bool
        Energy term in eV/atom instead of eV.
    mode : {"weighted", "pareto"}
        What ``fitness(atoms)`` returns: ``(cost,)`` or ``(χ², E)``.
    tol : float, optional
        Pixels: iterate the alignment while the Gauss–Newton step is larger
        than this (default 0.05 with ``shift_method="interpolate"``, 0.25
        with ``"render"``, where each step costs a render).
    coarse_threshold : float
        Pixels: in "auto" mode, a first Gauss–Newton step larger than this
        triggers the FFT cross-correlation.
    max_iter : int, optional
        Alignment steps allowed (default 8 interpolating, 4 rendering).
    shift_method : {"interpolate", "render"}
        How a trial shift is applied: move the rendered image by Keys cubic
        interpolation (one render per evaluation), or re-render at the
        shifted atom positions (exact, a render per step).
    domain_tolerance : float
        A convolution pixel counts as outside the training range when it
        exceeds ``input_range_[1]`` by more than this fraction of the range
        (the training maximum itself depends on where the probe grid samples
        the columns, by ~1 % at the paper's σ/Δ).

    Notes
    -----
    Not thread-safe: an instance reuses its buffers across evaluations. Use
    one instance per worker (it pickles, for Dask or multiprocessing).
    """

    def __init__(self, model, image: ExperimentalImage, *, alpha="auto", noise="estimate", dose=None,
                 calculator="auto", symbols=None, align="auto", per_atom_energy: bool = False,
                 mode: str = "weighted", tol: float | None = None, coarse_threshold: float = 1.5,
                 max_iter: int | None = None, domain_tolerance: float = 0.02, shift_method: str = "interpolate",
                 prior_temperature: float = 300.0):
        if not isinstance(image, ExperimentalImage):
            raise InputError("image must be an ExperimentalImage (see refine.io.images.read_image)")
        if not hasattr(model, "predict_into"):
            raise InputError("model must be a fitted surrogate with predict_into (PolynomialSurrogate)")
        params = model.convolution_parameters
        if abs(params.pixel_size - image.pixel_size) > 1e-6 * params.pixel_size:
            raise InputError(f"image pixel size {image.pixel_size:.6g} Å differs from the model's "
                             f"{params.pixel_size:.6g} Å; read it with target_pixel_size={params.pixel_size}")
        if align is True:
            align = "auto"
        elif align is False or align is None:
            align = "none"
        if align not in ALIGN_MODES:
            raise InputError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        if shift_method not in ("interpolate", "render"):
            raise InputError(f"shift_method must be 'interpolate' or 'render', got {shift_method!r}")
        self.shift_method = shift_method
        if mode not in ("weighted", "pareto"):
            raise InputError(f"mode must be 'weighted' or 'pareto', got {mode!r}")
        self.model = model
        self.image = image
        self.params = params
        self.align = align
        self.mode = mode
        interp = shift_method == "interpolate"
        self.tol = float(tol if tol is not None else (0.05 if interp else 0.25))
        self.coarse_threshold = float(coarse_threshold)
        self.max_iter = int(max_iter if max_iter is not None else (8 if interp else 4))
        self.per_atom_energy = bool(per_atom_energy)
        t = prior_temperature
        if isinstance(t, bool) or not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise InputError(f"prior temperature must be a positive number of K, got {t!r}")
        self.prior_temperature = float(t)
        self.alpha = None
        if isinstance(alpha, str):
            if alpha not in ("auto", "thermal"):
                raise InputError(f"alpha must be 'auto', 'thermal' or a number, got {alpha!r}")
            if alpha == "thermal":
                self.alpha = self.thermal_alpha()
                log.info("alpha = %.6g (thermal: k_B·%g K / 2)", self.alpha, self.prior_temperature)
            self.alpha_rule = alpha
        else:
            self.alpha = self._check_alpha(alpha)
            self.alpha_rule = "fixed"

        self.grid = image.grid
        self.h = int(model.border)
        self.weights, self.noise_info = noise_weights(image, noise, dose)
        self.exp = np.ascontiguousarray(image.data, dtype=np.float64)
        self.n_valid = image.n_valid
        self.w_tot = float(self.weights.sum())
        # sums use the image minus its weighted mean ē (and I − c₀, see _box_sums):
        # the same fit, without cancellation when the image sits on a large offset
        self.exp_mean = float((self.weights * self.exp).sum() / self.w_tot)
        # 0 on excluded pixels: the box sums multiply by the weight instead of skipping it
        self._exp_c = np.ascontiguousarray(np.where(self.weights != 0, self.exp - self.exp_mean, 0.0))
        self.we_tot = float((self.weights * self._exp_c).sum())
        self.wee_tot = float((self.weights * self._exp_c * self._exp_c).sum())
        # vacuum value of the surrogate: an all-zero input pixel grid
        s = 2 * self.h + 1
        self.background = float(model.predict_into(np.zeros((s, s)), np.empty((1, 1)))[0, 0])
        # pixels an atom reaches in the output: PSF cutoff + the splat's rounding + the border
        self.reach = int(math.ceil(CUTOFF_SIGMAS * params.sigma / image.pixel_size)) + 2 + self.h
        m, n = image.shape
        self._conv_buf = np.zeros((m + 2 * self.h) * (n + 2 * self.h))
        self._out_buf = np.zeros(m * n)
        self._acc = np.zeros(15)
        window = 2 * (int(math.ceil(CUTOFF_SIGMAS * params.sigma / image.pixel_size)) + 1) + 1
        self._gx = np.zeros(window)
        self._gy = np.zeros(window)
        self._shift_tmp = np.zeros((m + 3) * (n + 2 * self.h + 3))
        self._shift_out = np.zeros((m + 3) * (n + 3))
        self._g = np.zeros((4, 4))
        self._r = np.zeros(4)
        self._x = np.zeros(4)
        self._res = np.zeros(5)
        self._xy = np.zeros((0, 2))
        self._numbers = None
        self._atom_w = None
        self._fft = None
        self.input_range = tuple(float(v) for v in getattr(model, "input_range_", (-np.inf, np.inf)))
        self.domain_tolerance = float(domain_tolerance)
        span = self.input_range[1] - self.input_range[0]
        self._domain_max = self.input_range[1] + self.domain_tolerance * span if np.isfinite(span) else np.inf
        self.out_of_domain = False
        self.n_out_of_domain = 0
        self._last_conv_max = np.nan
        self.n_evaluations = 0
        self.timings = {"convolution": 0.0, "polynomial": 0.0, "alignment": 0.0, "energy": 0.0}
        self.profile = False
        self._calc_spec = calculator
        self._energy = None
        if calculator is not None and symbols is not None:
            self._energy = Energy(calculator, symbols, per_atom=self.per_atom_energy)

    # -- setup helpers ------------------------------------------------------
    @staticmethod
    def _check_alpha(alpha) -> float:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise InputError(f"alpha must be 'auto' or a number, got {alpha!r}") from None
        if not (np.isfinite(a) and a >= 0):
            raise InputError(f"alpha must be a non-negative finite number, got {alpha!r}")
        return a

    def _prepare_numbers(self, numbers):
        if self._numbers is not None and len(numbers) == len(self._numbers) and np.array_equal(numbers, self._numbers):
            return
        from ase.data import chemical_symbols

        numbers = np.asarray(numbers)
        if numbers.size == 0:
            raise InputError("a candidate structure has no atoms")
        if numbers.min() < 1 or numbers.max() >= len(chemical_symbols):
            raise InputError(f"unknown atomic number in a candidate: {sorted(set(numbers.tolist()))}")
        symbols = [chemical_symbols[z] for z in np.unique(numbers)]
        if hasattr(self.model, "check_elements"):
            try:
                self.model.check_elements(symbols)
            except ValueError as exc:
                raise InputError(f"candidate structure: {exc}") from None
        w = atom_weights(numbers, self.params.exponent, self.params.weights)
        if self.params.cross_section is not None:
            w = w * self.params.cross_section
        self._atom_w = np.ascontiguousarray(w)
        self._numbers = numbers.copy()
        if len(self._xy) != len(numbers):
            self._xy = np.zeros((len(numbers), 2))
        if self._calc_spec is not None and (self._energy is None
                                            or not set(symbols) <= set(self._energy.elements)):
            self._energy = Energy(self._calc_spec, symbols, per_atom=self.per_atom_energy)

    # -- the image ------------------------------------------------------------
    def _render(self, pos, shift):
        """Surrogate image box for positions + shift (Å). Returns (sim view, i0, j0, ood)."""
        import time

        t0 = time.perf_counter() if self.profile else 0.0
        m, n = self.image.shape
        dx = self.image.pixel_size
        x0, y0 = self.grid.origin
        i0, i1, j0, j1 = _xy_box(pos, shift[0], shift[1], x0, y0, dx, self.reach, m, n, self._xy)
        bi, bj = i1 - i0, j1 - j0
        if bi == 0 or bj == 0:
            return self._out_buf[:0].reshape(0, 0), 0, 0, False
        h = self.h
        conv = self._conv_buf[: (bi + 2 * h) * (bj + 2 * h)].reshape(bi + 2 * h, bj + 2 * h)
        splat_gaussians(self._xy, self._atom_w, x0 + (i0 - h) * dx, y0 + (j0 - h) * dx, dx, self.params.sigma,
               CUTOFF_SIGMAS, conv, self._gx, self._gy)
        cmax = _max_value(conv)
        ood = cmax > self._domain_max
        if ood:
            self._last_conv_max = cmax
        t1 = time.perf_counter() if self.profile else 0.0
        sim = self._out_buf[: bi * bj].reshape(bi, bj)
        self.model.predict_into(conv, sim)
        if self.profile:
            t2 = time.perf_counter()
            self.timings["convolution"] += t1 - t0
            self.timings["polynomial"] += t2 - t1
        return sim, i0, j0, ood

    def _fit_box(self, sim, i0, j0, nparam, *, sums: bool = True):
        """Intensity map (and alignment terms when nparam=4) of a box; ``sums=False`` reuses the last sums."""
        if sums:
            if sim.size:
                _box_sums(sim, self._exp_c, self.weights, i0, j0, self.background, self._acc)
            else:
                self._acc[:] = 0.0
        a, b, ci, cj, chi2 = _fit(self._acc, 0.0, self.w_tot, self.we_tot, self.wee_tot, nparam,
                                  self._g, self._r, self._x)
        # E − ē ≈ a·(I − c₀) + b'  ⇔  E ≈ a·I + (b' − a·c₀ + ē)
        return a, b - a * self.background + self.exp_mean, ci, cj, chi2

    def _coarse_shift(self, sim, i0, j0):
        """Pixel shift (di, dj) of the FFT cross-correlation peak (parabolic sub-pixel fit).

        Images of ≥ 96 px a side are correlated on 2×2-binned copies (4× fewer
        pixels): the coarse step only has to land within the Gauss–Newton
        step's reach (``coarse_threshold``), which the binned peak does.
        """
        from scipy import fft

        m, n = self.image.shape
        if self._fft is None:
            B = 2 if min(m, n) >= 96 else 1
            mb, nb = -(-m // B), -(-n // B)
            shape = (fft.next_fast_len(mb, real=True), fft.next_fast_len(nb, real=True))
            ref = np.zeros(shape)
            centred = np.where(self.image.mask, self.exp - np.average(self.exp, weights=self.image.mask), 0.0)
            _bin_box(centred, 0, 0, 0.0, B, ref)
            self._fft = (B, shape, np.conj(fft.rfft2(ref)), np.zeros(shape))
        B, shape, ref_conj, binned = self._fft
        _bin_box(sim, i0, j0, self.background, B, binned)
        corr = fft.irfft2(fft.rfft2(binned) * ref_conj, s=shape)
        return _correlation_peak(corr, B)

    def _align(self, pos):
        """Returns (a, b, chi2, shift Å, ood)."""
        if self.shift_method == "render" or self.align == "none":
            return self._align_render(pos)
        return self._align_interpolate(pos)

    def _align_interpolate(self, pos):
        """One render; the sub-pixel search shifts the rendered box by cubic interpolation.

        Gauss–Newton with a safeguard: every visited shift's plain (a, b) χ²
        is known from the same sums, a step that raises it is halved back
        towards the best shift so far, and without convergence the best
        visited shift is returned.
        """
        import time

        sim, i0, j0, ood = self._render(pos, (0.0, 0.0))
        t = time.perf_counter() if self.profile else 0.0
        mode = self.align
        ti = tj = 0.0  # pixels
        coarse_done = False
        if mode == "fft" and sim.size:
            ti, tj = self._coarse_shift(sim, i0, j0)
            coarse_done = True
        m, n = self.image.shape
        res = self._res
        it0 = 0
        while True:
            status, it = _gauss_newton(sim, i0, j0, self._exp_c, self.weights, self.background, self.w_tot,
                                       self.we_tot, self.wee_tot, m, n, self.tol, self.coarse_threshold, it0,
                                       self.max_iter, ti, tj, mode == "auto" and not coarse_done and sim.size > 0,
                                       self._shift_tmp, self._shift_out, self._acc, self._g, self._r, self._x, res)
            if status != 1:
                break
            # the Gauss–Newton step is too large to trust: place the particle by cross-correlation
            ti, tj = self._coarse_shift(sim, i0, j0)
            coarse_done = True
            it0 = it + 1
        if status == 0:
            a, bc, chi2, di, dj = res
            b = bc - a * self.background + self.exp_mean  # see _fit_box
        else:  # nothing usable: the unshifted image with its best map
            a, b, _, _, chi2 = self._fit_box(sim, i0, j0, 2)
            di = dj = 0.0
        if self.profile:
            self.timings["alignment"] += time.perf_counter() - t
        dx = self.image.pixel_size
        return float(a), float(b), float(chi2), (float(di) * dx, float(dj) * dx), ood

    def _shift_box(self, sim, i0, j0, di, dj):
        """The rendered box moved by (di, dj) pixels (Keys cubic interpolation), clipped to the image.

        Returns (view of a reused buffer, i0, j0); the alignment's numba loop
        calls the same :func:`_shifted_box`.
        """
        m, n = self.image.shape
        return _shifted_box(sim, i0, j0, float(di), float(dj), m, n, self.background, self._shift_tmp,
                            self._shift_out)

    def _align_render(self, pos):
        """Re-render at the shifted positions for every alignment step (exact, slower)."""
        import time

        dx = self.image.pixel_size
        shift = [0.0, 0.0]
        ood_any = False
        mode = self.align
        if mode == "none":
            sim, i0, j0, ood = self._render(pos, shift)
            t = time.perf_counter() if self.profile else 0.0
            a, b, _, _, chi2 = self._fit_box(sim, i0, j0, 2)
            if self.profile:
                self.timings["alignment"] += time.perf_counter() - t
            return a, b, chi2, (0.0, 0.0), ood
        coarse_done = False
        a = b = chi2 = 0.0
        for it in range(self.max_iter + 1):
            sim, i0, j0, ood = self._render(pos, shift)
            ood_any |= ood
            t = time.perf_counter() if self.profile else 0.0
            if mode == "fft" and not coarse_done:
                di, dj = self._coarse_shift(sim, i0, j0)
                coarse_done = True
                if self.profile:
                    self.timings["alignment"] += time.perf_counter() - t
                if abs(di) > 0.5 * self.tol or abs(dj) > 0.5 * self.tol:
                    shift[0] += di * dx
                    shift[1] += dj * dx
                    continue
                t = time.perf_counter() if self.profile else 0.0
            a, b, ci, cj, chi2 = self._fit_box(sim, i0, j0, 4)
            if a > 0:
                di, dj = -ci / a, -cj / a
            else:
                di = dj = np.inf
            big = not (abs(di) <= self.coarse_threshold and abs(dj) <= self.coarse_threshold)
            if big and mode == "auto" and not coarse_done:
                di, dj = self._coarse_shift(sim, i0, j0)
                coarse_done = True
                shift[0] += di * dx
                shift[1] += dj * dx
                if self.profile:
                    self.timings["alignment"] += time.perf_counter() - t
                continue
            if not np.isfinite(di):
                # no usable alignment: best flat/unaligned fit at this position
                a, b, _, _, chi2 = self._fit_box(sim, i0, j0, 2)
                if self.profile:
                    self.timings["alignment"] += time.perf_counter() - t
                break
            if big:  # local mode: damp large steps
                lim = self.coarse_threshold
                di, dj = float(np.clip(di, -lim, lim)), float(np.clip(dj, -lim, lim))
            if (abs(di) <= self.tol and abs(dj) <= self.tol) or it == self.max_iter:
                # accept the first-order step (χ² already includes it)
                if abs(di) <= self.tol and abs(dj) <= self.tol:
                    shift[0] += di * dx
                    shift[1] += dj * dx
                else:
                    a, b, _, _, chi2 = self._fit_box(sim, i0, j0, 2)
                if self.profile:
                    self.timings["alignment"] += time.perf_counter() - t
                break
            shift[0] += di * dx
            shift[1] += dj * dx
            if self.profile:
                self.timings["alignment"] += time.perf_counter() - t
        return a, b, chi2, (shift[0], shift[1]), ood_any

    # -- public API -----------------------------------------------------------
    @staticmethod
    def _unpack(atoms, numbers=None):
        if numbers is None:
            pos, numbers = atoms.positions, atoms.numbers
        else:
            pos = atoms
        pos = np.asarray(pos, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] != len(numbers):
            raise InputError(f"positions must be (n, 3) with one number per atom, got {pos.shape} and {len(numbers)}")
        if not np.all(np.isfinite(pos)):
            raise InputError("candidate has non-finite positions")
        return np.ascontiguousarray(pos), np.asarray(numbers)

    def image_terms(self, atoms, numbers=None):
        """χ² part only: (a, b, χ², shift Å) of a structure, no energy."""
        pos, numbers = self._unpack(atoms, numbers)
        self._prepare_numbers(numbers)
        a, b, chi2, shift, _ = self._align(pos)
        return a, b, chi2, shift

    def evaluate(self, atoms, numbers=None) -> FitnessResult:
        """Evaluate an ``ase.Atoms`` (or ``positions (n, 3) Å, numbers (n,)``).

        Raises
        ------
        StemRefineError
            ``alpha="auto"`` and :meth:`calibrate_alpha` was not called yet
            (in ``mode="pareto"`` the cost is not needed: it is NaN until then).
        """
        if self.alpha is None and self.mode != "pareto":
            raise StemRefineError("alpha='auto' is not calibrated yet: call calibrate_alpha(population) first")
        return self._evaluate(atoms, numbers, self.alpha)

    def _evaluate(self, atoms, numbers, alpha):
        import time

        pos, numbers = self._unpack(atoms, numbers)
        self._prepare_numbers(numbers)
        a, b, chi2, shift, ood = self._align(pos)
        t = time.perf_counter() if self.profile else 0.0
        energy = self._energy(pos, numbers) if self._energy is not None else 0.0
        if self.profile:
            self.timings["energy"] += time.perf_counter() - t
        self.n_evaluations += 1
        if ood:
            self.n_out_of_domain += 1
            if not self.out_of_domain:
                self.out_of_domain = True
                log.warning("a candidate's convolution image (max %.4g) leaves the model's training range "
                            "[%.4g, %.4g]: the surrogate is extrapolating (reported once)",
                            self._last_conv_max, *self.input_range)
        cost = energy + (alpha if alpha is not None else np.nan) * chi2
        return FitnessResult(cost=float(cost), chi2=float(chi2), chi2_per_pixel=float(chi2) / self.n_valid,
                             energy=float(energy), scale=float(a), offset=float(b), shift=shift,
                             out_of_domain=bool(ood))

    def __call__(self, atoms) -> tuple:
        """DEAP ``evaluate``: ``(cost,)`` or, with ``mode="pareto"``, ``(χ², E)``."""
        if self.mode == "pareto":
            r = self._evaluate(atoms, None, self.alpha)
            return (r.chi2, r.energy)
        return (self.evaluate(atoms).cost,)

    def cost(self, result: FitnessResult) -> float:
        """E + α·χ² of a result with the current α (after a re-calibration)."""
        if self.alpha is None:
            raise StemRefineError("alpha='auto' is not calibrated yet: call calibrate_alpha(population) first")
        return result.energy + self.alpha * result.chi2

    def calibrate_alpha(self, population) -> list:
        """Set α (when ``alpha="auto"``) from a population; return its results.

        Rule: α = IQR(E)/IQR(χ²) over the population (see module docstring).
        With a fixed α the population is only evaluated.
        """
        results = [self._evaluate(p, None, self.alpha) for p in population]
        if self.alpha_rule == "auto":
            self.alpha = self.alpha_from(np.array([r.energy for r in results]), np.array([r.chi2 for r in results]))
            from dataclasses import replace

            results = [replace(r, cost=r.energy + self.alpha * r.chi2) for r in results]
        return results

    def thermal_alpha(self) -> float:
        """k_B·T/2 (eV per unit χ²) at T = ``prior_temperature``: E + α·χ² is then −k_BT·ln(posterior)."""
        from ase.units import kB

        return 0.5 * kB * self.prior_temperature

    @staticmethod
    def alpha_from(energies, chi2s) -> float:
        """The automatic α for given energies (eV) and χ² values (logged)."""
        e = np.asarray(energies, dtype=float)
        c = np.asarray(chi2s, dtype=float)
        if e.size < 2:
            raise InputError("calibrating alpha needs at least 2 structures")

        def spread(v):
            q75, q25 = np.percentile(v, [75, 25])
            s = q75 - q25
            return s if s > 0 else float(np.std(v))

        se, sc = spread(e), spread(c)
        if not sc > 0:
            log.warning("χ² does not vary over the population; alpha = 1")
            return 1.0
        if not se > 0:
            # no energy term (or no spread): put χ² on the scale of 1 eV per unit spread
            alpha = 1.0 / sc
        else:
            alpha = se / sc
        log.info("alpha = %.6g (IQR of E %.4g eV / IQR of χ² %.4g over %d structures)", alpha, se, sc, e.size)
        return float(alpha)

    def simulated_image(self, atoms, numbers=None, *, aligned: bool = True) -> np.ndarray:
        """a·I_sim + b on the experimental grid (shape ``image.shape``), at the best alignment.

        The image is recomputed exactly at the aligned positions and a, b refitted.
        """
        pos, numbers = self._unpack(atoms, numbers)
        self._prepare_numbers(numbers)
        shift = (0.0, 0.0)
        if aligned and self.align != "none":
            _, _, _, shift, _ = self._align(pos)
        sim, i0, j0, _ = self._render(pos, shift)
        full = np.full(self.image.shape, self.background)
        full[i0: i0 + sim.shape[0], j0: j0 + sim.shape[1]] = sim
        a, b, _ = fit_intensity_map(full, self.exp, self.weights)
        return a * full + b

    def difference_image(self, atoms, numbers=None) -> np.ndarray:
        """Experimental minus aligned simulated image; excluded pixels are NaN."""
        diff = self.exp - self.simulated_image(atoms, numbers)
        diff[~self.image.mask] = np.nan
        return diff

    @staticmethod
    def aligned(atoms, result: FitnessResult):
        """A copy of ``atoms`` moved by ``result.shift`` (xy, Å) onto the experimental image.

        Keeping GA individuals aligned lets the next evaluations start at the
        optimum (Gauss–Newton only, no cross-correlation).
        """
        out = atoms.copy()
        out.positions[:, 0] += result.shift[0]
        out.positions[:, 1] += result.shift[1]
        return out

    def summary(self) -> dict:
        """What a run summary reports about the fitness."""
        return {"alpha": self.alpha, "alpha_rule": self.alpha_rule, "noise": self.noise_info,
                "align": self.align, "n_valid_pixels": self.n_valid, "per_atom_energy": self.per_atom_energy,
                "out_of_domain": self.out_of_domain, "n_out_of_domain": self.n_out_of_domain,
                "n_evaluations": self.n_evaluations, "model_input_range": list(self.input_range)}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fft"] = None
        return state
