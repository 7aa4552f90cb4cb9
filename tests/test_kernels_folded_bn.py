"""An eval-mode batch norm folded into the convolution before it (``FOLDED_CONV_BN``): the
kernels' ``conv2d`` and ``pointwise_conv2d`` with ``bn=`` against the reference's convolution,
batch norm and activation run one after the other; the models' folded eval forward, and the
backward after it, against the same model unfolded."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels as K
import numpy_impl
from numpy_impl import functional as F

from .helpers import DTYPES, in_memory

ACTS = st.sampled_from([None, "relu", "relu6", "hardswish"])
TOL = {np.float64: 1e-11, np.float32: 2e-5}  # float32: the GEMM's K-term sums and a multiply-add


def _bn(rng, c, dtype):
    """Weights and running statistics that move the output (not the identity's 1, 0, 0, 1)."""
    return (
        rng.uniform(0.5, 1.5, c).astype(dtype),
        rng.normal(0, 1, c).astype(dtype),
        rng.normal(0, 1, c).astype(dtype),
        rng.uniform(0.5, 2.0, c).astype(dtype),
    )


def _reference(conv_out, bn, eps, activation):
    y, _ = F.batch_norm(conv_out, *bn, False, 0.1, eps)
    return y if activation is None else getattr(F, activation)(y)


def _close(got, want, dtype):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@given(
    n=st.integers(1, 3),
    hw=st.integers(1, 9),
    cin=st.integers(1, 12),
    cout=st.integers(1, 20),
    dtype=DTYPES,
    memory=st.sampled_from(["nchw", "channels_last"]),
    activation=ACTS,
    eps=st.sampled_from([1e-5, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_pointwise_with_folded_bn_is_conv_then_bn(n, hw, cin, cout, dtype, memory, activation, eps, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, hw, hw + 1)).astype(dtype)
    w = rng.standard_normal((cout, cin, 1, 1)).astype(dtype)
    bn = _bn(rng, cout, dtype)
    got = K.pointwise_conv2d(in_memory(x, memory), w, bn=bn, eps=eps, activation=activation)
    assert got.dtype == dtype
    _close(got, _reference(F.pointwise_conv2d(x, w), bn, eps, activation), dtype)


def test_pointwise_fold_covers_every_split_of_the_product():
    """Row blocks (many rows), column blocks (few rows) and the two-row split (one column)."""
    rng = np.random.default_rng(4)
    for n, hw, cout in [(2, 24, 10), (1, 7, 33), (1, 3, 1)]:
        x = in_memory(rng.standard_normal((n, 5, hw, hw)), "channels_last")
        w = rng.standard_normal((cout, 5, 1, 1))
        bn = _bn(rng, cout, np.float64)
        got = K.pointwise_conv2d(x, w, bn=bn, eps=1e-3, activation="hardswish")
        _close(got, _reference(F.pointwise_conv2d(x, w), bn, 1e-3, "hardswish"), np.float64)


@given(
    stride=st.sampled_from([1, 2]),
    bias=st.booleans(),
    dtype=DTYPES,
    memory=st.sampled_from(["nchw", "channels_last"]),
    activation=ACTS,
    seed=st.integers(0, 2**16),
)
def test_conv_with_folded_bn_is_conv_then_bn(stride, bias, dtype, memory, activation, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 11, 9)).astype(dtype)
    w = rng.standard_normal((6, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype) if bias else None
    bn = _bn(rng, 6, dtype)
    got = K.conv2d(in_memory(x, memory), w, b, stride, 1, bn=bn, eps=1e-5, activation=activation)
    _close(got, _reference(F.conv2d(x, w, b, stride, 1), bn, 1e-5, activation), dtype)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"activation": "relu"}, ValueError, "needs bn"),
        ({"bn": "bn"}, TypeError, "bn must be"),
        ({"bn": (np.ones(4),) * 3}, TypeError, "bn must be"),
        ({"bn": (np.ones(3),) * 4}, ValueError, r"bn weight must have shape \(4,\)"),
        ({"bn": (np.ones(4, np.float32),) * 4}, TypeError, "bn_weight must have the same dtype"),
        ({"bn": (np.ones(4),) * 4, "eps": 0.0}, ValueError, "eps must be > 0"),
        ({"bn": (np.ones(4),) * 4, "activation": "gelu"}, ValueError, "activation must be one of"),
    ],
)
@pytest.mark.parametrize("op", ["pointwise_conv2d", "conv2d"])
def test_folded_bn_refuses_bad_input(op, kwargs, error, match):
    x = in_memory(np.ones((1, 2, 5, 5)), "channels_last")
    w = np.ones((4, 2, 1, 1)) if op == "pointwise_conv2d" else np.ones((4, 2, 3, 3))
    with pytest.raises(error, match=match):
        getattr(K, op)(x, w, **kwargs)


@pytest.mark.parametrize("arch", ["v1", "v3-small"])
def test_folded_eval_model_and_its_backward_match_the_reference(arch):
    """The numba model in eval folds its convolutions' batch norms; its logits, and the
    backward after that forward (which reruns the folded layers unfolded), match the NumPy
    model's, in float64."""
    kw = {"width_mult": 0.25, "num_classes": 5, "dtype": np.float64}
    ref = numpy_impl.mobilenet(arch, backend="numpy", **kw).eval()
    fast = numpy_impl.mobilenet(arch, backend="numba", **kw).eval()
    rng = np.random.default_rng(7)
    state = {}
    for k, v in ref.state_dict().items():  # running statistics away from 0 and 1, so the fold matters
        if k.endswith("running_mean"):
            v = rng.normal(0, 0.5, v.shape)
        elif k.endswith("running_var"):
            v = rng.uniform(0.5, 2.0, v.shape)
        state[k] = v
    ref.load_state_dict(state)
    fast.load_state_dict(state)
    assert any(s._folds for _, s in fast.named_modules() if isinstance(s, numpy_impl.nn.Sequential))
    x = rng.standard_normal((2, 3, 40, 40))
    np.testing.assert_allclose(fast.forward(x), ref.forward(x), rtol=1e-10, atol=1e-12)
    d = rng.standard_normal((2, 5))
    np.testing.assert_allclose(fast.backward(d), ref.backward(d), rtol=1e-9, atol=1e-12)
    for (name, g), (_, h) in zip(sorted(fast.grads.items()), sorted(ref.grads.items())):
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12, err_msg=name)
