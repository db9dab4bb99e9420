"""A candidate's surrogate image on the experimental grid, rendered only where its atoms reach.

The first step of the cost (:mod:`refine.cost.fitness`), once per
evaluation: the hot path of the refinement.

The convolution image is splatted (:func:`surrogate.imaging.splat_gaussians`)
only inside the box the particle can reach (the atoms' xy extent plus the
PSF cutoff plus the model's border h), into a preallocated buffer; the
fitted polynomial (:meth:`PolynomialSurrogate.predict_into`) fills the
matching output box. Every pixel outside the box is exactly the model's
vacuum value c₀ (the polynomial of an all-zero input pixel grid), so the fit
(:mod:`refine.cost.alignment`) takes its contribution from precomputed image
sums: the cost scales with the particle, not with the field of view.

Per render nothing image-sized is allocated: the convolution and output
buffers and the xy array are reused, and views of them cover the box. One
pass over the convolution box (:func:`max_value`) gives its largest pixel,
for the fitness's check of the model's training range.

With a depth-blur model (``ConvolutionParameters.depth_blur`` > 0) every
render computes each atom's PSF width from its depth below the candidate's
first atom plane (:meth:`ConvolutionParameters.sigmas`), and the box and the
splat's window grow with the widest atom.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from surrogate.imaging import CUTOFF_SIGMAS, atom_weights, scratch_rows, splat_gaussians
from surrogate.imaging.convolution import splat_gaussians_varying

__all__ = ["BoxRenderer", "max_value"]


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
def max_value(a):  # pragma: no cover - jitted
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


class BoxRenderer:
    """Surrogate images of candidate structures on one probe grid, box by box.

    Parameters
    ----------
    model : PolynomialSurrogate
        Fitted surrogate: its convolution parameters (σ Å, Z exponent,
        weights, κ) and border h are used.
    grid : ProbeGrid
        The experimental image's probe grid (Δ equal to the model's).

    Attributes
    ----------
    background : float
        c₀, the surrogate's value on vacuum: every pixel outside a box.
    h : int
        The model's border (pixels of convolution image around each output pixel).
    reach : int
        Pixels an atom reaches in the output: the PSF cutoff, the splat's
        rounding and the border.
    atom_weights : ndarray, shape (n_atoms,)
        κ·Z^n of the atoms set by :meth:`set_atoms`.

    Notes
    -----
    Not thread-safe: the buffers are reused by every render.
    """

    def __init__(self, model, grid):
        self.model = model
        self.params = model.convolution_parameters
        self.grid = grid
        self.h = int(model.border)
        # vacuum value of the surrogate: an all-zero input pixel grid
        s = 2 * self.h + 1
        self.background = float(model.predict_into(np.zeros((s, s)), np.empty((1, 1)))[0, 0])
        cutoff_px = int(math.ceil(CUTOFF_SIGMAS * self.params.sigma / grid.pixel_size))
        # pixels an atom reaches in the output: PSF cutoff + the splat's rounding + the border
        self.reach = cutoff_px + 2 + self.h
        m, n = grid.shape
        self._conv_buf = np.zeros((m + 2 * self.h) * (n + 2 * self.h))
        self._out_buf = np.zeros(m * n)
        window = 2 * (cutoff_px + 1) + 1  # the splat's scratch rows (surrogate.imaging.scratch_rows)
        self._gx = np.zeros(window)
        self._gy = np.zeros(window)
        self._xy = np.zeros((0, 2))
        self.atom_weights = None
        self.sigmas = None  # per-atom PSF widths of the last render (depth blur), else None

    def set_atoms(self, numbers) -> None:
        """Per-atom weights κ·Z^n of the atomic numbers ``numbers`` (n_atoms,) for the next renders."""
        w = atom_weights(numbers, self.params.exponent, self.params.weights)
        if self.params.cross_section is not None:
            w = w * self.params.cross_section
        self.atom_weights = np.ascontiguousarray(w)
        if len(self._xy) != len(numbers):
            self._xy = np.zeros((len(numbers), 2))

    def convolution_box(self, bi: int, bj: int) -> np.ndarray:
        """The convolution buffer as the (bi + 2h, bj + 2h) input of a bi × bj output box.

        After :meth:`render` it holds that render's convolution image (the
        adjoint of :mod:`refine.cost.image_forces` reads it back).
        """
        h = self.h
        return self._conv_buf[: (bi + 2 * h) * (bj + 2 * h)].reshape(bi + 2 * h, bj + 2 * h)

    def render(self, positions, shift, timings: dict | None = None):
        """The surrogate image of atoms at ``positions + shift`` on the box they reach.

        Parameters
        ----------
        positions : ndarray of float64, shape (n_atoms, 3)
            Å, C-contiguous; the atoms of the last :meth:`set_atoms`.
        shift : (float, float)
            Å added to x and y.
        timings : dict, optional
            ``"convolution"`` and ``"polynomial"`` seconds are added to it.

        Returns
        -------
        box : ndarray, shape (bi, bj)
            A view of a reused buffer (valid until the next render); empty
            when no atom reaches the image.
        i0, j0 : int
            Image pixel of ``box[0, 0]``.
        conv_max : float
            Largest convolution pixel of the box (−inf when empty).
        """
        t0 = time.perf_counter() if timings is not None else 0.0
        m, n = self.grid.shape
        dx = self.grid.pixel_size
        x0, y0 = self.grid.origin
        reach = self.reach
        self.sigmas = self.params.sigmas(positions[:, 2]) if self.params.depth_blur else None
        if self.sigmas is not None and len(self.sigmas):
            widest = float(self.sigmas.max())
            cutoff_px = int(math.ceil(CUTOFF_SIGMAS * widest / dx))
            reach = cutoff_px + 2 + self.h  # as in __init__, for the widest atom
            if len(self._gx) < 2 * (cutoff_px + 1) + 1:  # the splat's scratch rows for it
                self._gx, self._gy = scratch_rows(widest, dx)
        i0, i1, j0, j1 = _xy_box(positions, shift[0], shift[1], x0, y0, dx, reach, m, n, self._xy)
        bi, bj = i1 - i0, j1 - j0
        if bi == 0 or bj == 0:
            return self._out_buf[:0].reshape(0, 0), 0, 0, -np.inf
        h = self.h
        conv = self.convolution_box(bi, bj)
        if self.sigmas is None:
            splat_gaussians(self._xy, self.atom_weights, x0 + (i0 - h) * dx, y0 + (j0 - h) * dx, dx,
                            self.params.sigma, CUTOFF_SIGMAS, conv, self._gx, self._gy)
        else:
            splat_gaussians_varying(self._xy, self.atom_weights, self.sigmas, x0 + (i0 - h) * dx,
                                    y0 + (j0 - h) * dx, dx, CUTOFF_SIGMAS, conv, self._gx, self._gy)
        conv_max = max_value(conv)
        t1 = time.perf_counter() if timings is not None else 0.0
        sim = self._out_buf[: bi * bj].reshape(bi, bj)
        self.model.predict_into(conv, sim)
        if timings is not None:
            t2 = time.perf_counter()
            timings["convolution"] += t1 - t0
            timings["polynomial"] += t2 - t1
        return sim, i0, j0, conv_max
