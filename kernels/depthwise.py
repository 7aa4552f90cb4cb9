"""Depthwise convolution on Numba kernels: ``numpy_impl.functional``'s signatures.

The loop nests, and the road from the plain one to the fast one, are in
``depthwise_versions.py``. Here the public functions validate (the reference's
checks and messages), pick the layout from the input's memory format, and call
the best version for that layout:

* channels-last memory (NHWC, torch's ``channels_last``): forward version 10 and
  backward version 7 for 3x3 kernels with dilation 1, versions 6 and 3 otherwise;
  the outputs keep the channels-last memory format.
* anything else: NCHW, forward version 3, backward version 2.

Channel multiplier 1 only (``w.shape[0] == C``), which is what MobileNet uses;
``numpy_impl.functional.depthwise_conv2d`` handles m > 1.
"""

from __future__ import annotations

import numpy as np

from numpy_impl.functional.conv import check_depthwise, check_dout, geometry

from . import depthwise_versions as V
from ._prep import as_layout, from_layout, is_channels_last

BEST_FORWARD = {False: 3, True: 6, "3x3": 10}  # channels_last -> version
BEST_BACKWARD = {False: 2, True: 3, "3x3": 7}
# what _prepare needs of each direction: versions, NHWC versions, 3x3-only versions, default choice
_FORWARD = (V.FORWARD, V.NHWC_FORWARD, V.ONLY_3X3_FORWARD, BEST_FORWARD)
_BACKWARD = (V.BACKWARD, V.NHWC_BACKWARD, V.ONLY_3X3_BACKWARD, BEST_BACKWARD)


def _check(fn, x, w):
    x, w, unbatched = check_depthwise(fn, x, w)
    if w.shape[0] != x.shape[1]:
        raise ValueError(
            f"{fn}: the Numba kernels support channel multiplier 1 only: w.shape[0] must equal "
            f"x.shape[1] == {x.shape[1]}, got w.shape={w.shape}; use numpy_impl.functional.{fn}"
        )
    return x, w, unbatched


def _plan(fn, x, w, stride, padding, dilation, version, table, nhwc_versions, only_3x3, best):
    """The output geometry, the layout and the version to run, its weights and arguments."""
    g = geometry(fn, x.shape[2:], w.shape[2:], stride, padding, dilation)
    cl = is_channels_last(x)
    is_3x3 = w.shape[2:] == (3, 3) and g.dilation == (1, 1)
    if version is None:
        version = best["3x3"] if cl and is_3x3 else best[cl]
    elif version not in table:
        raise ValueError(f"{fn}: version must be one of {sorted(table)}, got {version!r}")
    elif version in only_3x3 and not is_3x3:
        raise ValueError(f"{fn}: version {version} needs a 3x3 kernel with dilation 1, got {w.shape[2:]}")
    else:
        cl = version in nhwc_versions
    wk = w[:, 0]  # (C, kh, kw)
    wk = np.ascontiguousarray(wk.transpose(1, 2, 0) if cl else wk)  # (kh, kw, C) or (C, kh, kw)
    args = (g.stride[0], g.stride[1], g.pads[0], g.pads[2], g.dilation[0], g.dilation[1])
    return wk, g, cl, table[version], args


def depthwise_conv2d(x, w, stride=1, padding=0, dilation=1, *, version=None):
    """Depthwise convolution; see ``numpy_impl.functional.depthwise_conv2d``.

    x : (N, C, H, W) (NCHW or channels-last memory) or (C, H, W); w : (C, 1, kh, kw).
    Returns (N, C, H_out, W_out) in x's memory format. ``version`` picks a kernel
    of ``depthwise_versions.FORWARD`` (for tests and benchmarks).
    """
    fn = "depthwise_conv2d"
    x, w, unbatched = _check(fn, x, w)
    out = forward(x, w, stride, padding, dilation, version=version)
    return out[0] if unbatched else out


def forward(x, w, stride=1, padding=0, dilation=1, *, version=None):
    """The body of :func:`depthwise_conv2d`, unchecked: x (N, C, H, W) and w (C, 1, kh, kw) float
    arrays of one dtype. For callers that validated already (the fused block)."""
    wk, g, cl, kernel, args = _plan("depthwise_conv2d", x, w, stride, padding, dilation, version, *_FORWARD)
    n, c = x.shape[:2]
    out = np.empty((n, *g.out_hw, c) if cl else (n, c, *g.out_hw), dtype=x.dtype)
    kernel(as_layout(x, cl), wk, out, *args)
    return from_layout(out, cl)


def depthwise_conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, *, version=None):
    """Gradients of :func:`depthwise_conv2d`: ``(dx, dw)``, dx in x's memory format."""
    fn = "depthwise_conv2d_backward"
    x, w, unbatched = _check(fn, x, w)
    plan = _plan(fn, x, w, stride, padding, dilation, version, *_BACKWARD)
    dout = check_dout(fn, dout, x, unbatched, (x.shape[0], x.shape[1], *plan[1].out_hw))
    dx, dw = _backward(dout, x, *plan)
    return (dx[0] if unbatched else dx), dw


def backward(dout, x, w, stride=1, padding=0, dilation=1, *, version=None):
    """The body of :func:`depthwise_conv2d_backward`, unchecked (4-D arrays of one dtype)."""
    plan = _plan("depthwise_conv2d_backward", x, w, stride, padding, dilation, version, *_BACKWARD)
    return _backward(dout, x, *plan)


def _backward(dout, x, wk, g, cl, kernel, args):
    n, c = x.shape[:2]
    dx = np.empty((n, *x.shape[2:], c) if cl else x.shape, dtype=x.dtype)
    dwk = np.empty_like(wk)
    kernel(as_layout(dout, cl), as_layout(x, cl), wk, dx, dwk, *args)
    dw = (dwk.transpose(2, 0, 1) if cl else dwk)[:, None]  # (C, 1, kh, kw)
    return from_layout(dx, cl), np.ascontiguousarray(dw)
