"""Squeeze-and-excite on this backend: ``numpy_impl.functional.se``'s steps, with the three
passes over the feature map (the squeeze's mean, the excite's scaling and, backward, the
scale's gradient with dx) as Numba kernels over channels-last memory, and the two small
products on Numba's pool (``kernels.linear``; numpy's ``@`` there would wake OpenBLAS's
threads, which keep spinning into the next parallel kernel).

Channels-last memory is an (N, H*W, C) array of rows: one image per task, C contiguous in
the inner loop; the sums over H*W accumulate in float64 in image order, whatever the threads.
Input in NCHW memory takes the reference composite (NumPy's reductions are fast there).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numpy_impl.functional import se as _se
from numpy_impl.functional._checks import as_float_array, check_shape, same_dtype
from numpy_impl.functional.basic import hardsigmoid, hardsigmoid_backward, relu, relu_backward

from ._prep import is_channels_last
from ._threads import FASTMATH
from .linear import linear, linear_backward

_opts = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy"}


@njit(parallel=True, **_opts)
def _mean(x3, out):
    """out[n, c] = mean over p of x3[n, p, c]."""
    N, P, C = x3.shape
    for n in prange(N):
        acc = np.zeros(C, np.float64)
        for p in range(P):
            for c in range(C):
                acc[c] += x3[n, p, c]
        for c in range(C):
            out[n, c] = acc[c] / P


@njit(parallel=True, **_opts)
def _scale(x3, scale, out):
    """out[n, p, c] = x3[n, p, c] * scale[n, c]."""
    N, P, C = x3.shape
    for n in prange(N):
        for p in range(P):
            for c in range(C):
                out[n, p, c] = x3[n, p, c] * scale[n, c]


@njit(parallel=True, **_opts)
def _dot_sums(d3, x3, out):
    """out[n, c] = sum over p of d3[n, p, c] * x3[n, p, c] (the scale's gradient)."""
    N, P, C = x3.shape
    for n in prange(N):
        acc = np.zeros(C, np.float64)
        for p in range(P):
            for c in range(C):
                acc[c] += np.float64(d3[n, p, c]) * x3[n, p, c]
        for c in range(C):
            out[n, c] = acc[c]


@njit(parallel=True, **_opts)
def _dx(d3, scale, dmean, out):
    """out = d3 * scale + dmean (the direct path plus the mean's gradient), per image and channel."""
    N, P, C = d3.shape
    for n in prange(N):
        for p in range(P):
            for c in range(C):
                out[n, p, c] = d3[n, p, c] * scale[n, c] + dmean[n, c]


def _rows(a):
    """The (N, H*W, C) view of a channels-last (N, C, H, W) array (no copy)."""
    n, c, h, w = a.shape
    return a.transpose(0, 2, 3, 1).reshape(n, h * w, c)


def squeeze_excite(x, w1, b1, w2, b2):
    """See ``numpy_impl.functional.squeeze_excite``; y keeps x's memory format."""
    x = as_float_array("squeeze_excite", "x", x, ndim=4)
    if not is_channels_last(x) or x.shape[2] * x.shape[3] == 0:
        return _se.forward(x, w1, b1, w2, b2, linear)
    x, w1m, w2m = _se.check_squeeze_excite("squeeze_excite", x, w1, b1, w2, b2)
    return _forward(x, w1m, b1, w2m, b2)


def forward(x, w1, b1, w2, b2):
    """The body of :func:`squeeze_excite`, unchecked: arrays of one float dtype with the shapes
    ``check_squeeze_excite`` asks for. For callers that validated already (the fused block)."""
    if not is_channels_last(x) or x.shape[2] * x.shape[3] == 0:
        return _se.forward(x, w1, b1, w2, b2, linear)
    return _forward(x, w1[:, :, 0, 0], b1, w2[:, :, 0, 0], b2)


def _forward(x, w1m, b1, w2m, b2):
    n, c, h, w = x.shape
    s = np.empty((n, c), x.dtype)
    _mean(_rows(x), s)
    pre = linear(s, w1m, b1)
    hid = relu(pre)
    g = linear(hid, w2m, b2)
    scale = hardsigmoid(g)
    y = np.empty((n, h, w, c), x.dtype)
    _scale(_rows(x), scale, y.reshape(n, h * w, c))
    cache = {"x": x, "s": s, "pre": pre, "h": hid, "g": g, "scale": scale, "w1": w1m, "w2": w2m}
    return y.transpose(0, 3, 1, 2), cache


def squeeze_excite_backward(dout, cache):
    """See ``numpy_impl.functional.squeeze_excite_backward``; dx keeps x's memory format."""
    fn = "squeeze_excite_backward"
    if not isinstance(cache, dict) or "scale" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by squeeze_excite, got {type(cache).__name__}"
        )
    x = cache["x"]
    if not is_channels_last(x):
        return _se.backward(dout, cache, linear_backward)
    dout = as_float_array(fn, "dout", dout, ndim=4)
    same_dtype(fn, "x", x, dout=dout)
    check_shape(fn, "dout", dout, x.shape)
    return backward(dout, cache)


def backward(dout, cache):
    """The body of :func:`squeeze_excite_backward`, unchecked: ``dout`` of the forward's shape
    and dtype."""
    x = cache["x"]
    if not is_channels_last(x):
        return _se.backward(dout, cache, linear_backward)
    n, c, h, w = x.shape
    d3 = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(n, h * w, c)  # no copy if channels-last
    dscale = np.empty((n, c), x.dtype)
    _dot_sums(d3, _rows(x), dscale)
    dg = hardsigmoid_backward(dscale, cache["g"])
    dh, dw2, db2 = linear_backward(dg, cache["h"], cache["w2"])
    dpre = relu_backward(dh, cache["pre"])
    ds, dw1, db1 = linear_backward(dpre, cache["s"], cache["w1"])
    dx = np.empty((n, h, w, c), x.dtype)
    _dx(d3, cache["scale"], ds / x.dtype.type(h * w), dx.reshape(n, h * w, c))
    return dx.transpose(0, 3, 1, 2), dw1[:, :, None, None], db1, dw2[:, :, None, None], db2
