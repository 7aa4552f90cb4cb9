"""Depthwise convolution, from the plain loop nest to the fast kernel, one step at a time.

The formula (channel multiplier 1; ``xp`` is x zero-padded by (ph, pw))::

    out[n, c, ho, wo] = sum_{i < kh, j < kw} w[c, i, j] * xp[n, c, ho*sh + i*dh, wo*sw + j*dw]
    dx[n, c, hi, wi]  = sum over (ho, wo, i, j) with ho*sh + i*dh - ph == hi, wo*sw + j*dw - pw == wi
                          of w[c, i, j] * dout[n, c, ho, wo]
    dw[c, i, j]       = sum_{n, ho, wo} dout[n, c, ho, wo] * xp[n, c, ho*sh + i*dh, wo*sw + j*dw]

Forward versions (each validated against ``numpy_impl`` in tests/test_kernels_depthwise.py,
each timed by benchmarks/bench_depthwise.py):

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

Arguments: NCHW kernels take x (N, C, H, W), w (C, kh, kw); NHWC kernels take
x (N, H, W, C), w (kh, kw, C). ``out``/``dx``/``dw`` are preallocated by the caller.
(sh, sw) stride, (ph, pw) top/left padding, (dh, dw_) dilation; bottom/right padding
is implied by the output size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_opts = {"cache": True, "fastmath": True, "error_model": "numpy"}


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
    import numba

    chunks = chunks or numba.get_num_threads()
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
    import numba

    chunks = chunks or numba.get_num_threads()
    chunks = max(1, min(chunks, dout.shape[0] * dout.shape[1]))
    if sh == sw == 1:
        # stride 1: dx is dout correlated with the flipped filter, padded by 2 - p: the forward kernel
        fwd_v7(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)
    else:
        _bwd_dx_3x3(dout, w, dx, sh, sw, ph, pw)
    partial = np.empty((chunks, 3, 3, x.shape[3]), dtype=x.dtype)
    _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)
    np.sum(partial, axis=0, out=dw)


FORWARD = {1: fwd_v1, 2: fwd_v2, 3: fwd_v3, 4: fwd_v4, 5: fwd_v5, 6: fwd_v6, 7: fwd_v7}
BACKWARD = {1: bwd_v1, 2: bwd_v2, 3: bwd_v3, 4: bwd_v4}
NHWC_FORWARD = {4, 5, 6, 7}
NHWC_BACKWARD = {3, 4}
ONLY_3X3_FORWARD = {7}  # versions that need kh == kw == 3 and dilation 1
ONLY_3X3_BACKWARD = {4}
