"""MobileNetV3: squeeze-and-excite against torch, the specs against torchvision's published
figures and layout, and the whole models against the torch mirror."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import kernels
import mobilenet_arch as A
import numpy_impl
import torch_impl
from mobilenet.summary import summarize, totals
from numpy_impl import functional as F
from numpy_impl import fusion, nn

from .helpers import DTYPES


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 12),
    cr=st.integers(1, 6),
    hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    dtype=DTYPES,
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_squeeze_excite_matches_torch(n, c, cr, hw, dtype, channels_last, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, *hw)) * 2).astype(dtype)
    if channels_last:  # the numba backend's layout: the output must keep it
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w1, b1 = rng.standard_normal((cr, c, 1, 1)).astype(dtype), rng.standard_normal(cr).astype(dtype)
    w2, b2 = rng.standard_normal((c, cr, 1, 1)).astype(dtype), (rng.standard_normal(c) * 2).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    y, cache = F.squeeze_excite(x, w1, b1, w2, b2)
    grads = F.squeeze_excite_backward(dout, cache)
    ts = [
        torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)
        for a in (x, w1, b1, w2, b2)
    ]
    xt, w1t, b1t, w2t, b2t = ts
    s = TF.adaptive_avg_pool2d(xt, 1)
    g = TF.conv2d(TF.relu(TF.conv2d(s, w1t, b1t)), w2t, b2t)
    yt = xt * (TF.relu6(g + 3) / 6)  # hardsigmoid by its definition (torch's own backward rounds 1/6)
    yt.backward(torch.tensor(dout, dtype=torch.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and all(d.dtype == dtype for d in grads)
    assert y.flags.c_contiguous != channels_last or min(hw) == 1 or c == 1
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    for ours, ref in zip(grads, ts):
        np.testing.assert_allclose(
            ours, ref.grad.numpy(), rtol=tol, atol=tol * np.abs(ref.grad.numpy()).max()
        )


@given(
    n=st.integers(1, 4),
    c=st.integers(1, 40),
    hw=st.integers(1, 6),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
    dout_channels_last=st.booleans(),
)
def test_kernels_squeeze_excite_matches_the_reference(n, c, hw, dtype, seed, dout_channels_last):
    """The numba backend's SE (its passes over the map in Numba, float64 sums, its products on
    Numba's pool) against the reference composite; float32 to 1e-5, the order of the sums."""
    rng = np.random.default_rng(seed)
    cr = max(1, c // 4)
    x = np.ascontiguousarray(rng.standard_normal((n, hw, hw, c)).astype(dtype)).transpose(0, 3, 1, 2)
    args = [rng.standard_normal(s).astype(dtype) for s in ((cr, c, 1, 1), (cr,), (c, cr, 1, 1), (c,))]
    dout = rng.standard_normal(x.shape).astype(dtype)
    if dout_channels_last:
        dout = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y, cache = kernels.squeeze_excite(x, *args)
    y_ref, cache_ref = F.squeeze_excite(x, *args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last in, channels-last out
    for ours, ref in zip(
        kernels.squeeze_excite_backward(dout, cache), F.squeeze_excite_backward(dout, cache_ref)
    ):
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


def test_squeeze_excite_checks_its_inputs():
    x = np.zeros((1, 4, 2, 2))
    w1, b1, w2, b2 = np.zeros((2, 4, 1, 1)), np.zeros(2), np.zeros((4, 2, 1, 1)), np.zeros(4)
    with pytest.raises(ValueError, match=r"squeeze_excite: w2 must have shape \(4, 2, 1, 1\)"):
        F.squeeze_excite(x, w1, b1, np.zeros((4, 3, 1, 1)), b2)
    with pytest.raises(TypeError, match="b1 must have the same dtype as x"):
        F.squeeze_excite(x, w1, b1.astype(np.float32), w2, b2)
    with pytest.raises(TypeError, match="cache must be the dict returned by squeeze_excite"):
        F.squeeze_excite_backward(x, {})


# torchvision's published figures (docs of torchvision.models, 1000 classes, width 1.0) and the
# mult-adds counted the way the V1/V2 papers count (convolutions and linear layers)
PUBLISHED = {"v3-large": (5_483_032, 217), "v3-small": (2_542_856, 57)}  # params, M mult-adds


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_v3_parameters_and_mult_adds(arch):
    t = totals(summarize(A.build_spec(arch), 224))
    params, macs = PUBLISHED[arch]
    assert t["params"] == params
    assert round(t["macs"] / 1e6) == macs  # "about 217 M": to the nearest million
    assert sum(p.numel() for p in torch_impl.mobilenet(arch).parameters()) == params


# torchvision's MobileNetV3 rows (mobilenetv3.py, _mobilenet_v3_conf), transcribed from there
# rather than from our spec: (input, kernel, expanded, output, SE, activation, stride)
TORCHVISION_SMALL = [
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
]


def _torchvision_small_keys(width_mult, num_classes):
    """The state_dict keys and shapes torchvision's MobileNetV3-Small would have, written out
    from its construction code: Conv2dNormActivation(conv "0", BN "1"), the block's ``block``
    Sequential (expand only when the width changes, SE after the depthwise conv), the
    classifier Linear, Hardswish, Dropout, Linear."""

    def ch(c):
        return A.make_divisible(c * width_mult, 8)

    keys = {}

    def cna(prefix, cin, cout, k, groups=1):
        keys[f"{prefix}.0.weight"] = (cout, cin // groups, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.1.{name}"] = (cout,)
        keys[f"{prefix}.1.num_batches_tracked"] = ()

    cna("features.0", 3, ch(16), 3)
    for i, (cin, k, exp, cout, se, _, _) in enumerate(TORCHVISION_SMALL, start=1):
        cin, exp, cout, j = ch(cin), ch(exp), ch(cout), 0
        if exp != cin:
            cna(f"features.{i}.block.{j}", cin, exp, 1)
            j += 1
        cna(f"features.{i}.block.{j}", exp, exp, k, groups=exp)
        j += 1
        if se:
            sq = A.make_divisible(exp // 4, 8)
            p = f"features.{i}.block.{j}"
            keys.update({f"{p}.fc1.weight": (sq, exp, 1, 1), f"{p}.fc1.bias": (sq,)})
            keys.update({f"{p}.fc2.weight": (exp, sq, 1, 1), f"{p}.fc2.bias": (exp,)})
            j += 1
        cna(f"features.{i}.block.{j}", exp, cout, 1)
    last = ch(96)
    cna(f"features.{len(TORCHVISION_SMALL) + 1}", last, 6 * last, 1)
    hidden = ch(1024)
    keys.update({"classifier.0.weight": (hidden, 6 * last), "classifier.0.bias": (hidden,)})
    keys.update({"classifier.3.weight": (num_classes, hidden), "classifier.3.bias": (num_classes,)})
    return keys


@pytest.mark.parametrize("width_mult", [1.0, 0.75, 0.5])
def test_v3_small_state_dict_is_torchvisions(width_mult):
    want = _torchvision_small_keys(width_mult, 7)
    sd = torch_impl.mobilenet_v3_small(width_mult=width_mult, num_classes=7).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    ours = numpy_impl.mobilenet_v3_small(width_mult=width_mult, num_classes=7).state_dict()
    assert list(ours) == list(sd) and all(ours[k].shape == tuple(sd[k].shape) for k in sd)
    bn = torch_impl.mobilenet_v3_small().features[0][1]
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)  # torchvision's V3 batch norm


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("arch", ["v3-large", "v3-small"])
def test_v3_matches_torch_in_float64(arch, backend):
    """A training-mode step of the whole model: logits, input gradient, every parameter
    gradient and the running statistics against the torch mirror, float64."""
    m = numpy_impl.mobilenet(arch, dtype=np.float64, backend=backend, seed=3, width_mult=0.35, num_classes=5)
    m._children["classifier"]._children["2"].p = 0.0  # dropout off: masks differ between libraries
    t = torch_impl.mobilenet(arch, width_mult=0.35, num_classes=5, dropout=0.0).double()
    t.load_state_dict(torch_impl.state_dict_to_torch(m.state_dict()))
    rng = np.random.default_rng(1)
    x, dlogits = rng.standard_normal((3, 3, 40, 48)), rng.standard_normal((3, 5))
    m.train()
    t.train()
    y = m.forward(x)
    dx = m.backward(dlogits)
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    yt.backward(torch.tensor(dlogits))

    def err(a, b):  # relative to the array's scale; arrays ~0 by symmetry are measured absolutely
        return np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)

    assert err(y, yt.detach().numpy()) < 1e-11
    assert err(dx, xt.grad.numpy()) < 1e-10
    for name, p in t.named_parameters():
        assert err(m.grads[name], p.grad.numpy()) < 1e-9, name
    ref = t.state_dict()
    for name, a in m.state_dict().items():
        assert err(a, ref[name].numpy()) < 1e-10, name


def test_v3_torchvision_format_weights_convert_both_ways(tmp_path):
    """A torchvision-layout V3 state_dict -> our checkpoint (width inferred) -> .pth, unchanged."""
    from mobilenet.deploy import state_dicts

    sd = torch_impl.mobilenet_v3_large(width_mult=0.75, num_classes=9).state_dict()
    torch.save(sd, tmp_path / "w.pth")
    r = state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz", arch="v3-large")
    assert (r["width_mult"], r["num_classes"]) == (0.75, 9)
    state_dicts.convert(tmp_path / "c.npz", tmp_path / "back.pth")
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="does not match the model: missing keys"):  # Large is not Small
        state_dicts.convert(tmp_path / "w.pth", tmp_path / "d.npz", arch="v3-small")


@pytest.mark.parametrize("arch", ["v3-large", "v3-small"])
def test_v3_blocks_fuse_on_numba_and_match_torch_in_eval(arch):
    """Every V3 block runs as one fused call on the numba backend; eval mode (the tiled path,
    its squeeze-and-excite between two passes) against the torch mirror, float64, with
    running statistics drawn so that no batch norm is the identity."""
    m = numpy_impl.mobilenet(arch, dtype=np.float64, backend="numba", seed=4, width_mult=0.5, num_classes=7)
    blocks = [c for c in m._children["features"]._children.values() if isinstance(c, nn.InvertedResidual)]
    assert len(blocks) == len(A.V3_LARGE if arch == "v3-large" else A.V3_SMALL)
    assert all(b.fused is not None for b in blocks)
    assert {b.activation for b in blocks} == {"relu", "hardswish"}
    rng = np.random.default_rng(2)
    sd = m.state_dict()
    for k, v in sd.items():
        if k.endswith("running_mean"):
            sd[k] = rng.standard_normal(v.shape) * 0.3
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 2.0, v.shape)
    m.load_state_dict(sd)
    t = torch_impl.mobilenet(arch, width_mult=0.5, num_classes=7).double().eval()
    t.load_state_dict(torch_impl.state_dict_to_torch(m.state_dict()))
    m.eval()
    x = rng.standard_normal((2, 3, 64, 56))
    y = m.forward(x)
    with torch.no_grad():
        yt = t(torch.tensor(x)).numpy()
    assert np.abs(y - yt).max() / np.abs(yt).max() < 1e-11


def test_fused_activation_names_the_layouts_the_block_kernel_runs():
    def acts(arch):
        features = dict(A.build_spec(arch).children)["features"]
        return [fusion.fused_activation(b) for _, b in features if isinstance(b, A.Block)]

    assert set(acts("v2")) == {"relu6"}
    assert acts("v3-large") == [{"RE": "relu", "HS": "hardswish"}[r[5]] for r in A.V3_LARGE]
    assert acts("v3-small") == [{"RE": "relu", "HS": "hardswish"}[r[5]] for r in A.V3_SMALL]
    # layouts the kernel does not run: two activations in one block, a 7x7 depthwise
    mixed = A.Block(
        A._seq(
            A._v3_cba(8, 16, 1, act="relu"),
            A._v3_cba(16, 16, 3, groups=16, act="hardswish"),
            A._seq(A.Conv(16, 8, 1), A.BatchNorm(8, **A.V3_BN)),
        ),
        residual=True,
        body="block",
    )
    assert fusion.fused_activation(mixed) is None
    seven = A.bneck(8, 7, 16, 8, True, "HS", 1)
    assert fusion.fused_activation(seven) is None
    assert fusion.fused_activation(A.bneck(8, 5, 16, 8, True, "HS", 1)) == "hardswish"
