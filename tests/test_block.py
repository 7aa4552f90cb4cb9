"""``numpy_impl.functional.inverted_residual``, the readable block, against torch's ops with autograd."""

import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import functional as F

from .helpers import leaf, t64


def _block(rng, cin, t, cout):
    hid = cin * t
    ws = [
        None if t == 1 else rng.standard_normal((hid, cin, 1, 1)) * 0.5,
        rng.standard_normal((hid, 1, 3, 3)) * 0.5,
        rng.standard_normal((cout, hid, 1, 1)) * 0.5,
    ]

    def bn(c):  # weights of 1.5-4 push some values past ReLU6's upper kink
        return [
            rng.uniform(1.5, 4, c),
            rng.standard_normal(c),
            rng.standard_normal(c) * 0.2,
            rng.uniform(0.5, 1.5, c),
        ]

    return ws, [None if t == 1 else bn(hid), bn(hid), bn(cout)]


def _torch_block(x, ws, bns, stride, residual, training, momentum, eps):
    """The same block from torch's functional ops; returns y and the leaves whose .grad to compare."""
    xt = leaf(x)
    wts = [None if w is None else leaf(w) for w in ws]
    bnts = [None if b is None else [leaf(b[0]), leaf(b[1]), t64(b[2]), t64(b[3])] for b in bns]
    h = xt
    if wts[0] is not None:
        h = TF.relu6(
            TF.batch_norm(
                TF.conv2d(h, wts[0]), bnts[0][2], bnts[0][3], bnts[0][0], bnts[0][1], training, momentum, eps
            )
        )
    h = TF.conv2d(h, wts[1], stride=stride, padding=1, groups=wts[1].shape[0])
    h = TF.relu6(TF.batch_norm(h, bnts[1][2], bnts[1][3], bnts[1][0], bnts[1][1], training, momentum, eps))
    y = TF.batch_norm(
        TF.conv2d(h, wts[2]), bnts[2][2], bnts[2][3], bnts[2][0], bnts[2][1], training, momentum, eps
    )
    return (y + xt if residual else y), xt, wts, bnts


@given(
    seed=st.integers(0, 2**16),
    t=st.sampled_from([1, 3]),
    cin=st.integers(1, 5),
    same_out=st.booleans(),
    stride=st.sampled_from([1, 2]),
    training=st.booleans(),
    hw=st.integers(1, 7),
)
def test_reference_block_matches_torch(seed, t, cin, same_out, stride, training, hw):
    rng = np.random.default_rng(seed)
    cout = cin if same_out else cin + 2
    ws, bns = _block(rng, cin, t, cout)
    n = 2  # training needs more than one value per channel (a 1x1 output included)
    x = rng.standard_normal((n, cin, hw, hw)) * 2
    dout = rng.standard_normal((n, cout, (hw - 1) // stride + 1, (hw - 1) // stride + 1))
    residual = stride == 1 and cout == cin
    bns_t = [None if b is None else [a.copy() for a in b] for b in bns]
    y, cache = F.inverted_residual(x, ws, bns, stride, None, training, 0.2, 1e-4)
    dx, dws, dbns = F.inverted_residual_backward(dout, cache)
    yt, xt, wts, bnts = _torch_block(x, ws, bns_t, stride, residual, training, 0.2, 1e-4)
    yt.backward(t64(dout))
    # float64 on both sides, the same ops in the same order: agreement to rounding
    tol = {"rtol": 1e-9, "atol": 1e-10}
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    for i in range(3):
        if ws[i] is None:
            assert dws[i] is None and dbns[i] is None
            continue
        np.testing.assert_allclose(dws[i], wts[i].grad.numpy(), **tol, err_msg=f"weight {i}")
        np.testing.assert_allclose(dbns[i][0], bnts[i][0].grad.numpy(), **tol, err_msg=f"bn weight {i}")
        np.testing.assert_allclose(dbns[i][1], bnts[i][1].grad.numpy(), **tol, err_msg=f"bn bias {i}")
        np.testing.assert_allclose(bns[i][2], bnts[i][2].numpy(), **tol, err_msg=f"running mean {i}")
        np.testing.assert_allclose(bns[i][3], bnts[i][3].numpy(), **tol, err_msg=f"running var {i}")


def test_reference_block_bad_input():
    rng = np.random.default_rng(0)
    ws, bns = _block(rng, 4, 2, 4)
    x = rng.standard_normal((2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"expand weight must have shape \(8, 3, 1, 1\)"):
        F.inverted_residual(x[:, :3], ws, bns)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        F.inverted_residual(x, ws, bns, stride=3)
    with pytest.raises(ValueError, match="residual needs stride 1"):
        F.inverted_residual(x, ws, bns, stride=2, residual=True)
    with pytest.raises(TypeError, match="cache must be the dict returned by inverted_residual"):
        F.inverted_residual_backward(x, None)
    ws1, bns1 = _block(rng, 4, 1, 4)
    with pytest.raises(ValueError, match=r"bns\[0\] must be None"):
        F.inverted_residual(x, ws1, [bns[1][:2] + bns1[1][2:], *bns1[1:]])


@pytest.mark.parametrize("ops", ["numpy", "numba"])
@given(
    seed=st.integers(0, 2**16),
    t=st.sampled_from([1, 2]),
    cin=st.integers(1, 3),
    stride=st.sampled_from([1, 2]),
    training=st.booleans(),
    hw=st.integers(2, 5),
)
def test_block_matches_naive_loops(ops, seed, t, cin, stride, training, hw):
    """The reference block and the fused kernel against tests/naive.py's loops, float64."""
    from numpy_impl import get_backend

    from . import naive

    rng = np.random.default_rng(seed)
    ws, bns = _block(rng, cin, t, cin)
    x = rng.standard_normal((2, cin, hw, hw)) * 2
    ny, nbackward = naive.inverted_residual(x, ws, bns, stride, training)
    y, cache = get_backend(ops).inverted_residual(
        x, ws, [None if b is None else [a.copy() for a in b] for b in bns], stride, None, training, 0.1, 1e-5
    )
    np.testing.assert_allclose(y, ny, rtol=1e-9, atol=1e-9)
    if cache is None:  # the fused kernel keeps nothing in eval mode
        return
    dout = rng.standard_normal(y.shape)
    dx, dws, dbns = get_backend(ops).inverted_residual_backward(dout, cache)
    ndx, ndws, ndbns = nbackward(dout)
    np.testing.assert_allclose(dx, ndx, rtol=1e-8, atol=1e-8)
    for got, want in zip(
        [*dws, *(a for b in dbns if b for a in b)], [*ndws, *(a for b in ndbns if b for a in b)]
    ):
        assert (got is None) == (want is None)
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
