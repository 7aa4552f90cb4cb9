"""kernels.qops: the integer model's ops on Numba kernels equal numpy_impl.quant.ops bit for bit,
on channels-last uint8 activations; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import qops
from numpy_impl.quant import ops

from .helpers import QSCALES, quantized_pair


def _cl(x):
    return qops.nhwc(x).transpose(0, 3, 1, 2)  # the same values, NHWC memory


@given(
    kind=st.sampled_from(["pointwise", "conv", "linear"]),
    cin=st.integers(1, 9),
    cout=st.integers(1, 40),
    hw=st.integers(3, 9),
    stride=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_convolutions_equal_the_reference(kind, cin, cout, hw, stride, seed):
    rng = np.random.default_rng(seed)
    k = 3 if kind == "conv" else 1
    shape = (2, cin) if kind == "linear" else (2, cin, hw, hw)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-127, 128, (cout, cin) if kind == "linear" else (cout, cin, k, k)).astype(np.int8)
    b = rng.integers(-5000, 5000, cout).astype(np.int32)
    zx = int(rng.integers(0, 256))
    out = ops.QParams(float(np.float32(rng.uniform(0.05, 0.5))), int(rng.integers(0, 256)))
    rq = ops.Requant.make(0.02, rng.uniform(0.001, 0.01, cout).astype(np.float32), out, relu=bool(seed % 2))
    s, p = (stride, 1) if kind == "conv" else (1, 0)
    ref = ops.make_conv(w, b, zx, rq, s, p, linear=kind == "linear")(x)
    ours = qops.make_conv(w, b, zx, rq, s, p, linear=kind == "linear")(x if kind == "linear" else _cl(x))
    np.testing.assert_array_equal(ours, ref)


@given(quantized_pair())
def test_elementwise_ops_equal_the_reference(case):
    a, b, qa, qb, qy = case
    np.testing.assert_array_equal(qops.add(_cl(a), qa, _cl(b), qb, qy), ops.add(a, qa, b, qb, qy))
    gate = b[:, :, :1, :1]
    np.testing.assert_array_equal(qops.mul(_cl(a), qa, gate, qb, qy), ops.mul(a, qa, gate, qb, qy))
    np.testing.assert_array_equal(qops.global_avg_pool2d(_cl(a)), ops.global_avg_pool2d(a))
    table = ops.lookup_table(ops.hardswish_float, qa, qy)
    np.testing.assert_array_equal(qops.lookup(_cl(a), table, qa), ops.lookup(a, table, qa))


@given(st.integers(0, 2**32 - 1), st.integers(0, 1000), st.integers(0, 128))
def test_lookup_equals_indexing(seed, size, qmin):
    """Long enough for the 64-byte vector path (and its tail), every byte value: table[x - qmin]."""
    rng = np.random.default_rng(seed)
    qin = ops.QParams(0.1, qmin + 10, qmin, 255)
    table = rng.integers(0, 256, 256 - qmin).astype(np.uint8)
    x = rng.integers(qmin, 256, size).astype(np.uint8)
    np.testing.assert_array_equal(qops.lookup(x[None], table, qin)[0], table[x.astype(np.int64) - qmin])


@given(st.integers(0, 2**32 - 1), QSCALES, st.integers(0, 255))
def test_quantize_input_equals_the_reference(seed, scale, zp):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-600, 600, (2, 3, 5, 4)) * scale / 2).astype(np.float32)  # ties at every half step
    x.reshape(-1)[rng.choice(x.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]  # NaN -> 0, inf clamped
    qp = ops.QParams(scale, zp)
    np.testing.assert_array_equal(qops.quantize_input(x, qp), ops.quantize_input(x, qp))


def test_refusals():
    rq = ops.Requant.make(0.1, np.ones(4, np.float32), ops.QParams(0.1, 0))
    conv = qops.make_conv(np.ones((4, 2, 1, 1), np.int8), None, 0, rq)
    with pytest.raises(TypeError, match="uint8"):
        conv(np.zeros((1, 2, 3, 3), np.int32))
    with pytest.raises(ValueError, match="2 channels"):
        conv(np.zeros((1, 3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="'float' scheme"):
        qops.make_conv(np.ones((4, 2, 1, 1), np.int8), None, 0, ops.Requant.make(0.1, 1.0, rq.out, "fixed"))
    with pytest.raises(OverflowError, match="int32 accumulator"):
        qops.make_conv(np.full((1, 70000, 1, 1), 127, np.int8), None, 0, ops.Requant.make(0.1, 1.0, rq.out))
    with pytest.raises(ValueError, match="4 multipliers for 1 output"):
        qops.make_conv(np.ones((1, 2, 1, 1), np.int8), None, 0, rq)
    with pytest.raises(ValueError, match="grouped"):
        qops.make_conv(np.ones((4, 2, 3, 3), np.int8), None, 0, rq, groups=2)
    with pytest.raises(ValueError, match="same shape"):
        qops.add(np.zeros((1, 2, 3, 3), np.uint8), rq.out, np.zeros((1, 2, 3, 4), np.uint8), rq.out, rq.out)


def _layer(rng, cin, cout, zx, k=1, stride=1, groups=1, relu=True):
    """A random integer convolution: (weights, bias, requantization, its output's qparams), its
    multipliers ~0.01 / sqrt(taps): outputs spread over tens of steps, layer after layer (not
    all clamped to one value)."""
    w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
    b = rng.integers(-3000, 3000, cout).astype(np.int32)
    out = ops.QParams(float(np.float32(rng.uniform(0.05, 0.5))), int(rng.integers(64, 192)))
    s_w = out.scale * rng.uniform(0.25, 0.75, cout) / np.sqrt(w[0].size)  # M = 0.02 s_w / s_out
    rq = ops.Requant.make(0.02, s_w.astype(np.float32), out, relu=relu)
    return w, b, rq, out


@given(
    n=st.integers(1, 2),
    cin=st.sampled_from([4, 8]),
    hidden=st.sampled_from([8, 16, 20, 36]),  # under a vector, one, and with an overlapping last one
    hw=st.integers(3, 9),
    k=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    expand=st.booleans(),
    hardswish=st.booleans(),
    tiled=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_block_equals_its_layers(n, cin, hidden, hw, k, stride, expand, hardswish, tiled, seed):
    """expand -> (hard-swish) -> depthwise -> (hard-swish) -> project (-> the residual add) in
    one call, tiled down to one output row per tile or not: the layers' integers, bit for bit."""
    if not qops.HAS_VNNI:
        return  # the fused block needs version 4's kernels (make_block returns None)
    rng = np.random.default_rng(seed)
    hidden = hidden if expand else cin
    residual = stride == 1 and bool(seed % 2)
    cout = cin if residual else int(rng.choice([4, 12]))
    qx = ops.QParams(float(np.float32(rng.uniform(0.02, 0.2))), int(rng.integers(0, 256)))
    x = rng.integers(0, 256, (n, cin, hw, hw)).astype(np.uint8)
    layers, tables, q, z = [], [], x, qx.zero_point
    specs = ([(cin, hidden, 1, 1, 1)] if expand else []) + [(hidden, hidden, k, stride, hidden)]
    for c_in, c_out, kk, s, g in specs:
        w, b, rq, out = _layer(rng, c_in, c_out, z, kk, s, g, relu=not hardswish)
        conv = qops.make_conv(w, b, z, rq, s, kk // 2, g)
        q, z = ops.conv2d(q, z, w, b, rq, s, kk // 2, g), out.zero_point
        table = None
        if hardswish:
            act = ops.QParams(float(np.float32(rng.uniform(0.05, 0.5))), int(rng.integers(0, 100)))
            table = (ops.lookup_table(ops.hardswish_float, out, act), out)
            q, z = ops.lookup(q, table[0], out), act.zero_point
        layers.append(conv)
        tables.append(table)
    w, b, rq, out = _layer(rng, hidden, cout, z, relu=False)
    layers.append(qops.make_conv(w, b, z, rq))
    tables.append(None)
    ref = ops.conv2d(q, z, w, b, rq)
    add = None
    if residual:
        qo = ops.QParams(float(np.float32(rng.uniform(0.05, 0.5))), int(rng.integers(0, 256)))
        add = (qx, out, qo)
        ref = ops.add(x, qx, ref, out, qo)
    assert len(np.unique(ref)) > 1  # (the data exercise the block: not one clamped value)
    block = qops.make_block(layers, tables, add)
    assert block is not None
    if tiled and expand:  # (a block without an expansion is never tiled)
        block._tiles[(n, hw, hw)] = qops.block_tiles(n, hw, hw, *ref.shape[2:], hidden, stride, k, 1, 1)
    np.testing.assert_array_equal(block(_cl(x)), ref)
