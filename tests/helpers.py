"""Shared strategies and tolerance helpers for the equivalence tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff, 6e-8
U64 = float(np.finfo(np.float64).eps) / 2

DTYPES = st.sampled_from([np.float32, np.float64])


def t64(a):
    """A float64 tensor holding exactly the values of ``a`` (float32 values are exact in float64)."""
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def leaf(a):
    return t64(a).requires_grad_(True)


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
    u = U32 if np.dtype(dtype) == np.float32 else U64
    tol = 2 * (k + 2) * u * bound + np.finfo(np.float64).tiny
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
        return {"x": (n, c, h, w), "w": (c * m, 1, kh, kw), "stride": stride, "padding": padding,
                "dilation": dilation, "groups": c}  # fmt: skip
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4))
    return {"x": (n, cin, h, w), "w": (cout, cin // groups, kh, kw), "stride": stride, "padding": padding,
            "dilation": dilation, "groups": groups}  # fmt: skip
