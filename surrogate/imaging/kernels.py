"""Fused prediction kernels: convolution image → surrogate image, no feature matrix.

Private module; :meth:`surrogate.imaging.model.PolynomialSurrogate.predict` wraps it.

Two kernels compute the same polynomial (Horner form over the term tree of
:mod:`surrogate.imaging.features`):

* :func:`unrolled_kernel` — the fast path for models of at most
  :data:`UNROLL_MAX_TERMS` terms (the paper's 378-term s=5, d=2 model
  included). Python source with the whole polynomial written out is generated
  for one (s, d, log, interactions) and compiled by Numba, so that every
  variable and partial sum of a pixel lives in a register; the loop over the
  pixels of a row chunk is innermost and LLVM vectorizes it (8 pixels per
  AVX-512 instruction); chunks are whole vectors, the last one overlapping its
  neighbour instead of running a scalar remainder. One 378-term FMA per term
  and pixel: ≈ 0.45–0.5 ms for a 244×256 image on one core of the AMD EPYC
  (Zen 5) development machine, ≈ 13× the general kernel
  (``tests/benchmarks/bench_surrogate.py``). The log term uses :func:`_log_floored`, a vectorizable
  natural log accurate to 1 ulp. Coefficients are a runtime argument in term
  order, so refitting never recompiles. The generated module is written to a
  cache folder (``$STEM_REFINE_KERNEL_CACHE``, else
  ``$XDG_CACHE_HOME/stem-refine/kernels``, else ``~/.cache/stem-refine/kernels``)
  so that Numba's on-disk cache works (first compile ≈ 2 s for 378 terms,
  later processes load it in milliseconds); when that folder is not writable
  the source is compiled in memory instead.
* :func:`predict_rows` — the general path for any degree and size, driven by
  the index arrays of :func:`horner_program`.

Vacuum: every output pixel whose s×s input pixel grid is exactly 0 (beyond the
PSF cutoff of every atom; −0.0 counts as 0) gets the constant ``background``,
the polynomial's value at zero input, bit for bit, and chunks of such pixels
are not evaluated at all.

Both are single-threaded (``nogil``, so callers may run several images in
threads; there is no parallel variant) and allocate only a few KiB of
workspace per call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from surrogate.imaging.features import border, term_tuples

log = logging.getLogger(__name__)

#: largest model (number of terms) that gets a generated, unrolled kernel;
#: compile time grows with the number of terms (≈ 2 s for 378).
UNROLL_MAX_TERMS = 700
#: pixels per chunk of the unrolled kernel (a multiple of the vector width 8).
_UNROLL_CHUNK = 64
#: smallest positive normal float64; :func:`_log_floored` needs a normal floor.
_MIN_NORMAL = float(np.finfo(np.float64).tiny)
#: bump when the generated source changes meaning (part of the cache file name).
_GENERATOR_VERSION = 2

# --------------------------------------------------------------------------- #
# Vectorizable natural log.
#
# x = 2^k · m with m in [√½, √2) is taken apart with integer operations on the
# bit pattern (for positive doubles, integer order is float order, so the floor
# is a max on the bits too; negative numbers and −0 have the sign bit set and
# lose to any positive floor). With f = m − 1 (exact) and s = f / (2 + f),
#     log m = 2 atanh s = 2s + 2s·Σ_{j≥1} s^{2j}/(2j+1) = f − s·(f − R),
#     R = 2·Σ_{j=1}^{9} z^j/(2j+1),  z = s² ≤ 0.0295,
# where the omitted tail is < 3e-17 relative, and log x = k·ln2 + log m with
# ln2 split in a high part (exact k·ln2_hi) and a low part. Measured error
# against numpy.log: ≤ 1 ulp. Compiled without fastmath so that this
# evaluation order is kept; error_model="numpy" lets the division vectorize.
# --------------------------------------------------------------------------- #

_LN2_HI = 6.93147180369123816490e-01   # 0x3fe62e42fee00000: k·_LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10   # ln 2 − _LN2_HI
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD   # bit pattern of √½
_MANTISSA = 0x000FFFFFFFFFFFFF


def floor_bits(log_floor: float) -> np.int64:
    """Bit pattern of ``log_floor`` as int64 (the argument :func:`_log_floored` takes)."""
    return np.array([float(log_floor)], dtype=np.float64).view(np.int64)[0]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _log_floored(src, start, n, floor_bits, dst, mbuf, kbuf):  # pragma: no cover - jitted
    # dst[q] = log(max(src[start + q], floor)) for q < n; floor > 0 must be normal.
    # mbuf, kbuf: float64 workspace of length >= n.
    xb = src.view(np.int64)
    mb = mbuf.view(np.int64)
    for q in range(n):
        ix = max(xb[start + q], floor_bits) - _SQRT_HALF_BITS
        kbuf[q] = np.float64(ix >> 52)
        mb[q] = (ix & _MANTISSA) + _SQRT_HALF_BITS
    for q in range(n):
        f = mbuf[q] - 1.0
        s = f / (2.0 + f)
        z = s * s
        r = z * (2.0 / 3.0 + z * (2.0 / 5.0 + z * (2.0 / 7.0 + z * (2.0 / 9.0 + z * (
            2.0 / 11.0 + z * (2.0 / 13.0 + z * (2.0 / 15.0 + z * (2.0 / 17.0 + z * (2.0 / 19.0)))))))))
        k = kbuf[q]
        dst[q] = k * _LN2_HI + ((f - s * (f - r)) + k * _LN2_LO)


# --------------------------------------------------------------------------- #
# Stack alignment.
#
# The unrolled kernel keeps more coefficient vectors live than there are
# registers, so LLVM spills them (as 64-byte AVX-512 vectors) to the stack and
# uses them as FMA memory operands. The stack is only 16-byte aligned at
# function entry, and where it sits depends on the process (address-space
# randomization): in 3 processes out of 4 every spilled operand straddled two
# cache lines and the kernel ran ~1.6x slower (0.72 vs 0.45 ms, 378 terms).
# A 64-byte aligned stack object makes LLVM realign the frame in the prologue,
# so the spill slots are always aligned.
# --------------------------------------------------------------------------- #

@intrinsic
def _realign_stack(typingctx):
    """Force a 64-byte aligned stack frame in the calling jitted function."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.ArrayType(ir.IntType(8), 64))
        slot.align = 64
        # An empty asm statement that takes the address keeps the object alive.
        keep = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [slot.type]), "", "r,~{memory}", side_effect=True)
        builder.call(keep, [slot])
        return context.get_dummy_value()

    return types.void(), codegen


# --------------------------------------------------------------------------- #
# Unrolled kernels generated per model structure.
# --------------------------------------------------------------------------- #

def _horner_expression(tuples) -> str:
    """The polynomial as nested Horner source: ``k0 + x0 * (k1 + k2 * x0 + …) + …``."""
    index = {t: i for i, t in enumerate(tuples)}
    children: dict[tuple, list[tuple]] = {}
    for t in tuples:
        if t:
            children.setdefault(t[:-1], []).append(t)

    def rec(t):
        parts = [f"k{index[t]}"]
        for c in children.get(t, ()):
            if c in children:
                parts.append(f"x{c[-1]} * ({rec(c)})")
            else:
                parts.append(f"k{index[c]} * x{c[-1]}")
        return " + ".join(parts)

    return rec(())


def kernel_source(size: int, degree: int, log_term: bool, interactions: bool) -> str:
    """Python source of the unrolled kernel module for one model structure.

    The module defines ``kernel(img, coef, floor_bits, background, out)``:
    ``img`` (M, N) C-contiguous float64 convolution image, ``coef`` (n_terms,)
    in :func:`surrogate.imaging.features.term_tuples` order, ``floor_bits`` from
    :func:`floor_bits`, ``out`` (M − 2h, N − 2h) float64 with C-contiguous rows.
    """
    tuples = term_tuples(size, degree, log_term, interactions)
    h = border(size)
    p = size * size
    w_chunk = _UNROLL_CHUNK
    L = [
        f'"""Generated by surrogate.imaging.kernels (version {_GENERATOR_VERSION}) for s={size}, d={degree}, '
        f'log={log_term}, interactions={interactions}; do not edit."""',
        "import numba",
        "import numpy as np",
        "from surrogate.imaging.kernels import _log_floored, _realign_stack",
        "",
        "",
        '@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")',
        "def kernel(img, coef, floor_bits, background, out):  # pragma: no cover",
        "    _realign_stack()",
        "    rows, ncols = out.shape",
    ]
    L += [f"    k{t} = coef[{t}]" for t in range(len(tuples))]
    L += [
        f"    W = {w_chunk}",
        "    lg = np.empty(ncols)",
        "    mb = np.empty(ncols)",
        "    kb = np.empty(ncols)",
        f"    nz = np.empty(ncols + {2 * h}, np.int64)",
        f"    cnt = np.empty(ncols + {2 * h + 1}, np.int64)",
        "    for a in range(rows):",
        f"        m = a + {h}",
        "        # Vacuum bookkeeping: cnt[j] counts the columns < j that have a nonzero",
        "        # input pixel in rows m-h..m+h (-0.0 is zero); output pixel b is vacuum",
        "        # iff cnt[b + 2h + 1] == cnt[b].",
        f"        for j in range(ncols + {2 * h}):",
        "            nz[j] = " + " | ".join(f"(img[m + {di - h}, j] != 0.0)" for di in range(size)),
        "        cnt[0] = 0",
        f"        for j in range(ncols + {2 * h}):",
        "            cnt[j + 1] = cnt[j] + nz[j]",
        f"        if cnt[ncols + {2 * h}] == 0:",
        "            for q in range(ncols):",
        "                out[a, q] = background",
        "            continue",
    ]
    if log_term:
        L.append(f"        _log_floored(img[m], {h}, ncols, floor_bits, lg, mb, kb)")
    L += [
        "        b0 = 0",
        "        while b0 < ncols:",
        "            w = min(W, ncols - b0)",
        "            # Whole vectors only: trim to a multiple of 8, and let the last",
        "            # few pixels share a vector with their (recomputed) neighbours.",
        "            if w >= 8:",
        "                w -= w % 8",
        "            elif ncols >= 8:",
        "                b0 = ncols - 8",
        "                w = 8",
        "            o = out[a, b0:b0 + w]",
        f"            if cnt[b0 + w + {2 * h}] == cnt[b0]:",
        "                # vacuum: every input pixel of the chunk is exactly 0",
        "                for q in range(w):",
        "                    o[q] = background",
        "                b0 += w",
        "                continue",
    ]
    for di in range(size):
        L.append(f"            r{di} = img[m + {di - h}, b0:b0 + w + {2 * h}]")
    if log_term:
        L.append("            lr = lg[b0:b0 + w]")
    L.append("            c0 = cnt[b0:b0 + w]")
    L.append(f"            c1 = cnt[b0 + {2 * h + 1}:b0 + w + {2 * h + 1}]")
    L.append("            for q in range(w):")
    for r in range(p):
        L.append(f"                x{r} = r{r // size}[q + {r % size}]")
    if log_term:
        L.append(f"                x{p} = lr[q]")
    L.append(f"                y = {_horner_expression(tuples)}")
    L.append("                o[q] = background if c1[q] == c0[q] else y")
    L.append("            b0 += w")
    return "\n".join(L) + "\n"


def _kernel_dir() -> Path:
    env = os.environ.get("STEM_REFINE_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stem-refine" / "kernels"


def _load_module(name: str, source: str):
    """Import generated ``source`` from the cache folder (so Numba can cache it), or exec it."""
    try:
        folder = _kernel_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.py"
        if not path.is_file() or path.read_text() != source:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(source)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    except OSError as exc:
        sys.modules.pop(name, None)
        log.info("kernel cache folder not usable (%s); compiling %s in memory", exc, name)
        namespace: dict = {"__name__": name}
        exec(compile(source.replace("cache=True", "cache=False"), f"<{name}>", "exec"), namespace)

        class _Namespace:
            kernel = namespace["kernel"]

        return _Namespace


@lru_cache(maxsize=32)
def unrolled_kernel(size: int, degree: int, log_term: bool, interactions: bool):
    """The generated kernel of a model structure, or None above :data:`UNROLL_MAX_TERMS` terms.

    Compilation happens at the first call (or is loaded from Numba's cache).
    """
    size, degree, log_term, interactions = int(size), int(degree), bool(log_term), bool(interactions)
    if len(term_tuples(size, degree, log_term, interactions)) > UNROLL_MAX_TERMS:
        return None
    source = kernel_source(size, degree, log_term, interactions)
    # Numba's cache of the generated module does not notice changes in the jitted
    # functions it calls, so their source is part of the module name.
    callees = inspect.getsource(_log_floored.py_func) + inspect.getsource(_realign_stack._defn)
    digest = hashlib.sha1((source + callees).encode()).hexdigest()[:12]
    name = f"_stem_refine_kernel_s{size}_d{degree}_l{int(log_term)}_i{int(interactions)}_{digest}"
    return _load_module(name, source).kernel


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
def predict_rows(img, h, offsets, log_term, log_floor, degree, background,
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
    ncin = ncols + 2 * h
    nz = np.empty(ncin, np.int64)
    cnt = np.empty(ncin + 1, np.int64)
    for a in range(rows):
        m = a + h
        # cnt[j]: columns < j with a nonzero input pixel in rows m-h..m+h (−0.0 is
        # zero); output pixel b is vacuum iff cnt[b+2h+1] == cnt[b].
        for j in range(ncin):
            nz[j] = 0
        for r in range(-h, h + 1):
            for j in range(ncin):
                nz[j] |= img[m + r, j] != 0.0
        cnt[0] = 0
        for j in range(ncin):
            cnt[j + 1] = cnt[j] + (1 if nz[j] != 0 else 0)
        for b0 in range(0, ncols, W):
            w = min(W, ncols - b0)
            if cnt[b0 + w + 2 * h] == cnt[b0]:
                # Every input pixel exactly 0 (beyond the PSF cutoff of every atom):
                # the polynomial is the constant background value.
                for q in range(w):
                    out[a, b0 + q] = background
                continue
            # Gather the input pixel grid of the chunk's pixels (zero padding past w).
            for r in range(p):
                src = img[m + offsets[r, 0]]
                base = b0 + h + offsets[r, 1]
                for q in range(w):
                    xbuf[r, q] = src[base + q]
                for q in range(w, W):
                    xbuf[r, q] = 0.0
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
                        vac = cnt[b0 + q + 2 * h + 1] == cnt[b0 + q]
                        out[a, b0 + q] = background if vac else s[q]
                else:
                    xv = xbuf[node_last[node]]
                    for q in range(W):
                        acc[k, q] += xv[q] * s[q]
