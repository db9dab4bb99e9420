"""Cross-validation and error metrics (Combs et al. 2019, "Model assessment", Eq. 4).

Metrics are computed *once* over the held-out pixels of all folds (and all
repeats) pooled, as the paper does: with two repeats of two-fold CV every
pixel is a target twice.

* ``one_minus_r2`` = Σ(y_pred − y)² / Σ(y − ȳ)²  (ȳ over the pooled target set)
* ``frms``         = E_RMS / σ_actual (Eq. 4), i.e. √(1 − R²) for one pooled set.

Subset schemes (``scheme``):

* ``"image"``: whole images are assigned to folds;
* ``"block"``: b×b blocks of pixels (b = 7 by default) aligned to the
  predicted (cropped) pixel grid are assigned to folds at random;
* ``"pixel"``: single pixels are assigned at random.

For block and pixel schemes, held-out pixels get weight 0 in the fit; their
neighbours' input pixel grids may still read them (the convolution image is
an input, not a target). ``leave_out`` (a count or fraction of images, image
scheme only) replaces k-fold by ``repeats`` random splits that hold out that
many images: the paper's leave-out-X training-set-size study.

The image scheme also scores each image on its own (``per_image``: its
held-out pixels over all repeats, 1 − R² against its own mean), so that a
kind of particle the model renders badly (e.g. tall column rods) shows
instead of being averaged away in the pooled number.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from surrogate.common import InputError
from surrogate.imaging import border, n_terms

__all__ = ["pooled_metrics", "cross_validate", "CVResult", "sweep", "SCHEMES"]

log = logging.getLogger(__name__)

SCHEMES = ("image", "block", "pixel")


def pooled_metrics(y_true, y_pred) -> dict:
    """1 − R², fractional RMS error (Eq. 4), RMS error and pixel count of one pooled target set."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise InputError(f"{y_true.size} target pixels but {y_pred.size} predictions")
    if y_true.size == 0:
        raise InputError("no pixels to score")
    ss_res = float(np.sum((y_pred - y_true) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    n = y_true.size
    rmse = np.sqrt(ss_res / n)
    sigma = np.sqrt(ss_tot / n)
    return {
        "one_minus_r2": ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "frms": rmse / sigma if sigma > 0 else float("nan"),
        "rmse": float(rmse),
        "n_pixels": int(n),
    }


@dataclass
class CVResult:
    """Pooled CV metrics plus one row per (repeat, fold)."""

    one_minus_r2: float
    frms: float
    rmse: float
    n_pixels: int
    n_terms: int
    scheme: str
    folds: int
    repeats: int
    per_fold: list = field(default_factory=list)
    per_image: list = field(default_factory=list)
    targets: np.ndarray | None = field(default=None, repr=False)
    predictions: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in
                ("one_minus_r2", "frms", "rmse", "n_pixels", "n_terms", "scheme", "folds", "repeats", "per_fold",
                 "per_image")}


def _interior(a: np.ndarray, h: int) -> np.ndarray:
    return a[h: a.shape[0] - h, h: a.shape[1] - h]


def _splits(n_images, shapes, h, scheme, folds, repeats, leave_out, block, rng):
    """Yield (repeat, fold, train_weights | train_images, test_masks) for each split."""
    if scheme == "image":
        if leave_out is not None:
            k = int(round(leave_out * n_images)) if 0 < leave_out < 1 else int(leave_out)
            if not 1 <= k < n_images:
                raise InputError(f"leave-out must hold out between 1 and {n_images - 1} images, got {leave_out!r}")
            for r in range(repeats):
                test = rng.permutation(n_images)[:k]
                yield r, 0, test
            return
        if not 2 <= folds <= n_images:
            raise InputError(f"image-based CV needs 2 <= folds <= number of images ({n_images}), got {folds}")
        for r in range(repeats):
            order = rng.permutation(n_images)
            for f in range(folds):
                yield r, f, np.sort(order[f::folds])
        return
    if folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}")
    if leave_out is not None:
        raise InputError("leave-out is defined for the image scheme only")
    for r in range(repeats):
        labels = []
        for shape in shapes:
            rows, cols = shape[0] - 2 * h, shape[1] - 2 * h
            if scheme == "block":
                nb = (-(-rows // block), -(-cols // block))
                blab = rng.integers(0, folds, size=nb)
                lab = np.repeat(np.repeat(blab, block, axis=0), block, axis=1)[:rows, :cols]
            else:
                lab = rng.integers(0, folds, size=(rows, cols))
            labels.append(lab)
        for f in range(folds):
            yield r, f, [lab == f for lab in labels]


def cross_validate(model, convolution_images, multislice_images, *, scheme="image", folds=2, repeats=2,
                   leave_out=None, block=7, seed=0, progress=False, keep_predictions=False) -> CVResult:
    """k-fold (repeated) cross-validation of a :class:`~surrogate.imaging.model.PolynomialSurrogate`.

    Parameters
    ----------
    model : PolynomialSurrogate
        Unfitted template; cloned for every fold.
    convolution_images, multislice_images : sequences of 2-D arrays
    scheme : {"image", "block", "pixel"}
    folds, repeats : int
    leave_out : int or float, optional
        Image scheme: hold out this many images (or this fraction) per repeat.
    block : int
        Block side in pixels for ``scheme="block"``.
    seed : int
        Seeds the subset assignment (``numpy.random.default_rng``).

    Returns
    -------
    CVResult
    """
    if scheme not in SCHEMES:
        raise InputError(f"unknown CV scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if block < 1:
        raise InputError(f"block side must be >= 1 pixel, got {block}")
    conv = list(convolution_images)
    ms = list(multislice_images)
    if len(conv) != len(ms):
        raise InputError(f"{len(conv)} convolution images but {len(ms)} multislice images")
    if not conv:
        raise InputError("no images to cross-validate")
    h = border(model.size)
    rng = np.random.default_rng(seed)
    splits = list(_splits(len(conv), [np.shape(c) for c in conv], h, scheme, folds, repeats, leave_out, block, rng))
    it = splits
    if progress:
        from tqdm import tqdm

        it = tqdm(splits, desc=f"{scheme} CV", unit="fold")
    targets, preds, per_fold = [], [], []
    held_out = {}  # image scheme: image index -> ([targets], [predictions]) over repeats
    for r, f, test in it:
        fitted = clone(model)
        if scheme == "image":
            test_set = set(int(i) for i in test)
            train = [i for i in range(len(conv)) if i not in test_set]
            fitted.fit([conv[i] for i in train], [ms[i] for i in train])
            for i in sorted(test_set):
                t_i, p_i = held_out.setdefault(i, ([], []))
                t_i.append(_interior(np.asarray(ms[i], dtype=float), h).ravel())
                p_i.append(fitted.predict(conv[i]).ravel())
            yt = np.concatenate([held_out[i][0][-1] for i in sorted(test_set)])
            yp = np.concatenate([held_out[i][1][-1] for i in sorted(test_set)])
            n_train = len(train)
            n_test = len(test_set)
        else:
            weights = []
            for c, mask in zip(conv, test):
                w = np.zeros(np.shape(c))
                _interior(w, h)[...] = ~mask
                weights.append(w)
            fitted.fit(conv, ms, sample_weight=weights)
            yt = np.concatenate([_interior(np.asarray(m, dtype=float), h)[mask] for m, mask in zip(ms, test)])
            yp = np.concatenate([fitted.predict(c)[mask] for c, mask in zip(conv, test)])
            n_train = int(sum(int((w > 0).sum()) for w in weights))
            n_test = int(yt.size)
        metrics = pooled_metrics(yt, yp)
        per_fold.append({"repeat": r, "fold": f, "n_train": n_train, "n_test": n_test,
                         "one_minus_r2": metrics["one_minus_r2"], "frms": metrics["frms"]})
        targets.append(yt)
        preds.append(yp)
    yt = np.concatenate(targets)
    yp = np.concatenate(preds)
    pooled = pooled_metrics(yt, yp)
    per_image = [dict(image=i, held_out=len(held_out[i][0]),
                      **pooled_metrics(np.concatenate(held_out[i][0]), np.concatenate(held_out[i][1])))
                 for i in sorted(held_out)]
    return CVResult(one_minus_r2=pooled["one_minus_r2"], frms=pooled["frms"], rmse=pooled["rmse"],
                    n_pixels=pooled["n_pixels"], n_terms=model.n_terms, scheme=scheme,
                    folds=folds if leave_out is None else 1, repeats=repeats, per_fold=per_fold, per_image=per_image,
                    targets=yt if keep_predictions else None, predictions=yp if keep_predictions else None)


def sweep(template, convolution_images, multislice_images, *, sizes=(1, 3, 5), degrees=(1, 2, 3),
          log_terms=(False, True), interactions=(False, True), max_terms=4000, progress=False, **cv_kwargs):
    """Cross-validate every combination of hyper-parameters; one result row each.

    Combinations with more than ``max_terms`` terms are skipped. Rows are
    dicts with ``size, degree, log_term, interactions, n_terms, one_minus_r2,
    frms``, sorted by number of terms.
    """
    combos = [c for c in itertools.product(sizes, degrees, log_terms, interactions)
              if n_terms(*c) <= max_terms]
    # interactions make no difference for s=1 without log at degree 1: drop exact duplicates
    seen, unique = set(), []
    from surrogate.imaging import term_tuples

    for c in combos:
        key = term_tuples(*c)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    unique.sort(key=lambda c: n_terms(*c))
    it = unique
    if progress:
        from tqdm import tqdm

        it = tqdm(unique, desc="sweep", unit="model")
    rows = []
    for s, d, lg, inter in it:
        m = clone(template).set_params(size=s, degree=d, log_term=lg, interactions=inter)
        res = cross_validate(m, convolution_images, multislice_images, **cv_kwargs)
        rows.append({"size": s, "degree": d, "log_term": lg, "interactions": inter, "n_terms": res.n_terms,
                     "one_minus_r2": res.one_minus_r2, "frms": res.frms})
    return rows
