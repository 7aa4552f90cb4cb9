"""SSDLite on MobileNetV2 in PyTorch, parameter for parameter ``numpy_impl.detector.SSDLite``:
the oracle the NumPy detector is checked against."""

from __future__ import annotations

import torch
from torch import nn

import mobilenet_arch as A

from .models import build


class SSDLite(nn.Module):
    """``forward(x)`` -> ``(loc (N, D, 4), conf (N, D, num_classes))``, in the order of
    ``numpy_impl.boxes.default_boxes``."""

    def __init__(self, spec: A.Seq):
        super().__init__()
        parts = dict(spec.children)
        self.body1, self.body2 = build(parts["body1"]), build(parts["body2"])
        self.extras, self.cls, self.reg = build(parts["extras"]), build(parts["cls"]), build(parts["reg"])
        self.anchors = self.reg[0][-1].out_channels // 4
        self.num_classes = self.cls[0][-1].out_channels // self.anchors

    def forward(self, x):
        maps = [self.body1(x)]
        maps.append(self.body2(maps[0]))
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        n = x.shape[0]
        locs = [reg(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for f, reg in zip(maps, self.reg)]
        k = self.num_classes
        confs = [cls(f).permute(0, 2, 3, 1).reshape(n, -1, k) for f, cls in zip(maps, self.cls)]
        return torch.cat(locs, 1), torch.cat(confs, 1)


def ssdlite(width_mult=1.0, num_classes=7, **spec_kwargs) -> SSDLite:
    """See ``numpy_impl.detector.ssdlite``."""
    return SSDLite(A.ssdlite_spec(width_mult, num_classes, **spec_kwargs))
