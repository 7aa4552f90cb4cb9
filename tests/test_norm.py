"""batch_norm against torch (outputs, gradients, running statistics) and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_impl import functional as F
from numpy_impl import get_backend

from .helpers import (
    DTYPES,
    EPSILONS,
    MOMENTA,
    assert_within_bound,
    batch_norm_bounds,
    directional_check,
    leaf,
    rng_arrays,
    running_stat_bounds,
    t64,
)

shapes = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6))


def make(seed, dtype, shape):
    c = shape[1]
    x, w, b, rm, dy = rng_arrays(seed, dtype, shape, (c,), (c,), (c,), shape)
    x = x * 3 + 1  # a non-zero mean and non-unit variance to remove
    rv = (np.random.default_rng(seed + 1).random(c) + 0.5).astype(dtype)
    return x, w, b, rm, rv, dy


@given(
    shape=shapes,
    dtype=DTYPES,
    training=st.booleans(),
    affine=st.booleans(),
    momentum=MOMENTA,
    eps=EPSILONS,
    seed=st.integers(0, 2**16),
)
def test_batch_norm_matches_torch(shape, dtype, training, affine, momentum, eps, seed):
    assume(not training or shape[0] * shape[2] * shape[3] > 1)
    x, w, b, rm, rv, dy = make(seed, dtype, shape)
    w, b = (w, b) if affine else (None, None)
    rm_t, rv_t = t64(rm), t64(rv)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    y, cache = F.batch_norm(x, w, b, rm, rv, training, momentum, eps)
    dx, dw, db = F.batch_norm_backward(dy, cache)

    xt = leaf(x)
    wt, bt = (leaf(w), leaf(b)) if affine else (None, None)
    yt = TF.batch_norm(xt, rm_t, rv_t, wt, bt, training, momentum, eps)
    yt.backward(t64(dy))

    x64 = x.astype(np.float64)
    axes = (0, 2, 3)
    mean, var = (x64.mean(axes), x64.var(axes)) if training else (rm0, rv0)
    bnd = batch_norm_bounds(x, w, b, dy, mean, var, eps, training)
    k = bnd["k"]
    assert y.dtype == dx.dtype == dtype
    assert_within_bound(y, yt.detach().numpy(), bnd["y"], k, dtype, "y")
    assert_within_bound(dx, xt.grad.numpy(), bnd["dx"], k, dtype, "dx")
    if affine:
        assert_within_bound(dw, wt.grad.numpy(), bnd["dweight"], k, dtype, "dweight")
        assert_within_bound(db, bt.grad.numpy(), bnd["dbias"], k, dtype, "dbias")
    else:
        assert dw is None and db is None
    # running statistics: updated in place in training (unbiased variance), untouched in eval
    mean_b, var_b, k_run = running_stat_bounds(x, rm0, rv0)
    assert_within_bound(rm, rm_t.numpy(), mean_b, k_run, dtype, "running_mean")
    assert_within_bound(rv, rv_t.numpy(), var_b, k_run, dtype, "running_var")
    if not training:
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


@given(shape=shapes, training=st.booleans(), eps=EPSILONS, seed=st.integers(0, 2**16))
def test_batch_norm_backward_finite_differences(shape, training, eps, seed):
    assume(shape[0] * shape[2] * shape[3] > 2)
    x, w, b, rm, rv, dy = make(seed, np.float64, shape)

    def loss(x_, w_, b_):
        y, _ = F.batch_norm(x_, w_, b_, rm.copy(), rv.copy(), training, 0.1, eps)
        return float(np.sum(dy * y))

    _, cache = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, 0.1, eps)
    grads = F.batch_norm_backward(dy, cache)
    for i in range(3):
        directional_check(loss, (x, w, b), grads[i], i, seed + i)


def test_batch_norm_with_a_constant_upstream_gradient_gives_zero_dx():
    # A uniform dy shifts every normalised value equally: training BN removes it exactly.
    x, w, b, rm, rv, _ = make(5, np.float64, (3, 4, 5, 5))
    _, cache = F.batch_norm(x, w, b, rm, rv, True)
    dx, _, _ = F.batch_norm_backward(np.full(x.shape, 0.7), cache)
    np.testing.assert_allclose(dx, 0, atol=1e-13)


def test_batch_norm_accepts_2d_and_3d_input_like_torch():
    for shape in [(5, 3), (4, 3, 7)]:
        x = rng_arrays(9, np.float64, shape)[0]
        rm, rv = np.zeros(3), np.ones(3)
        y, _ = F.batch_norm(x, None, None, rm, rv, True)
        yt = TF.batch_norm(
            t64(x), torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), training=True
        )
        np.testing.assert_allclose(y, yt.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ops", ["numpy", "numba"])
def test_batch_norm_none_arguments_like_torch(ops):
    """None weight/bias (no affine) and None running statistics in training, as torch accepts;
    training=False without statistics is refused, as torch refuses it."""
    m = get_backend(ops)
    x, dy = rng_arrays(11, np.float64, (4, 3, 5, 6), (4, 3, 5, 6))
    y, cache = m.batch_norm(x, None, None, None, None, True)
    dx, dw, db = m.batch_norm_backward(dy, cache)
    xt = leaf(x)
    yt = TF.batch_norm(xt, None, None, training=True)
    yt.backward(t64(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert dw is None and db is None
    with pytest.raises(RuntimeError, match="running_mean must be defined"):
        TF.batch_norm(t64(x), None, None, training=False)
    with pytest.raises(ValueError, match="running_mean and running_var are required when training=False"):
        m.batch_norm(x, None, None, None, None, False)


@pytest.mark.parametrize("ops", ["numpy", "numba"])
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_matches_naive_loops(ops, shape, training, seed):
    """Forward, backward and the running statistics of both backends against tests/naive.py, float64."""
    from . import naive

    assume(not training or shape[0] * shape[2] * shape[3] > 1)
    m = get_backend(ops)
    c = shape[1]
    x, dout, w, b = rng_arrays(seed, np.float64, shape, shape, (c,), (c,))
    rm, rv = rng_arrays(seed + 1, np.float64, (c,))[0], np.random.default_rng(seed).uniform(0.5, 2, c)
    rm0, rv0 = rm.copy(), rv.copy()
    y, cache = m.batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5)
    stats = (None, None) if training else (rm0, rv0)
    ny, mu, var = naive.batch_norm(x, w, b, *stats, eps=1e-5)
    np.testing.assert_allclose(y, ny, rtol=1e-11, atol=1e-11)
    for got, want in zip(
        m.batch_norm_backward(dout, cache), naive.batch_norm_backward(dout, x, w, *stats, eps=1e-5)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    if training:  # torch's update: the unbiased batch variance goes into the running one
        count = x.size // c
        np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mu, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * count / (count - 1), rtol=1e-12, atol=1e-14)
