"""Activations, dropout, pooling, linear and the loss against torch and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import functional as F
from numpy_impl import get_backend

from .helpers import DTYPES, assert_within_bound, directional_check, leaf, rng_arrays, t64

small_shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize("name", ["relu", "relu6"])
@given(shape=small_shapes, dtype=DTYPES, seed=st.integers(0, 2**16))
def test_activation_matches_torch(name, shape, dtype, seed):
    x, dout = rng_arrays(seed, dtype, shape, shape)
    x = x * 5  # spread over both kinks of relu6
    x.flat[:: max(1, x.size // 3)] = 0.0  # exactly on the kink
    if name == "relu6":
        x.flat[1 :: max(2, x.size // 2)] = 6.0
    y = getattr(F, name)(x)
    dx = getattr(F, f"{name}_backward")(dout, x)
    xt = leaf(x)
    yt = getattr(TF, name)(xt)
    yt.backward(t64(dout))
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, yt.detach().numpy())  # exact: no arithmetic
    np.testing.assert_array_equal(dx, xt.grad.numpy())  # including 0 at the kinks, as torch


@pytest.mark.parametrize("name", ["relu", "relu6"])
def test_activation_finite_differences(name):
    x, dout = rng_arrays(3, np.float64, (3, 4, 5), (3, 4, 5), low=0.05)  # away from the kink at 0
    x = np.where(np.abs(x - 6) < 0.05, 5.9, x)  # and from 6

    def loss(x_):
        return float(np.sum(dout * getattr(F, name)(x_)))

    directional_check(loss, (x,), getattr(F, f"{name}_backward")(dout, x), 0, 1, eps=1e-7)


@pytest.mark.parametrize("name", ["hardswish", "hardsigmoid"])
@given(shape=small_shapes, dtype=DTYPES, seed=st.integers(0, 2**16))
def test_hard_activation_matches_torch(name, shape, dtype, seed):
    x, dout = rng_arrays(seed, dtype, shape, shape)
    x = x * 4  # over both kinks, at -3 and 3
    x.flat[:: max(1, x.size // 3)] = -3.0  # exactly on them
    x.flat[1 :: max(2, x.size // 2)] = 3.0
    y = getattr(F, name)(x)
    dx = getattr(F, f"{name}_backward")(dout, x)
    xt = torch.tensor(x, requires_grad=True)  # in x's own dtype: same arithmetic as ours
    yt = getattr(TF, name)(xt)
    yt.backward(torch.tensor(dout))
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, yt.detach().numpy())  # same operations in the same order
    if name == "hardsigmoid" and dtype == np.float64:
        # torch's float64 hardsigmoid_backward multiplies by 1/6 rounded to float32 (3e-8 off);
        # ours uses the float64 1/6. The kinks (zero gradient) still match exactly.
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=4e-8, atol=0)
    else:
        np.testing.assert_array_equal(dx, xt.grad.numpy())  # including torch's values at the kinks


@pytest.mark.parametrize("name", ["hardswish", "hardsigmoid"])
def test_hard_activation_finite_differences(name):
    x, dout = rng_arrays(4, np.float64, (3, 4, 5), (3, 4, 5))
    x = x * 4
    x = np.where(np.abs(np.abs(x) - 3) < 0.05, 2.5, x)  # away from the kinks

    def loss(x_):
        return float(np.sum(dout * getattr(F, name)(x_)))

    directional_check(loss, (x,), getattr(F, f"{name}_backward")(dout, x), 0, 1, eps=1e-7)


@given(p=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_dropout_mask_statistics_and_backward(p, dtype, seed):
    x, dout = rng_arrays(seed, dtype, (64, 50), (64, 50))
    y, mask = F.dropout(x, p, True, np.random.default_rng(seed))
    kept = mask != 0
    assert y.dtype == dtype
    if p < 1:
        np.testing.assert_allclose(mask[kept], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(y, x * mask)
    # kept fraction ~ Binomial(3200, 1-p): within 5 standard deviations
    sd = np.sqrt(p * (1 - p) / x.size)
    assert abs(kept.mean() - (1 - p)) <= 5 * sd + 1e-12
    np.testing.assert_array_equal(F.dropout_backward(dout, mask), dout * mask)
    # the same seed gives the same mask; eval mode is the identity
    np.testing.assert_array_equal(F.dropout(x, p, True, seed)[1], F.dropout(x, p, True, seed)[1])
    np.testing.assert_array_equal(F.dropout(x, p, False)[0], x)


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 9),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_global_avg_pool_matches_torch(n, c, h, w, dtype, seed):
    x, dout = rng_arrays(seed, dtype, (n, c, h, w), (n, c))
    y = F.global_avg_pool2d(x)
    dx = F.global_avg_pool2d_backward(dout, x.shape)
    xt = leaf(x)
    yt = TF.adaptive_avg_pool2d(xt, 1).flatten(1)
    yt.backward(t64(dout))
    assert_within_bound(y, yt.detach().numpy(), np.abs(x.astype(np.float64)).mean((2, 3)), h * w, dtype, "y")
    assert_within_bound(dx, xt.grad.numpy(), np.abs(xt.grad.numpy()), 2, dtype, "dx")


@given(
    lead=st.lists(st.integers(0, 4), max_size=3),
    fin=st.integers(1, 40),
    fout=st.integers(1, 20),
    bias=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
    ops=st.sampled_from(["numpy", "numba"]),
)
def test_linear_matches_torch(lead, fin, fout, bias, dtype, seed, ops):
    """Any leading dimensions (none, or empty ones included), as torch's linear; both backends."""
    m = get_backend(ops)
    x, w, b, dout = rng_arrays(seed, dtype, (*lead, fin), (fout, fin), (fout,), (*lead, fout))
    b = b if bias else None
    y = m.linear(x, w, b)
    dx, dw, db = m.linear_backward(dout, x, w)
    xt, wt = leaf(x), leaf(w)
    yt = TF.linear(xt, wt, None if b is None else t64(b))
    yt.backward(t64(dout))
    assert y.shape == yt.shape and dx.shape == x.shape and dw.shape == w.shape and db.shape == (fout,)
    rows = int(np.prod(lead))
    x2, d2 = (
        np.abs(x.reshape(rows, fin)).astype(np.float64),
        np.abs(dout.reshape(rows, fout)).astype(np.float64),
    )
    bound = (x2 @ np.abs(w).T + (0 if b is None else np.abs(b))).reshape(y.shape)
    assert_within_bound(y, yt.detach().numpy(), bound, fin + 1, dtype, "y")
    assert_within_bound(dx, xt.grad.numpy(), (d2 @ np.abs(w)).reshape(x.shape), fout, dtype, "dx")
    assert_within_bound(dw, wt.grad.numpy(), d2.T @ x2, max(rows, 1), dtype, "dw")
    assert_within_bound(
        db, dout.reshape(rows, fout).astype(np.float64).sum(0), d2.sum(0), max(rows, 1), dtype, "db"
    )


def test_linear_finite_differences():
    x, w, b, dout = rng_arrays(4, np.float64, (3, 7), (5, 7), (5,), (3, 5))
    grads = F.linear_backward(dout, x, w)

    def loss(x_, w_, b_):
        return float(np.sum(dout * F.linear(x_, w_, b_)))

    for i in range(3):
        directional_check(loss, (x, w, b), grads[i], i, i)


@given(
    n=st.integers(1, 6),
    k=st.integers(2, 12),
    smoothing=st.sampled_from([0.0, 0.1, 0.5]),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
    weighted=st.booleans(),
    kind=st.sampled_from(["indices", "ignored", "probabilities"]),
)
def test_softmax_cross_entropy_matches_torch(n, k, smoothing, dtype, seed, weighted, kind):
    """torch's mean semantics with class weights, ignore_index and probability targets."""
    rng = np.random.default_rng(seed)
    logits = (rng_arrays(seed, dtype, (n, k))[0] * 4).astype(dtype)
    weight = rng.uniform(0.1, 2.0, k).astype(dtype) if weighted else None
    if kind == "probabilities":
        target = rng.dirichlet(np.ones(k), n).astype(dtype)
        ignore = -100
    else:
        target = rng.integers(0, k, n)
        ignore = int(target[0]) if kind == "ignored" else -100  # row 0 (and any of its class) ignored
    loss, cache = F.softmax_cross_entropy(logits, target, smoothing, weight=weight, ignore_index=ignore)
    dlogits = F.softmax_cross_entropy_backward(0.7, cache)
    lt = leaf(logits)
    wt = None if weight is None else t64(weight)
    tt = t64(target) if kind == "probabilities" else torch.from_numpy(target)
    loss_t = TF.cross_entropy(lt, tt, weight=wt, ignore_index=ignore, label_smoothing=smoothing)
    (0.7 * loss_t).backward()
    if np.isnan(loss_t.item()):  # every row ignored
        assert np.isnan(loss) and not dlogits.any() and not lt.grad.numpy().any()
        return
    tol = 1e-12 if dtype == np.float64 else 1e-5  # log-sum-exp of |logits| <~ 12 in float32: ~12*k*u
    assert loss == pytest.approx(loss_t.item(), rel=tol, abs=tol)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=tol, atol=tol / n)
    assert dlogits.dtype == dtype


def test_softmax_cross_entropy_every_row_ignored_is_nan_with_zero_gradient():
    loss, cache = F.softmax_cross_entropy(np.ones((2, 3)), np.array([-100, -100]))
    assert np.isnan(loss)
    assert not F.softmax_cross_entropy_backward(1.0, cache).any()


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]])
    loss, cache = F.softmax_cross_entropy(logits, np.array([2]))
    assert loss == pytest.approx(2000.0)
    np.testing.assert_allclose(F.softmax_cross_entropy_backward(1.0, cache), [[1.0, 0.0, -1.0]], atol=1e-12)


def test_softmax_cross_entropy_finite_differences():
    logits = rng_arrays(8, np.float64, (4, 6))[0]
    target = np.array([0, 5, 2, 2])

    def loss(z):
        return F.softmax_cross_entropy(z, target, 0.1)[0]

    grad = F.softmax_cross_entropy_backward(1.0, F.softmax_cross_entropy(logits, target, 0.1)[1])
    directional_check(loss, (logits,), grad, 0, 3)


def test_pool_and_dropout_finite_differences():
    x, dout_pool, dout = rng_arrays(6, np.float64, (2, 3, 4, 5), (2, 3), (2, 3, 4, 5))
    dx = F.global_avg_pool2d_backward(dout_pool, x.shape)
    directional_check(lambda x_: float(np.sum(dout_pool * F.global_avg_pool2d(x_))), (x,), dx, 0, 1)

    _, mask = F.dropout(x, 0.3, True, 0)
    dx = F.dropout_backward(dout, mask)
    directional_check(lambda x_: float(np.sum(dout * F.dropout(x_, 0.3, True, 0)[0])), (x,), dx, 0, 2)
