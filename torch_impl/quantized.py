"""The quantizable MobileNet in PyTorch (eager mode), and the oracle for the NumPy integer model.

``quantizable(spec, arch)`` is the float model made ready for ``torch.ao.quantization``, as
torchvision's ``QuantizableMobileNetV2/V3`` are: ``QuantStub``/``DeQuantStub`` at the ends,
``FloatFunctional`` for the residual add and squeeze-and-excite's product, ReLU6 replaced by
ReLU (the quantized range does the clipping at 6), and ``fuse(model)`` fusing every
Conv-BN(-ReLU). ``prepare``, calibrate and ``convert`` as usual give torch's own int8 model;
:func:`converted_like` instead sets every scale, zero point and integer weight of the
converted model to those of a ``numpy_impl.quant`` model, so the two can be compared layer by
layer.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.ao import quantization as tq

import mobilenet_arch as A

from .models import InvertedResidual, MobileNet, SqueezeExcite


class QuantizableInvertedResidual(InvertedResidual):
    """``skip_add.add(x, body(x))``: a FloatFunctional, which ``convert`` makes a quantized add."""

    def __init__(self, block: InvertedResidual):
        super().__init__(getattr(block, block.body), block.use_res_connect, block.body)
        self.skip_add = nn.quantized.FloatFunctional()

    def forward(self, x):
        y = getattr(self, self.body)(x)
        return self.skip_add.add(x, y) if self.use_res_connect else y


class QuantizableSqueezeExcite(nn.Module):
    """torchvision's ``QuantizableSqueezeExcitation``: fc1 and its ReLU fused, the gate
    ``nn.Hardsigmoid`` (quantized output: scale 1/256, zero point 0), the product a FloatFunctional."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1, self.relu, self.fc2 = se.fc1, nn.ReLU(), se.fc2
        self.gate = nn.Hardsigmoid()
        self.skip_mul = nn.quantized.FloatFunctional()

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.skip_mul.mul(x, self.gate(self.fc2(self.relu(self.fc1(s)))))


class QuantizableMobileNet(MobileNet):
    """``dequant(classifier(pool(features(quant(x)))))``; the same parameter names as MobileNet."""

    def __init__(self, spec: A.Seq, arch: str):
        super().__init__(spec, arch)
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        for name, m in list(self.named_modules()):
            parent, _, child = name.rpartition(".")
            owner = self.get_submodule(parent) if parent else self
            if isinstance(m, InvertedResidual):
                setattr(owner, child, QuantizableInvertedResidual(m))
            elif isinstance(m, SqueezeExcite):
                setattr(owner, child, QuantizableSqueezeExcite(m))
            elif isinstance(m, nn.ReLU6):
                setattr(owner, child, nn.ReLU())

    def forward(self, x):
        return self.dequant(super().forward(self.quant(x)))


def fusion_groups(spec: A.Seq, prefix="") -> list[list[str]]:
    """Module names to fuse: each Conv with the BatchNorm after it and a following ReLU/ReLU6, and
    each squeeze-and-excite's fc1 with its ReLU."""
    groups, children = [], list(spec)
    for i, (name, child) in enumerate(children):
        path = prefix + name
        after = [c for _, c in children[i + 1 : i + 3]]
        if isinstance(child, A.Conv) and after and isinstance(after[0], A.BatchNorm):
            group = [path, prefix + children[i + 1][0]]
            if len(after) > 1 and isinstance(after[1], A.Act) and after[1].kind in ("relu", "relu6"):
                group.append(prefix + children[i + 2][0])
            groups.append(group)
        elif isinstance(child, A.Seq):
            groups += fusion_groups(child, path + ".")
        elif isinstance(child, A.Block):
            groups += fusion_groups(child.conv, f"{path}.{child.body}.")
        elif isinstance(child, A.SqueezeExcite):
            groups.append([path + ".fc1", path + ".relu"])
    return groups


def quantizable(spec: A.Seq, arch: str, state_dict=None) -> QuantizableMobileNet:
    """The quantizable float model in eval mode, fused, with ``state_dict`` loaded when given."""
    model = QuantizableMobileNet(spec, arch)
    if state_dict is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()})
    model.eval()
    return tq.fuse_modules(model, fusion_groups(spec), inplace=True)


def convert(model: QuantizableMobileNet, calibration_batches, engine="x86") -> nn.Module:
    """torch's own post-training quantization of a :func:`quantizable` model: the engine's default
    qconfig, its observers run on ``calibration_batches`` (float tensors), then ``convert``."""
    torch.backends.quantized.engine = engine
    model.qconfig = tq.get_default_qconfig(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates eager-mode quantization (PT2E)
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for x in calibration_batches:
                model(torch.as_tensor(x))
        return tq.convert(model, inplace=True)


def converted_like(qmodel, float_state_dict, engine="x86") -> nn.Module:
    """The converted torch model carrying exactly ``qmodel``'s integers and qparams
    (``qmodel`` a ``numpy_impl.quant.QuantizedMobileNet``; ``float_state_dict`` its float model's)."""
    model = quantizable(qmodel.spec, qmodel.arch, float_state_dict)
    shape = (1, 3, A.MIN_RESOLUTION, A.MIN_RESOLUTION)
    model = convert(model, [torch.zeros(shape)], engine)  # the structure; every value is replaced below
    model.quant.scale.fill_(qmodel.qin.scale)
    model.quant.zero_point.fill_(qmodel.qin.zero_point)
    for name, layer in qmodel.named_layers():
        _set_layer(model, name, layer)
    return model


def _set_layer(model, name, layer):
    """One layer of a ``numpy_impl.quant`` model into its converted module(s); recognised by what
    it holds (torch_impl does not import numpy_impl): a convolution or linear layer has ``w_q``,
    a residual block ``residual``, a squeeze-and-excite ``fc1``."""
    if hasattr(layer, "w_q"):
        m = model.get_submodule(name)
        k = layer.w_q.shape[0]
        w = torch._make_per_channel_quantized_tensor(
            torch.from_numpy(layer.w_q.astype(np.int8)),
            torch.from_numpy(layer.w_scale.astype(np.float64)),
            torch.zeros(k, dtype=torch.long),
            0,
        )
        # torch divides a float bias by s_x * s_w itself: give it the int32 bias's real value
        bias = layer.b_q * (np.float32(layer.qin.scale) * layer.w_scale)
        m.set_weight_bias(w, torch.from_numpy(bias.astype(np.float32)))
        m.scale, m.zero_point = float(layer.qout.scale), int(layer.qout.zero_point)
        if layer.act == "hardswish":
            act = model.get_submodule(layer.act_name)
            act.scale.fill_(layer.qact.scale)
            act.zero_point.fill_(layer.qact.zero_point)
    elif getattr(layer, "residual", False):
        f = model.get_submodule(name).skip_add
        f.scale, f.zero_point = float(layer.qout.scale), int(layer.qout.zero_point)
    elif hasattr(layer, "fc1"):
        f = model.get_submodule(name).skip_mul
        f.scale, f.zero_point = float(layer.qout.scale), int(layer.qout.zero_point)


def intermediates(model, x, names) -> dict:
    """``{name: (input, output)}``: the integers (``int_repr``) going into and out of each named
    module of a converted model for ``x`` (the first input, for a module that takes several)."""
    out, hooks = {}, []
    for name in names:
        m = model.get_submodule(name)
        hooks.append(m.register_forward_hook(lambda _m, i, y, name=name: out.__setitem__(name, (i[0], y))))
    try:
        with torch.no_grad():
            model(torch.as_tensor(x))
    finally:
        for h in hooks:
            h.remove()
    return {k: tuple(t.int_repr().numpy().astype(np.int32) for t in v) for k, v in out.items()}
