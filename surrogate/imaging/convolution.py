"""Convolution images (Combs et al. 2019, Eq. 1-3).

    I(r) = κ · Σ_i w_i δ(r − r_i) ⊗ PSF(r),   PSF(r) = exp(−|r|²/2σ²) / (2πσ²)

with w_i = Z_i^n (n = 1.7 by default, or per-element weights) and a normalized
Gaussian PSF (σ = 0.38 Å by default). The PSF integrates to 1 Å², so each atom
contributes κ·w_i to the image integral Σ image · Δ².

Cross-section scaling
---------------------
The paper scales each convolution image by "the total integrated scattering
cross-section of the nanoparticle". The published Pt–Mo files show what that
is: every image integrates to the same 0.7635 Å² for 557 Pt + 29 Mo, i.e. a
constant κ = 8.1767e-7 Å² per unit of Z^1.7 (:data:`COMBS2019_CROSS_SECTION`).
We expose exactly that: ``cross_section=κ`` multiplies the image so that each
atom's integrated intensity is κ·Z^n Å² (its integrated cross-section in this
model). ``cross_section=None`` leaves raw weights (units Z^n Å⁻²).

Depth blur (optional, not in the paper)
---------------------------------------
The probe is focused at the particle's entrance surface and spreads as it
goes down (and channels along columns), so an atom deep in a column is seen
through a wider PSF than one at the top. With ``depth_blur=β`` each atom's
PSF width is σᵢ = sqrt(σ² + (β·dᵢ)²), dᵢ = zᵢ − min(z) + :data:`ENTRANCE_DEPTH`
its depth below the entrance plane in Å (the beam travels along +z, as in
the ground truth of :mod:`surrogate.groundtruth.multislice`, whose potential
starts 1 Å above the first atom). Each atom still contributes κ·w_i to the
image integral; the convolution image then depends on depth, which a
column's HAADF intensity does once columns are longer than the probe's depth
of focus (docs/benchmarks.md, session 24). β = 0 is the paper's image.

Pixels are point samples of I at the probe positions of a :class:`ProbeGrid`
(see :mod:`surrogate.imaging.grid`): ``image[i, j] = I(x0 + iΔ, y0 + jΔ)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numba
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from surrogate.common import InputError
from surrogate.imaging.grid import DEFAULT_PIXEL_SIZE, ProbeGrid

__all__ = [
    "ConvolutionParameters",
    "convolution_image",
    "atom_weights",
    "COMBS2019_CROSS_SECTION",
    "DEFAULT_SIGMA",
    "DEFAULT_EXPONENT",
    "CUTOFF_SIGMAS",
    "ENTRANCE_DEPTH",
    "atom_sigmas",
    "entrance_depths",
    "scratch_rows",
    "splat_gaussians",
    "splat_gaussians_varying",
]

#: Å, Gaussian PSF width of the paper.
DEFAULT_SIGMA = 0.38
#: the paper's Z exponent.
DEFAULT_EXPONENT = 1.7
#: Å² per unit Z^1.7; measured from the published Pt–Mo 5 % convolution files
#: (image integral 0.76352 Å² / (557·78^1.7 + 29·42^1.7)).
COMBS2019_CROSS_SECTION = 8.1767245e-7
#: the PSF is evaluated within ±CUTOFF_SIGMAS·σ of each atom; the Gaussian mass
#: outside that square is < 3e-12 of the atom's weight.
CUTOFF_SIGMAS = 7.0
#: Å from the entrance plane (the probe's focus) to the first atom plane: the ground truth's potential starts
#: 1 Å above the first atom (surrogate.groundtruth.multislice)
ENTRANCE_DEPTH = 1.0


@dataclass(frozen=True)
class ConvolutionParameters:
    """How a convolution image is made; recorded in every model file.

    Parameters
    ----------
    sigma : float
        Gaussian PSF standard deviation in Å.
    exponent : float
        n in w = Z^n.
    cross_section : float or None
        κ in Å² per unit weight (see module docstring); None for raw weights.
    pixel_size : float
        Probe step in Å.
    weights : dict
        Per-element weights that override Z^n, e.g. ``{"Mo": 500.0}``.
    depth_blur : float
        β ≥ 0: the PSF width grows with depth as sqrt(σ² + (β·d)²) (Å per Å of
        depth; see the module docstring). 0: the paper's depth-blind image.
    """

    sigma: float = DEFAULT_SIGMA
    exponent: float = DEFAULT_EXPONENT
    cross_section: float | None = COMBS2019_CROSS_SECTION
    pixel_size: float = DEFAULT_PIXEL_SIZE
    weights: dict = field(default_factory=dict)
    depth_blur: float = 0.0

    def __post_init__(self):
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise InputError(f"PSF sigma must be a positive number of Å, got {self.sigma!r}")
        if not np.isfinite(self.exponent):
            raise InputError(f"Z exponent must be finite, got {self.exponent!r}")
        if self.cross_section is not None and not (np.isfinite(self.cross_section) and self.cross_section > 0):
            raise InputError(f"cross_section must be positive or None, got {self.cross_section!r}")
        if not (np.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise InputError(f"pixel size must be a positive number of Å, got {self.pixel_size!r}")
        if isinstance(self.depth_blur, bool) or not (np.isfinite(self.depth_blur) and 0 <= self.depth_blur < 1):
            raise InputError(f"depth blur must be a number in [0, 1) (Å of PSF width per Å of depth), "
                             f"got {self.depth_blur!r}")
        for sym, w in dict(self.weights).items():
            if sym not in atomic_numbers:
                raise InputError(f"unknown element {sym!r} in convolution weights")
            if not (np.isfinite(w) and w >= 0):
                raise InputError(f"weight of {sym} must be a non-negative number, got {w!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConvolutionParameters":
        known = {k: d[k] for k in ("sigma", "exponent", "cross_section", "pixel_size", "weights", "depth_blur")
                 if k in d}
        return cls(**known)

    def sigmas(self, z) -> np.ndarray | None:
        """Per-atom PSF widths σᵢ in Å of atoms at heights ``z`` (n,) Å, or None without depth blur."""
        return atom_sigmas(z, self.sigma, self.depth_blur)


def entrance_depths(z, z_top: float | None = None) -> np.ndarray:
    """dᵢ = zᵢ − z_top + :data:`ENTRANCE_DEPTH` (Å, ≥ 0): depth below the entrance plane, shape (n,).

    ``z_top`` is the first atom plane, default min(z); atoms above it (a column grown upwards while
    counting) are at depth 0.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0:
        return np.zeros(0)
    top = z.min() if z_top is None else float(z_top)
    return np.maximum(z - top + ENTRANCE_DEPTH, 0.0)


def atom_sigmas(z, sigma: float, depth_blur: float, z_top: float | None = None) -> np.ndarray | None:
    """σᵢ = sqrt(σ² + (β·dᵢ)²), dᵢ from :func:`entrance_depths` (Å), shape (n,); None when β = 0."""
    if not depth_blur:
        return None
    return np.sqrt(sigma * sigma + (depth_blur * entrance_depths(z, z_top)) ** 2)


def atom_weights(numbers, exponent: float = DEFAULT_EXPONENT, weights: dict | None = None) -> np.ndarray:
    """Per-atom weights w_i = Z_i^n, or the per-element override, shape ``(n_atoms,)``.

    Raises :class:`InputError` for atomic numbers that are not elements (Z < 1).
    """
    numbers = np.asarray(numbers)
    if numbers.size and (numbers.min() < 1 or numbers.max() >= len(chemical_symbols)):
        bad = numbers[(numbers < 1) | (numbers >= len(chemical_symbols))][0]
        raise InputError(f"unknown element with atomic number {bad} in structure")
    w = numbers.astype(float) ** exponent
    for sym, value in (weights or {}).items():
        w[numbers == atomic_numbers[sym]] = value
    return w


def convolution_image(atoms, grid: ProbeGrid | None = None, params: ConvolutionParameters | None = None,
                      *, out: np.ndarray | None = None) -> np.ndarray:
    """Convolution image of a structure, ``shape == grid.shape``.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure; positions in Å, beam along z (only x, y matter).
    grid : ProbeGrid, optional
        Probe positions. Default: the particle's extent plus a 4 Å margin at
        ``params.pixel_size``.
    params : ConvolutionParameters, optional
        σ, n, κ and weights; defaults to the paper's.
    out : ndarray, optional
        A float64 C-contiguous array of ``grid.shape`` to write into (reused
        by the refinement's hot path to avoid allocation).

    Returns
    -------
    ndarray of float64, shape ``grid.shape``
        Intensity in κ·Z^n per Å² (Z^n per Å² when κ is None).
    """
    params = params or ConvolutionParameters()
    if grid is None:
        grid = ProbeGrid.around(atoms, pixel_size=params.pixel_size)
    weights = atom_weights(atoms.numbers, params.exponent, params.weights)
    if params.cross_section is not None:
        weights = weights * params.cross_section
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise InputError("structure has non-finite atomic positions")
    sigma = params.sigmas(positions[:, 2])
    return convolution_from_positions(positions[:, :2], weights, grid, params.sigma if sigma is None else sigma,
                                      out=out)


def convolution_from_positions(xy: np.ndarray, weights: np.ndarray, grid: ProbeGrid, sigma,
                               *, out: np.ndarray | None = None) -> np.ndarray:
    """Low-level form of :func:`convolution_image` on plain arrays.

    ``xy`` (n, 2) Å and ``weights`` (n,) already include κ; ``sigma`` is one
    PSF width (Å) or one per atom, shape (n,) (:func:`atom_sigmas`). Allocates
    nothing image-sized when ``out`` is given.
    """
    if out is None:
        out = np.empty(grid.shape, dtype=np.float64)
    elif out.shape != grid.shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise InputError(f"out must be a C-contiguous float64 array of shape {grid.shape}")
    if np.ndim(sigma) == 1:
        sig = np.ascontiguousarray(sigma, dtype=np.float64)
        if sig.shape != (len(xy),):
            raise InputError(f"{sig.shape[0]} PSF widths for {len(xy)} atoms")
        rows = scratch_rows(float(sig.max()) if sig.size else 1.0, grid.pixel_size)
        splat_gaussians_varying(np.ascontiguousarray(xy, dtype=np.float64),
                                np.ascontiguousarray(weights, dtype=np.float64), sig, grid.origin[0], grid.origin[1],
                                grid.pixel_size, CUTOFF_SIGMAS, out, *rows)
        return out
    splat_gaussians(np.ascontiguousarray(xy, dtype=np.float64), np.ascontiguousarray(weights, dtype=np.float64),
                    grid.origin[0], grid.origin[1], grid.pixel_size, float(sigma), CUTOFF_SIGMAS, out,
                    *scratch_rows(sigma, grid.pixel_size))
    return out


def scratch_rows(sigma: float, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Scratch rows for :func:`splat_gaussians` (one PSF window each)."""
    n = 2 * (int(np.ceil(CUTOFF_SIGMAS * sigma / pixel_size)) + 1) + 1
    return np.empty(n), np.empty(n)


@numba.njit(cache=True, nogil=True, inline="always")
def atom_window(x, y, x0, y0, dx, half, nx, ny):  # pragma: no cover - jitted
    """An atom's fractional pixel position (fi, fj), nearest pixel (ci, cj) and PSF window [i0, i1) × [j0, j1).

    The window is ``half`` pixels either side of the nearest pixel, clipped
    to the image (empty when the atom is farther outside). Shared by the
    splat and its adjoint (:mod:`surrogate.imaging.adjoint`), which must agree.
    """
    fi = (x - x0) / dx
    fj = (y - y0) / dx
    ci = int(np.floor(fi + 0.5))
    cj = int(np.floor(fj + 0.5))
    return fi, fj, ci, cj, max(ci - half, 0), min(ci + half + 1, nx), max(cj - half, 0), min(cj + half + 1, ny)


@numba.njit(cache=True, nogil=True, fastmath=True)
def splat_gaussians(xy, weights, x0, y0, dx, sigma, cutoff_sigmas, out, gx, gy):  # pragma: no cover - jitted
    """The convolution image of point atoms on a pixel grid, written into ``out`` (the Numba kernel).

    ``out[i, j] = Σ_a weights[a] · exp(−|r_ij − xy[a]|² / 2σ²) / (2πσ²)`` with
    ``r_ij = (x0 + i·dx, y0 + j·dx)``, each atom evaluated on the
    ±(⌈cutoff_sigmas·σ/dx⌉ + 1)-pixel window around its nearest pixel
    (:func:`atom_window`; exactly 0 outside it). Allocates nothing image-sized.

    Parameters
    ----------
    xy : ndarray of float64, shape (n_atoms, 2)
        Projected atom positions (x, y), Å.
    weights : ndarray of float64, shape (n_atoms,)
        Per-atom weights, κ included (:func:`atom_weights` times the cross-section).
    x0, y0 : float
        Å; the probe position of ``out[0, 0]``.
    dx : float
        Pixel size Δ, Å.
    sigma : float
        Gaussian PSF width σ, Å.
    cutoff_sigmas : float
        Window half-width in σ (:data:`CUTOFF_SIGMAS`).
    out : ndarray of float64, shape (M, N), C-contiguous
        Overwritten with the image (units of ``weights`` per Å²).
    gx, gy : ndarray of float64, shape (2·(⌈cutoff_sigmas·σ/dx⌉ + 1) + 1,)
        Scratch rows, one PSF window each (:func:`scratch_rows`).
    """
    # Separable evaluation: exp(-(dx²+dy²)/2σ²) = gx(i)·gy(j), so each atom costs
    # one outer product over the ±cutoff window instead of window² exponentials.
    # gx, gy are caller-owned scratch rows (see scratch_rows) so that the GA's hot
    # path allocates nothing; fastmath lets the row updates vectorize.
    #
    # The window rows need no exponential per pixel: with the pixel offset k from
    # the atom's nearest pixel c and its sub-pixel position t = f − c ∈ [−½, ½),
    #     exp(−c2·(k − t)²) = exp(−c2·t²) · E[k] · P^k,  c2 = Δ²/2σ², E[k] = exp(−c2·k²), P = exp(2·c2·t),
    # so an atom costs 3 exponentials per axis and the powers of P are built
    # outwards from k = 0 (≤ half multiplications: a relative error of at most
    # ~half ulp, the same order as exp's own for arguments up to −cutoff²/2).
    nx, ny = out.shape
    out[:, :] = 0.0
    half = int(np.ceil(cutoff_sigmas * sigma / dx)) + 1
    norm = 1.0 / (2.0 * np.pi * sigma * sigma)
    c2 = dx * dx / (2.0 * sigma * sigma)
    E = np.empty(half + 1)
    for k in range(half + 1):
        E[k] = np.exp(-c2 * k * k)
    for a in range(xy.shape[0]):
        fi, fj, ci, cj, i0, i1, j0, j1 = atom_window(xy[a, 0], xy[a, 1], x0, y0, dx, half, nx, ny)
        if i0 >= i1 or j0 >= j1:
            continue
        # gx[half + k], gy[half + k]: the window at offset k (full window, clipped below);
        # the four power chains are independent, so one loop overlaps their latencies
        ti = fi - ci
        tj = fj - cj
        px = weights[a] * norm * np.exp(-c2 * ti * ti)
        qx = px
        py = np.exp(-c2 * tj * tj)
        qy = py
        upx = np.exp(2.0 * c2 * ti)
        dnx = np.exp(-2.0 * c2 * ti)
        upy = np.exp(2.0 * c2 * tj)
        dny = np.exp(-2.0 * c2 * tj)
        gx[half] = px
        gy[half] = py
        for k in range(1, half + 1):
            px *= upx
            qx *= dnx
            py *= upy
            qy *= dny
            e = E[k]
            gx[half + k] = px * e
            gx[half - k] = qx * e
            gy[half + k] = py * e
            gy[half - k] = qy * e
        oi = i0 - (ci - half)
        oj = j0 - (cj - half)
        n = j1 - j0
        gyw = gy[oj:oj + n]
        # two rows per pass share the loads of gy (≈ 15 % faster than one)
        i = i0
        while i + 1 < i1:
            g0 = gx[i - i0 + oi]
            g1 = gx[i + 1 - i0 + oi]
            r0 = out[i, j0:j1]
            r1 = out[i + 1, j0:j1]
            for k in range(n):
                v = gyw[k]
                r0[k] += g0 * v
                r1[k] += g1 * v
            i += 2
        if i < i1:
            g = gx[i - i0 + oi]
            row = out[i, j0:j1]
            for k in range(n):
                row[k] += g * gyw[k]


@numba.njit(cache=True, nogil=True, fastmath=True)
def splat_gaussians_varying(xy, weights, sigmas, x0, y0, dx, cutoff_sigmas, out, gx, gy):  # pragma: no cover
    """:func:`splat_gaussians` with one PSF width per atom (``sigmas``, shape (n_atoms,), Å): the depth blur.

    Each atom is evaluated on its own ±(⌈cutoff_sigmas·σᵢ/dx⌉ + 1)-pixel
    window (:func:`atom_window`); ``gx``, ``gy`` must hold the widest window
    (:func:`scratch_rows` of the largest σᵢ). Overwrites ``out``.
    """
    nx, ny = out.shape
    out[:, :] = 0.0
    for a in range(xy.shape[0]):
        sigma = sigmas[a]
        half = int(np.ceil(cutoff_sigmas * sigma / dx)) + 1
        fi, fj, ci, cj, i0, i1, j0, j1 = atom_window(xy[a, 0], xy[a, 1], x0, y0, dx, half, nx, ny)
        if i0 >= i1 or j0 >= j1:
            continue
        inv2s2 = 1.0 / (2.0 * sigma * sigma)
        wa = weights[a] / (2.0 * np.pi * sigma * sigma)
        for i in range(i0, i1):
            d = (i - fi) * dx
            gx[i - i0] = wa * np.exp(-d * d * inv2s2)
        for j in range(j0, j1):
            d = (j - fj) * dx
            gy[j - j0] = np.exp(-d * d * inv2s2)
        n = j1 - j0
        for i in range(i0, i1):
            g = gx[i - i0]
            row = out[i, j0:j1]
            for k in range(n):
                row[k] += g * gy[k]
