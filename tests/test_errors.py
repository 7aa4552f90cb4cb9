"""Bad input raises ValueError/TypeError naming the parameter, what was expected and what was got."""

import numpy as np
import pytest
import torch

import numpy_impl
from numpy_impl import functional as F
from torch_impl.numba_ops import DepthwiseConv2dFunction

x4 = np.zeros((2, 4, 8, 8), np.float32)
w3 = np.zeros((6, 4, 3, 3), np.float32)
wd = np.zeros((4, 1, 3, 3), np.float32)
wp = np.zeros((6, 4, 1, 1), np.float32)


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: F.conv2d(np.zeros((4, 8)), w3), ValueError, r"x must be 3 or 4-D, got 2-D"),
        (lambda: F.conv2d(x4.tolist(), w3), TypeError, r"x must be a numpy.ndarray, got list"),
        (
            lambda: F.conv2d(x4, w3.astype(np.float64)),
            TypeError,
            r"w must have the same dtype as x \(float32\), got float64",
        ),
        (
            lambda: F.conv2d(x4.astype(np.int32), w3),
            TypeError,
            r"x must have dtype float32 or float64, got int32",
        ),
        (
            lambda: F.conv2d(x4, np.zeros((6, 3, 3, 3), np.float32)),
            ValueError,
            r"C_in/groups == 4/1 == 4, got w.shape=\(6, 3, 3, 3\)",
        ),
        (lambda: F.conv2d(x4, w3, stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: F.conv2d(x4, w3, dilation=(1, -1)), ValueError, r"dilation must be >= 1, got \(1, -1\)"),
        (lambda: F.conv2d(x4, w3, padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (
            lambda: F.conv2d(x4, w3, padding="full"),
            ValueError,
            r"padding must be .*'same' or 'valid', got 'full'",
        ),
        (lambda: F.conv2d(x4, w3, stride=2, padding="same"), ValueError, r"padding='same' requires stride 1"),
        (
            lambda: F.conv2d(x4, w3, stride=1.5),
            TypeError,
            r"stride must be an int or a pair of ints, got 1.5",
        ),
        (
            lambda: F.conv2d(x4, np.zeros((6, 4, 9, 3), np.float32)),
            ValueError,
            r"kernel \(9, 3\) .* larger than the padded input \(8, 8\)",
        ),
        (
            lambda: F.conv2d(x4, np.zeros((6, 2, 3, 3), np.float32), groups=3),
            ValueError,
            r"divisible by groups \(3\)",
        ),
        (lambda: F.conv2d(x4, w3, groups=0), ValueError, r"groups must be a positive int, got 0"),
        (
            lambda: F.conv2d(x4, w3, np.zeros(5, np.float32)),
            ValueError,
            r"b must have shape \(6,\), got \(5,\)",
        ),
        (
            lambda: F.conv2d_backward(np.zeros((2, 6, 5, 5), np.float32), x4, w3),
            ValueError,
            r"dout must have shape \(2, 6, 6, 6\), got \(2, 6, 5, 5\)",
        ),
        (
            lambda: F.depthwise_conv2d(x4, np.zeros((6, 1, 3, 3), np.float32)),
            ValueError,
            r"w must have shape \(C\*m, 1, kh, kw\) with C == x.shape\[1\] == 4 and m >= 1, got \(6, 1, 3, 3\)",
        ),
        (lambda: F.depthwise_conv2d(x4, wd, padding=-2), ValueError, r"padding must be >= 0"),
        (
            lambda: F.depthwise_conv2d_backward(x4[:, :, :6], x4, wd),
            ValueError,
            r"dout must have shape \(2, 4, 6, 6\)",
        ),
        (
            lambda: F.pointwise_conv2d(x4, w3),
            ValueError,
            r"w must have shape \(C_out, C_in, 1, 1\) with C_in == x.shape\[1\] == 4, got \(6, 4, 3, 3\)",
        ),
        (lambda: F.pointwise_conv2d(x4.astype(np.float16), wp), TypeError, r"got float16"),
        (
            lambda: F.batch_norm(x4, None, None, np.zeros(3, np.float32), np.ones(4, np.float32), True),
            ValueError,
            r"running_mean must have shape \(4,\), got \(3,\)",
        ),
        (
            lambda: F.batch_norm(x4[:1, :, :1, :1], None, None, None, None, True),
            ValueError,
            r"more than 1 value per channel",
        ),
        (
            lambda: F.batch_norm(x4, None, None, None, None, True, momentum=1.5),
            ValueError,
            r"momentum must be in \[0.0, 1.0\], got 1.5",
        ),
        (
            lambda: F.batch_norm(x4, None, None, None, None, False),
            ValueError,
            r"running_mean and running_var are required",
        ),
        (
            lambda: F.batch_norm(x4, None, None, None, None, "yes"),
            TypeError,
            r"training must be a bool, got str",
        ),
        (
            lambda: F.batch_norm_backward(x4, None),
            TypeError,
            r"cache must be the dict returned by batch_norm",
        ),
        (
            lambda: F.relu6_backward(x4[:1], x4),
            ValueError,
            r"dout must have shape \(2, 4, 8, 8\), got \(1, 4, 8, 8\)",
        ),
        (lambda: F.dropout(x4, p=1.2), ValueError, r"p must be in \[0.0, 1.0\], got 1.2"),
        (lambda: F.dropout(x4, rng="seed"), TypeError, r"rng must be a numpy.random.Generator"),
        (
            lambda: F.linear(np.zeros((2, 5)), np.zeros((3, 4))),
            ValueError,
            r"F_in == x.shape\[-1\] == 5, got \(3, 4\)",
        ),
        (lambda: F.global_avg_pool2d(np.zeros((2, 3))), ValueError, r"x must be 4-D, got 2-D"),
        (
            lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
            ValueError,
            r"target values must be in \[0, 3\) or equal ignore_index \(-100\), got 3",
        ),
        (
            lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(2)),
            ValueError,
            r"weight must have shape \(3,\), got \(2,\)",
        ),
        (
            lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), np.float32)),
            TypeError,
            r"target must have the same dtype as logits \(float64\)",
        ),
        (
            lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), ignore_index=1.5),
            TypeError,
            r"ignore_index must be an int",
        ),
        (
            lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])),
            TypeError,
            r"target must be an integer",
        ),
        (
            lambda: F.global_avg_pool2d_backward(np.zeros((1, 2), np.float32), None),
            TypeError,
            r"x_shape must be a tuple of ints \(x.shape\), got None",
        ),
        (
            lambda: F.dropout(np.zeros((2, 2), np.float32), 0.5, True, rng=-1),
            ValueError,
            r"dropout: rng must be >= 0 \(a seed\), got -1",
        ),
        (
            lambda: F.dropout(np.zeros((2, 2), np.float32), 0.5, True, rng="seed"),
            TypeError,
            r"dropout: rng must be a numpy.random.Generator, an int seed or None, got str",
        ),
        (
            lambda: F.softmax_cross_entropy_backward(
                float("nan"), F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]))[1]
            ),
            ValueError,
            r"dout must be a number, not nan, got nan",
        ),
    ],
)
def test_functional_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (
            lambda: numpy_impl.mobilenet_v2(width_mult=0),
            ValueError,
            r"width_mult must be in \(0, 100.0\], got 0",
        ),
        (
            lambda: numpy_impl.mobilenet_v1(width_mult=-0.5),
            ValueError,
            r"width_mult must be in \(0, 100.0\], got -0.5",
        ),
        (lambda: numpy_impl.mobilenet_v1(width_mult="1"), TypeError, r"width_mult must be a number, got str"),
        (lambda: numpy_impl.mobilenet_v2(seed=-1), ValueError, r"seed must be >= 0 \(a seed\), got -1"),
        (lambda: numpy_impl.mobilenet_v2(num_classes=0), ValueError, r"num_classes must be >= 1, got 0"),
        (lambda: numpy_impl.mobilenet_v2(dropout=2.0), ValueError, r"dropout must be in \[0, 1\], got 2.0"),
        (
            lambda: numpy_impl.mobilenet_v2(dtype=np.int64),
            TypeError,
            r"dtype must be float32 or float64, got int64",
        ),
        (
            lambda: numpy_impl.mobilenet_v2(backend="cuda"),
            ValueError,
            r"backend must be one of \('numpy',.*\), got 'cuda'",
        ),
        (
            lambda: numpy_impl.mobilenet_v2(round_nearest=0),
            ValueError,
            r"round_nearest must be an int >= 1, got 0",
        ),
    ],
)
def test_model_constructor_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.fixture(scope="module")
def small_model():
    return numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=3)


def test_model_forward_bad_input(small_model):
    with pytest.raises(ValueError, match=r"resolution must be >= 32 px, got 31x40"):
        small_model.forward(np.zeros((1, 3, 31, 40), np.float32))
    with pytest.raises(TypeError, match=r"model's dtype float32, got float64"):
        small_model.forward(np.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(1, 1, 32, 32\)"):
        small_model.forward(np.zeros((1, 1, 32, 32), np.float32))
    small_model.eval().forward(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"dlogits must have shape \(2, 3\), got \(2, 4\)"):
        small_model.backward(np.zeros((2, 4), np.float32))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="call forward first"):
        numpy_impl.mobilenet_v1(width_mult=0.25).backward(np.zeros((1, 1000), np.float32))


def test_load_state_dict_rejects_unknown_keys_and_shapes(small_model):
    sd = small_model.state_dict()
    before = small_model.state_dict()
    with pytest.raises(ValueError, match=r"unexpected \['features.99.weight'\]"):
        small_model.load_state_dict({**sd, "features.99.weight": np.zeros(3)})
    sd.pop("classifier.1.bias")
    with pytest.raises(ValueError, match=r"missing \['classifier.1.bias'\]"):
        small_model.load_state_dict(sd)
    bad = {**small_model.state_dict(), "classifier.1.weight": np.zeros((4, 1280), np.float32)}
    bad["features.0.0.weight"] = np.ones_like(bad["features.0.0.weight"])
    with pytest.raises(ValueError, match=r"classifier.1.weight must have shape \(3, 1280\), got \(4, 1280\)"):
        small_model.load_state_dict(bad)
    # nothing was changed by the failed loads
    for k, v in small_model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="keys do not match"):
        numpy_impl.mobilenet_v1(width_mult=0.25, num_classes=3).load_state_dict(before)


def test_memoised_geometry_still_rejects_bool_and_float_parameters():
    F.conv2d(x4, w3, stride=1)  # caches the geometry of stride 1
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints, got True"):
        F.conv2d(x4, w3, stride=True)
    with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got \(1.0, 1\)"):
        F.conv2d(x4, w3, stride=(1.0, 1))


@pytest.mark.parametrize(
    "convert, exc, pattern",
    [
        (lambda v: v.to(torch.bfloat16), TypeError, r"has dtype torch.bfloat16, which numpy cannot hold"),
        (lambda v: v.to("meta"), ValueError, r"is a meta tensor"),
    ],
)
def test_load_state_dict_names_tensors_numpy_cannot_hold(small_model, convert, exc, pattern):
    sd = {k: torch.from_numpy(np.array(v)) for k, v in small_model.state_dict().items()}
    sd = {k: convert(v) if v.is_floating_point() else v for k, v in sd.items()}
    with pytest.raises(exc, match=pattern):
        small_model.load_state_dict(sd)


@pytest.mark.parametrize(
    "x, exc, pattern",
    [
        (
            torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16),
            TypeError,
            r"x must be float32 or float64, got torch.bfloat16",
        ),
        (torch.zeros(1, 2, 4, 4, device="meta"), ValueError, r"x must be on the CPU"),
    ],
)
def test_numba_ops_refuse_tensors_the_kernels_cannot_take(x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        DepthwiseConv2dFunction.apply(x, torch.zeros(2, 1, 3, 3), 1, 1)
