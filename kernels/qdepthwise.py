"""The int8 depthwise convolution, channels-last, with its requantization.

    acc[n, h, w, c] = b[c] + sum_{i, j} (x[n, h s + i - p, w s + j - p, c] - z_x) * wt[i, j, c]
    out[n, h, w, c] = clamp(rint(float32(acc) * M[c]) + z_out, lo, hi)

Taps that fall in the padding are skipped: they hold real 0, which is ``z_x`` in integers and
adds nothing once the zero point is subtracted. x: (N, H, W, C) uint8; wt: (kh, kw, C) int16
(the int8 weights widened once, tap-major). ``(x - z_x) * w`` always fits int16 (255 * 127 <
2**15), so each product is computed in int16 (``vpmullw``: 32 lanes) and summed in int32.

Versions (``DEPTHWISE``; each equals ``numpy_impl.quant.ops`` bit for bit):

1. per output pixel: its C accumulators, the taps in bounds, then the requantization; rows of
   output over the threads. Every pixel pays the loops' set-up over C: slow for narrow layers.
2. flat rows (stride 1): an output row's Wo x C accumulators in one run, and for each tap one
   multiply-add over the whole run (input row shifted by the tap's column, weights tiled Wo
   times): long vector loops whatever C is. Indices are unsigned, or Numba's handling of
   negative indices stops LLVM from vectorising them. Twice as fast as version 1 on the
   32-channel 112 x 112 layer, no faster on wide ones (whose rows no longer fit in L1).
3. per output pixel again, but with all K x K taps of a channel summed in one register
   (the kernel size a constant, so LLVM unrolls the taps) for the pixels whose taps are all
   inside the input: one store per output instead of one read-modify-write per tap. The border
   pixels take version 1's checked path.
4. ``vpdpbusd`` (AVX-512 VNNI) on taps side by side: for one output pixel and 16 channels, a
   kernel row's 4 columns (the 4th zero for K = 3) are gathered into the 4 bytes of each
   channel's word (a 4 x 16 byte transpose: one ``vpermt2b``), and one instruction multiplies
   them by the row's 4 packed weights (``pack_taps``) and adds them into 16 int32 lanes: 3
   instructions for a 3 x 3 kernel's 144 multiply-adds, then the requantization in registers
   (:mod:`kernels._vnni`). The zero point's term is folded into the bias (``fold_taps``), so
   the bytes are multiplied raw; a tap in the padding reads the zero point instead of memory.
   Channels come 16 at a time, the last 16 overlapping the block before when C % 16 != 0.
   1.5-2x version 3 on V2's layers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._vnni import LANES, dpbusd_dw_q
from .qgemm import requant

_opts = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(inline="always", **_opts)
def _pixel(x, n, ih0, iw0, z, wt, bias, acc, c_from):
    """acc[c] = bias[c] + sum over the taps inside the input of (x - z) * wt, for the channels
    from ``c_from`` on: one output pixel whose top-left tap is (ih0, iw0), bounds checked per tap."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    for c in range(c_from, C):
        acc[c] = bias[c]
    for i in range(wt.shape[0]):
        ih = ih0 + i
        if ih < 0 or ih >= H:
            continue
        for j in range(wt.shape[1]):
            iw = iw0 + j
            if iw < 0 or iw >= W:
                continue
            for c in range(c_from, C):
                acc[c] += np.int16((np.int16(x[n, ih, iw, c]) - z) * wt[i, j, c])


@njit(parallel=True, **_opts)
def depthwise_v1(x, zx, wt, bias, M, zp, lo, hi, stride, pad, out):
    N, C = x.shape[0], x.shape[3]
    Ho, Wo = out.shape[1], out.shape[2]
    z = np.int16(zx)
    for t in prange(N * Ho):
        n, oh = t // Ho, t % Ho
        acc = np.empty(C, np.int32)
        for ow in range(Wo):
            _pixel(x, n, oh * stride - pad, ow * stride - pad, z, wt, bias, acc, 0)
            for c in range(C):
                out[n, oh, ow, c] = requant(acc[c], M[c], zp, lo, hi)


def tiles(wt, bias, M, Wo):
    """Version 2's operands for output width ``Wo``: the weights (kh, kw, Wo C) int16, the bias
    and multipliers (Wo C,), each channel's value repeated for every output column."""
    return (
        np.ascontiguousarray(np.tile(wt, (1, 1, Wo))),
        np.tile(np.asarray(bias, np.int32), Wo),
        np.tile(np.asarray(M, np.float32), Wo),
    )


@njit(parallel=True, **_opts)
def depthwise_v2(x, zx, wtile, bias_t, M_t, zp, lo, hi, pad, out):
    """Stride 1. x: (N, H, W, C) C-contiguous; out: (N, Ho, Wo, C) C-contiguous."""
    N, H, W, C = x.shape
    kh, kw = wtile.shape[0], wtile.shape[1]
    Ho, Wo = out.shape[1], out.shape[2]
    L = Wo * C
    z = np.int16(zx)
    xf = x.reshape(N * H, W * C)
    of = out.reshape(N * Ho, L)
    for t in prange(N * Ho):
        n, oh = t // Ho, t % Ho
        acc = bias_t.copy()  # (Wo C,)
        for i in range(kh):
            ih = oh + i - pad
            if ih < 0 or ih >= H:
                continue
            xr = xf[n * H + ih]
            for j in range(kw):
                shift = (j - pad) * C  # output lane q reads input lane q + shift
                q0 = max(0, -shift)
                q1 = min(L, W * C - shift)
                src, wr = np.uint64(q0 + shift), wtile[i, j]
                for k in range(q1 - q0):
                    u, q = np.uint64(k), np.uint64(q0 + k)
                    acc[q] += np.int16((np.int16(xr[src + u]) - z) * wr[q])
        orow = of[t]
        for q in range(L):
            orow[q] = requant(acc[q], M_t[q], zp, lo, hi)


def _make_v3(K):
    """Version 3 for K x K kernels (K a constant: LLVM unrolls the taps)."""

    @njit(parallel=True, **_opts)
    def depthwise_v3(x, zx, wt, bias, M, zp, lo, hi, stride, pad, out):
        N, H, W, C = x.shape
        Ho, Wo = out.shape[1], out.shape[2]
        z = np.int16(zx)
        for t in prange(N * Ho):
            n, oh = t // Ho, t % Ho
            acc = np.empty(C, np.int32)
            ih0 = oh * stride - pad
            rows_inside = ih0 >= 0 and ih0 + K <= H
            for ow in range(Wo):
                iw0 = ow * stride - pad
                if rows_inside and iw0 >= 0 and iw0 + K <= W:  # every tap inside: no checks
                    win = x[n, np.uint64(ih0) : np.uint64(ih0 + K), np.uint64(iw0) : np.uint64(iw0 + K)]
                    for c in range(C):
                        u = np.uint64(c)
                        s = np.int32(bias[u])
                        for i in range(K):
                            for j in range(K):
                                s += np.int16((np.int16(win[i, j, u]) - z) * wt[i, j, u])
                        acc[u] = s
                else:  # at the border: version 1's path
                    _pixel(x, n, ih0, iw0, z, wt, bias, acc, 0)
                o = out[n, oh, ow]
                for c in range(C):
                    o[c] = requant(acc[c], M[c], zp, lo, hi)

    return depthwise_v3


depthwise_v3 = {3: _make_v3(3), 5: _make_v3(5)}  # by kernel size (MobileNet's two)


def pack_taps(wt):
    """wt (K, K, C) int -> (K, ceil(K / 4), C) int32: for each kernel row and each 4 columns,
    a channel's 4 weights as the bytes of one word (zero past the last column): the operand
    of version 4's ``vpdpbusd``."""
    K, Kw, C = wt.shape
    G = -(-Kw // 4)
    b = np.zeros((K, G * 4, C), np.int8)
    b[:, :Kw] = wt
    return np.ascontiguousarray(b.reshape(K, G, 4, C).transpose(0, 1, 3, 2)).view(np.int32)[..., 0]


def fold_taps(wt, bias, zx):
    """``bias - z_x * sum_taps wt``: the zero point's term, so that version 4 multiplies raw bytes."""
    return (np.asarray(bias, np.int64) - np.int64(zx) * wt.astype(np.int64).sum((0, 1))).astype(np.int32)


@njit(inline="always", **_opts)
def _v4_row(K, x, n, ih0, oh, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, acc):
    """Output row ``oh`` of image ``n`` (in ``out``), whose taps start at row ``ih0`` of ``x``."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    Wo = out.shape[2]
    blocks = -(-C // LANES) if C >= LANES else 0
    rows_inside = ih0 >= 0 and ih0 + K <= H
    for ow in range(Wo):
        iw0 = ow * stride - pad
        if blocks == 0:  # fewer channels than a vector: the per-tap checked path
            _pixel(x, n, ih0, iw0, np.int16(zx), wt, bias, acc, 0)
            o = out[n, oh, ow]
            for c in range(C):
                o[c] = requant(acc[c], M[c], zp, lo, hi)
            continue
        # the last block ends at channel C (it overlaps the one before when C % 16 != 0,
        # and writes the same values there again)
        inside = rows_inside and iw0 >= 0 and iw0 + K <= W
        for b in range(blocks):
            c0 = min(b * LANES, C - LANES)
            if inside:
                dpbusd_dw_q(K, False, out, x, n, ih0, iw0, oh, ow, c0, wpk, bias_f, M, zp, lo, hi, zx)
            else:
                dpbusd_dw_q(K, True, out, x, n, ih0, iw0, oh, ow, c0, wpk, bias_f, M, zp, lo, hi, zx)


@njit(parallel=True, **_opts)
def _v4(K, x, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out):
    N, Ho, C = x.shape[0], out.shape[1], x.shape[3]
    for t in prange(N * Ho):
        n, oh = t // Ho, t % Ho
        acc = np.empty(C, np.int32)
        ih0 = oh * stride - pad
        _v4_row(K, x, n, ih0, oh, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, acc)


@njit(**_opts)
def _v4_band(K, x, r0, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, oh0):
    acc = np.empty(x.shape[3], np.int32)
    for r in range(out.shape[1]):
        ih0 = (oh0 + r) * stride - pad - r0
        _v4_row(K, x, 0, ih0, r, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, acc)


@njit(**_opts)
def depthwise_v4(x, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out):
    """Version 4, the whole layer (parallel over output rows); K = 3 or 5 (the kernel size a
    constant in the code: each its own compiled kernel)."""
    K = wt.shape[0]
    if K == 3:
        _v4(3, x, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out)
    elif K == 5:
        _v4(5, x, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out)
    else:
        raise ValueError("depthwise_v4: the kernel must be 3x3 or 5x5")


@njit(**_opts)
def depthwise_band(x, r0, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, oh0):
    """Version 4 on one thread for a band of rows (the fused block's tiles, :mod:`kernels.qops`):
    output rows oh0 ... oh0 + out.shape[1] - 1 of one image into ``out`` (1, rows, Wo, C), from
    ``x`` (1, rows, W, C), that image's input rows from ``r0`` on: every row those outputs read
    inside the image (a tap above or below ``x`` is then in the padding)."""
    K = wt.shape[0]
    if K == 3:
        _v4_band(3, x, r0, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, oh0)
    elif K == 5:
        _v4_band(5, x, r0, zx, wt, bias, wpk, bias_f, M, zp, lo, hi, stride, pad, out, oh0)
    else:
        raise ValueError("depthwise_band: the kernel must be 3x3 or 5x5")


V4_KERNELS = (3, 5)
DEPTHWISE = {1: depthwise_v1, 2: depthwise_v2, 3: depthwise_v3, 4: depthwise_v4}  # 3: by kernel size
FLAT_MAX_CHANNELS = 64  # version 2 where its rows stay short (the 32-channel layers)
