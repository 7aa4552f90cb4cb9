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

from .models import InvertedResidual, SqueezeExcite


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
    with None for the missing expansion, the squeeze-and-excite's (w1, b1, w2, b2) or four
    None, then the running statistics (updated in place) and the block's settings."""

    @staticmethod
    def forward(
        ctx, x, ew, e_bw, e_bb, dw, d_bw, d_bb, pw, p_bw, p_bb, w1, b1, w2, b2, stats, stride, residual,
        momentum, eps, activation,
    ):  # fmt: skip
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
        se = None if w1 is None else (_np(w1), _np(b1), _np(w2), _np(b2))
        y, ctx.cache = kernels.inverted_residual(
            _np(x), weights, bns, stride, residual, True, momentum, eps, activation=activation, se=se
        )
        ctx.has_expand, ctx.has_se = ew is not None, se is not None
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, dy):
        grads = kernels.inverted_residual_backward(_np(dy), ctx.cache)
        dx, (dew, ddw, dpw), (dbn0, dbn1, dbn2) = grads[:3]
        t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        e = (t(dew), t(dbn0[0]), t(dbn0[1])) if ctx.has_expand else (None, None, None)
        se = tuple(t(a) for a in grads[3]) if ctx.has_se else (None,) * 4
        return (t(dx), *e, t(ddw), t(dbn1[0]), t(dbn1[1]), t(dpw), t(dbn2[0]), t(dbn2[1]), *se) + (None,) * 6


_ACTIVATIONS = {nn.ReLU6: "relu6", nn.ReLU: "relu", nn.Hardswish: "hardswish"}


class FusedInvertedResidual(InvertedResidual):
    """Runs a ``torch_impl`` InvertedResidual block (MobileNetV2's, or V3's with its activation,
    5x5 depthwise and squeeze-and-excite) on the fused kernel, sharing its parameters and
    buffers under the same names (so state_dict keys and optimisers are unchanged).

    Training mode: the fused forward and backward. Eval mode: the tiled inference kernel
    under ``torch.no_grad()``; with gradients enabled in eval mode it runs the block's own
    torch layers (the tiled kernel keeps nothing for a backward).
    """

    def __init__(self, block: InvertedResidual):
        if not isinstance(block, InvertedResidual):
            raise TypeError(f"block must be a torch_impl InvertedResidual, got {type(block).__name__}")
        super().__init__(getattr(block, block.body), block.use_res_connect, block.body)
        self.activation = self._layout()
        self.train(block.training)  # a new Module starts in training mode

    def _stages(self):
        """(expand Seq or None, depthwise Seq, SqueezeExcite or None, project conv, project BN)."""
        layers = list(getattr(self, self.body))
        if isinstance(layers[-1], nn.Sequential):  # V3: the projection is a Sequential of its own
            layers[-1:] = list(layers[-1])
        se = [m for m in layers if isinstance(m, SqueezeExcite)]
        layers = [m for m in layers if not isinstance(m, SqueezeExcite)]
        expand = layers[0] if len(layers) == 4 else None
        return expand, layers[-3], se[0] if se else None, layers[-2], layers[-1]

    def _layout(self):
        """The activation of a block the kernel runs; ValueError naming what it cannot."""
        expand, dw, se, project, bn = self._stages()
        stages = [s for s in (expand, dw) if s is not None]
        acts = {type(s[2]) for s in stages if len(s) == 3}
        k = dw[0].kernel_size[0]
        if (
            len(acts) != 1
            or next(iter(acts)) not in _ACTIVATIONS
            or dw[0].kernel_size not in ((3, 3), (5, 5))
            or dw[0].padding != (k // 2, k // 2)
            or dw[0].dilation != (1, 1)
            or any(c.bias is not None for c in (dw[0], project, *(expand[:1] if expand else ())))
        ):
            found = ", ".join(sorted(a.__name__ for a in acts))
            raise ValueError(
                "FusedInvertedResidual: the fused kernel runs blocks of one activation (ReLU6, ReLU or "
                "hard-swish), a 3x3 or 5x5 depthwise without dilation, and convolutions without bias; "
                f"this block has activations {found}, a {dw[0].kernel_size} depthwise with dilation "
                f"{dw[0].dilation}"
            )
        return _ACTIVATIONS[next(iter(acts))]

    def _bns(self):
        expand, dw, _, _, bn = self._stages()
        return (None if expand is None else expand[1], dw[1], bn)

    def _convs(self):
        expand, dw, _, project, _ = self._stages()
        return (None if expand is None else expand[0], dw[0], project)

    def forward(self, x):
        bns, convs, se = self._bns(), self._convs(), self._stages()[2]
        stride = convs[1].stride[0]
        if (
            not self.training
            and torch.is_grad_enabled()
            and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        ):
            return super().forward(x)
        se_params = (None,) * 4 if se is None else (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)
        if not self.training:
            weights = tuple(None if c is None else _np(c.weight) for c in convs)
            stats = tuple(
                None if b is None else (_np(b.weight), _np(b.bias), _np(b.running_mean), _np(b.running_var))
                for b in bns
            )
            y, _ = kernels.inverted_residual(
                _np(x),
                weights,
                stats,
                stride,
                self.use_res_connect,
                False,
                eps=bns[2].eps,
                activation=self.activation,
                se=None if se is None else tuple(_np(p) for p in se_params),
            )
            return torch.from_numpy(y)
        for b in bns:
            if b is not None:
                b.num_batches_tracked += 1
        e = (None, None, None) if convs[0] is None else (convs[0].weight, bns[0].weight, bns[0].bias)
        stats = []
        for b in bns:
            stats += [None, None] if b is None else [b.running_mean, b.running_var]
        d = (convs[1].weight, bns[1].weight, bns[1].bias)
        p = (convs[2].weight, bns[2].weight, bns[2].bias)
        conf = (tuple(stats), stride, self.use_res_connect, bns[2].momentum, bns[2].eps, self.activation)
        return InvertedResidualFunction.apply(x, *e, *d, *p, *se_params, *conf)


def fuse_inverted_residuals(model: nn.Module) -> nn.Module:
    """Replace every InvertedResidual of a torch_impl MobileNetV2 or V3 by a FusedInvertedResidual
    (in place)."""
    for name, child in model.named_children():
        if isinstance(child, InvertedResidual) and not isinstance(child, FusedInvertedResidual):
            setattr(model, name, FusedInvertedResidual(child))
        else:
            fuse_inverted_residuals(child)
    return model
