"""kernels.qdepthwise against the NumPy integer reference, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kernels import qdepthwise, qops
from kernels._vnni import HAS_VNNI
from numpy_impl.quant import ops


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 40),  # 16 and more: version 4's vector blocks, the last one overlapping
    hw=st.integers(1, 11),
    k=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    pad=st.integers(0, 2),
    relu=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_depthwise_equals_the_reference(n, c, hw, k, stride, pad, relu, seed):
    rng = np.random.default_rng(seed)
    hw = max(hw, k - 2 * pad)
    x = rng.integers(0, 256, (n, c, hw, hw)).astype(np.uint8)
    w = rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8)
    b = rng.integers(-5000, 5000, c).astype(np.int32)
    zx = int(rng.integers(0, 256))
    out = ops.QParams(float(np.float32(rng.uniform(0.05, 0.5))), int(rng.integers(0, 256)))
    rq = ops.Requant.make(0.02, rng.uniform(0.001, 0.01, c).astype(np.float32), out, relu=relu)
    ref = ops.depthwise_conv2d(x, zx, w, b, rq, stride, pad)
    ours = qops.make_conv(w, b, zx, rq, stride, pad, groups=c)(qops.nhwc(x).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ours, ref)
    # each version on its own (version 2 is stride 1 only)
    xh, wt, M = qops.nhwc(x), np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).astype(np.int16), rq.M
    out = np.empty(qops.nhwc(ref).shape, np.uint8)
    lo = out_zero = rq.out.zero_point
    lo = lo if relu else 0
    qdepthwise.depthwise_v1(xh, zx, wt, b, M, out_zero, lo, 255, stride, pad, out)
    np.testing.assert_array_equal(out.transpose(0, 3, 1, 2), ref)
    out[:] = 0
    qdepthwise.depthwise_v3[k](xh, zx, wt, b, M, out_zero, lo, 255, stride, pad, out)
    np.testing.assert_array_equal(out.transpose(0, 3, 1, 2), ref)
    if HAS_VNNI:
        out[:] = 0
        wpk, bias_f = qdepthwise.pack_taps(wt), qdepthwise.fold_taps(wt, b, zx)
        qdepthwise.depthwise_v4(xh, zx, wt, b, wpk, bias_f, M, out_zero, lo, 255, stride, pad, out)
        np.testing.assert_array_equal(out.transpose(0, 3, 1, 2), ref)
    if stride == 1:
        out[:] = 0
        qdepthwise.depthwise_v2(
            xh, zx, *qdepthwise.tiles(wt, b, M, out.shape[2]), out_zero, lo, 255, pad, out
        )
        np.testing.assert_array_equal(out.transpose(0, 3, 1, 2), ref)
