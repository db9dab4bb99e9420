"""Input-pixel-grid polynomial features (Combs et al. 2019, Eq. 5-8).

For the output pixel ``(m, n)`` the input pixel grid is the s×s block of the
convolution image centred on it; its pixels are re-indexed row-major (Eq. 6)

    x_r = image[m + r // s − h, n + r % s − h],   r = 0 … s²−1,   h = (s−1)/2

so the centre pixel is ``r = c = (s²−1)/2``. With the log term, one more
variable ``x_p = log(max(x_c, log_floor))`` follows (index ``p = s²``); the
floor keeps background pixels (≈1e-19, sometimes slightly negative in the
published convolution images) finite.

Terms
-----
Every term is a monomial of these V = s² (+1) variables, written as the sorted
tuple of its variable indices (its *index tuple*: ``(3, 3)`` is x_3², ``(0, 26)``
is x_0·x_p). A model of degree d has

* the constant term ``()``;
* without interactions, the pure powers ``(v,)*k`` for k = 1 … d (Eq. 7, first
  two sums): 1 + d·V terms;
* with interactions, every monomial of degree ≤ d (Eq. 7 plus Eq. 8, whose
  ``b_i ≤ k−1`` only excludes the pure powers already counted): C(V+d, d) terms.

Terms are stored in *pre-order* (lexicographic on index tuples), so the parent
of every term (its tuple minus the last index) comes before it. Feature values
are then built with one multiplication per term, and prediction evaluates the
polynomial as a nested Horner scheme over that tree — one fused multiply-add per
term and pixel, with no feature matrix.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numba
import numpy as np

from surrogate.common import InputError

__all__ = [
    "n_terms",
    "term_tuples",
    "term_powers",
    "term_names",
    "validate_hyperparameters",
    "features",
    "border",
]


def validate_hyperparameters(size, degree, log_term, interactions) -> tuple[int, int, bool, bool]:
    """Check (s, d, log, interactions) and return them normalized.

    Raises :class:`InputError` for an even or non-positive ``size`` or a degree < 1.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise InputError(f"input pixel grid side s must be an odd integer >= 1, got {size!r}")
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise InputError(f"polynomial degree must be an integer >= 1, got {degree!r}")
    return int(size), int(degree), bool(log_term), bool(interactions)


def border(size: int) -> int:
    """Pixels lost on each side of a predicted image: (s − 1) / 2."""
    return (int(size) - 1) // 2


def n_terms(size: int, degree: int, log_term: bool = True, interactions: bool = True) -> int:
    """Number of terms of the polynomial, constant included.

    >>> n_terms(1, 1, False, False), n_terms(5, 2, True, True), n_terms(5, 3, True, True)
    (2, 378, 3654)
    """
    size, degree, log_term, interactions = validate_hyperparameters(size, degree, log_term, interactions)
    v = size * size + int(log_term)
    return comb(v + degree, degree) if interactions else 1 + degree * v


@lru_cache(maxsize=64)
def term_tuples(size: int, degree: int, log_term: bool = True, interactions: bool = True) -> tuple[tuple[int, ...], ...]:
    """Index tuples of all terms, in pre-order (see module docstring)."""
    size, degree, log_term, interactions = validate_hyperparameters(size, degree, log_term, interactions)
    v = size * size + int(log_term)
    out: list[tuple[int, ...]] = []

    def visit(prefix: tuple[int, ...]):
        out.append(prefix)
        if len(prefix) == degree:
            return
        first = prefix[-1] if prefix else 0
        if interactions or not prefix:
            for j in range(first, v):
                visit(prefix + (j,))
        else:  # pure powers only: the one child repeats the variable
            visit(prefix + (prefix[-1],))

    visit(())
    return tuple(out)


def term_powers(size: int, degree: int, log_term: bool = True, interactions: bool = True) -> np.ndarray:
    """Exponent matrix, shape ``(n_terms, V)``: ``powers[t, v]`` is the power of variable v in term t."""
    tuples = term_tuples(size, degree, log_term, interactions)
    v = size * size + int(log_term)
    powers = np.zeros((len(tuples), v), dtype=np.int16)
    for t, tup in enumerate(tuples):
        for j in tup:
            powers[t, j] += 1
    return powers


def term_names(size: int, degree: int, log_term: bool = True, interactions: bool = True) -> list[str]:
    """Readable names: ``1``, ``x12``, ``x12^2``, ``x0*log``…  (``log`` is x_p)."""
    p = size * size
    names = []
    for tup in term_tuples(size, degree, log_term, interactions):
        if not tup:
            names.append("1")
            continue
        parts = []
        for j in sorted(set(tup)):
            base = "log" if j == p else f"x{j}"
            k = tup.count(j)
            parts.append(base if k == 1 else f"{base}^{k}")
        names.append("*".join(parts))
    return names


@lru_cache(maxsize=64)
def term_tree(size: int, degree: int, log_term: bool, interactions: bool):
    """Arrays describing the pre-order term tree for the Numba kernels.

    Returns ``parent`` (n_terms,) int64 (−1 for the constant), ``last`` (n_terms,)
    int64 (variable multiplied in; −1 for the constant), ``depth`` (n_terms,),
    and ``offsets`` (s², 2) int64 (di, dj) of each pixel variable.
    """
    tuples = term_tuples(size, degree, log_term, interactions)
    index = {tup: t for t, tup in enumerate(tuples)}
    parent = np.array([index[tup[:-1]] if tup else -1 for tup in tuples], dtype=np.int64)
    last = np.array([tup[-1] if tup else -1 for tup in tuples], dtype=np.int64)
    depth = np.array([len(tup) for tup in tuples], dtype=np.int64)
    h = border(size)
    r = np.arange(size * size)
    offsets = np.stack([r // size - h, r % size - h], axis=1).astype(np.int64)
    for a in (parent, last, depth, offsets):
        a.setflags(write=False)
    return parent, last, depth, offsets


def as_image(image, name: str = "convolution image") -> np.ndarray:
    """Validate a 2-D finite image and return it as C-contiguous float64."""
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-D array, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has {int(np.count_nonzero(~np.isfinite(a)))} NaN or infinite pixels")
    return a


def features(image, size: int = 5, degree: int = 2, log_term: bool = True, interactions: bool = True,
             log_floor: float = 1e-12) -> np.ndarray:
    """Feature matrix of the interior pixels of a convolution image.

    Parameters
    ----------
    image : array_like, shape (M, N)
        Convolution image.
    size, degree, log_term, interactions
        Input pixel grid side s (odd), polynomial degree d, log term, interaction terms.
    log_floor : float
        x_p = log(max(x_c, log_floor)); must be > 0.

    Returns
    -------
    ndarray, shape ((M − 2h)·(N − 2h), n_terms)
        Row ``a·(N−2h) + b`` holds the terms of output pixel ``(h + a, h + b)``
        (row-major over the cropped image), columns in :func:`term_tuples` order.
    """
    size, degree, log_term, interactions = validate_hyperparameters(size, degree, log_term, interactions)
    img = as_image(image)
    h = border(size)
    if img.shape[0] <= 2 * h or img.shape[1] <= 2 * h:
        raise InputError(f"image of shape {img.shape} is too small for an input pixel grid of side {size}")
    if not log_floor > 0:
        raise InputError(f"log floor must be positive, got {log_floor!r}")
    parent, last, _, offsets = term_tree(size, degree, log_term, interactions)
    rows = img.shape[0] - 2 * h
    out = np.empty((rows * (img.shape[1] - 2 * h), len(parent)), dtype=np.float64)
    features_rows(img, h, 0, rows, offsets, log_term, float(log_floor), parent, last, out)
    return out


@numba.njit(cache=True, nogil=True)
def features_rows(img, h, row0, row1, offsets, log_term, log_floor, parent, last, out):  # pragma: no cover
    # Output rows row0..row1 of the cropped image, written to out[0:(row1-row0)*ncols].
    ncols = img.shape[1] - 2 * h
    p = offsets.shape[0]
    nv = p + (1 if log_term else 0)
    x = np.empty(nv)
    k = 0
    for a in range(row0, row1):
        m = a + h
        for b in range(ncols):
            n = b + h
            for r in range(p):
                x[r] = img[m + offsets[r, 0], n + offsets[r, 1]]
            if log_term:
                x[p] = np.log(max(img[m, n], log_floor))
            out[k, 0] = 1.0
            for t in range(1, parent.shape[0]):
                out[k, t] = out[k, parent[t]] * x[last[t]]
            k += 1
