"""The fitted polynomial surrogate (Combs et al. 2019) as a scikit-learn style estimator.

Fitting solves the least-squares normal equations accumulated chunk by chunk
(no full feature matrix): features are standardized (mean μ, standard
deviation σ from a first pass that also records each term's training range),
the Gram matrix ZᵀZ is accumulated with BLAS, and the system is solved by
Cholesky (optional ridge penalty on the standardized coefficients), falling
back to a minimum-norm least-squares solve when the Gram matrix is singular.

Input saturation (optional, not in the paper): with ``saturation=F`` every
convolution pixel x enters the polynomial as t(x) = x₀·ln(1 + x/x₀), with
x₀ = F × the largest training convolution pixel. A thick column's HAADF
intensity saturates with its height (channelling) while its convolution
value keeps growing linearly; t grows linearly for x ≪ x₀ and only
logarithmically above, so the polynomial can follow the saturation, and a
column taller than any in the training set is extrapolated gently instead of
by a parabola that bends over (docs/benchmarks.md, session 24).

Border handling: a pixel needs its full s×s input pixel grid, so, as in the
paper, ``predict`` returns the convolution image cropped by h = (s−1)/2 pixels
on every side, and ``fit`` pairs each cropped convolution interior with the
same interior of the multislice image. To get a surrogate image on a given
probe grid, make the convolution image on ``grid.padded(h)`` —
:meth:`PolynomialSurrogate.simulate` does that.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator

from surrogate.common import InputError, NotFittedError, atomic_path
from surrogate.imaging.convolution import ConvolutionParameters, convolution_image
from surrogate.imaging.discrepancy import ModelDiscrepancy
from surrogate.imaging.features import (
    as_image,
    border,
    features_rows,
    n_terms,
    term_powers,
    term_tree,
    validate_hyperparameters,
)
from surrogate.imaging.kernels import horner_program, predict_rows
from surrogate.imaging.grid import ProbeGrid

__all__ = ["PolynomialSurrogate", "save_model", "load_model", "MODEL_FORMAT", "MODEL_VERSION"]

log = logging.getLogger(__name__)

MODEL_FORMAT = "stem-refine-surrogate"
MODEL_VERSION = 1
#: pixels per feature chunk while fitting (~30 MiB of features for 378 terms)
_FIT_CHUNK_PIXELS = 10_000
#: relative log floor used by ``log_floor="auto"``: this fraction of the
#: largest training convolution pixel.
AUTO_LOG_FLOOR = 1e-3


def _check_pairs(convolution_images, multislice_images, size):
    if isinstance(convolution_images, np.ndarray) and convolution_images.ndim == 2:
        convolution_images = [convolution_images]
    if isinstance(multislice_images, np.ndarray) and multislice_images.ndim == 2:
        multislice_images = [multislice_images]
    conv = list(convolution_images)
    ms = list(multislice_images)
    if not conv:
        raise InputError("no training images given")
    if len(conv) != len(ms):
        raise InputError(f"{len(conv)} convolution images but {len(ms)} multislice images")
    h = border(size)
    out_c, out_m = [], []
    for k, (c, m) in enumerate(zip(conv, ms)):
        c = as_image(c, f"convolution image {k}")
        m = as_image(m, f"multislice image {k}")
        if c.shape != m.shape:
            raise InputError(f"image pair {k}: convolution shape {c.shape} != multislice shape {m.shape}")
        if min(c.shape) <= 2 * h:
            raise InputError(f"image pair {k} of shape {c.shape} is too small for an input pixel grid of side {size}")
        out_c.append(c)
        out_m.append(m)
    return out_c, out_m


class PolynomialSurrogate(BaseEstimator):
    """Multivariate polynomial correction of convolution images (paper Eq. 5-8).

    Parameters
    ----------
    size : int
        Input pixel grid side s (odd ≥ 1).
    degree : int
        Polynomial degree d ≥ 1.
    log_term : bool
        Include x_p = log(max(x_c, log_floor)) as a variable.
    interactions : bool
        Include all cross terms (complete homogeneous symmetric polynomials).
    log_floor : float or "auto"
        Floor of the log term in convolution-image units; ``"auto"`` uses
        1e-3 × the largest training convolution pixel.
    ridge : float
        Ridge penalty on the standardized coefficients (0: ordinary least squares).
    convolution : ConvolutionParameters or None
        How the convolution images were made (σ, n, κ, pixel size); used by
        :meth:`simulate` and recorded in the model file. None: the paper's.
    saturation : float or None
        None (the paper's polynomial of the convolution image) or F > 0: each
        input pixel x enters as x₀·ln(1 + x/x₀) with x₀ = F × the largest
        training convolution pixel (see the module docstring).

    Attributes
    ----------
    coef_ : ndarray, shape (n_terms,)
        Coefficients of the terms in :func:`surrogate.imaging.features.term_tuples`
        order; ``coef_[0]`` is the constant a_0.
    powers_ : ndarray, shape (n_terms, V)
        Exponent of each variable in each term.
    log_floor_ : float
    feature_min_, feature_max_ : ndarray, shape (n_terms,)
        Range of each term over the training pixels.
    input_range_ : (float, float)
        Range of the training convolution pixels (before any saturation).
    saturation_scale_ : float or None
        x₀ of the input saturation in convolution-image units; None without it.
    n_pixels_, n_images_ : int
    elements_ : tuple of str
        Elements of the training structures (empty when unknown).
    provenance_ : dict
    discrepancy_ : ModelDiscrepancy or None
        The model's own error against multislice (σ vs intensity, correlation
        area), calibrated from cross-validation residuals by
        :func:`surrogate.training.calibrate_discrepancy` after the fit; None
        until then. The refinement adds it to the noise (:mod:`refine.cost.noise`).
    """

    def __init__(self, *, size=5, degree=2, log_term=True, interactions=True, log_floor="auto", ridge=0.0,
                 convolution=None, saturation=None):
        self.size = size
        self.degree = degree
        self.log_term = log_term
        self.interactions = interactions
        self.log_floor = log_floor
        self.ridge = ridge
        self.convolution = convolution
        self.saturation = saturation

    @property
    def border(self) -> int:
        """Pixels cropped on each side of a prediction: (s − 1) / 2."""
        return border(self.size)

    @property
    def n_terms(self) -> int:
        return n_terms(self.size, self.degree, self.log_term, self.interactions)

    def _hyper(self):
        return validate_hyperparameters(self.size, self.degree, self.log_term, self.interactions)

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise NotFittedError("this PolynomialSurrogate is not fitted yet; call fit() or load a model file")

    @property
    def convolution_parameters(self) -> ConvolutionParameters:
        return self.convolution if self.convolution is not None else ConvolutionParameters()

    # -- fitting --------------------------------------------------------------
    def fit(self, convolution_images, multislice_images, *, sample_weight=None, elements=(), provenance=None):
        """Fit the coefficients to pairs of convolution and multislice images.

        Parameters
        ----------
        convolution_images, multislice_images : sequence of 2-D arrays
            Pair k has one shape (any shapes across pairs). The (s−1)/2 border
            of each pair is not a training target (see module docstring).
        sample_weight : sequence of 2-D arrays, optional
            Non-negative weight of each pixel as a training target, one array
            per pair with that pair's shape (cross-validation passes 0/1 masks;
            input pixel grids may still read pixels of weight 0).
        elements : sequence of str
            Elements present in the training structures, when known.
        provenance : dict, optional
            Where the training data came from; saved in the model file.

        Returns
        -------
        self
        """
        size, degree, log_term, interactions = self._hyper()
        if not (np.isscalar(self.ridge) and np.isfinite(self.ridge) and self.ridge >= 0):
            raise InputError(f"ridge must be a non-negative number, got {self.ridge!r}")
        conv, ms = _check_pairs(convolution_images, multislice_images, size)
        h = border(size)
        weights = _check_weights(sample_weight, conv, h)
        input_range = (min(float(c.min()) for c in conv), max(float(c.max()) for c in conv))
        self.saturation_scale_ = _saturation_scale(self.saturation, input_range[1])
        conv = [self.transform_input(c) for c in conv]
        log_floor = self._training_log_floor(conv)
        parent, last, _, offsets = term_tree(size, degree, log_term, interactions)
        nt = len(parent)

        def chunks():
            return _feature_chunks(conv, ms, weights, h, nt, (offsets, log_term, log_floor, parent, last))

        n, wtot, fmin, fmax, mu, scale, ymean = _term_statistics(chunks(), nt)
        gram, rhs = _standardized_gram(chunks(), mu, scale, ymean, nt)
        if self.ridge > 0:
            gram[np.diag_indices_from(gram)] += self.ridge
        beta = _solve_normal_equations(gram, rhs)
        coef = np.empty(nt)
        coef[1:] = beta / scale[1:]
        coef[0] = ymean - coef[1:] @ mu[1:]

        self.coef_ = coef
        self.powers_ = term_powers(size, degree, log_term, interactions)
        self.log_floor_ = log_floor
        self.feature_min_ = fmin
        self.feature_max_ = fmax
        self.input_range_ = input_range
        self.n_pixels_ = int(n)
        self.n_images_ = len(conv)
        self.elements_ = tuple(sorted(set(elements)))
        self.provenance_ = dict(provenance or {})
        self.discrepancy_ = None  # a new fit invalidates an earlier calibration
        self._compile()
        return self

    def transform_input(self, convolution_image: np.ndarray) -> np.ndarray:
        """The convolution image as the polynomial reads it: t(x) = x₀·ln(1 + x/x₀), or x itself without
        saturation (returned unchanged, not copied). Below 0 (round-off in vacuum) t(x) = x, the
        continuation with the same slope, so that t is smooth where vacuum pixels cross 0."""
        x0 = getattr(self, "saturation_scale_", None)
        if x0 is None:
            return convolution_image
        out = np.maximum(convolution_image, 0.0)
        out *= 1.0 / x0
        np.log1p(out, out=out)
        out *= x0
        np.minimum(out, convolution_image, out=out, where=convolution_image < 0)
        return out

    def transform_derivative(self, convolution_image: np.ndarray) -> np.ndarray | None:
        """dt/dx of :meth:`transform_input` at each pixel, or None without saturation (dt/dx = 1)."""
        x0 = getattr(self, "saturation_scale_", None)
        if x0 is None:
            return None
        return 1.0 / (1.0 + np.maximum(convolution_image, 0.0) / x0)

    def _training_log_floor(self, conv) -> float:
        """The log term's floor for training images ``conv`` (``"auto"``: a fraction of their top pixel)."""
        if self.log_floor == "auto":
            top = max(float(c.max()) for c in conv)
            if not top > 0:
                raise InputError("training convolution images have no positive pixel")
            return AUTO_LOG_FLOOR * top
        log_floor = float(self.log_floor)
        if not (np.isfinite(log_floor) and log_floor > 0):
            raise InputError(f"log floor must be a positive number or 'auto', got {self.log_floor!r}")
        return log_floor

    def _compile(self):
        # Gather coefficients into the Horner program once per fit/load.
        node_term, node_depth, node_last, leaf_start, leaf_end, leaf_term, leaf_var = horner_program(
            *self._hyper())
        self._program = (self.coef_[node_term].copy(), node_depth, node_last, leaf_start, leaf_end,
                         self.coef_[leaf_term].copy(), leaf_var)
        # Value of the polynomial where every input pixel is exactly 0 (vacuum).
        x0 = np.zeros(self.powers_.shape[1])
        if self.log_term:
            x0[-1] = np.log(self.log_floor_)
        with np.errstate(all="ignore"):
            terms = np.prod(np.where(self.powers_ > 0, x0 ** self.powers_, 1.0), axis=1)
        self._background = float(self.coef_ @ terms)
        # Fast path: a kernel generated for this structure (see surrogate.imaging.kernels),
        # for models of at most UNROLL_MAX_TERMS terms and a normal positive log floor.
        from surrogate.imaging.kernels import _MIN_NORMAL, floor_bits, unrolled_kernel

        hyper = self._hyper()
        fast = unrolled_kernel(*hyper) is not None and (not self.log_term or self.log_floor_ >= _MIN_NORMAL)
        self._unrolled = (hyper, np.array(self.coef_, dtype=np.float64),
                          floor_bits(self.log_floor_ if self.log_term else 1.0)) if fast else None

    # -- prediction -----------------------------------------------------------
    def predict(self, convolution_image) -> np.ndarray:
        """Surrogate image of a convolution image.

        Parameters
        ----------
        convolution_image : array_like, shape (M, N)

        Returns
        -------
        ndarray, shape (M − 2h, N − 2h), h = (s − 1)/2
            Predicted multislice intensity of the interior pixels.
        """
        self._check_fitted()
        img = as_image(convolution_image)
        h = self.border
        if min(img.shape) <= 2 * h:
            raise InputError(f"image of shape {img.shape} is too small for an input pixel grid of side {self.size}")
        out = np.empty((img.shape[0] - 2 * h, img.shape[1] - 2 * h))
        return self.predict_into(img, out)

    def predict_into(self, convolution_image: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Hot-path :meth:`predict`: no validation, writes into ``out``.

        ``convolution_image`` must be C-contiguous float64 of shape
        ``(out.shape[0] + 2h, out.shape[1] + 2h)``.
        """
        convolution_image = self.transform_input(convolution_image)
        if (getattr(self, "_unrolled", None) is not None and convolution_image.flags.c_contiguous
                and convolution_image.dtype == np.float64):
            from surrogate.imaging.kernels import unrolled_kernel

            hyper, coef, bits = self._unrolled
            unrolled_kernel(*hyper)(convolution_image, coef, bits, self._background, out)
            return out
        node_coef, node_depth, node_last, leaf_start, leaf_end, leaf_coef, leaf_var = self._program
        predict_rows(convolution_image, self.border, term_tree(*self._hyper())[3], bool(self.log_term),
                      self.log_floor_, int(self.degree), self._background, node_coef, node_depth, node_last,
                      leaf_start, leaf_end, leaf_coef, leaf_var, out)
        return out

    def simulate(self, atoms, grid: ProbeGrid | None = None) -> np.ndarray:
        """Surrogate HAADF image of a structure on ``grid`` (default: around the atoms).

        The convolution image is made on ``grid.padded(h)`` with this model's
        convolution parameters, so the returned array has ``grid.shape``.
        """
        self._check_fitted()
        params = self.convolution_parameters
        if grid is None:
            grid = ProbeGrid.around(atoms, pixel_size=params.pixel_size)
        if abs(grid.pixel_size - params.pixel_size) > 1e-9 * params.pixel_size:
            raise InputError(f"grid pixel size {grid.pixel_size} Å differs from the model's {params.pixel_size} Å")
        self.check_elements(atoms.get_chemical_symbols())
        conv = convolution_image(atoms, grid.padded(self.border), params)
        return self.predict_into(conv, np.empty(grid.shape))

    def check_elements(self, symbols):
        """Raise :class:`InputError` if a symbol is not among the training elements (when known)."""
        self._check_fitted()
        if not self.elements_:
            return
        unknown = sorted(set(symbols) - set(self.elements_))
        if unknown:
            raise InputError(f"element(s) {', '.join(unknown)} not in the model's training set "
                             f"({', '.join(self.elements_)})")

    def score(self, convolution_images, multislice_images) -> float:
        """Coefficient of determination R² pooled over the interior pixels of all pairs."""
        from surrogate.training import pooled_metrics

        self._check_fitted()
        conv, ms = _check_pairs(convolution_images, multislice_images, self.size)
        h = self.border
        pred = [self.predict(c).ravel() for c in conv]
        true = [m[h: m.shape[0] - h, h: m.shape[1] - h].ravel() for m in ms]
        return 1.0 - pooled_metrics(np.concatenate(true), np.concatenate(pred))["one_minus_r2"]

    def out_of_domain_fraction(self, convolution_image) -> float:
        """Fraction of pixels whose convolution value lies outside ``input_range_``."""
        self._check_fitted()
        img = np.asarray(convolution_image)
        lo, hi = self.input_range_
        span = hi - lo
        return float(np.mean((img < lo - 1e-9 * span) | (img > hi + 1e-9 * span)))


def _saturation_scale(saturation, top: float) -> float | None:
    """x₀ of the input saturation: ``saturation`` × the largest training convolution pixel ``top``."""
    if saturation is None:
        return None
    if isinstance(saturation, bool) or not isinstance(saturation, (int, float, np.integer, np.floating)) or not (
            np.isfinite(saturation) and saturation > 0):
        raise InputError(f"input saturation must be a positive number or None, got {saturation!r}")
    if not top > 0:
        raise InputError("training convolution images have no positive pixel")
    return float(saturation) * float(top)


def _check_weights(sample_weight, conv, h):
    if sample_weight is None:
        return [None] * len(conv)
    if isinstance(sample_weight, np.ndarray) and sample_weight.ndim == 2:
        sample_weight = [sample_weight]
    weights = list(sample_weight)
    if len(weights) != len(conv):
        raise InputError(f"{len(weights)} sample-weight arrays for {len(conv)} image pairs")
    out = []
    for k, (w, c) in enumerate(zip(weights, conv)):
        w = np.asarray(w, dtype=np.float64)
        if w.shape != c.shape:
            raise InputError(f"sample weight {k} has shape {w.shape}, image pair has {c.shape}")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise InputError(f"sample weight {k} must be finite and non-negative")
        out.append(w)
    return out


def _feature_chunks(conv, ms, weights, h, nt, feature_args):
    """Yield ``(features, targets, weights)`` of the training pixels, ~_FIT_CHUNK_PIXELS rows at a time.

    ``features`` has shape (k, nt) (one buffer reused between chunks), ``targets`` and ``weights`` shape
    (k,); pixels of weight 0 are dropped; ``weights`` is None for unweighted pairs.
    """
    offsets, log_term, log_floor, parent, last = feature_args
    buf = None
    for c, m, w in zip(conv, ms, weights):
        rows, cols = c.shape[0] - 2 * h, c.shape[1] - 2 * h
        step = max(1, _FIT_CHUNK_PIXELS // cols)
        if buf is None or buf.shape[0] < step * cols:
            buf = np.empty((step * cols, nt))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            wk = None if w is None else w[h + r0: h + r1, h: h + cols].ravel()
            if wk is not None and not wk.any():
                continue
            f = buf[: (r1 - r0) * cols]
            features_rows(c, h, r0, r1, offsets, log_term, log_floor, parent, last, f)
            y = m[h + r0: h + r1, h: h + cols].ravel()
            if wk is not None:
                keep = wk > 0
                if not keep.all():
                    f, y, wk = f[keep], y[keep], wk[keep]
            yield f, y, wk


def _term_statistics(chunks, nt):
    """Pass 1 of the fit: term ranges, (weighted) means and scales.

    Returns ``(n_pixels, total_weight, term_min, term_max, mean, scale, target_mean)``; a constant term
    (the a_0 term, or one that never varies) gets scale 1.
    """
    n = 0
    wtot = 0.0
    fsum = np.zeros(nt)
    fsq = np.zeros(nt)
    fmin = np.full(nt, np.inf)
    fmax = np.full(nt, -np.inf)
    ysum = 0.0
    for f, y, w in chunks:
        n += len(y)
        np.minimum(fmin, f.min(axis=0), out=fmin)
        np.maximum(fmax, f.max(axis=0), out=fmax)
        if w is None:
            wtot += len(y)
            fsum += f.sum(axis=0)
            fsq += np.einsum("ij,ij->j", f, f)
            ysum += y.sum()
        else:
            wtot += w.sum()
            fsum += w @ f
            fsq += w @ (f * f)
            ysum += w @ y
    if n == 0 or wtot <= 0:
        raise InputError("no training pixels: every sample weight is zero")
    if n <= nt:
        log.warning("only %d training pixels for %d terms: the fit is under-determined", n, nt)
    mu = fsum / wtot
    var = np.maximum(fsq / wtot - mu * mu, 0.0)
    scale = np.sqrt(var)
    # A constant column (the a_0 term, or a term that never varies) is left unscaled.
    scale[scale <= 1e-12 * np.maximum(np.abs(mu), 1e-300)] = 1.0
    return n, wtot, fmin, fmax, mu, scale, ysum / wtot


def _standardized_gram(chunks, mu, scale, ymean, nt):
    """Pass 2 of the fit: Gram matrix ZᵀZ and ZᵀY of the standardized, centred non-constant terms."""
    gram = np.zeros((nt - 1, nt - 1))
    rhs = np.zeros(nt - 1)
    for f, y, w in chunks:
        z = f[:, 1:]
        z -= mu[1:]
        z /= scale[1:]
        yc = y - ymean
        if w is not None:
            sw = np.sqrt(w)
            z *= sw[:, None]
            yc *= sw
        gram += z.T @ z
        rhs += z.T @ yc
    return gram, rhs


def _solve_normal_equations(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        cho = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
        beta = scipy.linalg.cho_solve(cho, rhs, check_finite=False)
        if np.all(np.isfinite(beta)):
            return beta
    except np.linalg.LinAlgError:
        pass
    # Expected for smooth images: neighbouring pixels are nearly collinear, so the
    # Gram matrix is singular to working precision. Use the minimum-norm solution.
    log.info("normal equations are singular to working precision; using the minimum-norm solution")
    return scipy.linalg.lstsq(gram, rhs, cond=1e-13, check_finite=False)[0]


# --------------------------------------------------------------------------- #
# Model files: an .npz of plain arrays plus a JSON header; never pickle.
# --------------------------------------------------------------------------- #

def save_model(model: PolynomialSurrogate, path) -> Path:
    """Write a fitted model to ``path`` (``.npz``) atomically.

    File layout (format ``stem-refine-surrogate``, version 1): arrays ``coef``
    (n_terms,), ``powers`` (n_terms, V) int16, ``feature_min``/``feature_max``
    (n_terms,), and ``header``, the UTF-8 bytes of a JSON object with the
    hyper-parameters, log floor, convolution parameters (σ Å, n, κ Å², pixel
    size Å, weights), training elements, input range, pixel/image counts,
    provenance and creation time. Loaded with ``allow_pickle=False``.
    """
    model._check_fitted()
    header = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "hyperparameters": {"size": int(model.size), "degree": int(model.degree),
                            "log_term": bool(model.log_term), "interactions": bool(model.interactions),
                            "ridge": float(model.ridge),
                            "saturation": (None if getattr(model, "saturation", None) is None
                                           else float(model.saturation))},
        "log_floor": model.log_floor_,
        "saturation_scale": getattr(model, "saturation_scale_", None),
        "convolution": model.convolution_parameters.to_dict(),
        "elements": list(model.elements_),
        "input_range": list(model.input_range_),
        "n_pixels": model.n_pixels_,
        "n_images": model.n_images_,
        "n_terms": int(len(model.coef_)),
        "provenance": model.provenance_,
        "discrepancy": (model.discrepancy_.to_dict() if getattr(model, "discrepancy_", None) is not None
                        else None),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, coef=model.coef_, powers=model.powers_, feature_min=model.feature_min_,
                 feature_max=model.feature_max_,
                 header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    return path


def load_model(path) -> PolynomialSurrogate:
    """Read a model file written by :func:`save_model`; never executes code.

    Raises :class:`InputError` for a missing, corrupt or inconsistent file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("coef", "powers", "feature_min", "feature_max", "header")}
        header = json.loads(arrays["header"].tobytes().decode())
    except (OSError, ValueError, KeyError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path} is not a readable stem-refine model file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise InputError(f"{path} is not a readable stem-refine model file ({type(exc).__name__})") from None
    if header.get("format") != MODEL_FORMAT:
        raise InputError(f"{path} is not a stem-refine model file (format {header.get('format')!r})")
    if header.get("version") != MODEL_VERSION:
        raise InputError(f"{path} has model format version {header.get('version')!r}; "
                         f"this stem-refine reads version {MODEL_VERSION}")
    try:
        hp = header["hyperparameters"]
        model = PolynomialSurrogate(size=hp["size"], degree=hp["degree"], log_term=hp["log_term"],
                                    interactions=hp["interactions"], log_floor=header["log_floor"],
                                    ridge=hp.get("ridge", 0.0), saturation=hp.get("saturation"),
                                    convolution=ConvolutionParameters.from_dict(header["convolution"]))
        size, degree, log_term, interactions = model._hyper()
        expected = term_powers(size, degree, log_term, interactions)
        coef = np.asarray(arrays["coef"], dtype=np.float64)
        if arrays["powers"].shape != expected.shape or not np.array_equal(arrays["powers"], expected):
            raise InputError(f"{path}: term table does not match its hyper-parameters")
        if coef.shape != (len(expected),) or not np.all(np.isfinite(coef)):
            raise InputError(f"{path}: coefficients are missing, mis-sized or not finite")
        model.coef_ = coef
        model.powers_ = expected
        model.log_floor_ = float(header["log_floor"])
        # files from before the input saturation existed have none
        scale = header.get("saturation_scale")
        model.saturation_scale_ = None if scale is None else float(scale)
        if (model.saturation is None) != (model.saturation_scale_ is None) or not (
                model.saturation_scale_ is None or (np.isfinite(model.saturation_scale_)
                                                    and model.saturation_scale_ > 0)):
            raise InputError(f"{path}: input saturation {model.saturation!r} does not match its scale "
                             f"{model.saturation_scale_!r}")
        model.feature_min_ = np.asarray(arrays["feature_min"], dtype=np.float64)
        model.feature_max_ = np.asarray(arrays["feature_max"], dtype=np.float64)
        model.input_range_ = tuple(float(v) for v in header["input_range"])
        model.n_pixels_ = int(header["n_pixels"])
        model.n_images_ = int(header["n_images"])
        model.elements_ = tuple(header.get("elements", ()))
        model.provenance_ = dict(header.get("provenance", {}))
        # files from before the calibration existed have none
        model.discrepancy_ = (ModelDiscrepancy.from_dict(header["discrepancy"]) if header.get("discrepancy")
                              else None)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: model header is missing {exc}") from None
    model._compile()
    return model
