"""numpy_impl.quant.observers: what each observer keeps and the ranges it chooses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl.quant import affine
from numpy_impl.quant.observers import (
    OBSERVERS,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
)

BATCHES = st.lists(
    st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=30).map(lambda v: np.array(v, np.float32)),
    min_size=1,
    max_size=5,
)


@given(BATCHES)
def test_minmax_is_the_range_of_everything_seen(batches):
    obs = MinMaxObserver()
    for b in batches:
        obs.update(b)
    everything = np.concatenate(batches)
    assert obs.range() == (everything.min(), everything.max())


def test_moving_average_follows_torch_formula():
    obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    obs.update(np.array([-2.0, 4.0], np.float32)).update(np.array([0.0, 8.0], np.float32))
    assert obs.range() == (-2.0 + 0.5 * (0.0 + 2.0), 4.0 + 0.5 * (8.0 - 4.0))


def _expected_error(values, lo, hi, levels=256):
    scale, zp = affine.choose_qparams(lo, hi, 0, levels - 1)
    back = affine.dequantize(affine.quantize(values, scale, zp, 0, levels - 1), scale, zp)
    return float(((back - values) ** 2).mean())


@pytest.mark.parametrize("levels", [16, 256])
def test_histogram_clips_heavy_tails_and_beats_minmax(levels):
    """Student-t (2 degrees of freedom): a bulk near 0 and far tails. Clipping the tails pays
    most at 4 bits; at every width the chosen range is never worse than min/max."""
    x = np.random.default_rng(0).standard_t(2, 20000).astype(np.float32)
    hist, mm = HistogramObserver().update(x), MinMaxObserver().update(x)
    lo, hi = hist.clipping_range(0, levels - 1)
    assert mm.lo <= lo < 0 < hi <= mm.hi
    ratio = _expected_error(x, lo, hi, levels) / _expected_error(x, *mm.range(), levels)
    if levels == 16:
        assert (lo, hi) != mm.range() and ratio < 0.9
    assert ratio <= 1.0


def test_histogram_keeps_its_counts_when_the_range_widens():
    obs = HistogramObserver(bins=64)
    obs.update(np.linspace(0, 1, 1000, dtype=np.float32)).update(np.linspace(-5, 5, 500, dtype=np.float32))
    assert obs.counts.sum() == 1500 and obs.range() == (-5.0, 5.0)


@pytest.mark.parametrize("name", sorted(OBSERVERS))
def test_refusals(name):
    obs = OBSERVERS[name]()
    with pytest.raises(RuntimeError, match="no values seen"):
        obs.qparams()
    with pytest.raises(ValueError, match="NaN or inf"):
        obs.update(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="empty"):
        obs.update(np.zeros(0, np.float32))
    with pytest.raises(TypeError, match="floats"):
        obs.update(np.zeros(3, np.int32))
    scale, zp = obs.update(np.zeros(5, np.float32)).qparams()  # constant images: a usable scale
    assert scale == affine.EPS and zp == 0
