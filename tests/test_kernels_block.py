"""The fused inverted-residual block against the composition of reference ops."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import fused_block as FB
from numpy_impl import functional as F

from .helpers import DTYPES


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def make_block(rng, dtype, cin, t, cout):
    hid = cin * t
    ws = [None if t == 1 else rng.standard_normal((hid, cin, 1, 1)) * 0.4, rng.standard_normal((hid, 1, 3, 3)) * 0.4,
          rng.standard_normal((cout, hid, 1, 1)) * 0.4]  # fmt: skip
    ws = [None if w is None else w.astype(dtype) for w in ws]

    def bn(c):
        return [(rng.standard_normal(c) * 0.3 + 1), rng.standard_normal(c) * 0.2, rng.standard_normal(c) * 0.2,
                rng.random(c) + 0.5]  # fmt: skip

    bns = [None if t == 1 else bn(hid), bn(hid), bn(cout)]
    return ws, [None if b is None else [a.astype(dtype) for a in b] for b in bns]


def reference(x, ws, bns, stride, residual, training):
    """The unfused block with the reference ops; returns y and a backward closure."""
    steps, h = [], x
    if ws[0] is not None:
        a = F.pointwise_conv2d(h, ws[0])
        b, c0 = F.batch_norm(a, *bns[0], training)
        steps.append(("pw", h, ws[0], c0, b))
        h = F.relu6(b)
    a = F.depthwise_conv2d(h, ws[1], stride, 1)
    b, c1 = F.batch_norm(a, *bns[1], training)
    steps.append(("dw", h, ws[1], c1, b))
    h2 = F.relu6(b)
    a = F.pointwise_conv2d(h2, ws[2])
    y, c2 = F.batch_norm(a, *bns[2], training)

    def backward(dy):
        g, dbn2w, dbn2b = F.batch_norm_backward(dy, c2)
        g, dpw = F.pointwise_conv2d_backward(g, h2, ws[2])
        dws, dbns = [None, None, dpw], [None, None, (dbn2w, dbn2b)]
        for i, (kind, inp, w, cache, pre) in reversed(list(enumerate(steps))):
            k = i if ws[0] is not None else i + 1
            g = F.relu6_backward(g, pre)
            g, dbw, dbb = F.batch_norm_backward(g, cache)
            g, dws[k] = (F.depthwise_conv2d_backward(g, inp, w, stride, 1) if kind == "dw"
                         else F.pointwise_conv2d_backward(g, inp, w))  # fmt: skip
            dbns[k] = (dbw, dbb)
        return (g + dy if residual else g), dws, dbns

    return (y + x if residual else y), backward


cases = st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 9), st.integers(1, 9),
                  st.sampled_from([1, 6]), st.integers(1, 12), st.sampled_from([1, 2]))  # fmt: skip


@given(case=cases, dtype=DTYPES, training=st.booleans(), tile=st.sampled_from([1, 4096, 1 << 20]),
       memory=st.sampled_from(["nchw", "channels_last"]), keep=st.sampled_from(["store", "recompute"]),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_fused_block_matches_composition(case, dtype, training, tile, memory, keep, seed):
    n, cin, h, w, t, cout, stride = case
    if training and n * ((h - 1) // stride + 1) * ((w - 1) // stride + 1) < 2:
        return  # training BN needs more than one value per channel
    rng = np.random.default_rng(seed)
    ws, bns = make_block(rng, dtype, cin, t, cout)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    residual = stride == 1 and cin == cout
    bns_ref = [None if b is None else [a.copy() for a in b] for b in bns]
    y_ref, backward = reference(x, ws, bns_ref, stride, residual, training)
    x_in = channels_last(x) if memory == "channels_last" else x
    saved, FB.TILE_BYTES = FB.TILE_BYTES, tile  # from one row per tile to whole batches
    try:
        y, cache = FB.inverted_residual(x_in, ws, bns, stride, None, training, memory=keep)
    finally:
        FB.TILE_BYTES = saved
    tol = 1e-11 if dtype == np.float64 else 2e-4  # ~3 chained float32 reductions of <= 100 terms
    scale = np.abs(y_ref).max() + 1e-30
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=tol * scale)
    for b, br in zip(bns, bns_ref):  # running statistics, updated in place in training only
        if b is not None:
            for a, ar in zip(b, br):
                np.testing.assert_allclose(a, ar, rtol=tol, atol=tol)
    if not training:
        assert cache is None
        return
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dws, dbns = FB.inverted_residual_backward(dy, cache)
    dx_ref, dws_ref, dbns_ref = backward(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=tol * 10 * (np.abs(dx_ref).max() + 1))
    for got, ref in zip(dws, dws_ref):
        if ref is not None:
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol * 10 * (np.abs(ref).max() + 1))
    for got, ref in zip(dbns, dbns_ref):
        if ref is not None:
            for a, b in zip(got, ref):
                np.testing.assert_allclose(a, b, rtol=0, atol=tol * 10 * (np.abs(b).max() + 1))


def test_fused_block_bad_input():
    rng = np.random.default_rng(0)
    ws, bns = make_block(rng, np.float32, 4, 6, 4)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"expand weight must have shape \(24, 3, 1, 1\), got \(24, 4, 1, 1\)"
    ):
        FB.inverted_residual(x[:, :3], ws, bns)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        FB.inverted_residual(x, ws, bns, stride=3)
    with pytest.raises(TypeError, match="must have the same dtype as x"):
        FB.inverted_residual(x.astype(np.float64), ws, bns)
    with pytest.raises(ValueError, match="residual needs stride 1"):
        FB.inverted_residual(x, ws, bns, stride=2, residual=True)
    with pytest.raises(ValueError, match="memory must be 'store' or 'recompute', got 'disk'"):
        FB.inverted_residual(x, ws, bns, memory="disk")
    with pytest.raises(TypeError, match="cache must come from a training-mode inverted_residual"):
        FB.inverted_residual_backward(x, None)
