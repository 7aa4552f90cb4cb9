"""Squeeze-and-excite (Hu et al. 2018) as MobileNetV3 uses it, forward and backward.

One scale per channel, computed from the whole feature map::

    s     = mean over H, W of x          (N, C)      squeeze
    h     = relu(s @ w1.T + b1)          (N, C_r)    1x1 reduce (a linear layer on the pooled map)
    g     = h @ w2.T + b2                (N, C)      1x1 expand
    scale = hardsigmoid(g)               (N, C)      in [0, 1]
    y     = x * scale[:, :, None, None]              excite

The weights have torch's 1x1-convolution shapes, ``w1`` (C_r, C, 1, 1) and ``w2`` (C, C_r, 1, 1),
so torchvision's ``fc1``/``fc2`` parameters load as they are. The backward is the chain rule
through the same five steps; ``x`` reaches ``y`` twice (directly and through the scale), so its
gradient is the sum of both paths.
"""

from __future__ import annotations

from ._checks import as_float_array, check_shape, same_dtype
from .basic import hardsigmoid, hardsigmoid_backward, linear, linear_backward, relu, relu_backward


def check_squeeze_excite(fn, x, w1, b1, w2, b2):
    """Validated (x, w1 as (C_r, C), w2 as (C, C_r)): shapes and dtypes of every array."""
    x = as_float_array(fn, "x", x, ndim=4)
    c = x.shape[1]
    w1 = as_float_array(fn, "w1", w1, ndim=4)
    cr = w1.shape[0]
    check_shape(fn, "w1", w1, (cr, c, 1, 1))
    if cr == 0:
        raise ValueError(f"{fn}: w1 must have at least one output channel, got shape {w1.shape}")
    for name, a, shape in (("b1", b1, (cr,)), ("w2", w2, (c, cr, 1, 1)), ("b2", b2, (c,))):
        check_shape(fn, name, as_float_array(fn, name, a), shape)
    same_dtype(fn, "x", x, w1=w1, b1=b1, w2=w2, b2=b2)
    return x, w1[:, :, 0, 0], w2[:, :, 0, 0]


def forward(x, w1, b1, w2, b2, linear=linear):
    """The body of :func:`squeeze_excite`, its two small products by ``linear`` (a backend
    passes its own: ``kernels`` keeps them on Numba's pool)."""
    x, w1m, w2m = check_squeeze_excite("squeeze_excite", x, w1, b1, w2, b2)
    s = x.mean(axis=(2, 3))
    pre = linear(s, w1m, b1)
    h = relu(pre)
    g = linear(h, w2m, b2)
    scale = hardsigmoid(g)
    y = x * scale[:, :, None, None]  # ufuncs keep the input's layout (channels-last stays so)
    return y, {"x": x, "s": s, "pre": pre, "h": h, "g": g, "scale": scale, "w1": w1m, "w2": w2m}


def backward(dout, cache, linear_backward=linear_backward):
    """The body of :func:`squeeze_excite_backward`, with the backend's ``linear_backward``."""
    fn = "squeeze_excite_backward"
    if not isinstance(cache, dict) or "scale" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by squeeze_excite, got {type(cache).__name__}"
        )
    x = cache["x"]
    dout = as_float_array(fn, "dout", dout, ndim=4)
    same_dtype(fn, "x", x, dout=dout)
    check_shape(fn, "dout", dout, x.shape)
    dscale = (dout * x).sum(axis=(2, 3))  # (N, C): y = x * scale
    dg = hardsigmoid_backward(dscale, cache["g"])
    dh, dw2, db2 = linear_backward(dg, cache["h"], cache["w2"])
    dpre = relu_backward(dh, cache["pre"])
    ds, dw1, db1 = linear_backward(dpre, cache["s"], cache["w1"])
    hw = x.dtype.type(x.shape[2] * x.shape[3])
    # the direct path, plus the mean's gradient spread evenly over H and W
    dx = dout * cache["scale"][:, :, None, None] + (ds / hw)[:, :, None, None]
    return dx, dw1[:, :, None, None], db1, dw2[:, :, None, None], db2


def squeeze_excite(x, w1, b1, w2, b2):
    """``(y, cache)``: x (N, C, H, W) scaled per channel; any memory layout (y keeps x's)."""
    return forward(x, w1, b1, w2, b2)


def squeeze_excite_backward(dout, cache):
    """``(dx, dw1, db1, dw2, db2)`` of :func:`squeeze_excite` for an upstream ``dout``."""
    return backward(dout, cache)
