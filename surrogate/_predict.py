"""Fused prediction kernels: convolution image → surrogate image, no feature matrix.

Private module; :meth:`surrogate.model.PolynomialSurrogate.predict` wraps it.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from .features import term_tuples

# --------------------------------------------------------------------------- #
# Fused prediction: nested Horner evaluation over the pre-order term tree.
#
# For a node t (a monomial of degree k < d) let H(t) = a_t + Σ_children x_j·H(t·x_j).
# The polynomial is H(()). Internal nodes are visited in reverse pre-order, so
# every child is finished before its parent; acc[k+1] collects Σ x_j·H(child)
# for the node at depth k being finished. Nodes of depth d−1 have only leaf
# children, whose sum is one tight multiply-add loop. Each term costs one
# multiply-add per pixel, and pixels are processed in chunks of _CHUNK along
# the second axis so that the inner loops vectorize.
# --------------------------------------------------------------------------- #

_CHUNK = 32


@lru_cache(maxsize=64)
def horner_program(size: int, degree: int, log_term: bool, interactions: bool):
    """Index arrays of the Horner scheme; coefficients are gathered with them.

    Returns ``node_term, node_depth, node_last, leaf_start, leaf_end, leaf_term,
    leaf_var`` (int64 arrays): internal nodes in reverse pre-order, and for the
    nodes of depth d−1 the contiguous range of their leaf children.
    """
    tuples = term_tuples(size, degree, log_term, interactions)
    internal = [t for t, tup in enumerate(tuples) if len(tup) < degree]
    children: dict[int, list[int]] = {t: [] for t in internal}
    index = {tup: t for t, tup in enumerate(tuples)}
    for t, tup in enumerate(tuples):
        if tup:
            children[index[tup[:-1]]].append(t)
    node_term, node_depth, node_last, leaf_start, leaf_end, leaf_term, leaf_var = [], [], [], [], [], [], []
    for t in reversed(internal):
        tup = tuples[t]
        node_term.append(t)
        node_depth.append(len(tup))
        node_last.append(tup[-1] if tup else -1)
        leaf_start.append(len(leaf_term))
        if len(tup) == degree - 1:
            for c in children[t]:
                leaf_term.append(c)
                leaf_var.append(tuples[c][-1])
        leaf_end.append(len(leaf_term))
    arrays = tuple(np.asarray(a, dtype=np.int64) for a in
                   (node_term, node_depth, node_last, leaf_start, leaf_end, leaf_term, leaf_var))
    for a in arrays:
        a.setflags(write=False)
    return arrays


@numba.njit(cache=True, nogil=True, fastmath=True)
def _predict_rows(img, h, offsets, log_term, log_floor, degree, background,
                  node_coef, node_depth, node_last, leaf_start, leaf_end, leaf_coef, leaf_var,
                  out):  # pragma: no cover - jitted
    rows, ncols = out.shape
    p = offsets.shape[0]
    nnodes = node_coef.shape[0]
    W = _CHUNK
    # Workspace: a few KiB, allocated per call so that threads never share it.
    xbuf = np.empty((p + 1, W))
    acc = np.zeros((degree + 1, W))
    s = np.empty(W)
    for a in range(rows):
        m = a + h
        for b0 in range(0, ncols, W):
            w = min(W, ncols - b0)
            # Gather the input pixel grid of the chunk's pixels (zero padding past w).
            vacuum = True
            for r in range(p):
                src = img[m + offsets[r, 0]]
                base = b0 + h + offsets[r, 1]
                for q in range(w):
                    v = src[base + q]
                    xbuf[r, q] = v
                    if v != 0.0:
                        vacuum = False
                for q in range(w, W):
                    xbuf[r, q] = 0.0
            if vacuum:
                # Every input pixel exactly 0 (beyond the PSF cutoff of every atom):
                # the polynomial is the constant background value.
                for q in range(w):
                    out[a, b0 + q] = background
                continue
            if log_term:
                for q in range(w):
                    xbuf[p, q] = np.log(max(img[m, b0 + h + q], log_floor))
                for q in range(w, W):
                    xbuf[p, q] = 0.0
            for node in range(nnodes):
                k = node_depth[node]
                c0 = node_coef[node]
                if leaf_start[node] < leaf_end[node]:
                    for q in range(W):
                        s[q] = c0
                    for l in range(leaf_start[node], leaf_end[node]):
                        c = leaf_coef[l]
                        xv = xbuf[leaf_var[l]]
                        for q in range(W):
                            s[q] += c * xv[q]
                else:
                    for q in range(W):
                        s[q] = c0 + acc[k + 1, q]
                        acc[k + 1, q] = 0.0
                if k == 0:
                    for q in range(w):
                        out[a, b0 + q] = s[q]
                else:
                    xv = xbuf[node_last[node]]
                    for q in range(W):
                        acc[k, q] += xv[q] * s[q]
