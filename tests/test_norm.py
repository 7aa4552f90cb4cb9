"""batch_norm against torch (outputs, gradients, running statistics) and finite differences."""

import numpy as np
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_impl import functional as F

from .helpers import DTYPES, assert_within_bound, directional_check, leaf, rng_arrays, t64

shapes = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6))


def make(seed, dtype, shape):
    c = shape[1]
    x, w, b, rm, dy = rng_arrays(seed, dtype, shape, (c,), (c,), (c,), shape)
    x = x * 3 + 1  # a non-zero mean and non-unit variance to remove
    rv = (np.random.default_rng(seed + 1).random(c) + 0.5).astype(dtype)
    return x, w, b, rm, rv, dy


@given(shape=shapes, dtype=DTYPES, training=st.booleans(), affine=st.booleans(),
       momentum=st.sampled_from([0.1, 0.0, 1.0, 0.37]), seed=st.integers(0, 2**16))  # fmt: skip
def test_batch_norm_matches_torch(shape, dtype, training, affine, momentum, seed):
    assume(not training or shape[0] * shape[2] * shape[3] > 1)
    x, w, b, rm, rv, dy = make(seed, dtype, shape)
    w, b = (w, b) if affine else (None, None)
    rm_t, rv_t = t64(rm), t64(rv)
    y, cache = F.batch_norm(x, w, b, rm, rv, training, momentum, 1e-5)
    dx, dw, db = F.batch_norm_backward(dy, cache)

    xt = leaf(x)
    wt, bt = (leaf(w), leaf(b)) if affine else (None, None)
    yt = TF.batch_norm(xt, rm_t, rv_t, wt, bt, training, momentum, 1e-5)
    yt.backward(t64(dy))

    # Error bounds: magnitudes of the terms of each formula (reductions are float64).
    m = x.size // x.shape[1]
    axes = (0, 2, 3)
    x64 = x.astype(np.float64)
    mu = x64.mean(axes, keepdims=True) if training else rm_t.numpy().reshape(1, -1, 1, 1)
    var = x64.var(axes, keepdims=True) if training else rv_t.numpy().reshape(1, -1, 1, 1)
    inv = 1 / np.sqrt(var + 1e-5)
    xhat = np.abs(x64 - mu) * inv + np.abs(x64 * inv)  # x*inv - mu*inv cancels
    w_abs = np.ones((1, shape[1], 1, 1)) if w is None else np.abs(w.astype(np.float64)).reshape(1, -1, 1, 1)
    b_abs = 0 if b is None else np.abs(b.astype(np.float64)).reshape(1, -1, 1, 1)
    dyw = np.abs(dy) * w_abs
    dx_bound = inv * (dyw + dyw.mean(axes, keepdims=True) + xhat * (dyw * xhat).mean(axes, keepdims=True))

    assert y.dtype == dx.dtype == dtype
    # y and dx depend on length-M reductions (mean, variance, the two gradient sums): the
    # bounds carry their terms, |x| for the mean, with k = M + a few elementwise roundings.
    mean_abs = np.abs(x64).mean(axes, keepdims=True) * inv
    assert_within_bound(y, yt.detach().numpy(), (xhat + mean_abs) * w_abs + b_abs, m + 4, dtype, "y")
    assert_within_bound(dx, xt.grad.numpy(), dx_bound, m + 6, dtype, "dx")
    if affine:
        assert_within_bound(dw, wt.grad.numpy(), (np.abs(dy) * xhat).sum(axes), 4, dtype, "dweight")
        assert_within_bound(db, bt.grad.numpy(), np.abs(dy).sum(axes), 4, dtype, "dbias")
    else:
        assert dw is None and db is None
    # running statistics: updated in place in training (unbiased variance), untouched in eval
    mu_b = np.abs(x64).mean(axes)
    assert_within_bound(rm, rm_t.numpy(), np.abs(rm_t.numpy()) + mu_b, 4, dtype, "running_mean")
    var_b = (x64**2).mean(axes) * m / max(m - 1, 1) + np.abs(rv_t.numpy())
    assert_within_bound(rv, rv_t.numpy(), var_b, 6, dtype, "running_var")


@given(shape=shapes, training=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_backward_finite_differences(shape, training, seed):
    assume(shape[0] * shape[2] * shape[3] > 2)
    x, w, b, rm, rv, dy = make(seed, np.float64, shape)

    def loss(x_, w_, b_):
        y, _ = F.batch_norm(x_, w_, b_, rm.copy(), rv.copy(), training)
        return float(np.sum(dy * y))

    _, cache = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training)
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
        yt = TF.batch_norm(t64(x), torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                           training=True)  # fmt: skip
        np.testing.assert_allclose(y, yt.numpy(), rtol=1e-12, atol=1e-12)
