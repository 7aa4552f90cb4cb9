"""kernels.qdepthwise against the NumPy integer reference, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kernels import qops
from numpy_impl.quant import ops


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 40),
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
    ours = qops.make_conv(w, b, zx, rq, stride, pad, groups=c)(qops.nhwc(x).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ours, ops.depthwise_conv2d(x, zx, w, b, rq, stride, pad))
