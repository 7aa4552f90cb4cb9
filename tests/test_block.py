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


def _v3_block(rng, cin, t, cout, k, se):
    ws, bns = _block(rng, cin, t, cout)
    ws[1] = rng.standard_normal((cin * t, 1, k, k)) * 0.4
    if not se:
        return ws, bns, None
    hid, cr = cin * t, max(1, cin * t // 4)
    sew = (
        rng.standard_normal((cr, hid, 1, 1)),
        rng.standard_normal(cr) * 0.5,
        rng.standard_normal((hid, cr, 1, 1)),
        rng.standard_normal(hid),
    )
    return ws, bns, sew


@given(
    seed=st.integers(0, 2**16),
    t=st.sampled_from([1, 3]),
    cin=st.integers(1, 5),
    same_out=st.booleans(),
    k=st.sampled_from([3, 5]),
    activation=st.sampled_from(["relu", "hardswish"]),
    se=st.booleans(),
    stride=st.sampled_from([1, 2]),
    training=st.booleans(),
    hw=st.integers(1, 7),
)
def test_reference_v3_block_matches_torch(seed, t, cin, same_out, k, activation, se, stride, training, hw):
    """MobileNetV3's options of the reference block: k x k depthwise, ReLU or hard-swish, and
    squeeze-and-excite, against the same block written in torch's functional ops."""
    rng = np.random.default_rng(seed)
    cout = cin if same_out else cin + 2
    ws, bns, sew = _v3_block(rng, cin, t, cout, k, se)
    x = rng.standard_normal((2, cin, hw, hw)) * 2
    ho = (hw - 1) // stride + 1
    dout = rng.standard_normal((2, cout, ho, ho))
    bns_t = [None if b is None else [a.copy() for a in b] for b in bns]
    y, cache = F.inverted_residual(
        x, ws, bns, stride, None, training, 0.2, 1e-3, activation=activation, se=sew
    )
    grads = F.inverted_residual_backward(dout, cache)
    assert len(grads) == (4 if se else 3)

    act = {"relu": TF.relu, "hardswish": TF.hardswish}[activation]
    xt, wts = leaf(x), [None if w is None else leaf(w) for w in ws]
    bnts = [None if b is None else [leaf(b[0]), leaf(b[1]), t64(b[2]), t64(b[3])] for b in bns_t]
    set_ = None if sew is None else [leaf(a) for a in sew]

    def bn(h, i):
        return TF.batch_norm(h, bnts[i][2], bnts[i][3], bnts[i][0], bnts[i][1], training, 0.2, 1e-3)

    h = xt if wts[0] is None else act(bn(TF.conv2d(xt, wts[0]), 0))
    h = act(bn(TF.conv2d(h, wts[1], stride=stride, padding=k // 2, groups=wts[1].shape[0]), 1))
    if set_ is not None:
        s = TF.relu(TF.conv2d(h.mean((2, 3), keepdim=True), set_[0], set_[1]))
        # relu6(g + 3) / 6, not TF.hardsigmoid: torch's float64 hardsigmoid backward uses a float32 1/6
        h = h * (TF.relu6(TF.conv2d(s, set_[2], set_[3]) + 3) / 6)
    yt = bn(TF.conv2d(h, wts[2]), 2)
    yt = yt + xt if stride == 1 and cout == cin else yt
    yt.backward(t64(dout))

    tol = {"rtol": 1e-9, "atol": 1e-10}  # float64 both sides, the same ops in the same order
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(grads[0], xt.grad.numpy(), **tol)
    for i in range(3):
        if ws[i] is not None:
            np.testing.assert_allclose(grads[1][i], wts[i].grad.numpy(), **tol, err_msg=f"weight {i}")
            for j in range(2):
                np.testing.assert_allclose(grads[2][i][j], bnts[i][j].grad.numpy(), **tol, err_msg=f"bn {i}")
            np.testing.assert_allclose(bns[i][2:], [b.numpy() for b in bnts[i][2:]], **tol)
    if se:
        for j, a in enumerate(set_):
            np.testing.assert_allclose(grads[3][j], a.grad.numpy(), **tol, err_msg=f"se {j}")


def test_reference_v3_block_bad_input():
    rng = np.random.default_rng(0)
    ws, bns, sew = _v3_block(rng, 4, 2, 4, 5, True)
    x = rng.standard_normal((2, 4, 5, 5))
    with pytest.raises(
        ValueError, match=r"activation must be one of \['hardswish', 'relu', 'relu6'\], got 'gelu'"
    ):
        F.inverted_residual(x, ws, bns, activation="gelu")
    with pytest.raises(
        ValueError, match=r"depthwise weight must have shape \(8, 1, 3, 3\), got \(8, 1, 4, 4\)"
    ):
        F.inverted_residual(x, [ws[0], np.zeros((8, 1, 4, 4)), ws[2]], bns)
    with pytest.raises(TypeError, match=r"se must be None or \(w1, b1, w2, b2\), got dict"):
        F.inverted_residual(x, ws, bns, se={})
    with pytest.raises(ValueError, match=r"se w2 must have shape \(8, 2, 1, 1\), got \(8, 3, 1, 1\)"):
        F.inverted_residual(x, ws, bns, se=(sew[0], sew[1], np.zeros((8, 3, 1, 1)), sew[3]))
    with pytest.raises(ValueError, match=r"se b2 must have shape \(8,\), got \(4,\)"):
        F.inverted_residual(x, ws, bns, se=(*sew[:3], np.zeros(4)))
    with pytest.raises(TypeError, match="same dtype as x"):
        F.inverted_residual(x, ws, bns, se=(*sew[:3], sew[3].astype(np.float32)))
