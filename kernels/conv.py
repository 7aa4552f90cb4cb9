"""General convolution for channels-last input: im2col, then one GEMM.

MobileNet's only general convolution is the stem (3x3, stride 2, 3 -> 32
channels). In NHWC the k x k windows of every output pixel are rows of a
(N*H_out*W_out, kh*kw*C_in) matrix, so the convolution is one GEMM with the
(C_out, kh*kw*C_in) weight matrix, and the output comes out channels-last::

    cols[(n, ho, wo), (i, j, c)] = xp[n, ho*sh + i*dh, wo*sw + j*dw, c]
    out = cols @ W2^T;   dW2 = dout^T @ cols;   dcols = dout @ W2  -> scattered back tap by tap

Grouped convolutions and NCHW input go to the NumPy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numpy_impl.functional import conv as ref

from . import _gemm
from ._prep import is_channels_last


def _taps(xp, g):
    """Yield (i, j, the (N, H_out, W_out, C) view of xp that tap (i, j) reads)."""
    (sh, sw), (dh, dw), (ho, wo) = g.stride, g.dilation, g.out_hw
    for i in range(g.kernel[0]):
        for j in range(g.kernel[1]):
            yield (
                i,
                j,
                xp[:, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw],
            )


def _pad_nhwc(x, g):
    t, b, l, r = g.pads
    return np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (t, b), (l, r), (0, 0)))  # (N, Hp, Wp, C)


@njit(parallel=True, cache=True, error_model="numpy")
def _im2col(xp, cols, sh, sw, dh, dw):
    """cols[n, ho, wo, i, j, :] = xp[n, ho*sh + i*dh, wo*sw + j*dw, :], one output row per task."""
    N, Ho, Wo, kh, kw, C = cols.shape
    for r in prange(N * Ho):
        n, ho = r // Ho, r % Ho
        for wo in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    for c in range(C):
                        cols[n, ho, wo, i, j, c] = xp[n, ho * sh + i * dh, wo * sw + j * dw, c]


def _cols(xp, g):
    n, c = xp.shape[0], xp.shape[3]
    cols = np.empty((n, *g.out_hw, g.kernel[0], g.kernel[1], c), dtype=xp.dtype)  # (N, Ho, Wo, kh, kw, C)
    _im2col(np.ascontiguousarray(xp), cols, *g.stride, *g.dilation)  # C = 3: 9 short copies per pixel
    return cols.reshape(n * g.out_hw[0] * g.out_hw[1], -1)  # (N*Ho*Wo, kh*kw*C)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """``numpy_impl.functional.conv2d``; channels-last input with groups == 1 runs as im2col + GEMM."""
    if groups != 1 or not (isinstance(x, np.ndarray) and is_channels_last(x)):
        return ref.conv2d(x, w, b, stride, padding, dilation, groups)
    x, w, b, _ = ref.check_conv("conv2d", x, w, b, groups)
    g = ref.geometry("conv2d", x.shape[2:], w.shape[2:], stride, padding, dilation)
    w2 = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)  # (C_out, kh*kw*C_in)
    out = _gemm.matmul(_cols(_pad_nhwc(x, g), g), w2.T)  # (N*Ho*Wo, C_out)
    if b is not None:
        out += b
    return out.reshape(x.shape[0], *g.out_hw, -1).transpose(0, 3, 1, 2)  # channels-last (N, C_out, Ho, Wo)


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *, input_grad=True):
    """``numpy_impl.functional.conv2d_backward``; dx keeps x's channels-last memory."""
    if groups != 1 or not (isinstance(x, np.ndarray) and is_channels_last(x)):
        return ref.conv2d_backward(dout, x, w, stride, padding, dilation, groups, input_grad=input_grad)
    fn = "conv2d_backward"
    x, w, _, _ = ref.check_conv(fn, x, w, None, groups)
    g = ref.geometry(fn, x.shape[2:], w.shape[2:], stride, padding, dilation)
    o = w.shape[0]
    dout = ref.check_dout(fn, dout, x, False, (x.shape[0], o, *g.out_hw))
    d2 = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, o)  # (N*Ho*Wo, C_out)
    xp = _pad_nhwc(x, g)
    w2 = w.transpose(0, 2, 3, 1).reshape(o, -1)  # (C_out, kh*kw*C_in)
    dw = _gemm.matmul_tn(d2, _cols(xp, g))  # (C_out, kh*kw*C_in)
    dw = dw.reshape(o, *g.kernel, -1).transpose(0, 3, 1, 2)  # (C_out, C_in, kh, kw)
    if not input_grad:
        return None, np.ascontiguousarray(dw), d2.sum(axis=0)
    dcols = _gemm.matmul(d2, w2).reshape(x.shape[0], *g.out_hw, *g.kernel, -1)  # (N, Ho, Wo, kh, kw, C_in)
    dxp = np.zeros_like(xp)
    for i, j, tap in _taps(dxp, g):
        tap += dcols[:, :, :, i, j]
    t, bo, l, r = g.pads
    dx = dxp[:, t : dxp.shape[1] - bo, l : dxp.shape[2] - r]  # (N, H, W, C_in)
    dx = np.ascontiguousarray(dx).transpose(0, 3, 1, 2)
    return dx, np.ascontiguousarray(dw), d2.sum(axis=0)
