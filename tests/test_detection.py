"""numpy_impl.detection: the SSD loss and its hand-written backward against torch's autograd of
torchvision's formulation, ``torch_impl.detector.ssd_loss`` (smooth L1 on positives,
cross-entropy with 3:1 hard-negative mining)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import detection as Dt
from torch_impl.detector import ssd_loss as torch_ssd

from .helpers import DTYPES


def torch_ssd_loss(loc, conf, loc_target, labels, ratio):
    loc_loss, conf_loss = torch_ssd(loc, conf, loc_target, labels, ratio)
    return loc_loss + conf_loss


@given(
    n=st.integers(1, 3),
    d=st.integers(1, 40),
    k=st.integers(2, 5),
    dtype=DTYPES,
    ratio=st.sampled_from([0, 1, 3]),
    p_pos=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_ssd_loss_and_gradients_match_torch(n, d, k, dtype, ratio, p_pos, seed):
    rng = np.random.default_rng(seed)
    loc = (rng.standard_normal((n, d, 4)) * 1.5).astype(dtype)  # both sides of smooth L1's kink
    conf = rng.standard_normal((n, d, k)).astype(dtype)
    loc_target = rng.standard_normal((n, d, 4)).astype(dtype)
    labels = np.where(rng.uniform(size=(n, d)) < p_pos, rng.integers(1, k, (n, d)), 0)
    dout = float(rng.uniform(0.5, 2.0))
    loss, cache = Dt.ssd_loss(loc, conf, loc_target, labels, ratio)
    dloc, dconf = Dt.ssd_loss_backward(dout, cache)
    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (loc, conf)]
    want = torch_ssd_loss(
        t[0], t[1], torch.tensor(loc_target, dtype=torch.float64), torch.tensor(labels), ratio
    )
    (want * dout).backward()
    # float32: a sum of up to 40 * 5 rounded terms, each within eps of its value
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert loss == pytest.approx(want.item(), rel=rtol, abs=rtol)
    assert cache["loc_loss"] + cache["conf_loss"] == pytest.approx(loss)
    assert dloc.dtype == dconf.dtype == dtype
    np.testing.assert_allclose(dloc, t[0].grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dconf, t[1].grad.numpy(), rtol=rtol, atol=rtol)


def test_hard_negatives_are_the_largest_losses_of_each_image():
    ce = np.array([[0.1, 0.9, 0.5, 0.7, 0.3], [0.2, 0.1, 0.4, 0.3, 0.6]])
    positive = np.array([[True, False, False, False, False], [False] * 5])
    got = Dt.hard_negatives(ce, positive, 2)
    np.testing.assert_array_equal(got, [[False, True, False, True, False], [False] * 5])


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (
            lambda: Dt.ssd_loss(
                np.zeros((1, 3, 4)), np.zeros((1, 3, 1)), np.zeros((1, 3, 4)), np.zeros((1, 3), int)
            ),
            ValueError,
            r"conf must have shape \(1, 3\) \+ \(K \+ 1 >= 2,\)",
        ),
        (
            lambda: Dt.ssd_loss(
                np.zeros((1, 3, 4)), np.zeros((1, 3, 2)), np.zeros((1, 3, 4)), np.full((1, 3), 2)
            ),
            ValueError,
            r"labels must be in \[0, 2\)",
        ),
        (
            lambda: Dt.ssd_loss(
                np.zeros((1, 3, 4)), np.zeros((1, 3, 2)), np.zeros((1, 2, 4)), np.zeros((1, 3), int)
            ),
            ValueError,
            r"loc_target must have shape \(1, 3, 4\)",
        ),
        (
            lambda: Dt.ssd_loss(
                np.zeros((1, 3, 4)),
                np.zeros((1, 3, 2), np.float32),
                np.zeros((1, 3, 4)),
                np.zeros((1, 3), int),
            ),
            TypeError,
            "must have loc's dtype float64",
        ),
        (
            lambda: Dt.ssd_loss(
                np.zeros((1, 3, 4)), np.zeros((1, 3, 2)), np.zeros((1, 3, 4)), np.zeros((1, 3))
            ),
            ValueError,
            "labels must be integer class indices",
        ),
        (lambda: Dt.ssd_loss_backward(1.0, {}), TypeError, "cache must be the dict returned by ssd_loss"),
    ],
)
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
