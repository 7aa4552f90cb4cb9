"""Depthwise convolution, from the plain loop nest to the fast kernel, one step at a time.

The formula (channel multiplier 1; ``xp`` is x zero-padded by (ph, pw))::

    out[n, c, ho, wo] = sum_{i < kh, j < kw} w[c, i, j] * xp[n, c, ho*sh + i*dh, wo*sw + j*dw]
    dx[n, c, hi, wi]  = sum over (ho, wo, i, j) with ho*sh + i*dh - ph == hi, wo*sw + j*dw - pw == wi
                          of w[c, i, j] * dout[n, c, ho, wo]
    dw[c, i, j]       = sum_{n, ho, wo} dout[n, c, ho, wo] * xp[n, c, ho*sh + i*dh, wo*sw + j*dw]

Forward versions (each validated against ``numpy_impl`` in tests/test_kernels_depthwise_versions.py,
each timed by ``make bench``, the ``versions`` task of benchmarks/run.py):

    1  direct: the formula as a loop nest, NCHW, one thread, a bounds check per tap.
    2  loop order: taps outside, output pixels inside, the in-bounds range of wo
       computed once per tap: no branch in the inner loop, which walks W contiguously
       (vectorises for stride 1 only: stride 2 reads every other element).
    3  parallel outer axis: version 2 with prange over the N*C independent planes.
    4  layout NHWC: channels become the innermost, contiguous axis, so the inner loop
       is a SIMD multiply-add over C for every stride and dilation; one thread.
    5  parallel rows: version 4 with prange over the N*H_out output rows (each row is
       written by one thread: race-free).
    6  register accumulation: each output pixel's C-vector is accumulated over the
       kh*kw taps in a small buffer, then stored once, instead of read-modify-writing
       the output row once per tap.
    7  3x3 specialisation (MobileNet's only depthwise kernel): the nine taps in one
       expression per channel; rows above/below the input read a shared zero row, so
       only the first/last columns need bounds checks; the interior has no branch.
    8  two output rows per step: at stride 1 rows ho and ho+1 read four input rows,
       not six, and the two middle ones are loaded once for both (12 loads feed 18
       multiply-adds instead of 18 feeding 9); stride 2 shares one row of five.
    9  2x2 output pixels per step at stride 1 when C >= 128: 16 input loads feed 36
       multiply-adds. Narrower C keeps version 8's rows: the longer loop body makes
       LLVM's vectorised loop need more channels than there are, and it runs scalar.
   10  flat rows at stride 1: an NHWC row is one run of W*C floats, and pixel wo's three
       taps are lanes a, a + C, a + 2C of it. The inner loop runs over P pixels' lanes
       at once (P*C ~ 256, the filter tiled P times), so LLVM's setup and overlap checks
       are paid per P pixels, not per pixel, which is what slowed the narrow layers;
       four output rows from six input rows per step. Wide small layers keep version 9.

Backward versions:

    1  direct: scatter dout through every tap into dx and dw, NCHW, one thread.
    2  NCHW, parallel over channels: a channel's dx planes and its dw filter are written
       by one thread only, so both reductions are race-free without buffers.
    3  NHWC, parallel: dx gathered per input row (prange over N*H: each row has one
       writer); dw accumulated per chunk of output rows into a private (kh, kw, C)
       buffer per chunk, the buffers summed at the end; SIMD over C in both.
    4  3x3 specialisation of version 3: zero rows for taps outside the input, a
       precomputed (tap column -> output column or -1) table for any stride, and
       the three taps of a column in one expression; at stride 1, dx is the
       forward kernel (version 7) applied to dout with the filter flipped.
    5  version 4 with the new forward: at stride 1 dx is forward version 9 on dout;
       dw takes four output pixels per update of its accumulators (six input
       columns, one read-modify-write of the 3x3xC partial sums instead of four).
    6  stride 2 dx: an input pixel gets taps 0 and 2 of a row or tap 1 alone (by the
       parity of its column and row), so it is written once from its one to four
       products instead of read-modify-written per tap.
    7  stride 1: dx by forward version 10; dw over flat rows like version 10 when C
       divides DW_LANES, into per-chunk (9, DW_LANES) partial sums, one update per
       four output rows (otherwise version 5's dw).

Arguments: NCHW kernels take x (N, C, H, W), w (C, kh, kw); NHWC kernels take
x (N, H, W, C), w (kh, kw, C). ``out``/``dx``/``dw`` are preallocated by the caller.
(sh, sw) stride, (ph, pw) top/left padding, (dh, dw_) dilation; bottom/right padding
is implied by the output size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._threads import FASTMATH, PARTS

_opts = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy"}


@njit(**_opts)
def wo_range(j, W, Wo, sw, pw, dw_):
    """Output columns wo whose input column wo*sw - pw + j*dw_ lies in [0, W)."""
    off = j * dw_ - pw
    lo = max(0, -((off) // sw) if off < 0 else 0)  # ceil(-off / sw)
    hi = min(Wo, (W - 1 - off) // sw + 1)
    return lo, max(lo, hi)


# --- forward ----------------------------------------------------------------------------


@njit(**_opts)
def fwd_v1(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, C, H, W = x.shape
    _, kh, kw = w.shape
    _, _, Ho, Wo = out.shape
    for n in range(N):
        for c in range(C):
            for ho in range(Ho):
                for wo in range(Wo):
                    acc = 0.0  # float64 accumulator, cast on store
                    for i in range(kh):
                        for j in range(kw):
                            hi, wi = ho * sh - ph + i * dh, wo * sw - pw + j * dw_
                            if 0 <= hi < H and 0 <= wi < W:
                                acc += w[c, i, j] * x[n, c, hi, wi]
                    out[n, c, ho, wo] = acc


@njit(**_opts)
def _plane_fwd(xp, wc, op, sh, sw, ph, pw, dh, dw_):
    """One (H, W) plane with its (kh, kw) filter into one (Ho, Wo) output plane."""
    H, W = xp.shape
    kh, kw = wc.shape
    Ho, Wo = op.shape
    op[:, :] = 0
    for i in range(kh):
        for j in range(kw):
            lo, hi_ = wo_range(j, W, Wo, sw, pw, dw_)
            wij = wc[i, j]
            for ho in range(Ho):
                hi = ho * sh - ph + i * dh
                if hi < 0 or hi >= H:
                    continue
                base = j * dw_ - pw
                for wo in range(lo, hi_):
                    op[ho, wo] += wij * xp[hi, wo * sw + base]


@njit(**_opts)
def fwd_v2(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, C = x.shape[:2]
    for n in range(N):
        for c in range(C):
            _plane_fwd(x[n, c], w[c], out[n, c], sh, sw, ph, pw, dh, dw_)


@njit(parallel=True, **_opts)
def fwd_v3(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, C = x.shape[:2]
    for p in prange(N * C):
        n, c = p // C, p % C
        _plane_fwd(x[n, c], w[c], out[n, c], sh, sw, ph, pw, dh, dw_)


@njit(**_opts)
def _row_fwd_nhwc(x, w, out, n, ho, sh, sw, ph, pw, dh, dw_):
    """Output row (n, ho): (Wo, C), read-modify-written once per tap."""
    H, W, C = x.shape[1:]
    kh, kw, _ = w.shape
    Wo = out.shape[2]
    orow = out[n, ho]
    orow[:, :] = 0
    for i in range(kh):
        hi = ho * sh - ph + i * dh
        if hi < 0 or hi >= H:
            continue
        xrow = x[n, hi]
        for j in range(kw):
            lo, hi_ = wo_range(j, W, Wo, sw, pw, dw_)
            wij = w[i, j]
            for wo in range(lo, hi_):
                wi = wo * sw - pw + j * dw_
                for c in range(C):  # SIMD over contiguous channels
                    orow[wo, c] += xrow[wi, c] * wij[c]


@njit(**_opts)
def fwd_v4(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, Ho = out.shape[:2]
    for n in range(N):
        for ho in range(Ho):
            _row_fwd_nhwc(x, w, out, n, ho, sh, sw, ph, pw, dh, dw_)


@njit(parallel=True, **_opts)
def fwd_v5(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, Ho = out.shape[:2]
    for r in prange(N * Ho):
        _row_fwd_nhwc(x, w, out, r // Ho, r % Ho, sh, sw, ph, pw, dh, dw_)


@njit(parallel=True, **_opts)
def fwd_v6(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, H, W, C = x.shape
    kh, kw, _ = w.shape
    _, Ho, Wo, _ = out.shape
    for r in prange(N * Ho):
        n, ho = r // Ho, r % Ho
        acc = np.empty(C, dtype=x.dtype)  # one pixel's channels: stays in L1 / registers
        for wo in range(Wo):
            acc[:] = 0
            for i in range(kh):
                hi = ho * sh - ph + i * dh
                if hi < 0 or hi >= H:
                    continue
                for j in range(kw):
                    wi = wo * sw - pw + j * dw_
                    if wi < 0 or wi >= W:
                        continue
                    for c in range(C):
                        acc[c] += x[n, hi, wi, c] * w[i, j, c]
            for c in range(C):
                out[n, ho, wo, c] = acc[c]


@njit(parallel=True, **_opts)
def fwd_v7(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    for r in prange(N * Ho):
        n, ho = r // Ho, r % Ho
        h0 = ho * sh - ph
        x0 = x[n, h0] if 0 <= h0 < H else zero  # (W, C) rows of taps i = 0, 1, 2
        x1 = x[n, h0 + 1] if 0 <= h0 + 1 < H else zero
        x2 = x[n, h0 + 2] if 0 <= h0 + 2 < H else zero
        orow = out[n, ho]
        for wo in range(Wo):
            a = wo * sw - pw  # input column of tap j = 0
            if a >= 0 and a + 2 < W:
                for c in range(C):
                    orow[wo, c] = (
                        x0[a, c] * w[0, 0, c] + x0[a + 1, c] * w[0, 1, c] + x0[a + 2, c] * w[0, 2, c]
                        + x1[a, c] * w[1, 0, c] + x1[a + 1, c] * w[1, 1, c] + x1[a + 2, c] * w[1, 2, c]
                        + x2[a, c] * w[2, 0, c] + x2[a + 1, c] * w[2, 1, c] + x2[a + 2, c] * w[2, 2, c]
                    )  # fmt: skip
            else:
                orow[wo, :] = 0
                for j in range(3):
                    if 0 <= a + j < W:
                        for c in range(C):
                            orow[wo, c] += (
                                x0[a + j, c] * w[0, j, c]
                                + x1[a + j, c] * w[1, j, c]
                                + x2[a + j, c] * w[2, j, c]
                            )


@njit(**_opts)
def _row(x, zero, n, h):
    """Input row (n, h), or the shared zero row outside the input: no bounds test per tap."""
    return x[n, h] if 0 <= h < x.shape[1] else zero


@njit(**_opts)
def _px3x3(x0, x1, x2, w, orow, wo, a, W):
    """One output pixel at any column (taps outside [0, W) skipped): the borders."""
    for c in range(orow.shape[1]):
        orow[wo, c] = 0
    for j in range(3):
        if 0 <= a + j < W:
            for c in range(orow.shape[1]):
                orow[wo, c] += (
                    x0[a + j, c] * w[0, j, c] + x1[a + j, c] * w[1, j, c] + x2[a + j, c] * w[2, j, c]
                )


@njit(**_opts)
def _rows2_s1(x0, x1, x2, x3, w, o0, o1, lo, hi, sw, pw):
    """Two output rows at stride 1 from four input rows: x1 and x2 are read once for both."""
    for wo in range(lo, hi):
        a = wo * sw - pw
        for c in range(o0.shape[1]):
            w00, w01, w02 = w[0, 0, c], w[0, 1, c], w[0, 2, c]
            w10, w11, w12 = w[1, 0, c], w[1, 1, c], w[1, 2, c]
            w20, w21, w22 = w[2, 0, c], w[2, 1, c], w[2, 2, c]
            b0, b1, b2 = x1[a, c], x1[a + 1, c], x1[a + 2, c]
            d0, d1, d2 = x2[a, c], x2[a + 1, c], x2[a + 2, c]
            o0[wo, c] = (x0[a, c] * w00 + x0[a + 1, c] * w01 + x0[a + 2, c] * w02
                         + b0 * w10 + b1 * w11 + b2 * w12 + d0 * w20 + d1 * w21 + d2 * w22)  # fmt: skip
            o1[wo, c] = (b0 * w00 + b1 * w01 + b2 * w02 + d0 * w10 + d1 * w11 + d2 * w12
                         + x3[a, c] * w20 + x3[a + 1, c] * w21 + x3[a + 2, c] * w22)  # fmt: skip


@njit(**_opts)
def _rows2_s2(x0, x1, x2, x3, x4, w, o0, o1, lo, hi, sw, pw):
    """Two output rows at stride 2 from five input rows: x2 is read once for both."""
    for wo in range(lo, hi):
        a = wo * sw - pw
        for c in range(o0.shape[1]):
            d0, d1, d2 = x2[a, c], x2[a + 1, c], x2[a + 2, c]
            o0[wo, c] = (x0[a, c] * w[0, 0, c] + x0[a + 1, c] * w[0, 1, c] + x0[a + 2, c] * w[0, 2, c]
                         + x1[a, c] * w[1, 0, c] + x1[a + 1, c] * w[1, 1, c] + x1[a + 2, c] * w[1, 2, c]
                         + d0 * w[2, 0, c] + d1 * w[2, 1, c] + d2 * w[2, 2, c])  # fmt: skip
            o1[wo, c] = (d0 * w[0, 0, c] + d1 * w[0, 1, c] + d2 * w[0, 2, c]
                         + x3[a, c] * w[1, 0, c] + x3[a + 1, c] * w[1, 1, c] + x3[a + 2, c] * w[1, 2, c]
                         + x4[a, c] * w[2, 0, c] + x4[a + 1, c] * w[2, 1, c]
                         + x4[a + 2, c] * w[2, 2, c])  # fmt: skip


@njit(parallel=True, **_opts)
def fwd_v8(x, w, out, sh, sw, ph, pw, dh, dw_):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    lo = min(Wo, (pw + sw - 1) // sw)  # first output column whose three taps are inside
    hi = max(lo, min(Wo, (W - 3 + pw) // sw + 1))  # one past the last
    pairs = (Ho + 1) // 2
    for r in prange(N * pairs):
        n, ho = r // pairs, 2 * (r % pairs)
        h0 = ho * sh - ph  # input rows h0 .. h0 + sh + 2 feed output rows ho and ho + 1
        x0, x1, x2 = _row(x, zero, n, h0), _row(x, zero, n, h0 + 1), _row(x, zero, n, h0 + 2)
        y0, y1, y2 = _row(x, zero, n, h0 + sh), _row(x, zero, n, h0 + sh + 1), _row(x, zero, n, h0 + sh + 2)
        o0 = out[n, ho]
        o1 = out[n, ho + 1] if ho + 1 < Ho else np.empty((Wo, C), dtype=out.dtype)  # odd Ho: a spare row
        if sh == 1:  # y0, y1 are x1, x2
            _rows2_s1(x0, x1, x2, y2, w, o0, o1, lo, hi, sw, pw)
        elif sh == 2:  # y0 is x2
            _rows2_s2(x0, x1, x2, y1, y2, w, o0, o1, lo, hi, sw, pw)
        else:
            _row_3x3(x0, x1, x2, w, o0, lo, hi, sw, pw)
            _row_3x3(y0, y1, y2, w, o1, lo, hi, sw, pw)
        for k in range(lo + Wo - hi):  # the border columns
            wo = k if k < lo else hi + k - lo
            _px3x3(x0, x1, x2, w, o0, wo, wo * sw - pw, W)
            _px3x3(y0, y1, y2, w, o1, wo, wo * sw - pw, W)


@njit(**_opts)
def _block2x2_s1(x0, x1, x2, x3, w, o0, o1, lo, hi, pw):
    """2x2 output pixels per step at stride 1: 16 input loads feed 36 multiply-adds.

    Ends at hi - (hi - lo) % 2; the caller finishes an odd last column."""
    for wo in range(lo, hi - 1, 2):
        a = wo - pw
        for c in range(o0.shape[1]):
            w00, w01, w02 = w[0, 0, c], w[0, 1, c], w[0, 2, c]
            w10, w11, w12 = w[1, 0, c], w[1, 1, c], w[1, 2, c]
            w20, w21, w22 = w[2, 0, c], w[2, 1, c], w[2, 2, c]
            a0, a1, a2, a3 = x0[a, c], x0[a + 1, c], x0[a + 2, c], x0[a + 3, c]
            b0, b1, b2, b3 = x1[a, c], x1[a + 1, c], x1[a + 2, c], x1[a + 3, c]
            d0, d1, d2, d3 = x2[a, c], x2[a + 1, c], x2[a + 2, c], x2[a + 3, c]
            e0, e1, e2, e3 = x3[a, c], x3[a + 1, c], x3[a + 2, c], x3[a + 3, c]
            o0[wo, c] = (a0 * w00 + a1 * w01 + a2 * w02
                         + b0 * w10 + b1 * w11 + b2 * w12 + d0 * w20 + d1 * w21 + d2 * w22)  # fmt: skip
            o0[wo + 1, c] = (a1 * w00 + a2 * w01 + a3 * w02
                             + b1 * w10 + b2 * w11 + b3 * w12 + d1 * w20 + d2 * w21 + d3 * w22)  # fmt: skip
            o1[wo, c] = (b0 * w00 + b1 * w01 + b2 * w02
                         + d0 * w10 + d1 * w11 + d2 * w12 + e0 * w20 + e1 * w21 + e2 * w22)  # fmt: skip
            o1[wo + 1, c] = (b1 * w00 + b2 * w01 + b3 * w02
                             + d1 * w10 + d2 * w11 + d3 * w12 + e1 * w20 + e2 * w21 + e3 * w22)  # fmt: skip


@njit(**_opts)
def _row_3x3(x0, x1, x2, w, orow, lo, hi, sw, pw):
    """Output columns [lo, hi) of one row, all taps inside: version 7's interior."""
    for wo in range(lo, hi):
        a = wo * sw - pw
        for c in range(orow.shape[1]):
            orow[wo, c] = (
                x0[a, c] * w[0, 0, c] + x0[a + 1, c] * w[0, 1, c] + x0[a + 2, c] * w[0, 2, c]
                + x1[a, c] * w[1, 0, c] + x1[a + 1, c] * w[1, 1, c] + x1[a + 2, c] * w[1, 2, c]
                + x2[a, c] * w[2, 0, c] + x2[a + 1, c] * w[2, 1, c] + x2[a + 2, c] * w[2, 2, c]
            )  # fmt: skip


WIDE_C = 128  # below this the 2x2 loop body runs mostly in its scalar remainder (measured)


def fwd_v9(x, w, out, sh, sw, ph, pw, dh, dw_):
    """Version 8 with 2x2 blocks when C >= WIDE_C (read per call: tests lower it to reach that path)."""
    _fwd_v9(x, w, out, sh, sw, ph, pw, WIDE_C)


@njit(parallel=True, **_opts)
def _fwd_v9(x, w, out, sh, sw, ph, pw, wide_c):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    lo = min(Wo, (pw + sw - 1) // sw)
    hi = max(lo, min(Wo, (W - 3 + pw) // sw + 1))
    pairs = (Ho + 1) // 2
    for r in prange(N * pairs):
        n, ho = r // pairs, 2 * (r % pairs)
        h0 = ho * sh - ph
        x0, x1, x2 = _row(x, zero, n, h0), _row(x, zero, n, h0 + 1), _row(x, zero, n, h0 + 2)
        y0, y1, y2 = _row(x, zero, n, h0 + sh), _row(x, zero, n, h0 + sh + 1), _row(x, zero, n, h0 + sh + 2)
        o0 = out[n, ho]
        o1 = out[n, ho + 1] if ho + 1 < Ho else np.empty((Wo, C), dtype=out.dtype)
        if sh == 1 and sw == 1 and C >= wide_c:
            _block2x2_s1(x0, x1, x2, y2, w, o0, o1, lo, hi, pw)
            if (hi - lo) % 2:
                _rows2_s1(x0, x1, x2, y2, w, o0, o1, hi - 1, hi, sw, pw)
        elif sh == 1:
            _rows2_s1(x0, x1, x2, y2, w, o0, o1, lo, hi, sw, pw)
        else:  # stride 2 shares one input row of five: one row at a time is faster (measured)
            _row_3x3(x0, x1, x2, w, o0, lo, hi, sw, pw)
            _row_3x3(y0, y1, y2, w, o1, lo, hi, sw, pw)
        for k in range(lo + Wo - hi):  # the border columns
            wo = k if k < lo else hi + k - lo
            _px3x3(x0, x1, x2, w, o0, wo, wo * sw - pw, W)
            _px3x3(y0, y1, y2, w, o1, wo, wo * sw - pw, W)


@njit(**_opts)
def _tile_weights(w, P):
    """(3, 3, C) filter -> (9, P*C): each tap's C weights repeated for P pixels."""
    C = w.shape[2]
    wt = np.empty((9, P * C), dtype=w.dtype)
    for i in range(3):
        for j in range(3):
            for p in range(P):
                wt[3 * i + j, p * C : (p + 1) * C] = w[i, j]
    return wt


@njit(**_opts)
def _flat4_s1(x0, x1, x2, x3, x4, x5, wt, o0, o1, o2, o3, lo, stop, pw, C, P):
    """Four output rows at stride 1 over columns [lo, stop), P pixels (P*C lanes) per step.

    Rows are flat (W*C,): pixel wo's taps are lanes a, a + C, a + 2C. Unsigned indices
    skip Numba's negative-index wraparound, whose per-lane select blocks vectorisation."""
    L = P * C
    for wo in range(lo, stop, P):
        a = (wo - pw) * C
        b = wo * C
        for k in range(L):
            i, j, m, q = np.uint64(a + k), np.uint64(a + k + C), np.uint64(a + k + 2 * C), np.uint64(b + k)
            w00, w01, w02 = wt[0, k], wt[1, k], wt[2, k]
            w10, w11, w12 = wt[3, k], wt[4, k], wt[5, k]
            w20, w21, w22 = wt[6, k], wt[7, k], wt[8, k]
            b0, b1, b2 = x1[i], x1[j], x1[m]
            d0, d1, d2 = x2[i], x2[j], x2[m]
            e0, e1, e2 = x3[i], x3[j], x3[m]
            f0, f1, f2 = x4[i], x4[j], x4[m]
            o0[q] = (x0[i] * w00 + x0[j] * w01 + x0[m] * w02
                     + b0 * w10 + b1 * w11 + b2 * w12 + d0 * w20 + d1 * w21 + d2 * w22)  # fmt: skip
            o1[q] = (b0 * w00 + b1 * w01 + b2 * w02
                     + d0 * w10 + d1 * w11 + d2 * w12 + e0 * w20 + e1 * w21 + e2 * w22)  # fmt: skip
            o2[q] = (d0 * w00 + d1 * w01 + d2 * w02
                     + e0 * w10 + e1 * w11 + e2 * w12 + f0 * w20 + f1 * w21 + f2 * w22)  # fmt: skip
            o3[q] = (e0 * w00 + e1 * w01 + e2 * w02
                     + f0 * w10 + f1 * w11 + f2 * w12 + x5[i] * w20 + x5[j] * w21 + x5[m] * w22)  # fmt: skip


@njit(**_opts)
def _out_row(out, n, h, spare):
    """Output row (n, h), or a scratch row past the last one (its results are dropped)."""
    return out[n, h] if h < out.shape[1] else spare


@njit(parallel=True, **_opts)
def _fwd_v10(x, w, wt, out, ph, pw, P):
    """Stride 1: four output rows from six input rows per step, columns as one flat lane run."""
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    lo = min(Wo, pw)
    hi = max(lo, min(Wo, W - 2 + pw))
    stop = lo + (hi - lo) // P * P  # [stop, hi) are version 8's, per pixel
    quads = (Ho + 3) // 4
    for r in prange(N * quads):
        n, ho = r // quads, 4 * (r % quads)
        h0 = ho - ph
        x0, x1, x2 = _row(x, zero, n, h0), _row(x, zero, n, h0 + 1), _row(x, zero, n, h0 + 2)
        x3, x4, x5 = _row(x, zero, n, h0 + 3), _row(x, zero, n, h0 + 4), _row(x, zero, n, h0 + 5)
        spare = np.empty((Wo, C), dtype=out.dtype) if ho + 3 >= Ho else out[n, ho]
        o0, o1 = out[n, ho], _out_row(out, n, ho + 1, spare)
        o2, o3 = _out_row(out, n, ho + 2, spare), _out_row(out, n, ho + 3, spare)
        _flat4_s1(x0.reshape(-1), x1.reshape(-1), x2.reshape(-1), x3.reshape(-1), x4.reshape(-1),
                  x5.reshape(-1), wt, o0.reshape(-1), o1.reshape(-1), o2.reshape(-1), o3.reshape(-1),
                  lo, stop, pw, C, P)  # fmt: skip
        _rows2_s1(x0, x1, x2, x3, w, o0, o1, stop, hi, 1, pw)
        _rows2_s1(x2, x3, x4, x5, w, o2, o3, stop, hi, 1, pw)
        for k in range(lo + Wo - hi):  # the border columns
            wo = k if k < lo else hi + k - lo
            _px3x3(x0, x1, x2, w, o0, wo, wo - pw, W)
            _px3x3(x1, x2, x3, w, o1, wo, wo - pw, W)
            _px3x3(x2, x3, x4, w, o2, wo, wo - pw, W)
            _px3x3(x3, x4, x5, w, o3, wo, wo - pw, W)


FLAT_LANES = 256  # lanes per flat step: P = FLAT_LANES // C pixels (at least one)
FLAT_MIN_HW = 56  # wide layers (C >= WIDE_C) go flat only from this output size up (measured)


def fwd_v10(x, w, out, sh, sw, ph, pw, dh, dw_):
    """Version 9, with flat four-row steps at stride 1 when C < WIDE_C or Ho >= FLAT_MIN_HW."""
    C, Ho = x.shape[3], out.shape[1]
    if sh == sw == 1 and (C < WIDE_C or Ho >= FLAT_MIN_HW):
        P = max(1, FLAT_LANES // C)
        _fwd_v10(x, w, _tile_weights(w, P), out, ph, pw, P)
    else:
        _fwd_v9(x, w, out, sh, sw, ph, pw, WIDE_C)


# --- backward ---------------------------------------------------------------------------


@njit(**_opts)
def bwd_v1(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_):
    N, C, H, W = x.shape
    _, kh, kw = w.shape
    _, _, Ho, Wo = dout.shape
    dx[...] = 0
    dw[...] = 0
    for n in range(N):
        for c in range(C):
            for ho in range(Ho):
                for wo in range(Wo):
                    g = dout[n, c, ho, wo]
                    for i in range(kh):
                        for j in range(kw):
                            hi, wi = ho * sh - ph + i * dh, wo * sw - pw + j * dw_
                            if 0 <= hi < H and 0 <= wi < W:
                                dx[n, c, hi, wi] += w[c, i, j] * g
                                dw[c, i, j] += x[n, c, hi, wi] * g


@njit(parallel=True, **_opts)
def bwd_v2(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_):
    N, C, H, W = x.shape
    _, kh, kw = w.shape
    _, _, Ho, Wo = dout.shape
    for c in prange(C):  # one writer per channel: dx[:, c] and dw[c]
        dx[:, c] = 0
        for i in range(kh):
            for j in range(kw):
                lo, hi_ = wo_range(j, W, Wo, sw, pw, dw_)
                base = j * dw_ - pw
                wij = w[c, i, j]
                acc = 0.0
                for n in range(N):
                    for ho in range(Ho):
                        hi = ho * sh - ph + i * dh
                        if hi < 0 or hi >= H:
                            continue
                        for wo in range(lo, hi_):
                            g = dout[n, c, ho, wo]
                            dx[n, c, hi, wo * sw + base] += wij * g
                            acc += x[n, c, hi, wo * sw + base] * g
                dw[c, i, j] = acc


@njit(parallel=True, **_opts)
def _bwd_dx_nhwc(dout, w, dx, sh, sw, ph, pw, dh, dw_):
    N, H, W, C = dx.shape
    kh, kw, _ = w.shape
    _, Ho, Wo, _ = dout.shape
    for r in prange(N * H):  # input row (n, hi) has a single writer
        n, hi = r // H, r % H
        drow = dx[n, hi]
        drow[:, :] = 0
        for i in range(kh):
            num = hi + ph - i * dh
            if num < 0 or num % sh != 0 or num // sh >= Ho:
                continue
            grow = dout[n, num // sh]
            for j in range(kw):
                lo, hi_ = wo_range(j, W, Wo, sw, pw, dw_)
                wij = w[i, j]
                for wo in range(lo, hi_):
                    wi = wo * sw - pw + j * dw_
                    for c in range(C):
                        drow[wi, c] += grow[wo, c] * wij[c]


@njit(parallel=True, **_opts)
def _bwd_dw_nhwc(dout, x, partial, sh, sw, ph, pw, dh, dw_):
    """partial[t] (kh, kw, C) accumulates the dw of chunk t of the output rows."""
    N, H, W, C = x.shape
    T, kh, kw, _ = partial.shape
    _, Ho, Wo, _ = dout.shape
    rows = N * Ho
    for t in prange(T):
        pt = partial[t]
        pt[...] = 0
        for r in range(t * rows // T, (t + 1) * rows // T):
            n, ho = r // Ho, r % Ho
            grow = dout[n, ho]
            for i in range(kh):
                hi = ho * sh - ph + i * dh
                if hi < 0 or hi >= H:
                    continue
                xrow = x[n, hi]
                for j in range(kw):
                    lo, hi_ = wo_range(j, W, Wo, sw, pw, dw_)
                    acc = pt[i, j]
                    for wo in range(lo, hi_):
                        wi = wo * sw - pw + j * dw_
                        for c in range(C):
                            acc[c] += grow[wo, c] * xrow[wi, c]


def bwd_v3(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks=None):
    """NHWC: dx by gathering per input row, dw by per-chunk buffers then a sum."""
    chunks = chunks or PARTS
    chunks = max(1, min(chunks, dout.shape[0] * dout.shape[1]))
    _bwd_dx_nhwc(dout, w, dx, sh, sw, ph, pw, dh, dw_)
    partial = np.empty((chunks, *w.shape), dtype=x.dtype)
    _bwd_dw_nhwc(dout, x, partial, sh, sw, ph, pw, dh, dw_)
    np.sum(partial, axis=0, out=dw)


@njit(**_opts)
def _tap_table(n_in, n_out, stride, pad):
    """t[j, p] = the output index whose tap j reads input index p, or -1 (3 taps, dilation 1)."""
    t = np.full((3, n_in), -1, dtype=np.int64)
    for j in range(3):
        for p in range(n_in):
            num = p + pad - j
            if num >= 0 and num % stride == 0 and num // stride < n_out:
                t[j, p] = num // stride
    return t


@njit(parallel=True, **_opts)
def _bwd_dx_3x3(dout, w, dx, sh, sw, ph, pw):
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    zero = np.zeros((Wo, C), dtype=dx.dtype)
    rows, cols = _tap_table(H, Ho, sh, ph), _tap_table(W, Wo, sw, pw)
    for r in prange(N * H):
        n, hi = r // H, r % H
        g0 = dout[n, rows[0, hi]] if rows[0, hi] >= 0 else zero  # (Wo, C): the row tap i reads from
        g1 = dout[n, rows[1, hi]] if rows[1, hi] >= 0 else zero
        g2 = dout[n, rows[2, hi]] if rows[2, hi] >= 0 else zero
        drow = dx[n, hi]
        drow[:, :] = 0
        for wi in range(W):
            for j in range(3):
                wo = cols[j, wi]
                if wo >= 0:
                    for c in range(C):
                        drow[wi, c] += (
                            g0[wo, c] * w[0, j, c] + g1[wo, c] * w[1, j, c] + g2[wo, c] * w[2, j, c]
                        )


@njit(parallel=True, **_opts)
def _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw):
    N, H, W, C = x.shape
    T = partial.shape[0]
    _, Ho, Wo, _ = dout.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    rows = N * Ho
    for t in prange(T):
        p = partial[t]  # (3, 3, C), private to this chunk
        p[...] = 0
        for r in range(t * rows // T, (t + 1) * rows // T):
            n, ho = r // Ho, r % Ho
            h0 = ho * sh - ph
            x0 = x[n, h0] if 0 <= h0 < H else zero
            x1 = x[n, h0 + 1] if 0 <= h0 + 1 < H else zero
            x2 = x[n, h0 + 2] if 0 <= h0 + 2 < H else zero
            g = dout[n, ho]
            for wo in range(Wo):
                a = wo * sw - pw
                for j in range(3):
                    if 0 <= a + j < W:
                        for c in range(C):
                            p[0, j, c] += g[wo, c] * x0[a + j, c]
                            p[1, j, c] += g[wo, c] * x1[a + j, c]
                            p[2, j, c] += g[wo, c] * x2[a + j, c]


def bwd_v4(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks=None):
    """NHWC, 3x3, dilation 1."""
    chunks = chunks or PARTS
    chunks = max(1, min(chunks, dout.shape[0] * dout.shape[1]))
    if sh == sw == 1:
        # stride 1: dx is dout correlated with the flipped filter, padded by 2 - p: the forward kernel
        fwd_v7(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)
    else:
        _bwd_dx_3x3(dout, w, dx, sh, sw, ph, pw)
    partial = np.empty((chunks, 3, 3, x.shape[3]), dtype=x.dtype)
    _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)
    np.sum(partial, axis=0, out=dw)


@njit(**_opts)
def _dw_px(g, x0, x1, x2, p, wo, a, W):
    """dw of one output pixel at any column (taps outside [0, W) skipped): the borders."""
    for j in range(3):
        if 0 <= a + j < W:
            for c in range(p.shape[2]):
                p[0, j, c] += g[wo, c] * x0[a + j, c]
                p[1, j, c] += g[wo, c] * x1[a + j, c]
                p[2, j, c] += g[wo, c] * x2[a + j, c]


@njit(**_opts)
def _dw_4px_s1(g, xi, pi, wo, a):
    """Row i of dw from four output pixels at stride 1: six input columns, one update of pi."""
    for c in range(pi.shape[1]):
        g0, g1, g2, g3 = g[wo, c], g[wo + 1, c], g[wo + 2, c], g[wo + 3, c]
        u0, u1, u2 = xi[a, c], xi[a + 1, c], xi[a + 2, c]
        u3, u4, u5 = xi[a + 3, c], xi[a + 4, c], xi[a + 5, c]
        pi[0, c] += g0 * u0 + g1 * u1 + g2 * u2 + g3 * u3
        pi[1, c] += g0 * u1 + g1 * u2 + g2 * u3 + g3 * u4
        pi[2, c] += g0 * u2 + g1 * u3 + g2 * u4 + g3 * u5


@njit(parallel=True, **_opts)
def _bwd_dw_v5(dout, x, partial, sh, ph, pw):
    """Stride 1 (either stride vertically); version 4's per-pixel updates stay faster at stride 2."""
    N, H, W, C = x.shape
    T = partial.shape[0]
    _, Ho, Wo, _ = dout.shape
    zero = np.zeros((W, C), dtype=x.dtype)
    lo = min(Wo, pw)
    hi = max(lo, min(Wo, W - 2 + pw))
    rows = N * Ho
    for t in prange(T):
        p = partial[t]
        p[...] = 0
        for r in range(t * rows // T, (t + 1) * rows // T):
            n, ho = r // Ho, r % Ho
            h0 = ho * sh - ph
            x0, x1, x2 = _row(x, zero, n, h0), _row(x, zero, n, h0 + 1), _row(x, zero, n, h0 + 2)
            g = dout[n, ho]
            wo = lo
            while wo + 4 <= hi:
                _dw_4px_s1(g, x0, p[0], wo, wo - pw)
                _dw_4px_s1(g, x1, p[1], wo, wo - pw)
                _dw_4px_s1(g, x2, p[2], wo, wo - pw)
                wo += 4
            for k in range(lo + Wo - wo):  # border columns and the interior's last few
                c_ = k if k < lo else wo + k - lo
                _dw_px(g, x0, x1, x2, p, c_, c_ - pw, W)


def bwd_v5(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks=None):
    """NHWC, 3x3, dilation 1: at stride 1 dx by forward version 9, dw four pixels per update."""
    chunks = chunks or PARTS
    chunks = max(1, min(chunks, dout.shape[0] * dout.shape[1]))
    partial = np.empty((chunks, 3, 3, x.shape[3]), dtype=x.dtype)
    if sh == sw == 1:
        fwd_v9(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)
    else:
        _bwd_dx_3x3(dout, w, dx, sh, sw, ph, pw)
    if sw == 1:
        _bwd_dw_v5(dout, x, partial, sh, ph, pw)
    else:
        _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)
    np.sum(partial, axis=0, out=dw)


@njit(**_opts)
def _dx_s2_row(ga, ia, gb, ib, w, drow, cols, pw):
    """dx row at stride 2 from its (at most) two dout rows ga, gb with filter rows ia, ib.

    Input column wi gets taps j = 0 and 2 when wi + pw is even, tap j = 1 when odd: two
    or one products per dout row, each pixel written once (version 4 adds three times)."""
    Wo = ga.shape[0]
    for wi in range(drow.shape[0]):
        q = wi + pw
        if q % 2 == 0 and 1 <= q // 2 < Wo:
            u, v = q // 2, q // 2 - 1  # tap 0 reads dout column u, tap 2 column v
            for c in range(drow.shape[1]):
                drow[wi, c] = (ga[u, c] * w[ia, 0, c] + ga[v, c] * w[ia, 2, c]
                               + gb[u, c] * w[ib, 0, c] + gb[v, c] * w[ib, 2, c])  # fmt: skip
        elif q % 2 == 1 and 0 <= (q - 1) // 2 < Wo:
            u = (q - 1) // 2
            for c in range(drow.shape[1]):
                drow[wi, c] = ga[u, c] * w[ia, 1, c] + gb[u, c] * w[ib, 1, c]
        else:  # a border column: one tap at most
            for c in range(drow.shape[1]):
                drow[wi, c] = 0
            for j in range(3):
                wo = cols[j, wi]
                if wo >= 0:
                    for c in range(drow.shape[1]):
                        drow[wi, c] += ga[wo, c] * w[ia, j, c] + gb[wo, c] * w[ib, j, c]


@njit(parallel=True, **_opts)
def _bwd_dx_s2(dout, w, dx, ph, pw):
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    zero = np.zeros((Wo, C), dtype=dx.dtype)
    rows, cols = _tap_table(H, Ho, 2, ph), _tap_table(W, Wo, 2, pw)
    for r in prange(N * H):
        n, hi = r // H, r % H
        if (hi + ph) % 2 == 0:  # filter rows 0 and 2 reach this input row
            ga = dout[n, rows[0, hi]] if rows[0, hi] >= 0 else zero
            gb = dout[n, rows[2, hi]] if rows[2, hi] >= 0 else zero
            _dx_s2_row(ga, 0, gb, 2, w, dx[n, hi], cols, pw)
        else:  # filter row 1 only
            ga = dout[n, rows[1, hi]] if rows[1, hi] >= 0 else zero
            _dx_s2_row(ga, 1, zero, 1, w, dx[n, hi], cols, pw)


def bwd_v6(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks=None):
    """Version 5 with a stride-2 dx that writes each input pixel once from its 1-4 taps."""
    if sh == sw == 2:
        chunks = chunks or PARTS
        chunks = max(1, min(chunks, dout.shape[0] * dout.shape[1]))
        partial = np.empty((chunks, 3, 3, x.shape[3]), dtype=x.dtype)
        _bwd_dx_s2(dout, w, dx, ph, pw)
        _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)
        np.sum(partial, axis=0, out=dw)
    else:
        bwd_v5(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks)


DW_LANES = 256  # a constant trip count and row stride: LLVM vectorises the partial-sum rows only then


@njit(**_opts)
def _flat_dw4(g0, g1, g2, g3, x0, x1, x2, x3, x4, x5, q, lo, stop, pw, C, P):
    """q (9 * DW_LANES,) += the nine taps' products of four output rows over [lo, stop).

    One read-modify-write of the nine partial sums per four output rows."""
    for wo in range(lo, stop, P):
        a = (wo - pw) * C
        b = wo * C
        for k in range(DW_LANES):
            i, j, m, o = np.uint64(a + k), np.uint64(a + k + C), np.uint64(a + k + 2 * C), np.uint64(b + k)
            h0, h1, h2, h3 = g0[o], g1[o], g2[o], g3[o]
            b0, b1, b2 = x1[i], x1[j], x1[m]
            d0, d1, d2 = x2[i], x2[j], x2[m]
            e0, e1, e2 = x3[i], x3[j], x3[m]
            f0, f1, f2 = x4[i], x4[j], x4[m]
            q[k] += h0 * x0[i] + h1 * b0 + h2 * d0 + h3 * e0
            q[DW_LANES + k] += h0 * x0[j] + h1 * b1 + h2 * d1 + h3 * e1
            q[2 * DW_LANES + k] += h0 * x0[m] + h1 * b2 + h2 * d2 + h3 * e2
            q[3 * DW_LANES + k] += h0 * b0 + h1 * d0 + h2 * e0 + h3 * f0
            q[4 * DW_LANES + k] += h0 * b1 + h1 * d1 + h2 * e1 + h3 * f1
            q[5 * DW_LANES + k] += h0 * b2 + h1 * d2 + h2 * e2 + h3 * f2
            q[6 * DW_LANES + k] += h0 * d0 + h1 * e0 + h2 * f0 + h3 * x5[i]
            q[7 * DW_LANES + k] += h0 * d1 + h1 * e1 + h2 * f1 + h3 * x5[j]
            q[8 * DW_LANES + k] += h0 * d2 + h1 * e2 + h2 * f2 + h3 * x5[m]


@njit(parallel=True, **_opts)
def _bwd_dw_v7(dout, x, partial, flat, ph, pw):
    """Stride 1, C dividing DW_LANES: flat partial sums (9, DW_LANES) per chunk for the
    interior, the (3, 3, C) ones of version 5 for the border columns and the last few."""
    N, H, W, C = x.shape
    T = partial.shape[0]
    _, Ho, Wo, _ = dout.shape
    P = DW_LANES // C
    zero = np.zeros((W, C), dtype=x.dtype)
    gzero = np.zeros((Wo, C), dtype=x.dtype)  # dout rows past the last: they add nothing
    lo = min(Wo, pw)
    hi = max(lo, min(Wo, W - 2 + pw))
    stop = lo + (hi - lo) // P * P
    quads = (Ho + 3) // 4
    Q = N * quads
    for t in prange(T):
        p, q = partial[t], flat[t]
        p[...] = 0
        q[...] = 0
        for r in range(t * Q // T, (t + 1) * Q // T):
            n, ho = r // quads, 4 * (r % quads)
            h0 = ho - ph
            x0, x1, x2 = _row(x, zero, n, h0), _row(x, zero, n, h0 + 1), _row(x, zero, n, h0 + 2)
            x3, x4, x5 = _row(x, zero, n, h0 + 3), _row(x, zero, n, h0 + 4), _row(x, zero, n, h0 + 5)
            g0, g1 = dout[n, ho], _row(dout, gzero, n, ho + 1)
            g2, g3 = _row(dout, gzero, n, ho + 2), _row(dout, gzero, n, ho + 3)
            _flat_dw4(g0.reshape(-1), g1.reshape(-1), g2.reshape(-1), g3.reshape(-1), x0.reshape(-1),
                      x1.reshape(-1), x2.reshape(-1), x3.reshape(-1), x4.reshape(-1), x5.reshape(-1),
                      q, lo, stop, pw, C, P)  # fmt: skip
            for k in range(lo + Wo - stop):  # border columns and the interior's last few
                wo = k if k < lo else stop + k - lo
                _dw_px(g0, x0, x1, x2, p, wo, wo - pw, W)
                _dw_px(g1, x1, x2, x3, p, wo, wo - pw, W)
                _dw_px(g2, x2, x3, x4, p, wo, wo - pw, W)
                _dw_px(g3, x3, x4, x5, p, wo, wo - pw, W)


def bwd_v7(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks=None):
    """Version 6, at stride 1 with forward version 10 for dx and flat dw when C divides DW_LANES."""
    if not sh == sw == 1:
        bwd_v6(dout, x, w, dx, dw, sh, sw, ph, pw, dh, dw_, chunks)
        return
    C = x.shape[3]
    flat = C <= DW_LANES and DW_LANES % C == 0
    steps = dout.shape[0] * ((dout.shape[1] + 3) // 4 if flat else dout.shape[1])
    chunks = max(1, min(chunks or PARTS, steps))
    fwd_v10(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)
    partial = np.empty((chunks, 3, 3, C), dtype=x.dtype)
    if flat:
        sums = np.empty((chunks, 9 * DW_LANES), dtype=x.dtype)
        _bwd_dw_v7(dout, x, partial, sums, ph, pw)
        np.sum(partial, axis=0, out=dw)
        dw += sums.sum(axis=0).reshape(3, 3, DW_LANES // C, C).sum(axis=2)
    else:
        _bwd_dw_v5(dout, x, partial, 1, ph, pw)
        np.sum(partial, axis=0, out=dw)


FORWARD = {
    1: fwd_v1,
    2: fwd_v2,
    3: fwd_v3,
    4: fwd_v4,
    5: fwd_v5,
    6: fwd_v6,
    7: fwd_v7,
    8: fwd_v8,
    9: fwd_v9,
    10: fwd_v10,
}
BACKWARD = {1: bwd_v1, 2: bwd_v2, 3: bwd_v3, 4: bwd_v4, 5: bwd_v5, 6: bwd_v6, 7: bwd_v7}
NHWC_FORWARD = {4, 5, 6, 7, 8, 9, 10}
NHWC_BACKWARD = {3, 4, 5, 6, 7}
ONLY_3X3_FORWARD = {7, 8, 9, 10}  # versions that need kh == kw == 3 and dilation 1
ONLY_3X3_BACKWARD = {4, 5, 6, 7}
