"""ArcFace's additive angular margin: the NumPy forward and backward against torch autograd."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import functional as F
from torch_impl.metric import arcface_logits as torch_arcface


@st.composite
def arcface_cases(draw):
    n, d, k = draw(st.integers(1, 9)), draw(st.integers(2, 24)), draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    w = rng.standard_normal((k, d))
    target = rng.integers(0, k, n)
    if draw(st.booleans()):  # some embeddings near their centre (theta + m < pi) ...
        x[: n // 2 + 1] = w[target[: n // 2 + 1]] + 0.3 * rng.standard_normal((n // 2 + 1, d))
    else:  # ... or opposite it, where the monotone continuation takes over
        x[: n // 2 + 1] = -w[target[: n // 2 + 1]] + 0.05 * rng.standard_normal((n // 2 + 1, d))
    scale = draw(st.sampled_from([1.0, 16.0, 64.0]))
    margin = draw(st.sampled_from([0.0, 0.2, 0.5, 1.2]))
    dlogits = rng.standard_normal((n, k))
    return x, w, target, scale, margin, dlogits


@given(arcface_cases())
def test_arcface_matches_torch_forward_and_backward(case):
    x, w, target, scale, margin, dlogits = case
    logits, cache = F.arcface_logits(x, w, target, scale, margin)
    dx, dw = F.arcface_logits_backward(dlogits, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ref = torch_arcface(xt, wt, torch.from_numpy(target), scale, margin)
    ref.backward(torch.from_numpy(dlogits))
    scale_of = lambda a: max(np.abs(a).max(), 1e-300)  # noqa: E731
    assert np.abs(logits - ref.detach().numpy()).max() <= 1e-12 * scale_of(ref.detach().numpy()) + 1e-12
    for ours, theirs in ((dx, xt.grad.numpy()), (dw, wt.grad.numpy())):
        assert np.abs(ours - theirs).max() <= 1e-9 * scale_of(theirs)


def test_arcface_margin_widens_the_target_angle_only():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 8)), rng.standard_normal((5, 8))
    target = np.array([0, 1, 2, 3])
    plain, _ = F.arcface_logits(x, w, target, scale=1.0, margin=0.0)
    wide, _ = F.arcface_logits(x, w, target, scale=1.0, margin=0.3)
    mask = np.zeros_like(plain, bool)
    mask[np.arange(4), target] = True
    assert np.array_equal(plain[~mask], wide[~mask])
    theta = np.arccos(plain[mask])
    expected = np.where(theta + 0.3 < math.pi, np.cos(theta + 0.3), plain[mask] - 0.3 * math.sin(0.3))
    np.testing.assert_allclose(wide[mask], expected, rtol=1e-12)


def test_arcface_gradient_by_finite_differences():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 6)), rng.standard_normal((4, 6))
    target, d = np.array([0, 2, 3]), rng.standard_normal((3, 4))
    _, cache = F.arcface_logits(x, w, target, 8.0, 0.4)
    dx, _ = F.arcface_logits_backward(d, cache)
    v = rng.standard_normal(x.shape)
    eps = 1e-6
    f = lambda a: (F.arcface_logits(a, w, target, 8.0, 0.4)[0] * d).sum()  # noqa: E731
    numeric = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert abs(numeric - (dx * v).sum()) <= 1e-6 * abs(numeric) + 1e-8


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"x": [[1.0, 2.0]]}, TypeError, "x must be a numpy.ndarray"),
        ({"weight": np.ones((3, 5))}, ValueError, "weight must have shape"),
        ({"target": np.array([0, 3])}, ValueError, r"target must be in \[0, 3\)"),
        ({"target": np.array([0.0, 1.0])}, ValueError, "integer class indices"),
        ({"margin": 2.0}, ValueError, "margin"),
        ({"scale": 0.0}, ValueError, "scale"),
        ({"x": np.array([[np.nan, 1.0, 0.0, 0.0], [1.0, 0, 0, 0]])}, ValueError, "finite"),
        ({"weight": np.ones((3, 4), np.float32)}, TypeError, "dtype"),
    ],
)
def test_arcface_refuses_bad_input(kwargs, error, message):
    args = {"x": np.ones((2, 4)), "weight": np.ones((3, 4)), "target": np.array([0, 1])} | kwargs
    with pytest.raises(error, match=message):
        F.arcface_logits(**args)
