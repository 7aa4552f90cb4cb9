"""conv2d, depthwise_conv2d and pointwise_conv2d against torch, the naive loops and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import functional as F
from numpy_impl.functional.conv import geometry

from . import naive
from .helpers import DTYPES, assert_within_bound, conv_cases, directional_check, leaf, rng_arrays


def torch_conv(x, w, b, case, absolute=False, dout=None):
    """Float64 torch forward (and backward with ``dout``); ``absolute`` gives the error bound."""
    f = np.abs if absolute else (lambda a: a)
    xt, wt = leaf(f(x)), leaf(f(w))
    bt = None if b is None else leaf(f(b))
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    out = TF.conv2d(xt, wt, bt, **kw)
    if dout is None:
        return out.detach().numpy(), None
    out.backward(torch.tensor(f(dout).astype(np.float64)))
    grads = (xt.grad.numpy(), wt.grad.numpy(), None if b is None else bt.grad.numpy())
    return out.detach().numpy(), grads


@given(case=conv_cases(), dtype=DTYPES, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d_matches_torch(case, dtype, bias, seed):
    x, w, b = rng_arrays(seed, dtype, case["x"], case["w"], (case["w"][0],))
    b = b if bias else None
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    out = F.conv2d(x, w, b, **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]  # random upstream gradient
    dx, dw, db = F.conv2d_backward(dout, x, w, **kw)
    exact, (ex_dx, ex_dw, ex_db) = torch_conv(x, w, b, case, dout=dout)
    bound, (b_dx, b_dw, b_db) = torch_conv(x, w, b, case, absolute=True, dout=dout)
    assert out.dtype == dx.dtype == dw.dtype == dtype
    _, cg, kh, kw_ = w.shape
    n_out = out.shape[0] * out.shape[2] * out.shape[3]
    assert_within_bound(out, exact, bound, cg * kh * kw_ + 1, dtype, "out")
    assert_within_bound(dx, ex_dx, b_dx, (w.shape[0] // case["groups"]) * kh * kw_, dtype, "dx")
    assert_within_bound(dw, ex_dw, b_dw, n_out, dtype, "dw")
    if bias:
        assert_within_bound(db, ex_db, b_db, n_out, dtype, "db")


@given(case=conv_cases(depthwise=True), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_depthwise_matches_torch(case, dtype, seed):
    x, w = rng_arrays(seed, dtype, case["x"], case["w"])
    kw = {k: case[k] for k in ("stride", "padding", "dilation")}
    out = F.depthwise_conv2d(x, w, **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw = F.depthwise_conv2d_backward(dout, x, w, **kw)
    exact, (ex_dx, ex_dw, _) = torch_conv(x, w, None, case, dout=dout)
    bound, (b_dx, b_dw, _) = torch_conv(x, w, None, case, absolute=True, dout=dout)
    kh, kw_ = w.shape[2:]
    m = w.shape[0] // x.shape[1]
    assert out.dtype == dx.dtype == dw.dtype == dtype
    assert_within_bound(out, exact, bound, kh * kw_, dtype, "out")
    assert_within_bound(dx, ex_dx, b_dx, m * kh * kw_, dtype, "dx")
    assert_within_bound(dw, ex_dw, b_dw, out.shape[0] * out.shape[2] * out.shape[3], dtype, "dw")


@given(
    n=st.integers(1, 3),
    cin=st.integers(1, 40),
    cout=st.integers(1, 40),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_pointwise_matches_torch(n, cin, cout, h, w, dtype, seed):
    x, wt = rng_arrays(seed, dtype, (n, cin, h, w), (cout, cin, 1, 1))
    out = F.pointwise_conv2d(x, wt)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw = F.pointwise_conv2d_backward(dout, x, wt)
    case = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    exact, (ex_dx, ex_dw, _) = torch_conv(x, wt, None, case, dout=dout)
    bound, (b_dx, b_dw, _) = torch_conv(x, wt, None, case, absolute=True, dout=dout)
    assert out.dtype == dx.dtype == dw.dtype == dtype
    assert_within_bound(out, exact, bound, cin, dtype, "out")
    assert_within_bound(dx, ex_dx, b_dx, cout, dtype, "dx")
    assert_within_bound(dw, ex_dw, b_dw, n * h * w, dtype, "dw")


@given(case=conv_cases(max_hw=6), seed=st.integers(0, 2**16))
def test_conv2d_matches_naive_loops(case, seed):
    x, w, b = rng_arrays(seed, np.float64, case["x"], case["w"], (case["w"][0],))
    g = geometry("test", x.shape[2:], w.shape[2:], case["stride"], case["padding"], case["dilation"])
    expected = naive.conv2d(x, w, b, g.stride, g.pads, g.dilation, case["groups"])
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    np.testing.assert_allclose(F.conv2d(x, w, b, **kw), expected, rtol=1e-12, atol=1e-12)
    if case["groups"] == x.shape[1] == w.shape[0]:
        no_bias = naive.conv2d(x, w, None, g.stride, g.pads, g.dilation, case["groups"])
        dw_kw = {k: kw[k] for k in kw if k != "groups"}
        np.testing.assert_allclose(F.depthwise_conv2d(x, w, **dw_kw), no_bias, rtol=1e-12, atol=1e-12)


@given(case=conv_cases(max_hw=7), seed=st.integers(0, 2**16))
def test_conv2d_backward_finite_differences(case, seed):
    x, w, b, dout_seed = *rng_arrays(seed, np.float64, case["x"], case["w"], (case["w"][0],)), seed + 7
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    dout = rng_arrays(dout_seed, np.float64, F.conv2d(x, w, b, **kw).shape)[0]
    grads = F.conv2d_backward(dout, x, w, **kw)

    def loss(x_, w_, b_):
        return float(np.sum(dout * F.conv2d(x_, w_, b_, **kw)))

    for i in range(3):
        directional_check(loss, (x, w, b), grads[i], i, seed + i)


@given(case=conv_cases(depthwise=True, max_hw=7), seed=st.integers(0, 2**16))
def test_depthwise_backward_finite_differences(case, seed):
    x, w = rng_arrays(seed, np.float64, case["x"], case["w"])
    kw = {k: case[k] for k in ("stride", "padding", "dilation")}
    dout = rng_arrays(seed + 7, np.float64, F.depthwise_conv2d(x, w, **kw).shape)[0]
    grads = F.depthwise_conv2d_backward(dout, x, w, **kw)

    def loss(x_, w_):
        return float(np.sum(dout * F.depthwise_conv2d(x_, w_, **kw)))

    for i in range(2):
        directional_check(loss, (x, w), grads[i], i, seed + i)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 3), cin=st.integers(1, 9), cout=st.integers(1, 9))
def test_pointwise_backward_finite_differences(seed, n, cin, cout):
    x, w, dout = rng_arrays(seed, np.float64, (n, cin, 3, 5), (cout, cin, 1, 1), (n, cout, 3, 5))
    grads = F.pointwise_conv2d_backward(dout, x, w)

    def loss(x_, w_):
        return float(np.sum(dout * F.pointwise_conv2d(x_, w_)))

    for i in range(2):
        directional_check(loss, (x, w), grads[i], i, seed + i)


def test_unbatched_input_matches_batched():
    x, w, wd, wp = rng_arrays(0, np.float64, (4, 7, 6), (6, 2, 3, 3), (8, 1, 3, 3), (5, 4, 1, 1))
    out = F.conv2d(x, w, stride=2, padding=1, groups=2)
    np.testing.assert_array_equal(out, F.conv2d(x[None], w, stride=2, padding=1, groups=2)[0])
    dout = rng_arrays(1, np.float64, out.shape)[0]
    for a, b in zip(
        F.conv2d_backward(dout, x, w, 2, 1, 1, 2), F.conv2d_backward(dout[None], x[None], w, 2, 1, 1, 2)
    ):
        np.testing.assert_array_equal(a, b[0] if a.ndim == 3 else b)
    np.testing.assert_array_equal(F.depthwise_conv2d(x, wd, 1, 1), F.depthwise_conv2d(x[None], wd, 1, 1)[0])
    np.testing.assert_array_equal(F.pointwise_conv2d(x, wp), F.pointwise_conv2d(x[None], wp)[0])


def test_non_contiguous_inputs_give_the_same_answer():
    x, w, wd, wp = rng_arrays(2, np.float64, (2, 9, 8, 6), (6, 9, 3, 3), (9, 1, 3, 3), (5, 9, 1, 1))
    x_nc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last memory
    x_sl = np.repeat(x, 2, axis=3)[..., ::2]  # strided view
    w_nc = np.asfortranarray(w)  # the same values, neither C-contiguous nor a copy of w's memory
    wp_nc = np.repeat(wp, 2, axis=1)[:, ::2]  # a strided view
    assert not w_nc.flags.c_contiguous and not wp_nc.flags.c_contiguous
    for xv in (x_nc, x_sl):
        assert not xv.flags.c_contiguous
        np.testing.assert_allclose(
            F.conv2d(xv, w_nc, padding=1), F.conv2d(x, w, padding=1), rtol=1e-13, atol=1e-13
        )
        np.testing.assert_allclose(
            F.depthwise_conv2d(xv, wd, 2, 1), F.depthwise_conv2d(x, wd, 2, 1), rtol=1e-13
        )
        np.testing.assert_allclose(
            F.pointwise_conv2d(xv, wp_nc), F.pointwise_conv2d(x, wp), rtol=1e-13, atol=1e-13
        )
        dout = rng_arrays(3, np.float64, (2, 5, 8, 6))[0].transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
        for a, b in zip(
            F.pointwise_conv2d_backward(dout, xv, wp_nc), F.pointwise_conv2d_backward(dout, x, wp)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kernel,dilation", [((2, 2), (1, 1)), ((4, 3), (1, 2)), ((3, 3), (2, 1))])
def test_same_padding_puts_the_odd_pixel_bottom_right_like_torch(kernel, dilation):
    x, w = rng_arrays(4, np.float64, (1, 2, 7, 6), (3, 2, *kernel))
    exact, _ = torch_conv(x, w, None, {"stride": 1, "padding": "same", "dilation": dilation, "groups": 1})
    out = F.conv2d(x, w, padding="same", dilation=dilation)
    assert out.shape == (1, 3, 7, 6)
    np.testing.assert_allclose(out, exact, rtol=1e-12, atol=1e-12)


def _memory(x, ops):
    """Channels-last memory for the kernels (their fast 3x3 path), as given for the reference."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if ops == "numba" else x


@pytest.mark.parametrize("ops", ["numpy", "numba"])
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 5),
    hw=st.integers(1, 9),
    stride=st.sampled_from([1, 2]),
    cout=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_depthwise_and_pointwise_match_naive_loops(ops, n, c, hw, stride, cout, seed):
    """Forward and backward of both backends against tests/naive.py's loops, float64."""
    from numpy_impl import get_backend

    m = get_backend(ops)
    x, w, wp = rng_arrays(seed, np.float64, (n, c, hw, hw), (c, 1, 3, 3), (cout, c, 1, 1))
    xm = _memory(x, ops)
    out = m.depthwise_conv2d(xm, w, stride, 1)
    np.testing.assert_allclose(
        out, naive.depthwise_conv2d(x, w, (stride, stride), (1, 1)), rtol=1e-12, atol=1e-12
    )
    dout = rng_arrays(seed + 1, np.float64, out.shape)[0]
    dx, dw = m.depthwise_conv2d_backward(_memory(dout, ops), xm, w, stride, 1)
    ndx, ndw = naive.depthwise_conv2d_backward(dout, x, w, (stride, stride), (1, 1))
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-11, atol=1e-11)
    y = m.pointwise_conv2d(xm, wp)
    np.testing.assert_allclose(y, naive.pointwise_conv2d(x, wp), rtol=1e-12, atol=1e-12)
    gy = rng_arrays(seed + 2, np.float64, y.shape)[0]
    for got, want in zip(
        m.pointwise_conv2d_backward(_memory(gy, ops), xm, wp), naive.pointwise_conv2d_backward(gy, x, wp)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)
