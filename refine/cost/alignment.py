"""Fit a rendered surrogate box to the experimental image: the intensity map a·I + b and the sub-pixel shift.

Steps 2 and 3 of the cost (:mod:`refine.cost.fitness`), on the box that
:mod:`refine.cost.render` drew.

**Intensity map** a·I + b in closed form (:func:`fit_intensity_map`,
:meth:`Aligner.fit_box`): weighted linear least squares under the noise
model and mask (2×2, or 4×4 with the alignment terms, normal equations). A
negative a (an anti-correlated candidate) is clamped to a = 0 (a flat
image), so anti-correlation is never rewarded. The sums use the image minus
its weighted mean ē and the box minus the vacuum value c₀: the same fit,
without cancellation when the image sits on a large offset.

**Alignment (sub-pixel translation).** ``mode="auto"`` (default) takes a
Gauss–Newton step from the candidate's own position; when that step is
larger than ``coarse_threshold`` pixels (or the fit is degenerate) a coarse
FFT cross-correlation with a parabolic peak fit places the particle first.
``"fft"`` always starts with the cross-correlation, ``"local"`` never does,
``"none"`` turns alignment off. The Gauss–Newton step linearizes the
shifted image,

    a·I(r − d) + b ≈ a·I + b − a·d·∇I,

so the intensity map and the shift are one linear least-squares problem in
(a, b, −a·dx, −a·dy) with regressors (I, 1, ∂ᵢI, ∂ⱼI) (central
differences), solved from sums over the box. A trial shift is applied to the
rendered image by separable Keys cubic-convolution interpolation
(:meth:`Aligner.align_interpolated`: one render per evaluation; the image is
smooth on the pixel scale, σ/Δ = 3.8 for the paper's model, so the
interpolation error is ~1e-4 of the peak), or by re-rendering the
convolution at shifted atom positions (:meth:`Aligner.align_by_rendering`:
exact, since the convolution is analytic, but one render per step). Steps
repeat until below ``tol`` pixels; the last, small step is applied to first
order (error O(d²)). The whole interpolating search is one Numba call
(:func:`refine.cost.kernels.gauss_newton`); Python only steps in for the
FFT, the one part that allocates (its spectra).
"""

from __future__ import annotations

import time

import numpy as np

from refine.cost.kernels import bin_box, box_sums, correlation_peak, fit_from_sums, gauss_newton
from refine.io import ExperimentalImage
from surrogate.common import InputError

__all__ = ["ALIGN_MODES", "Aligner", "fit_intensity_map"]

#: alignment modes (see the module docstring)
ALIGN_MODES = ("auto", "fft", "local", "none")


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
    box_sums(s, e, w, 0, 0, 0.0, acc)
    g, r, x = np.zeros((4, 4)), np.zeros(4), np.zeros(4)
    a, b, _, _, chi2 = fit_from_sums(acc, 0.0, acc[4], acc[11], acc[14], 2, g, r, x)
    return float(a), float(b), float(chi2)


class Aligner:
    """The experimental side of χ²: intensity map and sub-pixel shift of rendered boxes.

    Holds the image's weighted sums and the scratch buffers of the Numba
    kernels, so that aligning a box allocates nothing image-sized.

    Parameters
    ----------
    image : ExperimentalImage
    weights : ndarray, shape ``image.shape``
        χ² weights 1/σ², 0 on excluded pixels (:func:`refine.cost.noise.noise_weights`).
    background : float
        c₀: the rendered image's value outside a box (image units of the surrogate).
    mode : {"auto", "fft", "local", "none"}
        Alignment (see module docstring).
    tol : float
        Pixels: iterate while the Gauss–Newton step is larger.
    coarse_threshold : float
        Pixels: in "auto" mode a larger first step triggers the cross-correlation;
        larger steps are damped to it.
    max_iter : int
        Alignment steps allowed.
    border : int
        The model's border h (pixels); sizes the shift buffers.

    Attributes
    ----------
    exp : ndarray, shape ``image.shape``
        The experimental image, float64.
    exp_mean : float
        Its weighted mean ē.
    w_tot, we_tot, wee_tot : float
        Σw, Σw·(E − ē) and Σw·(E − ē)² over the image.
    """

    def __init__(self, image: ExperimentalImage, weights: np.ndarray, background: float, *, mode: str, tol: float,
                 coarse_threshold: float, max_iter: int, border: int):
        self.image = image
        self.weights = weights
        self.background = background
        self.mode = mode
        self.tol = tol
        self.coarse_threshold = coarse_threshold
        self.max_iter = max_iter
        self.exp = np.ascontiguousarray(image.data, dtype=np.float64)
        self.w_tot = float(self.weights.sum())
        # sums use the image minus its weighted mean ē (and I − c₀, see box_sums):
        # the same fit, without cancellation when the image sits on a large offset
        self.exp_mean = float((self.weights * self.exp).sum() / self.w_tot)
        # 0 on excluded pixels: the box sums multiply by the weight instead of skipping it
        self._exp_c = np.ascontiguousarray(np.where(self.weights != 0, self.exp - self.exp_mean, 0.0))
        self.we_tot = float((self.weights * self._exp_c).sum())
        self.wee_tot = float((self.weights * self._exp_c * self._exp_c).sum())
        m, n = image.shape
        self._acc = np.zeros(15)
        self._shift_tmp = np.zeros((m + 3) * (n + 2 * border + 3))
        self._shift_out = np.zeros((m + 3) * (n + 3))
        self._g = np.zeros((4, 4))
        self._r = np.zeros(4)
        self._x = np.zeros(4)
        self._res = np.zeros(5)
        self._fft = None

    @property
    def binning(self) -> int | None:
        """B of the coarse cross-correlation's B×B binning (None before the first one)."""
        return None if self._fft is None else self._fft[0]

    def fit_box(self, sim, i0, j0, nparam, *, sums: bool = True):
        """Intensity map of a box, and the alignment terms when ``nparam`` is 4.

        Parameters
        ----------
        sim : ndarray, shape (bi, bj)
            A rendered box at image pixel (i0, j0) (c₀ outside it).
        nparam : {2, 4}
        sums : bool
            False: reuse the sums of the previous call.

        Returns
        -------
        (a, b, c_i, c_j, chi2)
            The map E ≈ a·I + b, c_i = −a·d_i and c_j = −a·d_j (pixels; 0 with
            ``nparam=2``), and χ².
        """
        if sums:
            if sim.size:
                box_sums(sim, self._exp_c, self.weights, i0, j0, self.background, self._acc)
            else:
                self._acc[:] = 0.0
        a, b, ci, cj, chi2 = fit_from_sums(self._acc, 0.0, self.w_tot, self.we_tot, self.wee_tot, nparam,
                                           self._g, self._r, self._x)
        # E − ē ≈ a·(I − c₀) + b'  ⇔  E ≈ a·I + (b' − a·c₀ + ē)
        return a, b - a * self.background + self.exp_mean, ci, cj, chi2

    def coarse_shift(self, sim, i0, j0):
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
            bin_box(centred, 0, 0, 0.0, B, ref)
            self._fft = (B, shape, np.conj(fft.rfft2(ref)), np.zeros(shape))
        B, shape, ref_conj, binned = self._fft
        bin_box(sim, i0, j0, self.background, B, binned)
        corr = fft.irfft2(fft.rfft2(binned) * ref_conj, s=shape)
        return correlation_peak(corr, B)

    def align_interpolated(self, sim, i0, j0, timings: dict | None = None):
        """Best map and shift of one rendered box, shifting it by cubic interpolation.

        Gauss–Newton with a safeguard: every visited shift's plain (a, b) χ²
        is known from the same sums, a step that raises it is halved back
        towards the best shift so far, and without convergence the best
        visited shift is returned.

        Parameters
        ----------
        sim : ndarray, shape (bi, bj)
            The box rendered at the candidate's own position, at image pixel (i0, j0).
        timings : dict, optional
            ``"alignment"`` seconds are added to it.

        Returns
        -------
        (a, b, chi2, shift)
            ``shift`` (dx, dy) in Å to add to the atoms' xy.
        """
        t = time.perf_counter() if timings is not None else 0.0
        mode = self.mode
        ti = tj = 0.0  # pixels
        coarse_done = False
        if mode == "fft" and sim.size:
            ti, tj = self.coarse_shift(sim, i0, j0)
            coarse_done = True
        m, n = self.image.shape
        res = self._res
        it0 = 0
        while True:
            status, it = gauss_newton(sim, i0, j0, self._exp_c, self.weights, self.background, self.w_tot,
                                      self.we_tot, self.wee_tot, m, n, self.tol, self.coarse_threshold, it0,
                                      self.max_iter, ti, tj, mode == "auto" and not coarse_done and sim.size > 0,
                                      self._shift_tmp, self._shift_out, self._acc, self._g, self._r, self._x, res)
            if status != 1:
                break
            # the Gauss–Newton step is too large to trust: place the particle by cross-correlation
            ti, tj = self.coarse_shift(sim, i0, j0)
            coarse_done = True
            it0 = it + 1
        if status == 0:
            a, bc, chi2, di, dj = res
            b = bc - a * self.background + self.exp_mean  # see fit_box
        else:  # nothing usable: the unshifted image with its best map
            a, b, _, _, chi2 = self.fit_box(sim, i0, j0, 2)
            di = dj = 0.0
        if timings is not None:
            timings["alignment"] += time.perf_counter() - t
        dx = self.image.pixel_size
        return float(a), float(b), float(chi2), (float(di) * dx, float(dj) * dx)

    def align_by_rendering(self, render, positions, timings: dict | None = None):
        """Best map and shift, re-rendering at the shifted positions for every step (exact, slower).

        Also the path of ``mode="none"`` (one render, the map only).

        Parameters
        ----------
        render : callable
            ``render(positions, shift Å) -> (box, i0, j0, out_of_domain)``.
        positions : ndarray, shape (n_atoms, 3)
            Å.
        timings : dict, optional
            ``"alignment"`` seconds (renders excluded) are added to it.

        Returns
        -------
        (a, b, chi2, shift, out_of_domain)
            ``shift`` (dx, dy) in Å; ``out_of_domain`` when any render was.
        """
        profile = timings is not None
        dx = self.image.pixel_size
        shift = [0.0, 0.0]
        ood_any = False
        mode = self.mode
        if mode == "none":
            sim, i0, j0, ood = render(positions, shift)
            t = time.perf_counter() if profile else 0.0
            a, b, _, _, chi2 = self.fit_box(sim, i0, j0, 2)
            if profile:
                timings["alignment"] += time.perf_counter() - t
            return a, b, chi2, (0.0, 0.0), ood
        coarse_done = False
        a = b = chi2 = 0.0
        for it in range(self.max_iter + 1):
            sim, i0, j0, ood = render(positions, shift)
            ood_any |= ood
            t = time.perf_counter() if profile else 0.0
            if mode == "fft" and not coarse_done:
                di, dj = self.coarse_shift(sim, i0, j0)
                coarse_done = True
                if profile:
                    timings["alignment"] += time.perf_counter() - t
                if abs(di) > 0.5 * self.tol or abs(dj) > 0.5 * self.tol:
                    shift[0] += di * dx
                    shift[1] += dj * dx
                    continue
                t = time.perf_counter() if profile else 0.0
            a, b, ci, cj, chi2 = self.fit_box(sim, i0, j0, 4)
            if a > 0:
                di, dj = -ci / a, -cj / a
            else:
                di = dj = np.inf
            big = not (abs(di) <= self.coarse_threshold and abs(dj) <= self.coarse_threshold)
            if big and mode == "auto" and not coarse_done:
                di, dj = self.coarse_shift(sim, i0, j0)
                coarse_done = True
                shift[0] += di * dx
                shift[1] += dj * dx
                if profile:
                    timings["alignment"] += time.perf_counter() - t
                continue
            if not np.isfinite(di):
                # no usable alignment: best flat/unaligned fit at this position
                a, b, _, _, chi2 = self.fit_box(sim, i0, j0, 2)
                if profile:
                    timings["alignment"] += time.perf_counter() - t
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
                    a, b, _, _, chi2 = self.fit_box(sim, i0, j0, 2)
                if profile:
                    timings["alignment"] += time.perf_counter() - t
                break
            shift[0] += di * dx
            shift[1] += dj * dx
            if profile:
                timings["alignment"] += time.perf_counter() - t
        return a, b, chi2, (shift[0], shift[1]), ood_any

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fft"] = None  # rebuilt on first use: no spectra in pickles
        return state
