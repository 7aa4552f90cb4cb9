"""Fuzzing support for the kernel tests: any input either raises the ValueError or TypeError the
reference raises, or gives the reference's answer. ``corrupt`` breaks one argument; ``agree``
checks both outcomes."""

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

import kernels as K
from numpy_impl import functional as F

from .helpers import DTYPES, assert_within_bound

JUNK = st.sampled_from([None, 3, "x", [1.0, 2.0], np.float32(1.0)])
BAD_DTYPES = st.sampled_from([np.int32, np.float16, np.bool_, np.complex64])
ANY_SHAPE = st.lists(st.integers(0, 5), max_size=5).map(tuple)
BAD_PARAMS = st.one_of(
    st.integers(-2, 0),
    st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
    st.sampled_from(["same", "valid", "full", 1.5, None, (1, 2, 3)]),
)


def values(shape, dtype, seed):
    """Normal values (scaled by 2, so that casts to int and bool are not all zero) of any dtype."""
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(dtype)


def corrupt(draw, broken, name, good):
    """``good``, or when ``name`` is the broken one, something drawn to be wrong for it."""
    if broken != name:
        return good
    if isinstance(good, np.ndarray):
        bad = st.builds(values, ANY_SHAPE, DTYPES, st.integers(0, 99))
        return draw(st.one_of(JUNK, bad, st.just(good.astype(draw(BAD_DTYPES)))))
    return draw(BAD_PARAMS | JUNK)


@st.composite
def convolution_case(draw, kind):
    """Valid arguments for the ``kind`` of convolution, or the same with one of them broken (the
    valid case comes often enough for the answers to be compared: see the test's events)."""
    broken = draw(st.sampled_from([None, None, "x", "w", "dout", "stride", "padding", "dilation"]))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**16))
    n, c, h, w_ = (draw(st.integers(1, 5)) for _ in range(4))
    k = draw(st.integers(1, 3))
    ws = {"depthwise": (c, 1, k, k), "pointwise": (k, c, 1, 1), "conv": (k + 1, c, k, k)}[kind]
    geo = [
        corrupt(draw, broken, name, draw(st.integers(lo, 2)))
        for name, lo in (("stride", 1), ("padding", 0), ("dilation", 1))
    ]
    x = corrupt(draw, broken, "x", values((n, c, h, w_), dtype, seed))
    w = corrupt(draw, broken, "w", values(ws, dtype, seed + 1))
    return kind, x, w, geo, broken, seed


# valid input a kernel refuses by design, each with its reason: the only refusals the reference
# does not share that agree() lets pass (the message must say it)
LIMITS = {
    "the Numba kernels support channel multiplier 1 only": "MobileNet's depthwise layers have one "
    "filter per channel; the reference serves the rest (kernels/depthwise.py)",
}


def refused_alike(e, reference, args, what) -> None:
    """The kernel refused ``args`` with ``e``: the reference must refuse them too, with an error of
    the same type, unless ``e`` names one of the kernels' documented :data:`LIMITS`."""
    try:
        reference(*args)
    except (ValueError, TypeError) as r:
        assert type(e) is type(r), f"{what}: the kernel raises {e!r}, the reference {r!r}"
        return
    if any(limit in str(e) for limit in LIMITS):
        event(f"{what}: a documented limit")
        return
    raise AssertionError(f"{what}: the kernel refuses input the reference accepts: {e!r}") from e


def agree(kernel, reference, args, what):
    """``kernel(*args)`` refuses exactly what the reference refuses, with the same exception type
    (ValueError or TypeError), and otherwise gives the reference's answer within the error bound:
    the reference on the float64 values, the bound the reference on their absolute values, k the
    largest operand's size (no reduction is longer)."""
    try:
        got = kernel(*args)
    except (ValueError, TypeError) as e:
        refused_alike(e, reference, args, what)
        return None
    event(f"{what} ran")  # --hypothesis-show-statistics: how often the happy path is reached
    got = got if isinstance(got, tuple) else (got,)
    same = reference(*args)  # the reference accepts what the kernel accepts, in the same dtype
    same = same if isinstance(same, tuple) else (same,)
    f64 = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    exact, bound = reference(*f64), reference(*[np.abs(a) if isinstance(a, np.ndarray) else a for a in f64])
    exact, bound = (exact, bound) if isinstance(exact, tuple) else ((exact,), (bound,))
    k = max(a.size for a in args if isinstance(a, np.ndarray))
    for g, s_, e, b in zip(got, same, exact, bound):
        assert g.dtype == s_.dtype and g.shape == s_.shape, (
            f"{what}: {g.dtype}{g.shape} vs {s_.dtype}{s_.shape}"
        )
        assert_within_bound(g, e, b, k, g.dtype, what)
    return got[0]


def check_convolution(case, data):
    """The forward, then the backward on a drawn (or broken) upstream gradient."""
    kind, x, w, geo, broken, seed = case
    calls = {  # kernel forward, kernel backward, reference forward, reference backward, geometry
        "depthwise": (
            K.depthwise_conv2d,
            K.depthwise_conv2d_backward,
            F.depthwise_conv2d,
            F.depthwise_conv2d_backward,
            geo,
        ),
        "pointwise": (
            K.pointwise_conv2d,
            K.pointwise_conv2d_backward,
            F.pointwise_conv2d,
            F.pointwise_conv2d_backward,
            [],
        ),
        "conv": (
            lambda x_, w_, *g: K.conv2d(x_, w_, None, *g),
            K.conv2d_backward,
            lambda x_, w_, *g: F.conv2d(x_, w_, None, *g),
            F.conv2d_backward,
            geo,
        ),
    }
    kernel, kernel_bwd, ref, ref_bwd, g = calls[kind]
    out = agree(kernel, ref, (x, w, *g), f"{kind} forward")
    dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) else np.float32
    dout = values(out.shape if out is not None else (1, 1, 1, 1), dtype, seed + 2)
    dout = corrupt(data.draw, broken, "dout", dout)
    agree(kernel_bwd, ref_bwd, (dout, x, w, *g), f"{kind} backward")
