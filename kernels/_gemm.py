"""GEMMs on Numba's thread pool: each thread multiplies a block of rows with a
single-threaded BLAS call (``np.dot`` inside ``prange``).

Why not the BLAS's own threads: the depthwise and batch-norm kernels run on Numba's
OpenMP pool; a GEMM on OpenBLAS's pthreads right after them finds OpenMP's workers
still spinning on the two cores, and the two pools take turns (docs/04-kernels.md).
With the GEMMs inside OpenMP regions there is one pool, whatever libgomp's spin count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ._threads import single_threaded_blas

_opts = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(parallel=True, **_opts)
def _rows(a, b, out, blocks):
    M = a.shape[0]
    for t in prange(blocks):
        r0, r1 = t * M // blocks, (t + 1) * M // blocks
        if r1 > r0:
            np.dot(a[r0:r1], b, out[r0:r1])


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


def matmul(a, b, out=None):
    """``a @ b`` for C-contiguous a (M, K); b (K, N) C- or F-contiguous (a transposed weight);
    ``out`` a C-contiguous (M, N) array to write into, or None for a new one."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if a.shape[0] == 0:
        return out
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    blocks = max(1, min(numba.get_num_threads(), a.shape[0]))
    with single_threaded_blas():
        _rows(a, b, out, blocks)
    return out


def matmul_tn(a, b):
    """``a.T @ b`` for C-contiguous a (M, K), b (M, N): a reduction over M, per-thread partials."""
    T = max(1, min(numba.get_num_threads(), a.shape[0]))
    partial = np.empty((T, a.shape[1], b.shape[1]), dtype=a.dtype)
    with single_threaded_blas():
        _tn_partials(a, b, partial)
    return partial[0] if T == 1 else partial.sum(axis=0)
