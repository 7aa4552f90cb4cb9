"""The Numba kernels inside torch: ``torch.autograd.Function`` wrappers and modules.

Tensors cross to NumPy without a copy (CPU tensors share memory with ``.numpy()``),
channels_last tensors stay channels_last, and the kernels' backward passes become
the Functions' backward. Both Functions pass ``torch.autograd.gradcheck`` in float64
(tests/test_numba_ops.py).

    conv = NumbaDepthwiseConv2d(32, stride=2, padding=1)         # an nn.Module
    block = FusedInvertedResidual(model.features[3])             # shares that block's parameters
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import kernels

from .models import InvertedResidual


def _np(t):
    return None if t is None else t.detach().numpy()


def _check_cpu(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU (the kernels are Numba CPU kernels), got {t.device}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}; convert it with .float()")


class DepthwiseConv2dFunction(torch.autograd.Function):
    """``F.conv2d(x, w, stride=..., padding=..., dilation=..., groups=C)`` on the Numba kernels."""

    @staticmethod
    def forward(ctx, x, w, stride=1, padding=0, dilation=1):
        _check_cpu("x", x)
        _check_cpu("w", w)
        out = kernels.depthwise_conv2d(_np(x), _np(w), stride, padding, dilation)
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, dout):
        x, w = ctx.saved_tensors
        dx, dw = kernels.depthwise_conv2d_backward(_np(dout), _np(x), _np(w), *ctx.conf)
        dx = torch.from_numpy(dx) if ctx.needs_input_grad[0] else None
        dw = torch.from_numpy(dw) if ctx.needs_input_grad[1] else None
        return dx, dw, None, None, None


def depthwise_conv2d(x, w, stride=1, padding=0, dilation=1):
    return DepthwiseConv2dFunction.apply(x, w, stride, padding, dilation)


class NumbaDepthwiseConv2d(nn.Module):
    """A depthwise ``nn.Conv2d(C, C, k, groups=C, bias=False)`` running on the kernels."""

    def __init__(self, channels, kernel_size=3, stride=1, padding=1, dilation=1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x):
        return depthwise_conv2d(x, self.weight, self.stride, self.padding, self.dilation)


class InvertedResidualFunction(torch.autograd.Function):
    """The fused block in training mode; inputs: x, then per conv (weight, bn weight, bn bias)
    with None for the missing expansion, then the running statistics (updated in place)."""

    @staticmethod
    def forward(
        ctx, x, ew, e_bw, e_bb, dw, d_bw, d_bb, pw, p_bw, p_bb, stats, stride, residual, momentum, eps
    ):
        for name, t in (("x", x), ("depthwise weight", dw), ("project weight", pw)):
            _check_cpu(name, t)
        weights = (_np(ew), _np(dw), _np(pw))
        bns = tuple(
            None if w is None else (_np(w), _np(b), _np(m), _np(v))
            for w, b, m, v in (
                (e_bw, e_bb, *stats[0:2]),
                (d_bw, d_bb, *stats[2:4]),
                (p_bw, p_bb, *stats[4:6]),
            )
        )
        y, ctx.cache = kernels.inverted_residual(_np(x), weights, bns, stride, residual, True, momentum, eps)
        ctx.has_expand = ew is not None
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, dy):
        dx, (dew, ddw, dpw), (dbn0, dbn1, dbn2) = kernels.inverted_residual_backward(_np(dy), ctx.cache)
        t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        e = (t(dew), t(dbn0[0]), t(dbn0[1])) if ctx.has_expand else (None, None, None)
        return (
            t(dx),
            *e,
            t(ddw),
            t(dbn1[0]),
            t(dbn1[1]),
            t(dpw),
            t(dbn2[0]),
            t(dbn2[1]),
            None,
            None,
            None,
            None,
            None,
        )


class FusedInvertedResidual(InvertedResidual):
    """Runs a ``torch_impl`` InvertedResidual block on the fused kernel, sharing its parameters
    and buffers under the same names (so state_dict keys and optimisers are unchanged).

    Training mode: the fused forward and backward. Eval mode: the tiled inference kernel
    under ``torch.no_grad()``; with gradients enabled in eval mode it runs the block's own
    torch layers (the tiled kernel keeps nothing for a backward).
    """

    def __init__(self, block: InvertedResidual):
        if not isinstance(block, InvertedResidual):
            raise TypeError(f"block must be a torch_impl InvertedResidual, got {type(block).__name__}")
        if block.body != "conv":
            raise ValueError(
                "FusedInvertedResidual: only MobileNetV2's blocks have a fused kernel; this one is "
                f"MobileNetV3's (its body is {block.body!r}: squeeze-and-excite, hard-swish, 5x5)"
            )
        super().__init__(block.conv, block.use_res_connect)
        self.train(block.training)  # a new Module starts in training mode

    # views into self.conv (not attributes: those would register the layers twice)
    expand = property(lambda self: None if len(self.conv) == 3 else self.conv[0])
    dw = property(lambda self: self.conv[-3])
    project = property(lambda self: self.conv[-2])
    bn = property(lambda self: self.conv[-1])

    def _bns(self):
        return (None if self.expand is None else self.expand[1], self.dw[1], self.bn)

    def forward(self, x):
        bns = self._bns()
        stride = self.dw[0].stride[0]
        if (
            not self.training
            and torch.is_grad_enabled()
            and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        ):
            return super().forward(x)
        if not self.training:
            weights = (
                None if self.expand is None else _np(self.expand[0].weight),
                _np(self.dw[0].weight),
                _np(self.project.weight),
            )
            stats = tuple(
                None if b is None else (_np(b.weight), _np(b.bias), _np(b.running_mean), _np(b.running_var))
                for b in bns
            )
            y, _ = kernels.inverted_residual(
                _np(x), weights, stats, stride, self.use_res_connect, False, eps=self.bn.eps
            )
            return torch.from_numpy(y)
        for b in bns:
            if b is not None:
                b.num_batches_tracked += 1
        e = (None, None, None) if self.expand is None else (self.expand[0].weight, bns[0].weight, bns[0].bias)
        stats = []
        for b in bns:
            stats += [None, None] if b is None else [b.running_mean, b.running_var]
        d = (self.dw[0].weight, bns[1].weight, bns[1].bias)
        p = (self.project.weight, bns[2].weight, bns[2].bias)
        conf = (tuple(stats), stride, self.use_res_connect, self.bn.momentum, self.bn.eps)
        return InvertedResidualFunction.apply(x, *e, *d, *p, *conf)


def fuse_inverted_residuals(model: nn.Module) -> nn.Module:
    """Replace every InvertedResidual of a torch_impl MobileNetV2 by a FusedInvertedResidual (in place)."""
    for name, child in model.named_children():
        if isinstance(child, InvertedResidual) and not isinstance(child, FusedInvertedResidual):
            setattr(model, name, FusedInvertedResidual(child))
        else:
            fuse_inverted_residuals(child)
    return model
