"""General convolution for channels-last input: im2col, then one GEMM.

MobileNet's only general convolution is the stem (3x3, stride 2, 3 -> 32
channels). In NHWC the k x k windows of every output pixel are rows of a
(N*H_out*W_out, kh*kw*C_in) matrix, so the convolution is one GEMM with the
(C_out, kh*kw*C_in) weight matrix, and the output comes out channels-last::

    cols[(n, ho, wo), (i, j, c)] = xp[n, ho*sh + i*dh, wo*sw + j*dw, c]
    out = cols @ W2^T;   dW2 = dout^T @ cols;   dcols = dout @ W2  -> scattered back tap by tap

The forward builds cols a tile of output rows at a time, in a buffer that stays in cache
while that tile's GEMM (single-threaded BLAS, one tile per thread) reads it; the padding
is zeros written into cols, so the input is never padded.

Grouped convolutions and NCHW input go to the NumPy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numpy_impl.functional import conv as ref

from . import _gemm
from ._prep import is_channels_last
from ._threads import single_threaded_blas
from .batchnorm import apply_folded, fold_bn

# One tile's im2col rows (forward): built in a buffer that stays in L2 while the tile's GEMM reads
# it, instead of the whole (N*Ho*Wo, kh*kw*C) matrix written to memory and read back.
CONV_TILE_BYTES = 256 * 1024
CONV_PARTS = 2  # tiles evened out to a multiple of this (the threads of the measured machine)


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


@njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _conv_tiles(x, w2, out, kh, kw, sh, sw, dh, dw, pt, pl, rows, scale, shift, act):
    """out[n, ho, wo] = cols[n, ho, wo] @ w2.T, ``rows`` output rows (of N*Ho) per tile: each
    tile's im2col rows (zeros where a tap falls in the padding), then one single-threaded GEMM
    (``np.dot``) into its rows of out. x (N, H, W, C) unpadded, w2 (C_out, kh*kw*C); with a
    non-empty ``scale``, out = act(out * scale + shift) per tile."""
    N, H, W, C = x.shape
    _, Ho, Wo, Co = out.shape
    o2 = out.reshape(N * Ho * Wo, Co)
    xf = x.reshape(-1)
    for t in prange(-(-N * Ho // rows)):
        r0, r1 = t * rows, min(N * Ho, (t + 1) * rows)
        cols = np.empty(((r1 - r0) * Wo, kh * kw * C), dtype=x.dtype)
        cf = cols.reshape(-1)
        for r in range(r0, r1):
            n, ho = r // Ho, r % Ho
            for wo in range(Wo):
                dst = ((r - r0) * Wo + wo) * kh * kw * C
                v0 = wo * sw - pl
                inside = dw == 1 and v0 >= 0 and v0 + kw <= W  # a tap row: kw*C contiguous values
                for i in range(kh):
                    h = ho * sh - pt + i * dh
                    if inside and 0 <= h < H:
                        src = ((n * H + h) * W + v0) * C
                        if kw * C == 9:  # the stem's 3 taps of 3 channels: a constant trip, unrolled (1.6x)
                            for q in range(9):
                                cf[dst + q] = xf[src + q]
                        else:
                            for q in range(kw * C):
                                cf[dst + q] = xf[src + q]
                    else:
                        for j in range(kw):
                            v = v0 + j * dw
                            for c in range(C):
                                cf[dst + j * C + c] = x[n, h, v, c] if 0 <= h < H and 0 <= v < W else 0
                    dst += kw * C
        np.dot(cols, w2.T, o2[r0 * Wo : r1 * Wo])
        if scale.shape[0] > 0:  # a folded batch norm and activation (eval), on the tile in cache
            _gemm._epilogue(o2[r0 * Wo : r1 * Wo], scale, shift, act, 0)


def _tile_rows(n_rows, row_bytes):
    """Output rows per tile: a tile's im2col rows within CONV_TILE_BYTES, the tiles a multiple
    of CONV_PARTS so that no thread is left with one more."""
    tiles = -(-n_rows // max(1, CONV_TILE_BYTES // row_bytes))
    tiles = min(n_rows, -(-tiles // CONV_PARTS) * CONV_PARTS)
    return -(-n_rows // tiles)


def _cols(xp, g):
    n, c = xp.shape[0], xp.shape[3]
    cols = np.empty((n, *g.out_hw, g.kernel[0], g.kernel[1], c), dtype=xp.dtype)  # (N, Ho, Wo, kh, kw, C)
    _im2col(np.ascontiguousarray(xp), cols, *g.stride, *g.dilation)  # C = 3: 9 short copies per pixel
    return cols.reshape(n * g.out_hw[0] * g.out_hw[1], -1)  # (N*Ho*Wo, kh*kw*C)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, bn=None, eps=1e-5, activation=None):
    """``numpy_impl.functional.conv2d``; channels-last input with groups == 1 runs as im2col + GEMM.

    ``bn``, ``eps``, ``activation``: an eval-mode batch norm and activation on the output, as
    in :func:`kernels.pointwise_conv2d` (applied to each tile as its GEMM makes it)."""
    fn = "conv2d"
    if groups != 1 or not (isinstance(x, np.ndarray) and is_channels_last(x)):
        xc, wc, _, _ = ref.check_conv(fn, x, w, b, groups)  # bn checked before the convolution runs
        affine, _ = fold_bn(fn, bn, eps, activation, wc.shape[0], xc.dtype)
        out = ref.conv2d(x, w, b, stride, padding, dilation, groups)
        if affine is not None and out.ndim == 3:  # unbatched
            return apply_folded(out[None], affine, activation)[0]
        return apply_folded(out, affine, activation)
    x, w, b, _ = ref.check_conv(fn, x, w, b, groups)
    g = ref.geometry(fn, x.shape[2:], w.shape[2:], stride, padding, dilation)
    affine, act = fold_bn(fn, bn, eps, activation, w.shape[0], x.dtype)
    if affine is not None and b is not None:  # the bias goes in the shift: BN(y + b) = y * s + (t + b * s)
        affine = affine[0], affine[1] + b * affine[0]
        b = None
    scale, shift = affine if affine is not None else (np.empty(0, x.dtype),) * 2
    w2 = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))  # (C_out, kh*kw*C_in)
    xr = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C): a view of channels-last x
    out = np.empty((x.shape[0], *g.out_hw, w.shape[0]), dtype=x.dtype)
    rows = _tile_rows(x.shape[0] * g.out_hw[0], g.out_hw[1] * w2.shape[1] * x.itemsize)
    single_threaded_blas()
    _conv_tiles(xr, w2, out, *g.kernel, *g.stride, *g.dilation, g.pads[0], g.pads[2], rows, scale, shift, act)
    if b is not None:
        out += b
    return out.transpose(0, 3, 1, 2)  # channels-last (N, C_out, Ho, Wo)


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
