"""numpy_impl.quant.model (and .layers): folding, calibration, the integer network and its state."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import qops
from kernels._vnni import HAS_VNNI
from numpy_impl import functional as F
from numpy_impl import models
from numpy_impl.quant import affine, ops
from numpy_impl.quant import model as qm
from numpy_impl.quant.layers import QBlock, QConv


def _model(arch, seed=3, classes=10):
    rng = np.random.default_rng(seed)
    m = models.mobilenet(arch, width_mult=0.35, num_classes=classes)
    xs = [rng.normal(0, 1, (6, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    return m.reestimate_batch_norm(xs).eval(), xs


@pytest.fixture(scope="module", params=["v1", "v2", "v3-small", "v3-large"])
def quantized(request):
    m, xs = _model(request.param)
    return m, qm.quantize(m, xs), xs


def test_fold_batch_norm_equals_conv_then_batch_norm():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 4, 6, 6)), rng.normal(size=(5, 4, 3, 3)), rng.normal(size=5)
    g, beta, mean, var = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.1, 2, 5)
    y, _ = F.batch_norm(F.conv2d(x, w, b, padding=1), g, beta, mean.copy(), var.copy(), False, 0.1, 1e-3)
    wf, bf = qm.fold_batch_norm(w, b, g, beta, mean, var, 1e-3)
    np.testing.assert_allclose(F.conv2d(x.astype(np.float32), wf, bf, padding=1), y, rtol=1e-4, atol=1e-4)


def test_folded_float_network_equals_the_model(quantized):
    m, q, xs = quantized
    x = xs[1]
    y = x
    for layer in q.layers:
        y = layer.calibrate(y)
    ref = m.forward(x)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_every_layer_is_within_half_a_step_of_float_on_its_integers(quantized):
    """Each convolution's integers, dequantized, equal the float convolution of its dequantized
    input with its dequantized weights and bias, rounded to the output's step: no more than half
    a step away (the requantization's rounding), clamps applied."""
    _, q, xs = quantized
    seen = []
    for _, layer in q.named_layers():
        if isinstance(layer, QConv):
            layer.forward_conv = _spy(layer.forward_conv, layer, seen)
    try:
        q.forward(xs[0][:3])
    finally:
        for _, layer in q.named_layers():
            layer.__dict__.pop("forward_conv", None)
    assert len(seen) == sum(isinstance(layer, QConv) for _, layer in q.named_layers())
    for layer, x, y in seen:
        xin = affine.dequantize(x, layer.qin.scale, layer.qin.zero_point)
        w = affine.dequantize(layer.w_q, layer.w_scale, 0, axis=0)
        b = (layer.b_q * (np.float32(layer.qin.scale) * layer.w_scale)).astype(np.float32)
        if layer.linear:
            f = F.linear(xin, w, b)
        else:
            f = F.conv2d(xin, w, b, stride=layer.stride, padding=layer.padding, groups=layer.groups)
        o = layer.qout
        lo = 0.0 if layer.act in ("relu", "relu6") else o.scale * (o.qmin - o.zero_point)
        f = np.clip(f, lo, o.scale * (o.qmax - o.zero_point))
        err = np.abs(affine.dequantize(y, o.scale, o.zero_point) - f) / o.scale
        assert err.max() <= 0.5 + 1e-3, layer.name  # 1e-3: float32 rounding of f itself


def _spy(fn, layer, seen):
    def wrapped(q):
        y = fn(q)
        seen.append((layer, q, y))
        return y

    return wrapped


def test_state_dict_round_trip(quantized):
    m, q, xs = quantized
    sd = q.state_dict()
    assert all(v.dtype == np.int8 for k, v in sd.items() if k.endswith("weight_q"))
    assert all(v.dtype == np.int32 for k, v in sd.items() if k.endswith("bias_q"))
    fresh = qm.QuantizedMobileNet(m.spec, m.arch, m.state_dict(), q.cfg).load_state_dict(sd)
    np.testing.assert_array_equal(fresh.forward(xs[1]), q.forward(xs[1]))


def test_fixed_point_scheme_is_within_one_unit_layer_by_layer():
    """Given the same integers in, every convolution of the "fixed" model is within one unit of
    the "float" model's (the schemes share every scale: they differ only in rounding ``acc * M``)."""
    m, xs = _model("v2")
    a, b = qm.quantize(m, xs), qm.quantize(m, xs, scheme="fixed")
    seen = []
    for _, layer in a.named_layers():
        if isinstance(layer, QConv):
            layer.forward_conv = _spy(layer.forward_conv, layer, seen)
    a.forward(xs[1][:3])
    fixed = dict(b.named_layers())
    assert seen
    for layer, x, y in seen:
        assert np.abs(fixed[layer.name].forward_conv(x).astype(np.int64) - y).max() <= 1, layer.name


def test_per_tensor_and_low_bits():
    m, xs = _model("v2")
    q = qm.quantize(m, xs, per_channel=False, bits=4)
    for _, layer in q.named_layers():
        if isinstance(layer, QConv):
            assert np.unique(layer.w_scale).size == 1 and np.abs(layer.w_q).max() <= 7
            assert layer.qout.qmax == 15
        if isinstance(layer, QBlock) and layer.residual:
            assert layer.qout.qmax == 15


def test_refusals():
    m, xs = _model("v1")
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        qm.quantize(m, [])
    with pytest.raises(ValueError, match="observer must be one of"):
        qm.quantize(m, xs, observer="kl")
    with pytest.raises(TypeError, match="float32"):
        qm.quantize(m, [xs[0].astype(np.float64)])
    with pytest.raises(ValueError, match="NaN or inf"):
        qm.quantize(m, [np.full_like(xs[0], np.nan)])
    q = qm.QuantizedMobileNet(m.spec, m.arch, m.state_dict(), qm.QuantConfig())
    with pytest.raises(RuntimeError, match="calibrate and freeze first"):
        q.forward(xs[0])
    m.params["features.0.0.weight"][0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf in \['features.0.0.weight'\]"):
        qm.quantize(m, xs)


def test_constant_calibration_images_give_finite_scales():
    m, _ = _model("v2")
    q = qm.quantize(m, [np.zeros((2, 3, 32, 32), np.float32)])
    assert q.qin.scale == affine.EPS
    for _, layer in q.named_layers():
        if isinstance(layer, QConv):
            assert np.isfinite(layer.requant.M).all() and layer.qout.scale > 0
    out = q.forward(np.zeros((1, 3, 32, 32), np.float32))
    assert np.isfinite(out).all()


def test_requant_is_per_channel():
    """A per-channel multiplier really is applied per channel (a per-tensor one would not give this)."""
    rq = ops.Requant.make(1.0, np.array([1.0, 0.5], np.float32), ops.QParams(1.0, 0, 0, 255))
    np.testing.assert_array_equal(rq(np.full((1, 2, 1, 1), 10)), [[[[10]], [[5]]]])


def test_numba_backend_equals_numpy_on_every_layer(quantized):
    """The integer kernels (kernels.qops) give the reference's integers at every layer."""
    m, q, xs = quantized
    ref = q.intermediates(xs[1][:3])
    try:
        got = q.set_backend("numba").intermediates(xs[1][:3])
    finally:
        q.set_backend("numpy")
    assert got.keys() == ref.keys()
    for name, (a, _) in ref.items():
        np.testing.assert_array_equal(got[name][0], a, err_msg=name)


@pytest.mark.parametrize("tiles", ["default", "one row each"])
def test_numba_fused_blocks_equal_numpy(quantized, tiles, monkeypatch):
    """A forward (not recording) runs each plain inverted residual as one fused kernel call
    (where the CPU has VNNI): the same logits, untiled (the default) or tiled down to one output
    row per tile (every band's halo rows, and the image borders, inside a tile)."""
    if tiles != "default":
        monkeypatch.setattr(qops, "TILED", True)
        monkeypatch.setattr(qops, "TILE_BYTES", 1)
        monkeypatch.setattr(qops, "TILE_MIN", 1)
    m, q, xs = quantized
    ref = q.forward(xs[1][:3])
    try:
        q.set_backend("numba")
        fused = [layer.fused for _, layer in q.named_layers() if isinstance(layer, QBlock)]
        got = q.forward(xs[1][:3])
    finally:
        q.set_backend("numpy")
    if HAS_VNNI and m.arch != "v1":
        assert any(f is not None for f in fused)
        tiled = any(t is not None for f in fused if f is not None for t in f._tiles.values())
        assert tiled == (tiles != "default")
    np.testing.assert_array_equal(got, ref)
