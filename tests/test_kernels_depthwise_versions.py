"""kernels.depthwise_versions: every numbered version of the depthwise kernels on its own, the 3x3
ones on awkward shapes, and the weight gradient's fixed split into chunks."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kernels import depthwise as K
from kernels import depthwise_versions as V
from numpy_impl import functional as F
from numpy_impl.functional.conv import geometry

from .helpers import DTYPES, assert_within_bound, rng_arrays
from .test_kernels_depthwise import check_version, dw_cases, exact

VERSIONS = [("forward", v) for v in V.FORWARD] + [("backward", v) for v in V.BACKWARD]
# Steps of the road that no public kernel calls (kernels.depthwise picks forward 3, 6, 10 and
# backward 2, 3, 7, which call forward 9 and backward 5 and 6): checked in float64 only. A
# dtype changes only the type the same loops compile for, and each of these costs seconds of
# compiling per dtype; the public kernels and everything they call are checked in both.
ROAD_ONLY = {("forward", v) for v in (1, 2, 4, 5, 7, 8)} | {("backward", v) for v in (1, 4)}


@pytest.mark.parametrize("direction,version", VERSIONS)
@given(case=dw_cases(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_every_version_matches_reference(direction, version, case, dtype, seed):
    """Each numbered version on its own (the other direction runs the public kernel); only the
    3x3 versions get their cases turned into 3x3 ones."""
    dtype = np.float64 if (direction, version) in ROAD_ONLY else dtype
    only_3x3 = V.ONLY_3X3_FORWARD if direction == "forward" else V.ONLY_3X3_BACKWARD
    if version in only_3x3 and (case["w"][2:] != (3, 3) or tuple(case["dilation"]) != (1, 1)):
        case = dict(case, w=(case["w"][0], 1, 3, 3), dilation=(1, 1), padding=1)
    fwd, bwd = (version, None) if direction == "forward" else (None, version)
    check_version(case, dtype, seed, fwd, bwd, "nchw")


def test_only_the_3x3_versions_refuse_other_filters():
    x, w = rng_arrays(3, np.float64, (2, 4, 9, 8), (4, 1, 5, 5))
    out = K.depthwise_conv2d(x, w, 1, 2, version=4)  # the NHWC forward takes any filter
    np.testing.assert_allclose(out, F.depthwise_conv2d(x, w, 1, 2), rtol=1e-12, atol=1e-12)
    dx, dw = K.depthwise_conv2d_backward(out, x, w, 1, 2, version=3)
    e_dx, e_dw = F.depthwise_conv2d_backward(out, x, w, 1, 2)
    np.testing.assert_allclose(dx, e_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="version 7 needs a 3x3 kernel"):
        K.depthwise_conv2d(x, w, 1, 2, version=7)
    with pytest.raises(ValueError, match="version 4 needs a 3x3 kernel"):
        K.depthwise_conv2d_backward(out, x, w, 1, 2, version=4)


@pytest.mark.parametrize("fwd,bwd", [(7, 4), (8, 5), (9, 6), (10, 7)])
# version 9's 2x2 blocks over an odd number (5) of interior columns: the last one alone
@example(
    case={"x": (1, 4, 5, 7), "w": (4, 1, 3, 3), "stride": (1, 1), "padding": 1, "dilation": (1, 1)},
    dtype=np.float64,
    seed=0,
    wide=True,
    lanes=1,
)
@given(
    case=dw_cases(only_3x3=True),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
    wide=st.booleans(),
    lanes=st.sampled_from([1, 4, 8]),
)
def test_3x3_kernels_on_awkward_shapes(fwd, bwd, case, dtype, seed, wide, lanes):
    """``wide`` lowers version 9's channel threshold so that its 2x2 blocks run on the few
    channels drawn here (they also compute the stride-1 dx of backward versions 5-7); with
    ``wide`` and ``lanes`` version 10 takes its flat steps of ``lanes // C`` pixels (at least
    one) on any size, or hands wide small layers to version 9."""
    dtype = np.float64 if ("forward", fwd) in ROAD_ONLY else dtype
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(V, "WIDE_C", 1 if wide else V.WIDE_C)
        mp.setattr(V, "FLAT_LANES", lanes)
        mp.setattr(V, "FLAT_MIN_HW", 1 if lanes == 8 else V.FLAT_MIN_HW)
        check_version(case, dtype, seed, fwd, bwd, "channels_last")


@example(
    case={"x": (2, 3, 5, 6), "w": (3, 1, 3, 3), "stride": (1, 1), "padding": 0, "dilation": (1, 1)},
    version=4,
    chunks=3,
    dtype=np.float64,
    pads=(0, 2),
    strides=(1, 1),
    seed=0,
)
# version 5's stride-1 dx (forward version 9 on the flipped filter) with unequal paddings
@example(
    case={"x": (2, 3, 6, 5), "w": (3, 1, 3, 3), "stride": (1, 1), "padding": 0, "dilation": (1, 1)},
    version=5,
    chunks=2,
    dtype=np.float64,
    pads=(2, 0),
    strides=(1, 1),
    seed=4,
)
# version 7's flat dw (C divides DW_LANES): 64 channels, 4 pixels per step, a last band of 3 rows
@example(
    case={"x": (2, 64, 7, 11), "w": (64, 1, 3, 3), "stride": (1, 1), "padding": 0, "dilation": (1, 1)},
    version=7,
    chunks=3,
    dtype=np.float64,
    pads=(1, 1),
    strides=(1, 1),
    seed=1,
)
# one pixel per step, unequal paddings
@example(
    case={"x": (1, 256, 6, 4), "w": (256, 1, 3, 3), "stride": (1, 1), "padding": 0, "dilation": (1, 1)},
    version=7,
    chunks=2,
    dtype=np.float32,
    pads=(0, 1),
    strides=(1, 1),
    seed=2,
)
@given(
    case=dw_cases(),
    version=st.sampled_from([3, 4, 5, 6, 7]),
    chunks=st.integers(1, 7),
    dtype=DTYPES,
    pads=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    strides=st.tuples(*[st.sampled_from([1, 2])] * 2),
    seed=st.integers(0, 2**16),
)
def test_weight_gradient_is_the_same_for_any_number_of_chunks(
    case, version, chunks, dtype, pads, strides, seed
):
    """The channels-last backward sums dw over chunks of output rows (one per thread by default):
    every chunk count, not only this machine's thread count, must give the reference's dw. For the
    3x3 version, unequal vertical and horizontal paddings (its stride-1 dx flips the filter)."""
    if version in V.ONLY_3X3_BACKWARD:
        n, c, h, w_ = case["x"]
        case = dict(
            case,
            x=(n, c, max(h, 3), max(w_, 3)),
            w=(c, 1, 3, 3),
            dilation=(1, 1),
            padding=pads,
            stride=strides,
        )
    x, w = rng_arrays(seed, dtype, case["x"], case["w"])
    kw = {k: case[k] for k in ("stride", "padding", "dilation")}
    out = F.depthwise_conv2d(x, w, **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    g = geometry("t", x.shape[2:], w.shape[2:], kw["stride"], kw["padding"], kw["dilation"])
    wk = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # (kh, kw, C)
    dx, dwk = np.empty(x.transpose(0, 2, 3, 1).shape, dtype), np.empty_like(wk)
    V.BACKWARD[version](
        np.ascontiguousarray(dout.transpose(0, 2, 3, 1)),
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
        wk,
        dx,
        dwk,
        *g.stride,
        g.pads[0],
        g.pads[2],
        *g.dilation,
        chunks=chunks,
    )
    (_, e_dx, e_dw), (_, b_dx, b_dw) = exact(x, w, dout, kw)
    k = w.shape[2] * w.shape[3]
    assert_within_bound(dx.transpose(0, 3, 1, 2), e_dx, b_dx, k, dtype, "dx")
    assert_within_bound(
        dwk.transpose(2, 0, 1)[:, None],
        e_dw,
        b_dw,
        out.shape[0] * out.shape[2] * out.shape[3],
        dtype,
        f"dw with {chunks} chunks",
    )
