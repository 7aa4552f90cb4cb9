"""The int8 depthwise convolution, channels-last, with its requantization.

    acc[n, h, w, c] = b[c] + sum_{i, j} (x[n, h s + i - p, w s + j - p, c] - z_x) * wt[i, j, c]
    out[n, h, w, c] = clamp(rint(float32(acc) * M[c]) + z_out, lo, hi)

Taps that fall in the padding are skipped: they hold real 0, which is ``z_x`` in integers and
adds nothing once the zero point is subtracted. x: (N, H, W, C) uint8; wt: (kh, kw, C) int16
(the int8 weights widened once, tap-major, so that each tap's C weights are contiguous).

Loop order: (n, output row) pairs over the threads; for each output pixel, the taps, then the C
channels innermost: contiguous in x, wt and acc, so each tap is one widening multiply-add over
C lanes (int16 x int16 -> int32, ``vpmaddwd``-class), the accumulator row staying in L1.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .qgemm import requant

_opts = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(parallel=True, **_opts)
def depthwise(x, zx, wt, bias, M, zp, lo, hi, stride, pad, out):
    N, H, W, C = x.shape
    kh, kw = wt.shape[0], wt.shape[1]
    Ho, Wo = out.shape[1], out.shape[2]
    for t in prange(N * Ho):
        n, oh = t // Ho, t % Ho
        acc = np.empty(C, np.int32)
        for ow in range(Wo):
            for c in range(C):
                acc[c] = bias[c]
            for i in range(kh):
                ih = oh * stride + i - pad
                if ih < 0 or ih >= H:
                    continue
                for j in range(kw):
                    iw = ow * stride + j - pad
                    if iw < 0 or iw >= W:
                        continue
                    for c in range(C):
                        acc[c] += (np.int32(x[n, ih, iw, c]) - zx) * np.int32(wt[i, j, c])
            for c in range(C):
                out[n, oh, ow, c] = requant(acc[c], M[c], zp, lo, hi)
