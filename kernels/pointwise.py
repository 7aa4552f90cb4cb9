"""Pointwise (1x1) convolution: a GEMM, so it goes to the BLAS.

    out[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w]

Layout decides the shape of the product:

* channels-last memory: the input *is* a (N*H*W, C_in) matrix X, so the whole
  batch is one GEMM, ``OUT = X @ W^T`` (N*H*W, C_out), already channels-last;
  backward ``dX = dOUT @ W`` and ``dW = dOUT^T @ X``: two more single GEMMs.
* NCHW: each image is a (C_in, H*W) matrix, so ``out_n = W @ x_n``; numpy's
  batched matmul issues one GEMM per image; ``dW = sum_n dout_n @ x_n^T`` is one
  GEMM over the concatenated (C_out, N*H*W) x (N*H*W, C_in) via tensordot.

No loop nest here: a hand-written one does not beat OpenBLAS on these shapes. The
channels-last GEMMs run on Numba's threads (``_gemm``: each thread one block of rows,
a single-threaded BLAS call), so the depthwise and batch-norm kernels before and after
them share one thread pool with them.
"""

from __future__ import annotations

import numpy as np

from numpy_impl.functional.conv import check_dout, check_pointwise

from . import _gemm
from ._prep import is_channels_last
from .batchnorm import apply_folded, fold_bn

PAIR_BYTES = 4 << 20  # dout at least this large: the backward's two GEMMs share one pass over it (measured)


def _rows(a):
    """(N, C, H, W) -> its (N*H*W, C) matrix: a view for channels-last memory, else a copy."""
    n, c, h, w = a.shape  # explicit sizes, not -1: an empty batch has nothing to infer from
    return a.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _from_rows(m, n, h, w):
    """(N*H*W, C) -> (N, C, H, W) view with channels-last memory."""
    return m.reshape(n, h, w, m.shape[1]).transpose(0, 3, 1, 2)


def pointwise_conv2d(x, w, *, bn=None, eps=1e-5, activation=None):
    """1x1 convolution; see ``numpy_impl.functional.pointwise_conv2d``. Keeps x's memory format.

    ``bn`` = (weight, bias, running_mean, running_var): an eval-mode batch norm on the output,
    with ``eps`` and ``activation`` ("relu", "relu6", "hardswish" or None), applied to each
    block of the product while it is in cache instead of in a pass of its own."""
    fn = "pointwise_conv2d"
    x, w, unbatched = check_pointwise(fn, x, w)
    affine, act = fold_bn(fn, bn, eps, activation, w.shape[0], x.dtype)
    out = forward(x, w, affine, act, activation)
    return out[0] if unbatched else out


def forward(x, w, affine=None, act=0, activation=None):
    """The body of :func:`pointwise_conv2d`, unchecked: x (N, C_in, H, W) and w (C_out, C_in, 1, 1)
    float arrays of one dtype, ``affine``/``act`` as ``fold_bn`` gives them. For callers that
    validated already (the fused block)."""
    n, c, h, wd = x.shape
    w2 = w[:, :, 0, 0]  # (C_out, C_in)
    if is_channels_last(x):
        # (NHW, C_in) @ (C_in, C_out), the folded batch norm applied to each block of it
        out = _from_rows(_gemm.matmul(_rows(x), w2.T, affine=affine, act=act), n, h, wd)
    else:
        out = (w2 @ np.ascontiguousarray(x).reshape(n, c, h * wd)).reshape(n, w2.shape[0], h, wd)
        out = apply_folded(out, affine, activation)
    return out


def pointwise_conv2d_backward(dout, x, w):
    """Gradients ``(dx, dw)`` of :func:`pointwise_conv2d`; dx in x's memory format."""
    fn = "pointwise_conv2d_backward"
    x, w, unbatched = check_pointwise(fn, x, w)
    n, c, h, wd = x.shape
    dout = check_dout(fn, dout, x, unbatched, (n, w.shape[0], h, wd))
    dx, dw = backward(dout, x, w)
    return (dx[0] if unbatched else dx), dw


def backward(dout, x, w):
    """The body of :func:`pointwise_conv2d_backward`, unchecked (4-D arrays of one dtype)."""
    n, c, h, wd = x.shape
    w2 = w[:, :, 0, 0]  # (C_out, C_in)
    if is_channels_last(x):
        d2 = np.ascontiguousarray(_rows(dout))  # (NHW, C_out): a view unless dout is NCHW
        if d2.nbytes >= PAIR_BYTES:  # d2 @ w2 and d2^T @ x in one pass over d2
            dx, dw = _gemm.backward_pair(d2, w2, _rows(x))
        else:  # small enough to stay in cache between two calls, which split the work better
            dx, dw = _gemm.matmul(d2, np.ascontiguousarray(w2)), _gemm.matmul_tn(d2, _rows(x))
        dx = _from_rows(dx, n, h, wd)
    else:
        d3 = np.ascontiguousarray(dout).reshape(n, w2.shape[0], h * wd)  # (N, C_out, HW)
        x3 = np.ascontiguousarray(x).reshape(n, c, h * wd)
        dx = (w2.T @ d3).reshape(x.shape)
        dw = np.tensordot(d3, x3, axes=([0, 2], [0, 2]))  # (C_out, C_in)
    return dx, dw.reshape(w.shape)
