"""torch_impl.quantized: torch's converted int8 MobileNet, carrying our integers, against the
NumPy integer model, layer by layer (engine onednn, see ``test_quant_ops``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from numpy_impl import models
from numpy_impl.quant import model as qm
from numpy_impl.quant import ops
from numpy_impl.quant.layers import HARDSIGMOID_OUT, QBlock, QConv, QPool, QSqueezeExcite
from torch_impl import quantized as tqz

pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")


@pytest.fixture(scope="module", params=["v1", "v2", "v3-small", "v3-large"])
def pair(request):
    """(float model, integer model, converted torch model, images): BN statistics re-estimated on
    the images so that activations are realistic (a fresh model's vanish layer by layer)."""
    rng = np.random.default_rng(7)
    m = models.mobilenet(request.param, width_mult=0.35, num_classes=10)
    xs = [rng.normal(0, 1, (6, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    m.reestimate_batch_norm(xs).eval()
    q = qm.quantize(m, xs)
    before = torch.backends.quantized.engine
    t = tqz.converted_like(q, m.state_dict(), engine="onednn")
    yield m, q, t, xs[0][:4]
    torch.backends.quantized.engine = before


def _torch_names(q):
    """The torch module behind each of our recorded outputs, and the modules a check needs."""
    names = ["pool"]
    for name, layer in q.named_layers():
        if isinstance(layer, QConv):
            names += [name] + ([layer.act_name] if layer.act == "hardswish" else [])
        elif isinstance(layer, QBlock) and layer.residual:
            names += [name, f"{name}.{'block' if q.arch.startswith('v3') else 'conv'}"]
        elif isinstance(layer, QSqueezeExcite):
            names += [name, name + ".gate"]
    return names


def test_every_layer_given_torchs_input_is_within_one_unit(pair):
    """Each layer run on the integers torch fed its module: the same integers out, up to one unit
    where oneDNN rounds a tie of its float32 requantization the other way (rare)."""
    _, q, t, x = pair
    got = tqz.intermediates(t, x, _torch_names(q))
    body = "block" if q.arch.startswith("v3") else "conv"
    checked, differ = 0, 0
    for name, layer in q.named_layers():
        if isinstance(layer, QConv):
            pairs = [(layer.forward_conv(got[name][0]), got[name][1])]
            if layer.act == "hardswish":
                i, o = got[layer.act_name]
                pairs.append((ops.lookup(i, layer.table, layer.qout), o))
        elif isinstance(layer, QBlock) and layer.residual:
            (x_in, out), (_, y) = got[name], got[f"{name}.{body}"]
            pairs = [(ops.add(x_in, layer.qin, y, layer.qbody, layer.qout), out)]
        elif isinstance(layer, QSqueezeExcite):
            (x_in, out), (_, gate) = got[name], got[name + ".gate"]
            pairs = [(ops.mul(x_in, layer.qin, gate, HARDSIGMOID_OUT, layer.qout), out)]
        elif isinstance(layer, QPool):
            i, o = got["pool"]
            pairs = [(layer.forward(i), o)]
        else:
            continue
        for ours, theirs in pairs:
            d = np.abs(ours.astype(np.int64) - theirs.reshape(ours.shape))
            assert d.max() <= 1, name
            checked, differ = checked + d.size, differ + int((d > 0).sum())
    assert checked > 0 and differ <= 1e-3 * checked


def test_whole_model_equals_torch(pair):
    """End to end from the same float images: every recorded output equal, logits included (on
    these images no tie falls differently; one that did would propagate)."""
    _, q, t, x = pair
    ours = q.intermediates(x)
    theirs = tqz.intermediates(t, x, [n for n in ours if n != "input"])
    for name, (i, _) in ours.items():
        if name != "input":
            np.testing.assert_array_equal(i, theirs[name][1].reshape(i.shape), err_msg=name)
    np.testing.assert_array_equal(q.forward(x), t(torch.from_numpy(x)).numpy())


def test_torchs_own_post_training_quantization_runs():
    """The quantizable mirror through torch's own prepare/convert (its observers, engine x86): its
    first layer's output within two of its steps of the float layer's."""
    rng = np.random.default_rng(0)
    m = models.mobilenet("v2", width_mult=0.35, num_classes=5)
    xs = [rng.normal(0, 1, (4, 3, 32, 32)).astype(np.float32)]
    m.reestimate_batch_norm(xs).eval()
    before = torch.backends.quantized.engine
    try:
        t = tqz.convert(tqz.quantizable(m.spec, "v2", m.state_dict()), [torch.from_numpy(xs[0])], "x86")
        first = t.features[0][0]
        (_, y), logits = (
            tqz.intermediates(t, xs[0], ["features.0.0"])["features.0.0"],
            t(torch.from_numpy(xs[0])),
        )
    finally:
        torch.backends.quantized.engine = before
    folded = qm.quantize(m, xs).layers[0].calibrate(xs[0])  # conv + BN + ReLU6 in float
    err = np.abs((y - first.zero_point) * first.scale - folded) / first.scale
    assert np.quantile(err, 0.99) <= 2 and logits.shape == (4, 5) and torch.isfinite(logits).all()
