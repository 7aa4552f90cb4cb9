"""Shared strategies and tolerance helpers for the equivalence tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from numpy_impl.quant import ops

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff, 6e-8
U64 = float(np.finfo(np.float64).eps) / 2

DTYPES = st.sampled_from([np.float32, np.float64])
MOMENTA = st.sampled_from([0.1, 0.0, 1.0, 0.37])  # batch norm's momentum: torch's default, both ends, other
EPSILONS = st.sampled_from([1e-5, 1e-3, 0.25])  # batch norm's eps: torch's default and two larger ones
MEMORY = st.sampled_from(["nchw", "channels_last", "strided"])


def in_memory(a, memory):
    """The values of the (N, C, H, W) array ``a`` laid out as NCHW, channels-last (NHWC memory,
    torch's channels_last) or "strided": a view that is neither (every other element of a wider array)."""
    if memory == "channels_last":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if memory == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]  # (contiguous after all when W == 1: numpy's rule)
    return np.ascontiguousarray(a)


def strided(a, on=True):
    """The values of ``a`` as a view that is not contiguous in any order (every other element of a
    wider array along axis 0), or ``a`` itself when ``on`` is False."""
    return np.repeat(a, 2, axis=0)[::2] if on else a


def t64(a):
    """A float64 tensor holding exactly the values of ``a`` (float32 values are exact in float64)."""
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def leaf(a):
    return t64(a).requires_grad_(True)


def bound_tolerance(bound, k, dtype):
    """The elementwise tolerance :func:`assert_within_bound` allows: ``2 * gamma_{k+2} * bound``."""
    u = U32 if np.dtype(dtype) == np.float32 else U64
    return 2 * (k + 2) * u * np.asarray(bound, np.float64) + np.finfo(np.float64).tiny


def assert_within_bound(actual, exact, bound, k, dtype, what=""):
    """``|actual - exact| <= 2 * gamma_k * bound + tiny`` elementwise.

    ``bound`` is the same computation on absolute values (sum_i |a_i b_i|), ``k``
    the reduction length: the classic forward error bound of a length-k dot product
    is gamma_k * sum|a_i b_i| with gamma_k ~ k*u (Higham, ch. 3). The factor 2
    leaves room for the final rounding and the rounding of the inputs' products.
    """
    actual = np.asarray(actual, np.float64)
    exact = np.asarray(exact, np.float64)
    bound = np.asarray(bound, np.float64)
    assert actual.shape == exact.shape, f"{what}: shape {actual.shape} != {exact.shape}"
    tol = bound_tolerance(bound, k, dtype)
    err = np.abs(actual - exact)
    worst = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else ()
    assert np.all(err <= tol), (
        f"{what}: error {err[worst]:.3e} > tolerance {tol[worst]:.3e} at {worst} "
        f"(k={k}, dtype={np.dtype(dtype).name})"
    )


def rng_arrays(seed, dtype, *shapes, low=None):
    """Standard normal arrays of the given shapes (``low`` keeps |values| >= low)."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        a = rng.standard_normal(shape)
        if low is not None:
            a = np.sign(a) * (np.abs(a) + low)
        out.append(a.astype(dtype))
    return out


def directional_check(f, args, grads, idx, seed, eps=1e-6, rtol=1e-6):
    """Finite differences in float64 along a random direction of ``args[idx]``.

    ``f(*args)`` is the scalar loss; ``grads`` its analytic gradient w.r.t. ``args[idx]``:
    (f(a + eps v) - f(a - eps v)) / 2 eps  must equal  <grad, v>.
    """
    v = np.random.default_rng(seed).standard_normal(args[idx].shape)
    plus, minus = list(args), list(args)
    plus[idx] = args[idx] + eps * v
    minus[idx] = args[idx] - eps * v
    numeric = (f(*plus) - f(*minus)) / (2 * eps)
    analytic = float(np.sum(grads * v))
    # Rounding in f is ~u*|f|/eps ~ 1e-10 relative, truncation ~eps^2: 1e-6 of the
    # magnitude of the terms of <grad, v> separates a right gradient from a wrong one.
    scale = float(np.abs(grads * v).sum()) + 1e-12
    assert abs(numeric - analytic) <= rtol * scale, (
        f"finite differences {numeric!r} vs analytic {analytic!r} (scale {scale:.3e})"
    )


@st.composite
def conv_cases(draw, depthwise=False, max_hw=12):
    """Valid (x shape, w shape, stride, padding, dilation, groups) for conv2d / depthwise."""
    n = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if pad_kind == "same":
        stride = (1, 1)
        padding = "same"
        pads = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
    elif pad_kind == "valid":
        padding, pads = "valid", (0, 0)
    elif pad_kind == "int":
        p = draw(st.integers(0, 2))
        padding, pads = p, (2 * p, 2 * p)
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pads = (2 * padding[0], 2 * padding[1])
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, span[0] - pads[0]), max(max_hw, span[0] - pads[0])))
    w = draw(st.integers(max(1, span[1] - pads[1]), max(max_hw, span[1] - pads[1])))
    if depthwise:
        c, m = draw(st.integers(1, 12)), draw(st.integers(1, 3))
        return {
            "x": (n, c, h, w),
            "w": (c * m, 1, kh, kw),
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": c,
        }
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4))
    return {
        "x": (n, cin, h, w),
        "w": (cout, cin // groups, kh, kw),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
    }


def batch_norm_bounds(x, weight, bias, dy, mean, var, eps, training):
    """Per-element magnitudes of the terms of batch norm's formulas, for assert_within_bound.

    ``mean, var`` are the (C,) statistics x is normalised with (the batch's in training,
    the running ones in eval). Returns a dict of bounds and ``k`` (the reduction length).
    Where the formulas cancel, the bound carries the terms before cancellation:
    ``x*inv - mu*inv`` for xhat, ``|x - mu|`` for the variance. A one-pass variance
    (sum of squares around a shift taken from the data, as the Numba kernel computes it)
    has an error of ~M*u*range^2 instead of ~M*u*var: the factor ``1 + range^2/var``
    covers every quantity that depends on 1/sqrt(var + eps).
    """
    x64 = np.asarray(x, np.float64)
    c = x64.shape[1]
    axes = (0,) + tuple(range(2, x64.ndim))
    shape = (1, c) + (1,) * (x64.ndim - 2)
    m = x64.size // c
    mu = np.asarray(mean, np.float64).reshape(shape)
    inv = 1 / np.sqrt(np.asarray(var, np.float64).reshape(shape) + eps)
    xhat = np.abs(x64 - mu) * inv + np.abs(x64 * inv)  # x*inv - mu*inv cancels
    spread = 1.0
    if training:
        rng2 = (x64.max(axis=axes, keepdims=True) - x64.min(axis=axes, keepdims=True)) ** 2
        spread = 1 + rng2 * inv**2
    w_abs = np.ones(shape) if weight is None else np.abs(np.asarray(weight, np.float64)).reshape(shape)
    b_abs = 0 if bias is None else np.abs(np.asarray(bias, np.float64)).reshape(shape)
    dyw = np.abs(np.asarray(dy, np.float64)) * w_abs
    mean_abs = np.abs(x64).mean(axis=axes, keepdims=True) * inv  # mu * scale inside the shift
    out = {"k": m + 6}
    out["y"] = (xhat * spread + mean_abs) * w_abs + b_abs
    if training:
        out["dx"] = (
            inv
            * spread
            * (dyw + dyw.mean(axes, keepdims=True) + xhat * (dyw * xhat).mean(axes, keepdims=True))
        )
    else:
        out["dx"] = inv * spread * dyw
    out["dweight"] = (np.abs(dy) * xhat * spread).sum(axes)
    out["dbias"] = np.abs(dy).sum(axes)
    return out


def running_stat_bounds(x, running_mean, running_var):
    """Bounds of the updated running statistics' formulas (mean of x; unbiased variance)."""
    x64 = np.asarray(x, np.float64)
    axes = (0,) + tuple(range(2, x64.ndim))
    m = x64.size // x64.shape[1]
    rng2 = (x64.max(axis=axes) - x64.min(axis=axes)) ** 2  # (x - shift)^2 for any shift in the data
    mean_b = np.abs(running_mean) + np.abs(x64).max(axis=axes)
    var_b = np.abs(running_var) + rng2 * m / max(m - 1, 1)
    return mean_b, var_b, m + 6


# --- int8 -------------------------------------------------------------------------------------

QSCALES = st.floats(0.002, 0.3).map(lambda v: float(np.float32(v)))  # scales are float32 values


@st.composite
def quantized_pair(draw, dtype=np.uint8):
    """Two (N, C, H, W) arrays of uint8 values (of ``dtype``) and three activation QParams: the
    two inputs' and an output's."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(draw(st.integers(1, hi)) for hi in (2, 20, 6, 6))
    qps = [ops.QParams(draw(QSCALES), draw(st.integers(0, 255))) for _ in range(3)]
    return rng.integers(0, 256, shape).astype(dtype), rng.integers(0, 256, shape).astype(dtype), *qps
