"""Pointwise, batch norm and stem-conv kernels against the NumPy reference; fuzzing of every public kernel."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kernels as K
from kernels import batchnorm as KB
from kernels._prep import is_channels_last
from numpy_impl import functional as F

from .helpers import DTYPES, assert_within_bound, conv_cases, rng_arrays


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


MEMORY = st.sampled_from(["nchw", "channels_last"])


def layout(a, memory):
    return channels_last(a) if memory == "channels_last" else a


@given(n=st.integers(1, 4), cin=st.integers(1, 40), cout=st.integers(1, 40), h=st.integers(1, 9),
       w=st.integers(1, 9), dtype=DTYPES, memory=MEMORY, seed=st.integers(0, 2**16))  # fmt: skip
def test_pointwise_matches_reference(n, cin, cout, h, w, dtype, memory, seed):
    x, wt = rng_arrays(seed, dtype, (n, cin, h, w), (cout, cin, 1, 1))
    out = K.pointwise_conv2d(layout(x, memory), wt)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw = K.pointwise_conv2d_backward(layout(dout, memory), layout(x, memory), wt)
    x64, w64, d64 = x.astype(np.float64), wt.astype(np.float64), dout.astype(np.float64)
    assert_within_bound(
        out, F.pointwise_conv2d(x64, w64), F.pointwise_conv2d(np.abs(x64), np.abs(w64)), cin, dtype
    )
    e_dx, e_dw = F.pointwise_conv2d_backward(d64, x64, w64)
    b_dx, b_dw = F.pointwise_conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64))
    assert_within_bound(dx, e_dx, b_dx, cout, dtype, "dx")
    assert_within_bound(dw, e_dw, b_dw, n * h * w, dtype, "dw")
    if memory == "channels_last" and is_channels_last(layout(x, memory)):
        assert is_channels_last(out) or cout == 1


@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 24), st.integers(1, 6), st.integers(1, 6)),
       dtype=DTYPES, training=st.booleans(), act=st.sampled_from([None, "relu", "relu6"]), memory=MEMORY,
       affine=st.booleans(), seed=st.integers(0, 2**16), parallel=st.booleans())  # fmt: skip
def test_batch_norm_matches_reference(shape, dtype, training, act, memory, affine, seed, parallel):
    assume(not training or shape[0] * shape[2] * shape[3] > 1)
    old = KB.SERIAL_BELOW
    KB.SERIAL_BELOW = 0 if parallel else 1 << 62  # both drivers of the channels-last kernels
    try:
        _check_batch_norm(shape, dtype, training, act, memory, affine, seed)
    finally:
        KB.SERIAL_BELOW = old


def _check_batch_norm(shape, dtype, training, act, memory, affine, seed):
    c = shape[1]
    x, w, b, rm, dy = rng_arrays(seed, dtype, shape, (c,), (c,), (c,), shape)
    x = (x * 3 + 1).astype(dtype)
    rv = (np.random.default_rng(seed).random(c) + 0.5).astype(dtype)
    w, b = (w, b) if affine else (None, None)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    pre, cache = F.batch_norm(x, w, b, rm_ref, rv_ref, training)
    y_ref = {None: pre, "relu": F.relu(pre), "relu6": F.relu6(pre)}[act]
    g = {None: dy, "relu": F.relu_backward(dy, pre), "relu6": F.relu6_backward(dy, pre)}[act]
    dx_ref, dw_ref, db_ref = F.batch_norm_backward(g, cache)

    y, kcache = K.batch_norm(layout(x, memory), w, b, rm, rv, training, activation=act)
    dx, dw, db = K.batch_norm_backward(layout(dy, memory), kcache)
    # Both sides reduce in float64 and differ by elementwise float32 rounding (a few ulps of
    # the terms), except where the activation's mask flips on a value within rounding of a kink.
    tol = 1e-10 if dtype == np.float64 else 2e-5
    live = (
        (y_ref > 1e-4) & (y_ref < 6 - 1e-4)
        if act == "relu6"
        else (y_ref > 1e-4 if act else np.ones(shape, bool))
    )
    scale = np.abs(x).max() + 1
    assert np.all(np.abs(y - y_ref)[live] <= tol * scale * 10)
    if live.all():
        np.testing.assert_allclose(
            dx, dx_ref, rtol=0, atol=tol * 10 * (np.abs(dx_ref).max() + np.abs(dy).max())
        )
        if affine:
            np.testing.assert_allclose(
                dw, dw_ref, rtol=0, atol=tol * np.abs(dy).sum(axis=(0, 2, 3)).max() * scale
            )
            np.testing.assert_allclose(db, db_ref, rtol=0, atol=tol * np.abs(dy).sum(axis=(0, 2, 3)).max())
    np.testing.assert_allclose(rm, rm_ref, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(rv, rv_ref, rtol=tol * 10, atol=tol * scale**2)
    assert (dw is None) == (not affine)


@given(case=conv_cases(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_conv2d_channels_last_matches_reference(case, dtype, seed):
    x, w, b = rng_arrays(seed, dtype, case["x"], case["w"], (case["w"][0],))
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    out = K.conv2d(channels_last(x), w, b, **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw, db = K.conv2d_backward(channels_last(dout), channels_last(x), w, **kw)
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    k = w.shape[1] * w.shape[2] * w.shape[3]
    assert_within_bound(out, F.conv2d(x64, w64, b64, **kw), F.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw),
                        k + 1, dtype, "out")  # fmt: skip
    e = F.conv2d_backward(d64, x64, w64, **kw)
    bnd = F.conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64), **kw)
    n_out = out.shape[0] * out.shape[2] * out.shape[3]
    for got, ex, bo, kk, name in zip((dx, dw, db), e, bnd, (w.shape[0] * w.shape[2] * w.shape[3], n_out, n_out),
                                     ("dx", "dw", "db")):  # fmt: skip
        assert_within_bound(got, ex, bo, kk, dtype, name)


# --- fuzzing: malformed input never crashes, it raises ValueError/TypeError ------------------

ARRAYS = st.one_of(
    st.builds(lambda s, d: np.zeros(s, d), st.lists(st.integers(0, 5), max_size=5).map(tuple),
              st.sampled_from([np.float32, np.float64, np.int32, np.float16, np.bool_, np.complex64])),
    st.sampled_from([None, 3, "x", [1.0, 2.0], np.float32(1.0)]),
)  # fmt: skip
PARAMS = st.one_of(st.integers(-2, 4), st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
                   st.sampled_from(["same", "valid", "full", 1.5, None, (1, 2, 3)]))  # fmt: skip


@given(x=ARRAYS, w=ARRAYS, dout=ARRAYS, stride=PARAMS, padding=PARAMS, dilation=PARAMS)
def test_fuzz_convolution_kernels(x, w, dout, stride, padding, dilation):
    calls = [
        lambda: K.depthwise_conv2d(x, w, stride, padding, dilation),
        lambda: K.depthwise_conv2d_backward(dout, x, w, stride, padding, dilation),
        lambda: K.pointwise_conv2d(x, w),
        lambda: K.pointwise_conv2d_backward(dout, x, w),
        lambda: K.conv2d(x, w, None, stride, padding, dilation),
        lambda: K.conv2d_backward(dout, x, w, stride, padding, dilation),
    ]
    for call in calls:
        try:
            call()
        except (ValueError, TypeError):
            pass


@given(x=ARRAYS, p=ARRAYS, training=st.sampled_from([True, False, 1, None]),
       act=st.sampled_from([None, "relu", "relu6", "gelu", 3]), dy=ARRAYS)  # fmt: skip
def test_fuzz_batch_norm_kernel(x, p, training, act, dy):
    try:
        _, cache = K.batch_norm(x, p, p, p, p, training, activation=act)
    except (ValueError, TypeError):
        return
    try:
        K.batch_norm_backward(dy, cache)
    except (ValueError, TypeError):
        pass


def test_valid_fuzz_shapes_really_run():
    # the fuzzers above mostly hit errors; make sure the happy path of the same calls works
    x, w = np.zeros((1, 4, 3, 3), np.float32), np.zeros((4, 1, 3, 3), np.float32)
    assert K.depthwise_conv2d(x, w, 1, 1, 1).shape == (1, 4, 3, 3)
    with pytest.raises(ValueError, match="channel multiplier 1 only"):
        K.depthwise_conv2d(x, np.zeros((8, 1, 3, 3), np.float32))
