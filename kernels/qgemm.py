"""The int8 GEMM of pointwise convolutions and linear layers, with its requantization.

    acc[p, n] = sum_k x[p, k] * w[n, k] + bias[n] - z_x * sum_k w[n, k]      (= sum (x - z_x) w + b)
    out[p, n] = clamp(rint(float32(acc[p, n]) * M[n]) + z_out, lo, hi)         (the "float" scheme)

x: (P, K) uint8 rows (channels-last pixels), w: (N, K) int8 weights, M: (N,) float32. The zero
point's term is a column sum of the weights, folded into the bias once (``fold_bias``), so the
inner loop multiplies raw bytes. Every version equals ``numpy_impl.quant.ops`` bit for bit.

Versions (``GEMMS``), each timed in ``benchmarks/bench_kernels``:

1. plain loops, one output at a time, int32 multiply-adds;
2. the same loops with the rows split over the threads: LLVM vectorises the dot product by
   widening the bytes to int16 and summing pairs with ``vpdpwssd`` (32 multiply-adds per instruction);
3. ``vpdpbusd`` tiles (:mod:`kernels._vnni`): 8 rows x 32 outputs per microkernel call, 64
   multiply-adds per instruction, weights packed once per layer (``pack_weights``);
4. the requantization inside the microkernel, 16 lanes at a time: the int32 tile never leaves
   the registers (the scalar epilogue cost as much as the products on narrow layers).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._vnni import HAS_VNNI, MR, NR, dpbusd_row_q, dpbusd_tile, dpbusd_tile_q

_opts = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(inline="always", **_opts)
def requant(acc, M, zp, lo, hi):
    """``clamp(rint(float32(acc) * M) + zp, lo, hi)``: float32 product, ties to even."""
    v = np.int64(np.rint(np.float32(acc) * M)) + zp
    return min(max(v, lo), hi)


def fold_bias(w, b, x_zero_point):
    """``b - z_x * sum_k w[n, k]`` (int64, checked to fit int32)."""
    folded = b.astype(np.int64) - np.int64(x_zero_point) * w.reshape(w.shape[0], -1).astype(np.int64).sum(1)
    if folded.size and (folded.min() < -(2**31) or folded.max() >= 2**31):
        raise OverflowError("fold_bias: the bias with the zero point's term overflows int32")
    return folded.astype(np.int32)


# --- version 1: plain loops ----------------------------------------------------------------


@njit(**_opts)
def gemm_v1(x, w, bias, M, zp, lo, hi, out):
    P, K = x.shape
    for p in range(P):
        for n in range(w.shape[0]):
            acc = np.int32(bias[n])
            for k in range(K):
                acc += np.int32(x[p, k]) * np.int32(w[n, k])
            out[p, n] = requant(acc, M[n], zp, lo, hi)


# --- version 2: widened dot products, rows over the threads ------------------------------


@njit(parallel=True, **_opts)
def gemm_v2(x, w, bias, M, zp, lo, hi, out):
    P, K = x.shape
    N = w.shape[0]
    for p in prange(P):
        acc = np.empty(N, np.int32)
        for n in range(N):
            s = np.int32(0)
            for k in range(K):  # widened to int16, summed in pairs by vpdpwssd
                s += np.int32(x[p, k]) * np.int32(w[n, k])
            acc[n] = s  # (the epilogue in this loop stops LLVM from using vpdpwssd)
        for n in range(N):
            out[p, n] = requant(acc[n] + bias[n], M[n], zp, lo, hi)


# --- version 3: VNNI tiles -----------------------------------------------------------------


def pack_weights(w):
    """w (N, K) int8 -> (NB, K4, 32) int32: for each block of 32 outputs and each 4 consecutive k,
    the 32 outputs' 4 bytes side by side (what one k4 step of a tile loads). N and K are padded
    with zero weights to multiples of 32 and 4."""
    N, K = w.shape
    NB, K4 = -(-N // NR), -(-K // 4)
    padded = np.zeros((NB * NR, K4 * 4), np.int8)
    padded[:N, :K] = w
    blocks = padded.reshape(NB, NR, K4, 4).transpose(0, 2, 1, 3)  # (NB, K4, 32, 4)
    return np.ascontiguousarray(blocks).view(np.int32).reshape(NB, K4, NR)


@njit(parallel=True, **_opts)
def gemm_v3(x4, packed, bias, M, zp, lo, hi, out):
    """x4: (P, K4) int32 view of the uint8 rows (K padded to a multiple of 4 with zeros). Each
    thread takes tiles of MR rows and walks all output blocks, its accumulator tile allocated
    once (an allocation per tile cost more than the tile's arithmetic)."""
    P, N = x4.shape[0], out.shape[1]
    for t in prange((P + MR - 1) // MR):
        p0 = t * MR
        acc = np.empty((MR, NR), np.int32)
        for nb in range(packed.shape[0]):
            dpbusd_tile(acc, x4, p0, packed, nb)
            n0 = nb * NR
            for r in range(min(MR, P - p0)):
                for j in range(min(NR, N - n0)):
                    out[p0 + r, n0 + j] = requant(acc[r, j] + bias[n0 + j], M[n0 + j], zp, lo, hi)


@njit(parallel=True, **_opts)
def gemm_v4(x4, packed, bias, M, zp, lo, hi, out):
    """Version 3 with the requantization in the microkernel (16 lanes at a time, in registers),
    which writes the uint8 tile into ``out`` itself. ``bias`` and ``M`` padded to the packed
    width (``pad_to_blocks``). The threads share out (row tile, output block) pairs; fewer rows
    than a tile (a classifier or squeeze-and-excite at batch 1) take one-row tiles, instead of
    a tile whose rows all repeat the last one."""
    P, NB = x4.shape[0], packed.shape[0]
    if P < MR:
        for t in prange(P * NB):
            dpbusd_row_q(out, x4, t // NB, packed, t % NB, bias, M, zp, lo, hi)
        return
    for t in prange((P + MR - 1) // MR * NB):
        dpbusd_tile_q(out, x4, (t // NB) * MR, packed, t % NB, bias, M, zp, lo, hi)


@njit(**_opts)
def gemm_rows(x4, packed, bias, M, zp, lo, hi, out):
    """Version 4 on one thread (a fused block's tile): each row tile against every output block."""
    P, NB = x4.shape[0], packed.shape[0]
    if P < MR:
        for p in range(P):
            for nb in range(NB):
                dpbusd_row_q(out, x4, p, packed, nb, bias, M, zp, lo, hi)
        return
    for p0 in range(0, P, MR):
        for nb in range(NB):
            dpbusd_tile_q(out, x4, p0, packed, nb, bias, M, zp, lo, hi)


def pad_to_blocks(a):
    """``a`` (N,) padded with zeros to a whole number of 32-output blocks (version 4 reads them)."""
    out = np.zeros(-(-a.shape[0] // NR) * NR, a.dtype)
    out[: a.shape[0]] = a
    return out


def as_words(x):
    """(P, K) uint8 rows as (P, ceil(K / 4)) int32 words (a copy with zero columns if K % 4)."""
    P, K = x.shape
    if K % 4 or not x.flags.c_contiguous:
        padded = np.zeros((P, -(-K // 4) * 4), np.uint8)
        padded[:, :K] = x
        x = padded
    return x.view(np.int32)


GEMMS = {1: gemm_v1, 2: gemm_v2, 3: gemm_v3, 4: gemm_v4}
BEST = 4 if HAS_VNNI else 2
