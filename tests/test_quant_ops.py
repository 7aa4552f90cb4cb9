"""numpy_impl.quant.ops against torch's quantized ops (engine x86, or onednn where said)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.ao.nn.quantized.functional as qF
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl.quant import affine, ops

from .helpers import QSCALES, quantized_pair

# torch 2.13 deprecates its quantized tensors in favour of torchao; they are still its reference
pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")


@pytest.fixture(autouse=True)
def _engine():
    before = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = before


def tq(q, qp: ops.QParams):
    """A torch quint8 tensor holding the integers ``q``."""
    return torch._make_per_tensor_quantized_tensor(
        torch.from_numpy(np.asarray(q, np.uint8)), qp.scale, qp.zero_point
    )


def tw(wq, scales):
    k = wq.shape[0]
    return torch._make_per_channel_quantized_tensor(
        torch.from_numpy(wq.astype(np.int8)),
        torch.from_numpy(scales.astype(np.float64)),
        torch.zeros(k, dtype=torch.long),
        0,
    )


def ints(t):
    return t.int_repr().numpy().astype(np.int32)


@st.composite
def conv_case(draw, qmax=255):
    kind = draw(st.sampled_from(["conv", "grouped", "depthwise", "pointwise"]))
    groups = {
        "conv": 1,
        "pointwise": 1,
        "grouped": draw(st.integers(2, 3)),
        "depthwise": draw(st.integers(1, 12)),
    }[kind]
    cg = 1 if kind == "depthwise" else draw(st.integers(1, 6))
    kg = 1 if kind == "depthwise" else draw(st.integers(1, 6))
    k = 1 if kind == "pointwise" else draw(st.sampled_from([1, 3, 5]))
    stride = 1 if kind == "pointwise" else draw(st.integers(1, 2))
    padding = 0 if kind == "pointwise" else draw(st.integers(0, k // 2))
    hw = draw(st.integers(k, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_qp = ops.QParams(draw(QSCALES), draw(st.integers(0, qmax)), 0, qmax)
    x = rng.integers(0, qmax + 1, (draw(st.integers(1, 2)), groups * cg, hw, hw))
    wf = rng.normal(0, 0.3, (groups * kg, cg, k, k)).astype(np.float32)
    s_w = affine.weight_scales(wf)
    w = affine.quantize(wf, s_w, np.zeros(len(s_w), np.int64), -127, 127, axis=0)
    b = rng.integers(-3000, 3000, groups * kg).astype(np.int32)
    out = ops.QParams(draw(QSCALES), draw(st.integers(0, 255)))
    relu = draw(st.booleans())
    return kind, x, x_qp, w, s_w, b, out, relu, stride, padding, groups


def ours(case, scheme="float"):
    kind, x, x_qp, w, s_w, b, out, relu, stride, padding, groups = case
    rq = ops.Requant.make(x_qp.scale, s_w, out, scheme, relu=relu)
    if kind == "depthwise":
        return ops.depthwise_conv2d(x, x_qp.zero_point, w, b, rq, stride, padding)
    if kind == "pointwise":
        return ops.pointwise_conv2d(x, x_qp.zero_point, w, b, rq)
    return ops.conv2d(x, x_qp.zero_point, w, b, rq, stride, padding, groups)


def torchs(case, engine):
    torch.backends.quantized.engine = engine
    kind, x, x_qp, w, s_w, b, out, relu, stride, padding, groups = case
    # torch takes a float bias and divides it by s_x * s_w again: give it b's real value
    bias = torch.from_numpy((b * (np.float32(x_qp.scale) * s_w)).astype(np.float32))
    y = qF.conv2d(
        tq(x, x_qp),
        tw(w, s_w),
        bias,
        stride,
        padding,
        groups=groups,
        scale=out.scale,
        zero_point=out.zero_point,
    )
    y = ints(y)
    return np.maximum(y, out.zero_point) if relu else y  # ReLU: the clamp at real 0


@given(conv_case(qmax=127))
def test_conv_equals_torch_x86_exactly(case):
    """7-bit activations, torch's x86 default (reduce_range): fbgemm's kernels are then exact."""
    np.testing.assert_array_equal(ours(case), torchs(case, "x86"))


@given(conv_case(qmax=255))
def test_conv_full_range_equals_torch_onednn(case):
    """8-bit activations against oneDNN, which accumulates in int32 as we do. (fbgemm sums pairs
    of uint8 x int8 products in saturating int16 and so differs: ``test_fbgemm_saturates``.)
    Rule: at most one unit, on the rare accumulators where onednn's float32 order rounds a tie
    the other way."""
    d = np.abs(ours(case).astype(np.int64) - torchs(case, "onednn"))
    assert d.max(initial=0) <= 1 and (d > 0).mean() < 0.01


def test_fbgemm_saturates_on_full_range_activations():
    """Why the x86 check uses 7-bit activations: fbgemm's depthwise kernel, given uint8 values up
    to 255 and int8 weights of +-127, overflows its int16 pair sums (vpmaddubsw saturates)."""
    x = np.full((1, 200, 4, 4), 255)  # > 100 channels: torch's x86 engine picks fbgemm
    x_qp, out = ops.QParams(0.02, 0), ops.QParams(0.5, 0)
    w = np.full((200, 1, 3, 3), 127)  # 255 * 127 * 2 > 2**15 - 1
    s_w = np.full(200, 0.01, np.float32)
    case = ("depthwise", x, x_qp, w, s_w, np.zeros(200, np.int32), out, False, 1, 1, 200)
    assert (ours(case) != torchs(case, "x86")).any()
    np.testing.assert_array_equal(ours(case), torchs(case, "onednn"))


@given(conv_case(qmax=255))
def test_fixed_point_scheme_within_one_unit_of_float(case):
    d = np.abs(ours(case, "fixed").astype(np.int64) - ours(case, "float"))
    assert d.max(initial=0) <= 1


@given(
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 12),
    QSCALES,
    QSCALES,
    st.integers(0, 127),
    st.integers(0, 2**32 - 1),
)
def test_linear_equals_torch(n, cin, cout, sx, sy, zx, seed):
    rng = np.random.default_rng(seed)
    x_qp, out = ops.QParams(sx, zx, 0, 127), ops.QParams(sy, int(rng.integers(0, 256)))
    x = rng.integers(0, 128, (n, cin))
    wf = rng.normal(0, 0.2, (cout, cin)).astype(np.float32)
    s_w = affine.weight_scales(wf)
    w = affine.quantize(wf, s_w, np.zeros(cout, np.int64), -127, 127, axis=0)
    b = rng.integers(-3000, 3000, cout).astype(np.int32)
    y = ops.linear(x, zx, w, b, ops.Requant.make(sx, s_w, out))
    torch.backends.quantized.engine = "x86"
    bias = torch.from_numpy((b * (np.float32(sx) * s_w)).astype(np.float32))
    yt = qF.linear(tq(x, x_qp), tw(w, s_w), bias, out.scale, out.zero_point)
    np.testing.assert_array_equal(y, ints(yt))


@given(quantized_pair(np.int64))
def test_add_within_one_unit_of_torch(case):
    """torch adds the dequantized values in float32 (with fused multiply-adds), we in float64:
    a sum that lands within float32 rounding of a tie may round the other way."""
    a, b, qa, qb, qy = case
    torch.backends.quantized.engine = "x86"
    theirs = ints(torch.ops.quantized.add(tq(a, qa), tq(b, qb), qy.scale, qy.zero_point))
    d = np.abs(ops.add(a, qa, b, qb, qy, "float").astype(np.int64) - theirs)
    assert d.max(initial=0) <= 1
    # every difference is a near-tie: the exact sum lies within float32 rounding of a half
    v = (a - qa.zero_point) * (qa.scale / qy.scale) + (b - qb.zero_point) * (qb.scale / qy.scale)
    near_half = np.abs(v - np.floor(v) - 0.5) <= 1e-5 * np.maximum(1, np.abs(v))
    assert near_half[d > 0].all()
    # TFLite's fixed-point add rounds exact ties its own way: with scales in ratio 1/2 every odd
    # input is a tie, so only the one-unit bound holds for it
    d = np.abs(ops.add(a, qa, b, qb, qy, "fixed").astype(np.int64) - theirs)
    assert d.max(initial=0) <= 1


@given(quantized_pair(np.int64))
def test_mul_equals_torch(case):
    a, b, qa, qb, qy = case
    torch.backends.quantized.engine = "x86"
    theirs = ints(torch.ops.quantized.mul(tq(a, qa), tq(b, qb), qy.scale, qy.zero_point))
    np.testing.assert_array_equal(ops.mul(a, qa, b, qb, qy), theirs)
    d = np.abs(ops.mul(a, qa, b, qb, qy, "fixed").astype(np.int64) - theirs)
    assert d.max(initial=0) <= 1


@given(quantized_pair(np.int64))
def test_global_avg_pool_within_one_unit_of_torch(case):
    """We divide the integer sum exactly (ties to even); torch multiplies it by float32(1 / (H W))
    and rounds, which moves a mean that lies within float32 rounding of a half across it: one
    unit, rarely. That rule reproduces torch's integers exactly."""
    a, _, qa, _, _ = case
    theirs = ints(torch.nn.functional.adaptive_avg_pool2d(tq(a, qa), 1))[:, :, 0, 0]
    assert np.abs(ops.global_avg_pool2d(a).astype(np.int64) - theirs).max(initial=0) <= 1
    n = a.shape[2] * a.shape[3]
    rule = np.rint(a.sum(axis=(2, 3)).astype(np.float32) * np.float32(1 / n))
    np.testing.assert_array_equal(rule, theirs)


def test_divide_round_half_even():
    num = np.arange(-50, 51)
    for den in (1, 2, 3, 4, 7):
        np.testing.assert_array_equal(ops.divide_round_half_even(num, den), np.rint(num / den))


@given(quantized_pair(np.int64))
def test_hardswish_and_hardsigmoid_tables_within_one_unit_of_torch(case):
    """Our tables hold ``quantize(f(dequantize(q)))`` with f in float32; torch computes f in its
    own vectorised order, which can put a value within float32 rounding of a half on the other
    side: one unit, and only there."""
    a, _, qa, _, qy = case
    for fn, out, theirs in (
        (ops.hardswish_float, qy, ints(qF.hardswish(tq(a, qa), qy.scale, qy.zero_point))),
        # quantized hard-sigmoid has fixed output qparams: scale 1/256, zero point 0 (torch's)
        (ops.hardsigmoid_float, ops.QParams(1 / 256, 0), ints(torch.nn.functional.hardsigmoid(tq(a, qa)))),
    ):
        ours = ops.lookup(a, ops.lookup_table(fn, qa, out), qa).astype(np.int64)
        d = np.abs(ours - theirs)
        assert d.max(initial=0) <= 1
        v = fn(affine.dequantize(a, qa.scale, qa.zero_point)).astype(np.float64) / out.scale
        near_half = np.abs(v - np.floor(v) - 0.5) <= 1e-5 * np.maximum(1, np.abs(v))
        assert near_half[d > 0].all()


def test_padding_is_real_zero():
    """A padded tap adds nothing: the padded convolution of x equals the unpadded one of x padded
    with its zero point."""
    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 256, (1, 3, 5, 5)), rng.integers(-127, 128, (4, 3, 3, 3))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=77)
    np.testing.assert_array_equal(ops.conv2d_acc(x, 77, w, padding=1), ops.conv2d_acc(xp, 77, w))


def test_bad_input_is_refused():
    x, w = np.zeros((1, 4, 5, 5), np.int32), np.zeros((4, 1, 3, 3), np.int32)
    rq = ops.Requant.make(0.1, np.ones(4, np.float32), ops.QParams(0.1, 0))
    with pytest.raises(TypeError, match="x must be a numpy array of integers"):
        ops.conv2d(x.astype(np.float32), 0, w, None, rq)
    with pytest.raises(ValueError, match="w must hold values in"):
        ops.conv2d(x, 0, w + 200, None, rq, groups=4)
    with pytest.raises(ValueError, match="C / groups"):
        ops.conv2d(x, 0, w, None, rq, groups=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d(x[:, :, :2, :2], 0, w, None, rq, groups=4)
    with pytest.raises(ValueError, match="scheme"):
        ops.Requant.make(0.1, 1.0, ops.QParams(0.1, 0), scheme="half")
    with pytest.raises(ValueError, match="zero_point"):
        ops.QParams(0.1, 300)
    with pytest.raises(ValueError, match="scale"):
        ops.QParams(float("inf"), 0)
    with pytest.raises(ValueError, match="lookup: x must hold"):
        ops.lookup(np.array([300]), np.zeros(256, np.int32), ops.QParams(0.1, 0))
    huge = np.full((1, 70000, 1, 1), 255)  # 70000 * 255 * 127 > 2**31
    with pytest.raises(OverflowError, match="int32 accumulator overflows"):
        ops.pointwise_conv2d(huge, 0, np.full((1, 70000, 1, 1), 127), None, rq)
