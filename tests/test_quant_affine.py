"""numpy_impl.quant.affine: the affine map, choosing qparams, both requantization schemes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from numpy_impl.quant import affine

pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")

RANGES = st.tuples(st.floats(-50, 50), st.floats(-50, 50)).map(sorted)


@given(RANGES, st.sampled_from([(0, 255), (0, 127), (-128, 127), (0, 15)]))
def test_real_zero_is_exact_and_the_range_is_covered(lo_hi, q_range):
    lo, hi = lo_hi
    scale, zp = affine.choose_qparams(lo, hi, *q_range)
    assert q_range[0] <= zp <= q_range[1] and scale >= affine.EPS
    assert affine.quantize(np.zeros(3, np.float32), scale, zp, *q_range).tolist() == [zp] * 3
    assert affine.dequantize(np.array([zp]), scale, zp)[0] == 0.0
    # every value in [lo, hi] lands within half a step of itself (the range is covered)
    x = np.linspace(min(lo, 0), max(hi, 0), 50).astype(np.float32)
    back = affine.dequantize(affine.quantize(x, scale, zp, *q_range), scale, zp)
    assert np.abs(back - x).max() <= 0.5 * scale * (1 + 1e-5) + 1e-6


def test_constant_and_bad_ranges():
    assert affine.choose_qparams(0.0, 0.0) == (affine.EPS, 0)  # a constant-zero tensor: not 0, not inf
    with pytest.raises(ValueError, match="finite lo <= hi"):
        affine.choose_qparams(float("nan"), 1.0)
    with pytest.raises(ValueError, match="finite lo <= hi"):
        affine.choose_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="bits must be an int in"):
        affine.activation_range("uint8", bits=9)
    with pytest.raises(ValueError, match="NaN or inf"):
        affine.weight_scales(np.array([[np.nan]], np.float32))


@given(st.integers(0, 2**32 - 1), st.floats(0.001, 0.5).map(affine.f32), st.integers(0, 255))
def test_quantize_equals_torch(seed, scale, zp):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-600, 600, 500) * scale / 2).astype(np.float32)  # half-steps: ties everywhere
    theirs = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8).int_repr().numpy()
    np.testing.assert_array_equal(affine.quantize(x, scale, zp), theirs)


def test_weight_scales_per_channel_and_per_tensor():
    w = np.array([[1.0, -2.54], [0.0, 0.0], [0.5, 0.1]], np.float32)
    np.testing.assert_allclose(affine.weight_scales(w), [2.54 / 127, affine.EPS, 0.5 / 127], rtol=1e-6)
    np.testing.assert_allclose(affine.weight_scales(w, per_channel=False), [2.54 / 127] * 3, rtol=1e-6)
    assert affine.weight_range(4) == (-7, 7)


def _exact_round_half_away(fr: Fraction) -> int:
    n = abs(fr.numerator) * 2 + fr.denominator
    mag = n // (2 * fr.denominator)
    return mag if fr >= 0 else -mag


def _exact_round_half_up(fr: Fraction) -> int:
    return (2 * fr.numerator + fr.denominator) // (2 * fr.denominator)  # floor(x + 1/2)


@example(a=-5, b=2**30)  # exact ties, both signs: up, not away from zero
@example(a=5, b=2**30)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1))
def test_srdhm_is_rounded_doubling_high_product(a, b):
    got = int(affine.saturating_rounding_doubling_high_mul(a, b))
    if a == b == -(2**31):
        assert got == 2**31 - 1
    else:
        assert got == _exact_round_half_up(Fraction(a * b, 2**31))


@example(x=-5, e=1)  # exact ties: away from zero
@example(x=5, e=1)
@given(st.integers(-(2**40), 2**40), st.integers(0, 40))
def test_rounding_divide_by_pot(x, e):
    assert int(affine.rounding_divide_by_pot(x, e)) == _exact_round_half_away(Fraction(x, 2**e))


@given(st.floats(1e-9, 1e4))
def test_quantize_multiplier(M):
    m0, shift = affine.quantize_multiplier(M)
    assert 2**30 <= int(m0) < 2**31
    assert abs(int(m0) * 2.0 ** (-31 - int(shift)) - M) <= M * 2.0**-30


@given(
    st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=20),
    st.floats(1e-5, 0.999),
    st.integers(0, 255),
)
def test_fixed_point_is_within_one_unit_of_float(acc, M, zp):
    acc = np.array(acc, np.int64)
    ref = affine.requantize(acc, np.float32(M), zp, -(2**20), 2**20)
    m0, shift = affine.quantize_multiplier(np.float32(M))
    fixed = affine.requantize_fixed(acc, m0, shift, zp, -(2**20), 2**20)
    assert np.abs(ref.astype(np.int64) - fixed).max() <= 1


def test_requantize_rounds_ties_to_even():
    """The rule itself, on exact ties: acc * 0.5 for odd acc."""
    acc = np.array([-5, -3, -1, 1, 3, 5, 7])
    assert affine.requantize(acc, np.float32(0.5), 0, -100, 100).tolist() == [-2, -2, 0, 0, 2, 2, 4]
    m0, shift = affine.quantize_multiplier(0.5)  # M = 2**30 / 2**31: gemmlowp's multiply rounds ties up
    assert affine.requantize_fixed(acc, m0, shift, 0, -100, 100).tolist() == [-2, -1, 0, 1, 2, 3, 4]
