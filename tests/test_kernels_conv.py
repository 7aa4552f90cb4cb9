"""kernels.conv (the stem's regular convolution) against the NumPy reference; fuzzing of the
public convolution kernels (the depthwise and pointwise ones have their own files)."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import kernels as K
from numpy_impl import functional as F

from . import fuzz
from .helpers import DTYPES, MEMORY, assert_within_bound, conv_cases, in_memory, rng_arrays, strided


# The channels-last path (im2col) with both dilations and strides above 1, always; and the
# stem's shape (3x3 taps of 3 channels, stride 2: the unrolled copy of a tap row).
@example(
    case={"x": (1, 3, 11, 10), "w": (5, 3, 3, 3), "stride": 2, "padding": 1, "dilation": 1, "groups": 1},
    dtype=np.float32,
    memory="channels_last",
    dout_memory="channels_last",
    w_strided=True,
    seed=7,
)
@example(
    case={
        "x": (2, 3, 9, 8),
        "w": (4, 3, 3, 2),
        "stride": (2, 1),
        "padding": (1, 2),
        "dilation": (2, 3),
        "groups": 1,
    },
    dtype=np.float64,
    memory="channels_last",
    dout_memory="channels_last",
    w_strided=False,
    seed=5,
)
@given(
    case=conv_cases(),
    dtype=DTYPES,
    memory=MEMORY,
    dout_memory=MEMORY,
    w_strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv2d_matches_reference(case, dtype, memory, dout_memory, w_strided, seed):
    x, w, b = rng_arrays(seed, dtype, case["x"], case["w"], (case["w"][0],))
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    out = K.conv2d(in_memory(x, memory), strided(w, w_strided), strided(b, w_strided), **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw, db = K.conv2d_backward(
        in_memory(dout, dout_memory), in_memory(x, memory), strided(w, w_strided), **kw
    )
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    k = w.shape[1] * w.shape[2] * w.shape[3]
    assert_within_bound(
        out,
        F.conv2d(x64, w64, b64, **kw),
        F.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw),
        k + 1,
        dtype,
        "out",
    )
    e = F.conv2d_backward(d64, x64, w64, **kw)
    bnd = F.conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64), **kw)
    n_out = out.shape[0] * out.shape[2] * out.shape[3]
    for got, ex, bo, kk, name in zip(
        (dx, dw, db), e, bnd, (w.shape[0] * w.shape[2] * w.shape[3], n_out, n_out), ("dx", "dw", "db")
    ):
        assert_within_bound(got, ex, bo, kk, dtype, name)


@given(case=fuzz.convolution_case("conv"), data=st.data())
def test_fuzz_conv_kernels(case, data):
    fuzz.check_convolution(case, data)


@pytest.mark.parametrize("tile_bytes", [1, 3 * 9 * 27 * 8, 1 << 30])
def test_conv2d_tiles_cover_every_row(monkeypatch, tile_bytes):
    """The forward's tiles: one output row each, three (the last one short), or all rows in one."""
    monkeypatch.setattr(K.conv, "CONV_TILE_BYTES", tile_bytes)
    x, w, b = rng_arrays(3, np.float64, (2, 3, 19, 18), (6, 3, 3, 3), (6,))
    got = K.conv2d(in_memory(x, "channels_last"), w, b, stride=2, padding=1)
    np.testing.assert_allclose(got, F.conv2d(x, w, b, stride=2, padding=1), rtol=1e-12, atol=1e-12)


def test_the_fuzz_check_fails_a_kernel_that_refuses_valid_input():
    x, w = rng_arrays(0, np.float64, (1, 2, 5, 5), (3, 2, 3, 3))

    def refuses(*args):
        raise ValueError("conv2d: not today")

    with pytest.raises(AssertionError, match="refuses input the reference accepts"):
        fuzz.agree(refuses, F.pointwise_conv2d, (x[:, :, :1, :1], w[:, :, :1, :1]), "pointwise")
    with pytest.raises(AssertionError, match="the kernel raises TypeError"):  # the wrong type of error
        fuzz.agree(lambda *a: K.conv2d(None, *a[1:]), F.conv2d, (x[:, :1], w), "conv")
    fuzz.agree(K.conv2d, F.conv2d, (x, w[:, :1]), "conv")  # both refuse with a ValueError: agreed
