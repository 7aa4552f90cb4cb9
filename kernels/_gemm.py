"""GEMMs on Numba's thread pool: ``PARTS`` blocks of rows, each multiplied by a
single-threaded BLAS call (``np.dot`` inside ``prange``); reductions add the blocks'
partial sums in block order, so results do not depend on the number of threads.

Why not the BLAS's own threads: the depthwise and batch-norm kernels run on Numba's
OpenMP pool; a GEMM on OpenBLAS's pthreads right after them finds OpenMP's workers
still spinning on the two cores, and the two pools take turns (docs/04-kernels.md).
With the GEMMs inside OpenMP regions there is one pool, whatever libgomp's spin count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._threads import PARTS, single_threaded_blas
from .batchnorm import _act

_opts = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(inline="always", **_opts)
def _epilogue(o, scale, shift, act, c0):
    """o = act(o * scale + shift) in place, o's column j being channel c0 + j (an eval-mode
    batch norm and its activation on a block of a GEMM's output, while it is in cache)."""
    for r in range(o.shape[0]):
        for j in range(o.shape[1]):
            o[r, j] = _act(o[r, j] * scale[c0 + j] + shift[c0 + j], act)


@njit(parallel=True, **_opts)
def _rows(a, b, out, blocks, scale, shift, act):
    M = a.shape[0]
    for t in prange(blocks):
        r0, r1 = t * M // blocks, (t + 1) * M // blocks
        if r1 > r0:
            np.dot(a[r0:r1], b, out[r0:r1])
            if scale.shape[0] > 0:
                _epilogue(out[r0:r1], scale, shift, act, 0)


@njit(parallel=True, **_opts)
def _cols(a, wt, out, blocks, scale, shift, act):
    """out = a @ wt.T with the columns split in ``blocks``: wt (N, K) C-contiguous, so each
    block's rows of it are a contiguous weight matrix; each block reads only its share."""
    N = wt.shape[0]
    for t in prange(blocks):
        n0, n1 = t * N // blocks, (t + 1) * N // blocks
        if n1 > n0:
            tmp = np.empty((a.shape[0], n1 - n0), dtype=out.dtype)
            np.dot(a, wt[n0:n1].T, tmp)
            if scale.shape[0] > 0:
                _epilogue(tmp, scale, shift, act, n0)
            out[:, n0:n1] = tmp


@njit(parallel=True, **_opts)
def _tn_partials(a, b, partial):
    """partial[t] = a[rows of t].T @ b[rows of t]: a^T b split over row blocks."""
    M, T = a.shape[0], partial.shape[0]
    for t in prange(T):
        r0, r1 = t * M // T, (t + 1) * M // T
        if r1 > r0:
            np.dot(a[r0:r1].T, b[r0:r1], partial[t])
        else:
            partial[t] = 0


@njit(parallel=True, **_opts)
def _sum_partials(partial, out):
    """out = partial[0] + partial[1] + ... in that order (numpy's ``sum(axis=0)``, element by
    element), rows of the result split over the pool."""
    T, K = partial.shape[0], partial.shape[1]
    for k in prange(K):
        out[k] = partial[0, k]
        for t in range(1, T):
            out[k] += partial[t, k]


def _reduce(partial):
    if partial.shape[0] == 1:
        return partial[0]
    out = np.empty(partial.shape[1:], dtype=partial.dtype)
    _sum_partials(partial, out)
    return out


# Row blocks read the whole of b each: with few rows (a 7x7 or 14x14 layer at batch 1, a
# classifier's one row) that read, and the BLAS's poor efficiency on a handful of rows, cost
# more than the product (MobileNetV1's 49 x 1024 x 1024 layer: 2.0 ms in 8 row blocks, 0.46 ms
# in 2 column blocks, measured). Such products split their columns instead, in SMALL_SPLIT
# blocks: a constant, like the blocks' count everywhere here, so that the result does not
# depend on the thread count.
ROWS_PER_BLOCK = 128  # fewer rows than two blocks of this: split the columns
SMALL_SPLIT = 2


def matmul(a, b, out=None, affine=None, act=0):
    """``a @ b`` for C-contiguous a (M, K); b (K, N) C- or F-contiguous (a transposed weight);
    ``out`` a C-contiguous (M, N) array to write into, or None for a new one. ``affine``:
    (scale, shift) of shape (N,) applied with the activation ``act`` (batchnorm.ACTIVATIONS'
    code) to each block of the product as it is made."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if a.shape[0] == 0:
        return out
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    scale, shift = affine if affine is not None else (np.empty(0, out.dtype),) * 2
    single_threaded_blas()
    M, N = a.shape[0], b.shape[1]
    if M >= 2 * ROWS_PER_BLOCK:
        _rows(a, b, out, min(PARTS, M // ROWS_PER_BLOCK), scale, shift, act)
    elif b.flags.f_contiguous and N >= SMALL_SPLIT:
        _cols(a, b.T, out, SMALL_SPLIT, scale, shift, act)
    elif affine is None and b.shape[0] >= SMALL_SPLIT:  # b's rows split: each block reads half of b
        partial = np.empty((SMALL_SPLIT, M, N), dtype=out.dtype)
        _k_partials(a, b, partial)
        _sum_partials(partial, out)
    else:
        _rows(a, b, out, min(M, SMALL_SPLIT), scale, shift, act)
    return out


@njit(parallel=True, **_opts)
def _k_partials(a, b, partial):
    """partial[t] = a[:, block t] @ b[block t]: a @ b split over the inner dimension (few rows of
    a, b C-contiguous, so each block's rows of b are contiguous and read by that block only)."""
    K, T = b.shape[0], partial.shape[0]
    for t in prange(T):
        k0, k1 = t * K // T, (t + 1) * K // T
        np.dot(np.ascontiguousarray(a[:, k0:k1]), b[k0:k1], partial[t])


@njit(parallel=True, **_opts)
def _tn_cols(a, b, out, blocks):
    """out = a.T @ b with the columns of b split in ``blocks``: for few rows M, where PARTS
    blocks of a handful of rows would each write a whole (K, N) partial sum."""
    N = b.shape[1]
    for t in prange(blocks):
        n0, n1 = t * N // blocks, (t + 1) * N // blocks
        if n1 > n0:
            tmp = np.empty((a.shape[1], n1 - n0), dtype=out.dtype)
            np.dot(a.T, np.ascontiguousarray(b[:, n0:n1]), tmp)
            out[:, n0:n1] = tmp


def matmul_tn(a, b):
    """``a.T @ b`` for C-contiguous a (M, K), b (M, N): a reduction over M in PARTS row blocks;
    with few rows (a classifier's batch), the columns of b split in SMALL_SPLIT blocks instead
    (the V3-Large classifier's weight gradient at batch 16: 7 ms in row blocks, measured)."""
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    single_threaded_blas()
    if 0 < M < 2 * ROWS_PER_BLOCK and N >= SMALL_SPLIT:
        out = np.empty((K, N), dtype=a.dtype)
        _tn_cols(a, b, out, SMALL_SPLIT)
        return out
    T = max(1, min(PARTS, M))
    partial = np.empty((T, K, N), dtype=a.dtype)
    _tn_partials(a, b, partial)
    return _reduce(partial)


@njit(parallel=True, **_opts)
def _dx_dw(d, w, x, dx, partial, block):
    """dx = d @ w and partial[t] = (d^T x over part t's rows), block by block, so each block of
    d is read from memory once and used twice while it is in cache."""
    M, T = d.shape[0], partial.shape[0]
    nb = (M + block - 1) // block
    for t in prange(T):
        p = partial[t]
        p[:] = 0
        tmp = np.empty_like(p)
        for b in range(t * nb // T, (t + 1) * nb // T):
            r0, r1 = b * block, min(M, (b + 1) * block)
            np.dot(d[r0:r1], w, dx[r0:r1])
            np.dot(d[r0:r1].T, x[r0:r1], tmp)
            p += tmp


def backward_pair(d, w, x, cache_bytes=1 << 18):
    """``(d @ w, d.T @ x)`` in one pass over d (C-contiguous d (M, N), w (N, K), x (M, K)):
    a 1x1 convolution's input and weight gradients."""
    M = d.shape[0]
    dx = np.empty((M, w.shape[1]), dtype=d.dtype)
    T = max(1, min(PARTS, M))
    partial = np.empty((T, d.shape[1], x.shape[1]), dtype=d.dtype)
    if M == 0:
        return dx, np.zeros(partial.shape[1:], d.dtype)
    if not (w.flags.c_contiguous or w.flags.f_contiguous):
        w = np.ascontiguousarray(w)
    block = max(16, cache_bytes // (d.itemsize * max(d.shape[1], x.shape[1])))
    single_threaded_blas()
    _dx_dw(d, w, x, dx, partial, block)
    return dx, _reduce(partial)
