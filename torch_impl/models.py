"""MobileNetV1, V2 and V3 as ``torch.nn.Module``s, built from the same specs as the NumPy models.

``mobilenet_v2``'s state_dict is key for key and shape for shape that of
``torchvision.models.mobilenet_v2`` at the same width, so torchvision weights
load with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

import mobilenet_arch as A


class InvertedResidual(nn.Module):
    """The body under torchvision's name for it: ``conv`` (MobileNetV2) or ``block`` (V3)."""

    def __init__(self, conv: nn.Sequential, residual: bool, body: str = "conv"):
        super().__init__()
        self.body = body
        setattr(self, body, conv)
        self.use_res_connect = residual

    def forward(self, x):
        y = getattr(self, self.body)(x)
        return x + y if self.use_res_connect else y


class Hardsigmoid(nn.Module):
    """``relu6(x + 3) / 6``, torch's hardsigmoid by the same operations. Not ``nn.Hardsigmoid``:
    its float64 backward multiplies by 1/6 rounded to float32 (3e-8 off), which would blur the
    float64 comparisons with the NumPy model at 1e-9."""

    def forward(self, x):
        return nn.functional.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    """torchvision's ``SqueezeExcitation`` with MobileNetV3's gate: ``fc1``/``fc2`` as there."""

    def __init__(self, spec: A.SqueezeExcite):
        super().__init__()
        self.fc1, self.fc2 = _leaf(spec.fc1), _leaf(spec.fc2)
        self.gate = Hardsigmoid()

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(nn.functional.relu(self.fc1(s))))


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "hardsigmoid": Hardsigmoid}


def _leaf(spec) -> nn.Module:
    if isinstance(spec, A.Conv):
        return nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            spec.stride,
            spec.padding,
            groups=spec.groups,
            bias=spec.bias,
        )
    if isinstance(spec, A.BatchNorm):
        return nn.BatchNorm2d(spec.num_features, eps=spec.eps, momentum=spec.momentum)
    if isinstance(spec, A.Act):
        return ACTIVATIONS[spec.kind]()
    if isinstance(spec, A.Dropout):
        return nn.Dropout(spec.p)
    if isinstance(spec, A.Pool):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    if isinstance(spec, A.Linear):
        return nn.Linear(spec.in_features, spec.out_features)
    raise TypeError(f"unknown spec leaf {spec!r}")


def build(spec) -> nn.Module:
    if isinstance(spec, A.Seq):
        return nn.Sequential(OrderedDict((name, build(child)) for name, child in spec))
    if isinstance(spec, A.Block):
        return InvertedResidual(build(spec.conv), spec.residual, spec.body)
    if isinstance(spec, A.SqueezeExcite):
        return SqueezeExcite(spec)
    return _leaf(spec)


class MobileNet(nn.Module):
    """``features`` -> ``pool`` (global average, flatten) -> ``classifier``."""

    def __init__(self, spec: A.Seq, arch: str):
        super().__init__()
        parts = dict(spec.children)
        self.arch = arch
        self.features = build(parts["features"])
        self.pool = build(parts["pool"])
        self.classifier = build(parts["classifier"])
        self.reset_parameters()

    def reset_parameters(self):
        """torchvision's MobileNetV2 initialisation (used for V1 as well)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # --- transfer learning (the same methods as numpy_impl's MobileNet) -------------
    def stages(self) -> list:
        """The entries of ``features``, in order (the units ``freeze(upto)`` counts)."""
        return list(self.features)

    def freeze(self, upto="features"):
        """See ``numpy_impl.models.MobileNet.freeze``; here frozen parameters get
        ``requires_grad=False``."""
        frozen = self.stages()[: A.frozen_stages(upto, len(self.stages()))]
        self.unfreeze()
        for stage in frozen:
            for m in stage.modules():
                m.frozen = True
            for p in stage.parameters():
                p.requires_grad_(False)
                p.grad = None
        return self.train(self.training)

    def unfreeze(self):
        for m in self.modules():
            m.frozen = False
        for p in self.parameters():
            p.requires_grad_(True)
        return self.train(self.training)

    def trainable_names(self) -> list[str]:
        """Names of the parameters an optimiser should update (those not frozen)."""
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def replace_classifier(self, num_classes: int, seed: int = 0):
        """A fresh final Linear ``in_features -> num_classes`` (normal(0, 0.01), bias 0, seeded)."""
        num_classes = A.check_num_classes("replace_classifier", num_classes)
        old = self.classifier[-1]
        new = nn.Linear(old.in_features, num_classes).to(old.weight.dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            new.weight.copy_(torch.randn(new.weight.shape, generator=g, dtype=new.weight.dtype) * 0.01)
            new.bias.zero_()
        self.classifier[-1] = new
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if getattr(m, "frozen", False):
                m.eval()  # a frozen part keeps its BN statistics (freeze)
        return self

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"forward: x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[2:]) < A.MIN_RESOLUTION:
            raise ValueError(
                f"forward: input resolution must be >= {A.MIN_RESOLUTION} px, got {x.shape[2]}x{x.shape[3]}"
            )
        return self.classifier(self.pool(self.features(x)))


def mobilenet(arch, **spec_kwargs) -> MobileNet:
    """Any architecture of ``mobilenet_arch.ARCHS`` by name; see ``numpy_impl.mobilenet``."""
    return MobileNet(A.build_spec(arch, **spec_kwargs), arch)


def mobilenet_v1(width_mult=1.0, num_classes=1000, dropout=1e-3) -> MobileNet:
    """MobileNetV1 (Howard et al. 2017); see ``numpy_impl.mobilenet_v1``."""
    return MobileNet(A.v1_spec(width_mult=width_mult, num_classes=num_classes, dropout=dropout), "v1")


def mobilenet_v2(width_mult=1.0, num_classes=1000, dropout=0.2, round_nearest=8) -> MobileNet:
    """MobileNetV2 (Sandler et al. 2018), state_dict-compatible with torchvision's."""
    spec = A.v2_spec(
        width_mult=width_mult, num_classes=num_classes, dropout=dropout, round_nearest=round_nearest
    )
    return MobileNet(spec, "v2")


def mobilenet_v3_large(width_mult=1.0, num_classes=1000, dropout=0.2) -> MobileNet:
    """MobileNetV3-Large (Howard et al. 2019), state_dict-compatible with torchvision's."""
    return MobileNet(
        A.v3_large_spec(width_mult=width_mult, num_classes=num_classes, dropout=dropout), "v3-large"
    )


def mobilenet_v3_small(width_mult=1.0, num_classes=1000, dropout=0.2) -> MobileNet:
    """MobileNetV3-Small (Howard et al. 2019), state_dict-compatible with torchvision's."""
    return MobileNet(
        A.v3_small_spec(width_mult=width_mult, num_classes=num_classes, dropout=dropout), "v3-small"
    )


def state_dict_to_torch(state_dict) -> dict:
    """NumPy arrays -> tensors (a copy), for ``module.load_state_dict``."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}


def state_dict_to_numpy(state_dict) -> dict:
    """Tensors -> NumPy arrays (a copy), for the NumPy model's ``load_state_dict``."""
    return {k: v.detach().cpu().numpy().copy() for k, v in state_dict.items()}
