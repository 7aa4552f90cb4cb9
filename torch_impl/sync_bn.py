"""Synchronised batch norm on the CPU: ``torch.nn.SyncBatchNorm``'s maths over gloo.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (it is written for NCCL). This is the same
computation for a data-parallel job on CPUs: in training, the statistics are the global
batch's, and the backward all-reduces the two sums the input's gradient needs. Equations
(M values per channel over every process, sums all-reduced)::

    forward:   mean = sum(x) / M;   var = sum(x^2) / M - mean^2 (biased; float64 sums)
               running_var is updated with var * M / (M - 1), as torch
    backward:  dx = weight * inv_std * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)
               dweight = sum_local(dy * xhat), dbias = sum_local(dy)  (DDP averages them)

Outside a job of several processes (or in eval mode) it is ``torch.nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        dims = (0, 2, 3)  # x: (N, C, H, W)
        n = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        x64 = x.double()
        stats = _all_sum(torch.cat([n, x64.sum(dims), (x64 * x64).sum(dims)]))  # (1 + 2C,)
        c = x.shape[1]
        m = stats[0]
        mean = stats[1 : 1 + c] / m
        var = (stats[1 + c :] / m - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_((momentum * mean).to(x.dtype))
            running_var.mul_(1 - momentum).add_((momentum * var * m / (m - 1)).to(x.dtype))
        inv_std = 1.0 / torch.sqrt(var + eps)
        shape = (1, c, 1, 1)
        xhat = ((x64 - mean.view(shape)) * inv_std.view(shape)).to(x.dtype)
        ctx.save_for_backward(xhat, weight, inv_std.to(x.dtype))
        ctx.m = m
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, inv_std = ctx.saved_tensors
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        dbias = dy.sum(dims)
        dweight = (dy * xhat).sum(dims)
        sums = _all_sum(torch.cat([dbias, dweight]).double())
        c = dbias.numel()
        mean_dy = (sums[:c] / ctx.m).to(dy.dtype)
        mean_dy_xhat = (sums[c:] / ctx.m).to(dy.dtype)
        dx = (weight * inv_std).view(shape) * (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape))
        return dx, dweight, dbias, None, None, None, None


class SyncBatchNorm2d(torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` whose training statistics are every process's (module, parameter
    and buffer names unchanged, so state dicts load either way)."""

    def forward(self, x):
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(x)
        if x.ndim != 4:
            raise ValueError(f"SyncBatchNorm2d: x must be (N, C, H, W), got shape {tuple(x.shape)}")
        self.num_batches_tracked.add_(1)
        return _SyncBatchNorm.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps
        )


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Every ``BatchNorm2d`` of ``module`` replaced by a :class:`SyncBatchNorm2d` holding the very
    same tensors (an optimiser built before still updates them), in place, as
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; returns ``module``."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            if not (child.affine and child.track_running_stats):
                raise ValueError(f"convert_sync_batchnorm: {name} must have affine and running statistics")
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum)
            sync.weight, sync.bias = child.weight, child.bias
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(sync, buf, getattr(child, buf))  # a registered buffer: replaced, still a buffer
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module


__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm"]
