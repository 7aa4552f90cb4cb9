"""kernels.se (squeeze-and-excite's passes over the map as Numba kernels) against the NumPy
reference, forward and backward, in every memory layout: float64 to rounding, float32 within
error bounds; each of the four Numba passes against its formula; bad input refused as the
reference refuses it."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels as K
from kernels import se as KS
from numpy_impl import functional as F

from . import fuzz
from .helpers import DTYPES, MEMORY, U32, U64, assert_within_bound, in_memory, rng_arrays


@st.composite
def se_cases(draw):
    n, c, cr = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    return (n, c, h, w), cr


def se_arrays(seed, dtype, shape, cr):
    n, c, h, w = shape
    x, w1, b1, w2, b2, dout = rng_arrays(seed, dtype, shape, (cr, c, 1, 1), (cr,), (c, cr, 1, 1), (c,), shape)
    return x, (w1, b1, w2, b2), dout


@given(case=se_cases(), dtype=DTYPES, memory=MEMORY, dout_memory=MEMORY, seed=st.integers(0, 2**16))
def test_squeeze_excite_matches_reference(case, dtype, memory, dout_memory, seed):
    """The kernel against the reference on the same values in float64: float64 to rounding; in
    float32 no further from the exact (float64) answer than the float32 reference's own error
    allows. Both run the same float32 ops except the sums over H*W, which the kernel takes in
    float64 (more accurate); the slack is a factor 4 on the reference's error plus 8 units of
    roundoff of the largest value, for the different order of those sums."""
    shape, cr = case
    x, params, dout = se_arrays(seed, dtype, shape, cr)
    y, cache = K.squeeze_excite(in_memory(x, memory), *params)
    grads = K.squeeze_excite_backward(in_memory(dout, dout_memory), cache)
    assert y.dtype == dtype and y.shape == x.shape and all(g.dtype == dtype for g in grads)
    if memory == "channels_last" and shape[2] * shape[3] > 1:
        assert (
            y.transpose(0, 2, 3, 1).flags.c_contiguous and grads[0].transpose(0, 2, 3, 1).flags.c_contiguous
        )
    f64 = [a.astype(np.float64) for a in (x, *params)]
    y64, c64 = F.squeeze_excite(*f64)
    exact = (y64, *F.squeeze_excite_backward(dout.astype(np.float64), c64))
    if dtype == np.float64:
        for got, want, name in zip((y, *grads), exact, ("y", "dx", "dw1", "db1", "dw2", "db2")):
            scale = max(np.abs(want).max(), 1.0)
            np.testing.assert_allclose(
                got, want, rtol=0, atol=64 * U64 * scale * shape[2] * shape[3], err_msg=name
            )
        return
    y32, c32 = F.squeeze_excite(x, *params)
    ref32 = (y32, *F.squeeze_excite_backward(dout, c32))
    for got, ref, want, name in zip((y, *grads), ref32, exact, ("y", "dx", "dw1", "db1", "dw2", "db2")):
        ref_err = np.abs(ref.astype(np.float64) - want).max()
        err = np.abs(got.astype(np.float64) - want).max()
        assert err <= 4 * ref_err + 8 * U32 * np.abs(want).max() + 1e-30, (name, err, ref_err)


def rows(seed, dtype, n, p, c):
    return rng_arrays(seed, dtype, (n, p, c))[0]


@given(
    n=st.integers(1, 3), p=st.integers(1, 40), c=st.integers(1, 9), dtype=DTYPES, seed=st.integers(0, 2**16)
)
def test_the_four_passes_match_their_formulas(n, p, c, dtype, seed):
    """``_mean``, ``_scale``, ``_dot_sums`` and ``_dx`` on (N, P, C) rows, each within the error
    bound of its own computation (sums over P in float64, then one rounding)."""
    x3, d3 = rows(seed, dtype, n, p, c), rows(seed + 1, dtype, n, p, c)
    scale, dmean = rng_arrays(seed + 2, dtype, (n, c), (n, c))
    x64, d64, s64, m64 = (a.astype(np.float64) for a in (x3, d3, scale, dmean))
    out = np.empty((n, c), dtype)
    KS._mean(x3, out)
    assert_within_bound(out, x64.mean(1), np.abs(x64).mean(1), p + 1, dtype, "mean")
    y = np.empty_like(x3)
    KS._scale(x3, scale, y)
    assert_within_bound(y, x64 * s64[:, None], np.abs(x64 * s64[:, None]), 1, dtype, "scale")
    KS._dot_sums(d3, x3, out)
    assert_within_bound(out, (d64 * x64).sum(1), np.abs(d64 * x64).sum(1), p, dtype, "dot sums")
    dx = np.empty_like(x3)
    KS._dx(d3, scale, dmean, dx)
    want = d64 * s64[:, None] + m64[:, None]
    assert_within_bound(dx, want, np.abs(d64 * s64[:, None]) + np.abs(m64[:, None]), 2, dtype, "dx")


@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_every_channel_gets_its_own_scale_and_the_mean_its_gradient(memory):
    """A map whose channels differ by a constant: the kernel's scale per (image, channel) and the
    mean's share of dx, checked against hand-derived values (one image is all zeros)."""
    n, c, h, w = 2, 3, 4, 5
    x = np.zeros((n, c, h, w))
    x[1] = np.arange(1.0, c + 1)[:, None, None]  # image 1: channel k holds k + 1 everywhere
    w1, b1 = np.ones((1, c, 1, 1)), np.zeros(1)  # hidden = relu(sum of the channel means)
    w2, b2 = np.ones((c, 1, 1, 1)) * 0.5, np.zeros(c)  # g = hidden / 2 for every channel
    y, cache = K.squeeze_excite(in_memory(x, memory), w1, b1, w2, b2)
    hidden = np.array([0.0, 1 + 2 + 3])
    scale = np.clip(hidden / 2 / 6 + 0.5, 0, 1)  # hardsigmoid: 0.5 for image 0, 1 for image 1
    np.testing.assert_array_equal(y, x * scale[:, None, None, None])
    dout = np.ones_like(x)
    dx = K.squeeze_excite_backward(in_memory(dout, memory), cache)[0]
    # image 0: hardsigmoid'(0) = 1/6; ds_k = 1/6 * 0.5 * sum over the map of x (0) = 0 -> dx = 0.5
    np.testing.assert_allclose(dx[0], 0.5)
    # image 1: scale saturated at 1 (g = 3 is hardsigmoid's kink: torch's gradient there is 0)
    np.testing.assert_allclose(dx[1], 1.0)


@st.composite
def se_bad_case(draw):
    broken = draw(st.sampled_from([None, "x", "w1", "b1", "w2", "b2", "dout"]))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**16))
    (shape, cr) = draw(se_cases())
    x, (w1, b1, w2, b2), dout = se_arrays(seed, dtype, shape, cr)
    args = [
        fuzz.corrupt(draw, broken, name, a)
        for name, a in zip(("x", "w1", "b1", "w2", "b2"), (x, w1, b1, w2, b2))
    ]
    memory = draw(MEMORY)
    if isinstance(args[0], np.ndarray) and args[0].ndim == 4:
        args[0] = in_memory(args[0], memory)
    return args, fuzz.corrupt(draw, broken, "dout", dout)


@given(case=se_bad_case())
def test_fuzz_squeeze_excite(case):
    """Any input: the kernel refuses exactly what the reference refuses, or agrees with it."""
    args, dout = case
    forward = fuzz.agree(lambda *a: K.squeeze_excite(*a)[0], lambda *a: F.squeeze_excite(*a)[0], args, "se")
    if forward is None:
        return
    _, cache = K.squeeze_excite(*args)
    _, ref_cache = F.squeeze_excite(*args)
    try:
        got = K.squeeze_excite_backward(dout, cache)
    except (ValueError, TypeError) as e:
        fuzz.refused_alike(e, lambda d: F.squeeze_excite_backward(d, ref_cache), (dout,), "se backward")
        return
    want = F.squeeze_excite_backward(dout, ref_cache)
    for g, r in zip(got, want):
        assert g.dtype == r.dtype and g.shape == r.shape


def test_a_foreign_cache_is_refused():
    with pytest.raises(TypeError, match="cache must be the dict returned by squeeze_excite"):
        K.squeeze_excite_backward(np.zeros((1, 2, 3, 3)), {"x": 1})
