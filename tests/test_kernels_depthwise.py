"""kernels.depthwise (the public depthwise kernels) against the NumPy reference and torch; fuzzing.
Each numbered version on its own: test_kernels_depthwise_versions.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import kernels as KK
from kernels import depthwise as K
from kernels import depthwise_versions as V
from kernels._prep import is_channels_last
from numpy_impl import functional as F

from . import fuzz
from .helpers import DTYPES, MEMORY, assert_within_bound, conv_cases, in_memory, rng_arrays, strided


def channels_last(a):
    return in_memory(a, "channels_last")


def exact(x, w, dout, kw):
    """float64 reference on the same values (the 'exact' answer) and its error bound."""
    x64, w64, d64 = (a.astype(np.float64) for a in (x, w, dout))
    out = F.depthwise_conv2d(x64, w64, **kw)
    dx, dw = F.depthwise_conv2d_backward(d64, x64, w64, **kw)
    bound = F.depthwise_conv2d(np.abs(x64), np.abs(w64), **kw)
    bdx, bdw = F.depthwise_conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64), **kw)
    return (out, dx, dw), (bound, bdx, bdw)


@st.composite
def dw_cases(draw, only_3x3=False):
    case = draw(conv_cases(depthwise=True))
    c = case["x"][1]
    case["w"] = (c, 1, *case["w"][2:])  # channel multiplier 1: the kernels' scope
    if only_3x3:
        case["w"] = (c, 1, 3, 3)
        case["dilation"] = (1, 1)
        if case["padding"] == "same":
            case["padding"] = 1
        h, w = case["x"][2:]
        pad = {"valid": 0}.get(case["padding"], case["padding"])
        ph, pw = (pad, pad) if isinstance(pad, int) else pad
        case["x"] = (*case["x"][:2], max(h, 3 - 2 * ph), max(w, 3 - 2 * pw))
    return case


def check_version(case, dtype, seed, fwd_version, bwd_version, memory, dout_memory=None, w_strided=False):
    x, w, dout_seed = *rng_arrays(seed, dtype, case["x"], case["w"]), seed + 1
    kw = {k: case[k] for k in ("stride", "padding", "dilation")}
    x_in = in_memory(x, memory)
    out = K.depthwise_conv2d(x_in, strided(w, w_strided), **kw, version=fwd_version)
    dout = rng_arrays(dout_seed, dtype, out.shape)[0]
    d_in = in_memory(dout, dout_memory or memory)
    dx, dw = K.depthwise_conv2d_backward(d_in, x_in, strided(w, w_strided), **kw, version=bwd_version)
    (e_out, e_dx, e_dw), (b_out, b_dx, b_dw) = exact(x, w, dout, kw)
    kh, kwid = w.shape[2:]
    assert out.dtype == dx.dtype == dw.dtype == dtype
    assert_within_bound(out, e_out, b_out, kh * kwid, dtype, f"out v{fwd_version}")
    assert_within_bound(dx, e_dx, b_dx, kh * kwid, dtype, f"dx v{bwd_version}")
    assert_within_bound(
        dw, e_dw, b_dw, out.shape[0] * out.shape[2] * out.shape[3], dtype, f"dw v{bwd_version}"
    )
    return out, dx


@given(
    case=dw_cases(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
    memory=MEMORY,
    dout_memory=MEMORY,
    w_strided=st.booleans(),
)
def test_public_kernels_match_reference(case, dtype, seed, memory, dout_memory, w_strided):
    out, dx = check_version(case, dtype, seed, None, None, memory, dout_memory, w_strided)
    if memory == dout_memory == "channels_last" and is_channels_last(channels_last(np.empty(case["x"]))):
        assert is_channels_last(out) or out.shape[2] * out.shape[3] == 1  # output keeps the memory format
        assert is_channels_last(dx)


@pytest.mark.parametrize("c,h,s", [(17, 1, 1), (33, 2, 2), (1, 9, 2), (40, 7, 2), (3, 16, 1)])
def test_against_torch_channels_last(c, h, s):
    x, w = rng_arrays(c + h, np.float32, (3, c, h, h + 1), (c, 1, 3, 3))
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    ref = TF.conv2d(xt, wt, None, s, 1, 1, c)
    dout = rng_arrays(0, np.float32, tuple(ref.shape))[0]
    ref.backward(torch.from_numpy(dout))
    out = K.depthwise_conv2d(channels_last(x), w, s, 1)
    dx, dw = K.depthwise_conv2d_backward(channels_last(dout), channels_last(x), w, s, 1)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-5)  # 9-term float32 sums
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)  # sums of 3*h*h terms


def test_unbatched_and_strided_inputs():
    x, w = rng_arrays(1, np.float64, (5, 9, 8), (5, 1, 3, 3))
    np.testing.assert_allclose(K.depthwise_conv2d(x, w, 2, 1), F.depthwise_conv2d(x, w, 2, 1), rtol=1e-13)
    xs = np.repeat(x[None], 2, axis=3)[..., ::2]  # neither NCHW- nor NHWC-contiguous
    np.testing.assert_allclose(K.depthwise_conv2d(xs, w, 1, 1), F.depthwise_conv2d(xs, w, 1, 1), rtol=1e-13)


def test_channel_multiplier_and_versions_are_rejected_clearly():
    x, w = rng_arrays(1, np.float32, (1, 4, 8, 8), (8, 1, 3, 3))
    with pytest.raises(
        ValueError, match=r"channel multiplier 1 only: w.shape\[0\] must equal x.shape\[1\] == 4"
    ):
        K.depthwise_conv2d(x, w)
    known = ", ".join(map(str, sorted(V.FORWARD)))
    with pytest.raises(ValueError, match=rf"version must be one of \[{known}\], got 99"):
        K.depthwise_conv2d(x, w[:4], version=99)
    with pytest.raises(ValueError, match=r"version 7 needs a 3x3 kernel with dilation 1"):
        K.depthwise_conv2d(x, w[:4], dilation=2, version=7)


@given(case=fuzz.convolution_case("depthwise"), data=st.data())
def test_fuzz_depthwise_kernels(case, data):
    fuzz.check_convolution(case, data)


def test_valid_fuzz_shapes_really_run():
    # the fuzzers above mostly hit errors; the happy path of the same calls gives the reference's answer
    x, w = rng_arrays(0, np.float32, (1, 4, 3, 3), (4, 1, 3, 3))
    got, want = (
        KK.depthwise_conv2d(x, w, 1, 1, 1),
        F.depthwise_conv2d(x.astype(np.float64), w.astype(np.float64), 1, 1),
    )
    bound = F.depthwise_conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), 1, 1)
    assert_within_bound(got, want, bound, 9, np.float32, "depthwise")
    with pytest.raises(ValueError, match="channel multiplier 1 only"):
        KK.depthwise_conv2d(x, np.zeros((8, 1, 3, 3), np.float32))
