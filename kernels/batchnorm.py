"""Batch norm, optionally fused with the ReLU/ReLU6 that follows it, on Numba kernels.

Math (M = N*H*W values per channel; see ``numpy_impl.functional.batch_norm``)::

    train: mu = mean(x), var = mean((x - mu)^2); eval: mu, var = running stats
    scale = weight / sqrt(var + eps), shift = bias - mu * scale
    y = act(x * scale + shift)                                  act in {identity, relu, relu6}
    backward, g = dy * act'(y):
    dbias = sum(g),  dweight = sum(g * xhat),  xhat = (x - mu) / sqrt(var + eps)
    dx = scale * (g - dbias/M - xhat * dweight/M)      (train; eval: dx = scale * g)

Passes over memory: forward 2 (statistics, then normalise + activation: the fused
activation saves the third), backward 2 (the two sums, then dx). The statistics
and the gradient sums accumulate in float64, as the reference and torch's CPU
kernels do; the variance is accumulated around a per-channel shift (the first
value) so E[d^2] - E[d]^2 does not cancel.

Layouts: channels-last memory is a (M, C) matrix of rows: the inner loop runs
over C (contiguous, SIMD) and the rows are split into one chunk per thread, each
chunk summing into its own (C,) buffers, reduced afterwards (race-free). NCHW is
(N, C, P) planes: prange over channels, one writer per channel.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from numpy_impl.functional._checks import as_float_array, check_number, check_shape, same_dtype
from numpy_impl.functional.norm import check_batch_norm

from ._prep import is_channels_last

_opts = {"cache": True, "fastmath": True, "error_model": "numpy"}
ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}


@njit(inline="always", **_opts)
def _act(v, act):
    if act == 1:
        return max(v, 0)
    if act == 2:
        return min(max(v, 0), 6)
    return v


@njit(inline="always", **_opts)
def _live(y, act):
    """Does the gradient pass the activation at output y? (torch: relu y > 0, relu6 0 < y < 6)."""
    if act == 1:
        return y > 0
    if act == 2:
        return 0 < y < 6
    return True


# --- rows: (M, C), channels-last ---------------------------------------------------------


@njit(parallel=True, **_opts)
def _stats_rows(x, k, part):
    """part[t] = (sum(x - k), sum((x - k)^2)) over chunk t of the rows, float64."""
    M, C = x.shape
    T = part.shape[0]
    for t in prange(T):
        s, q = part[t, 0], part[t, 1]
        s[:] = 0
        q[:] = 0
        for r in range(t * M // T, (t + 1) * M // T):
            for c in range(C):
                d = np.float64(x[r, c]) - k[c]
                s[c] += d
                q[c] += d * d


@njit(parallel=True, **_opts)
def _normalize_rows(x, scale, shift, act, out):
    M, C = x.shape
    for r in prange(M):
        for c in range(C):
            out[r, c] = _act(x[r, c] * scale[c] + shift[c], act)


@njit(parallel=True, **_opts)
def _grad_sums_rows(dy, x, y, mu, inv_std, act, part):
    M, C = x.shape
    T = part.shape[0]
    for t in prange(T):
        s1, s2 = part[t, 0], part[t, 1]
        s1[:] = 0
        s2[:] = 0
        for r in range(t * M // T, (t + 1) * M // T):
            for c in range(C):
                g = np.float64(dy[r, c]) if _live(y[r, c], act) else 0.0
                s1[c] += g
                s2[c] += g * ((x[r, c] - mu[c]) * inv_std[c])


@njit(parallel=True, **_opts)
def _dx_rows(dy, x, y, mu, inv_std, act, a, b1, b2, dx):
    M, C = x.shape
    for r in prange(M):
        for c in range(C):
            g = dy[r, c] if _live(y[r, c], act) else dy.dtype.type(0)
            dx[r, c] = a[c] * (g - b1[c] - (x[r, c] - mu[c]) * inv_std[c] * b2[c])


# --- planes: (N, C, P), NCHW -------------------------------------------------------------


@njit(parallel=True, **_opts)
def _stats_planes(x, k, sums):
    N, C, P = x.shape
    for c in prange(C):
        s, q = 0.0, 0.0
        for n in range(N):
            for p in range(P):
                d = np.float64(x[n, c, p]) - k[c]
                s += d
                q += d * d
        sums[0, c], sums[1, c] = s, q


@njit(parallel=True, **_opts)
def _normalize_planes(x, scale, shift, act, out):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for p in range(P):
            out[n, c, p] = _act(x[n, c, p] * scale[c] + shift[c], act)


@njit(parallel=True, **_opts)
def _grad_sums_planes(dy, x, y, mu, inv_std, act, sums):
    N, C, P = x.shape
    for c in prange(C):
        s1, s2 = 0.0, 0.0
        for n in range(N):
            for p in range(P):
                g = np.float64(dy[n, c, p]) if _live(y[n, c, p], act) else 0.0
                s1 += g
                s2 += g * ((x[n, c, p] - mu[c]) * inv_std[c])
        sums[0, c], sums[1, c] = s1, s2


@njit(parallel=True, **_opts)
def _dx_planes(dy, x, y, mu, inv_std, act, a, b1, b2, dx):
    N, C, P = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for p in range(P):
            g = dy[n, c, p] if _live(y[n, c, p], act) else dy.dtype.type(0)
            dx[n, c, p] = a[c] * (g - b1[c] - (x[n, c, p] - mu[c]) * inv_std[c] * b2[c])


# --- public ------------------------------------------------------------------------------


def _view(a, rows: bool):
    """(N, C, H, W) or (N, C) -> the kernels' (M, C) rows or (N, C, P) planes (views)."""
    if a.ndim == 2:
        return a
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]) if rows else a.reshape(a.shape[0], a.shape[1], -1)


def _sums(kernel, a, *args, rows):
    """Run a per-channel sums kernel; returns float64 (2, C)."""
    c = a.shape[-1] if rows else a.shape[1]
    if rows:
        part = np.empty((max(1, min(numba.get_num_threads(), a.shape[0])), 2, c))
        kernel(a, *args, part)
        return part.sum(axis=0)
    sums = np.empty((2, c))
    kernel(a, *args, sums)
    return sums


def batch_norm(
    x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5, *, activation=None
):
    """Batch norm, then ``activation`` (None, "relu" or "relu6") in the same pass.

    Same contract as ``numpy_impl.functional.batch_norm`` (running statistics
    updated in place in training); x is (N, C, H, W) in either memory format, or
    (N, C). Returns ``(y, cache)``; y keeps x's memory format.
    """
    fn = "batch_norm"
    x = check_batch_norm(fn, x, weight, bias, running_mean, running_var, training)
    if x.ndim not in (2, 4):
        raise ValueError(f"{fn}: the Numba kernel takes 2-D or 4-D x, got {x.ndim}-D of shape {x.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    momentum = check_number(fn, "momentum", momentum, 0.0, 1.0)
    eps = check_number(fn, "eps", eps, 0.0)
    if eps == 0.0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    c, m = x.shape[1], x.size // x.shape[1]
    rows = x.ndim == 2 or is_channels_last(x)
    if not rows:
        x = np.ascontiguousarray(x)
    xv = _view(x, rows)
    if training:
        if m <= 1:
            raise ValueError(
                f"{fn}: expected more than 1 value per channel when training, got input of shape {x.shape}"
            )
        k = (xv[0] if rows else xv[0, :, 0]).astype(np.float64)  # shift: one sample per channel
        s, q = _sums(_stats_rows if rows else _stats_planes, xv, k, rows=rows)
        mu = k + s / m
        var = np.maximum(q / m - (s / m) ** 2, 0.0)  # biased
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mu).astype(x.dtype)
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * var * (m / (m - 1))).astype(x.dtype)
    else:
        mu, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,) float64
    w64 = np.ones(c) if weight is None else weight.astype(np.float64)
    scale = w64 * inv_std
    shift = (0.0 if bias is None else bias.astype(np.float64)) - mu * scale
    y = np.empty_like(x)  # same memory format as x
    act = ACTIVATIONS[activation]
    kernel = _normalize_rows if rows else _normalize_planes
    kernel(xv, scale.astype(x.dtype), shift.astype(x.dtype), act, _view(y, rows))
    cache = {
        "x": x,
        "y": y,
        "mu": mu,
        "inv_std": inv_std,
        "scale": scale,
        "shift": shift,
        "act": act,
        "rows": rows,
    }
    cache.update(training=bool(training), has_weight=weight is not None, has_bias=bias is not None)
    return y, cache


STATS_KEYS = ("mu", "inv_std", "scale", "shift", "act", "rows", "training", "has_weight", "has_bias")


def batch_norm_replay(x, stats):
    """Recompute a forward from its statistics (``{k: cache[k] for k in STATS_KEYS}``) without
    touching the running statistics: the recompute path of the fused block's backward."""
    rows = stats["rows"]
    x = x if rows else np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel = _normalize_rows if rows else _normalize_planes
    kernel(_view(x, rows), stats["scale"].astype(x.dtype), np.asarray(stats["shift"]).astype(x.dtype),
           stats["act"], _view(y, rows))  # fmt: skip
    return y, {**stats, "x": x, "y": y}


def batch_norm_backward(dy, cache):
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm` (through its fused activation)."""
    fn = "batch_norm_backward"
    if not isinstance(cache, dict) or "inv_std" not in cache or "rows" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by kernels.batch_norm, got {type(cache).__name__}"
        )
    x, y, rows, act = cache["x"], cache["y"], cache["rows"], cache["act"]
    dy = as_float_array(fn, "dy", dy, ndim=x.ndim)
    same_dtype(fn, "the forward input", x, dy=dy)
    check_shape(fn, "dy", dy, x.shape)
    if not rows:
        dy = np.ascontiguousarray(dy)
    elif dy.ndim == 4 and not is_channels_last(dy):
        dy = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dyv, xv, yv = _view(dy, rows), _view(x, rows), _view(y, rows)
    mu, inv_std = cache["mu"].astype(x.dtype), cache["inv_std"].astype(x.dtype)
    s1, s2 = _sums(_grad_sums_rows if rows else _grad_sums_planes, dyv, xv, yv, mu, inv_std, act, rows=rows)
    m = x.size // x.shape[1]
    b1, b2 = (s1 / m, s2 / m) if cache["training"] else (np.zeros_like(s1), np.zeros_like(s2))
    dx = np.empty_like(x)
    kernel = _dx_rows if rows else _dx_planes
    kernel(dyv, xv, yv, mu, inv_std, act, cache["scale"].astype(x.dtype), b1.astype(x.dtype),
           b2.astype(x.dtype), _view(dx, rows))  # fmt: skip
    dweight = s2.astype(x.dtype) if cache["has_weight"] else None
    dbias = s1.astype(x.dtype) if cache["has_bias"] else None
    return dx, dweight, dbias
