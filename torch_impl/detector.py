"""SSDLite on MobileNetV2 in PyTorch, parameter for parameter ``numpy_impl.detector.SSDLite``:
the oracle the NumPy detector is checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

import mobilenet_arch as A

from .models import build

HEAD_INIT_STD = 0.03  # numpy_impl.detector.HEAD_INIT_STD


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
        for part in (self.extras, self.cls, self.reg):  # as numpy_impl.detector (torchvision's init)
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, HEAD_INIT_STD)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

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


def ssd_loss(loc, conf, loc_target, labels, neg_pos_ratio: int = 3):
    """The SSD loss as torchvision's ``SSD.compute_loss`` for (N, D) matched targets: smooth L1 on
    the positives, cross-entropy on the positives and each image's ``neg_pos_ratio`` x as many
    hardest negatives (ties broken by the lower index), over max(1, N_pos). Autograd gives its
    backward; ``numpy_impl.detection.ssd_loss`` writes the same loss and backward out by hand."""
    positive = labels > 0
    loc_loss = TF.smooth_l1_loss(loc[positive], loc_target[positive], reduction="sum")
    k = conf.shape[-1]
    ce = TF.cross_entropy(conf.reshape(-1, k), labels.reshape(-1), reduction="none").reshape(labels.shape)
    neg = ce.detach().clone()
    neg[positive] = -torch.inf
    rank = torch.sort(torch.sort(-neg, dim=1, stable=True)[1], dim=1, stable=True)[1]
    budget = torch.minimum(neg_pos_ratio * positive.sum(1, keepdim=True), (~positive).sum(1, keepdim=True))
    selected = positive | (rank < budget)
    norm = max(1, int(positive.sum()))
    return loc_loss / norm, ce[selected].sum() / norm
