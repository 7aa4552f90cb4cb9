"""kernels.pointwise against the NumPy reference (its GEMM drivers: test_kernels_gemm.py);
fuzzing of the public pointwise kernels."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

import kernels as K
from kernels import _gemm as KG
from kernels import pointwise as KP
from kernels._prep import is_channels_last
from numpy_impl import functional as F

from . import fuzz
from .helpers import DTYPES, MEMORY, assert_within_bound, in_memory, rng_arrays, strided


# The one-pass backward with several blocks per part (162 rows in blocks of 16: 11 blocks in
# kernels._threads.PARTS = 8 parts, so some part sums two), always.
@example(
    n=2,
    cin=5,
    cout=6,
    h=9,
    w=9,
    dtype=np.float64,
    memory="channels_last",
    dout_memory="channels_last",
    w_strided=False,
    seed=3,
    pair=64,
)
@given(
    n=st.integers(1, 4),
    cin=st.integers(1, 40),
    cout=st.integers(1, 40),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    dtype=DTYPES,
    memory=MEMORY,
    dout_memory=MEMORY,
    w_strided=st.booleans(),
    seed=st.integers(0, 2**16),
    pair=st.sampled_from([None, 64, 1 << 18]),
)
def test_pointwise_matches_reference(n, cin, cout, h, w, dtype, memory, dout_memory, w_strided, seed, pair):
    """``pair``: the backward's two GEMMs in one pass over dout (``_gemm.backward_pair``), with blocks of
    that many bytes (64: many blocks of 16 rows), or (None) as two calls."""
    x, wt = rng_arrays(seed, dtype, (n, cin, h, w), (cout, cin, 1, 1))
    out = K.pointwise_conv2d(in_memory(x, memory), strided(wt, w_strided))
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    saved = KP.PAIR_BYTES, KG.backward_pair.__defaults__
    KP.PAIR_BYTES = 1 << 60 if pair is None else 0
    KG.backward_pair.__defaults__ = (pair or 1 << 18,)
    try:
        dx, dw = K.pointwise_conv2d_backward(
            in_memory(dout, dout_memory), in_memory(x, memory), strided(wt, w_strided)
        )
    finally:
        KP.PAIR_BYTES, KG.backward_pair.__defaults__ = saved
    x64, w64, d64 = x.astype(np.float64), wt.astype(np.float64), dout.astype(np.float64)
    assert_within_bound(
        out, F.pointwise_conv2d(x64, w64), F.pointwise_conv2d(np.abs(x64), np.abs(w64)), cin, dtype
    )
    e_dx, e_dw = F.pointwise_conv2d_backward(d64, x64, w64)
    b_dx, b_dw = F.pointwise_conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64))
    assert_within_bound(dx, e_dx, b_dx, cout, dtype, "dx")
    assert_within_bound(dw, e_dw, b_dw, n * h * w, dtype, "dw")
    if memory == "channels_last" and is_channels_last(in_memory(x, memory)):
        assert is_channels_last(out) or cout == 1


@given(case=fuzz.convolution_case("pointwise"), data=st.data())
def test_fuzz_pointwise_kernels(case, data):
    fuzz.check_convolution(case, data)
