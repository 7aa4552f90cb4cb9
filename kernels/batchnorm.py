"""Batch norm, optionally fused with the ReLU, ReLU6 or hard-swish that follows it, on Numba kernels.

Math (M = N*H*W values per channel; see ``numpy_impl.functional.batch_norm``)::

    train: mu = mean(x), var = mean((x - mu)^2); eval: mu, var = running stats
    scale = weight / sqrt(var + eps), shift = bias - mu * scale
    y = act(x * scale + shift)                  act in {identity, relu, relu6, hardswish}
    backward, g = dy * act'(z):   z = x * scale + shift, recomputed (the forward keeps x only)
    dbias = sum(g),  dweight = sum(g * xhat),  xhat = (x - mu) / sqrt(var + eps)
    dx = scale * (g - dbias/M - xhat * dweight/M)      (train; eval: dx = scale * g)

Passes over memory: forward 2 (statistics, then normalise + activation: the fused
activation saves the third), backward 2 (the two sums, then dx), each reading dy and x: the
activation's mask (and hard-swish's slope) comes from z recomputed in the same loop, in the
forward's float order, so y need not be kept or read. The statistics
and the gradient sums accumulate in float64, as the reference and torch's CPU
kernels do; the variance is accumulated around a per-channel shift (the first
value) so E[d^2] - E[d]^2 does not cancel.

Layouts: channels-last memory is a (M, C) matrix of rows: the inner loop runs
over C (contiguous, SIMD) and the rows are split into ``PARTS`` chunks (not one per thread:
the sums must not depend on the thread count), each summing into its own (C,) buffers,
added afterwards in chunk order (race-free). NCHW is
(N, C, P) planes: prange over channels, one writer per channel. Arrays smaller than
``SERIAL_BELOW`` elements run the same loop bodies on serial drivers (waking the thread
pool costs more than the work there).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

import numpy_impl.functional as _reference
from numpy_impl.functional._checks import as_float_array, check_number, check_shape, same_dtype
from numpy_impl.functional.norm import check_batch_norm

from ._prep import is_channels_last
from ._threads import FASTMATH, PARTS

_opts = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy"}
ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2, "hardswish": 3}


@njit(inline="always", **_opts)
def _act(v, act):
    if act == 1:
        return max(v, 0)
    if act == 2:
        return min(max(v, 0), 6)
    if act == 3:
        return v * min(max(v + 3, 0), 6) / 6
    return v


@njit(cache=True, error_model="numpy")
def _affine_of(w, b, m, v, eps, scale_out, shift_out):
    for c in range(w.shape[0]):
        weight, bias, mean, var = np.float64(w[c]), np.float64(b[c]), np.float64(m[c]), np.float64(v[c])
        scale = weight / np.sqrt(var + eps)
        scale_out[c], shift_out[c] = scale, bias - mean * scale


def _bn_affine(bn, eps, dtype):
    """Eval-mode BN as y = x * scale + shift (per channel): computed in float64, cast. One
    compiled loop: three per fused block, and NumPy's dozen small array ops cost more than the work."""
    scale, shift = np.empty(bn[0].shape[0], dtype), np.empty(bn[0].shape[0], dtype)
    _affine_of(*bn, float(eps), scale, shift)
    return scale, shift


def fold_bn(fn, bn, eps, activation, channels, dtype):
    """Validated ``(scale, shift)`` (None without ``bn``) and activation code of an eval-mode
    batch norm folded into the op ``fn`` that makes its input (``conv2d(..., bn=...)``):
    ``bn`` = (weight, bias, running_mean, running_var), each of shape (channels,)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if bn is None:
        if activation is not None:
            raise ValueError(f"{fn}: activation={activation!r} needs bn (it follows the folded batch norm)")
        return None, 0
    if not isinstance(bn, (tuple, list)) or len(bn) != 4:
        raise TypeError(
            f"{fn}: bn must be (weight, bias, running_mean, running_var), got {type(bn).__name__}"
        )
    for name, a in zip(("weight", "bias", "running_mean", "running_var"), bn):
        as_float_array(fn, f"bn {name}", a, ndim=1)
        same_dtype(fn, "x", np.empty(0, dtype), **{f"bn_{name}": a})
        check_shape(fn, f"bn {name}", a, (channels,))
    eps = check_number(fn, "eps", eps, 0.0)
    if eps == 0.0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    return _bn_affine(bn, eps, dtype), ACTIVATIONS[activation]


def apply_folded(out, affine, activation):
    """A folded batch norm and its activation on an (N, C, H, W) output in NumPy: for the
    layouts whose kernel has no epilogue (the reference's fallbacks)."""
    if affine is None:
        return out
    scale, shift = affine
    y = out * scale[:, None, None] + shift[:, None, None]
    return y if activation is None else getattr(_reference, activation)(y)


@njit(inline="always", **_opts)
def _grad(d, z, act, zero):
    """The gradient through the activation at the pre-activation z: ``d`` where it passes
    whole, hard-swish's slope z / 3 + 1/2 for -3 < z < 3, ``zero`` where nothing passes.
    Torch decides relu's (y > 0) and relu6's (0 < y < 6) on the output y, which is the same
    as on z; at the kinks it takes these sides. Written as selects, so that with ``act`` a
    constant (see :func:`_by_act`) the loops around it vectorise."""
    if act == 1:
        return d if z > 0 else zero
    if act == 2:
        return d if (z > 0) & (z < 6) else zero
    if act == 3:
        return d if z >= 3 else (d * (z / 3 + 0.5) if z > -3 else zero)
    return d


# --- rows: (M, C), channels-last ---------------------------------------------------------
# Each kernel is a body over a range of rows [r0, r1), run either by a parallel driver (one
# chunk of rows per thread) or by a serial one. The serial drivers exist for small layers,
# where waking the pool costs more than the few microseconds of work. (They were first
# added when the GEMMs ran on OpenBLAS's threads and the hand-over cost ~0.7 ms; with one
# pool the threshold may be lower, not re-measured.)
#
# Two things keep the inner loops (over C, contiguous) vectorised: the per-channel sums
# accumulate in arrays the body allocates itself (the compiler cannot prove that an output
# argument does not overlap the inputs, and gives up on SIMD with this many arrays), and the
# activation is a compile-time constant in each copy of a body (``*_by_act``: one branch per
# activation, each calling the body with a literal; the bodies are inlined, so the constant
# folds the activation's branches away). With ``act`` a runtime value the sums ran at a
# third of the speed.

SERIAL_BELOW = 1 << 17  # elements; smaller arrays take the serial drivers
ROW_CHUNKS = None  # chunks of rows the parallel sums split into (None: PARTS, whatever the threads)


@njit(inline="always", **_opts)
def _stats_chunk(x, k, s, q, r0, r1):
    C = x.shape[1]
    s1, s2 = np.zeros(C), np.zeros(C)
    for r in range(r0, r1):
        xr = x[r]
        for c in range(C):
            d = np.float64(xr[c]) - k[c]
            s1[c] += d
            s2[c] += d * d
    s[:] = s1
    q[:] = s2


@njit(inline="always", **_opts)
def _normalize_chunk(x, scale, shift, act, out, r0, r1):
    for r in range(r0, r1):
        xr, orow = x[r], out[r]
        for c in range(x.shape[1]):
            orow[c] = _act(xr[c] * scale[c] + shift[c], act)


@njit(inline="always", **_opts)
def _normalize_by_act(x, scale, shift, act, out, r0, r1):
    if act == 1:
        _normalize_chunk(x, scale, shift, 1, out, r0, r1)
    elif act == 2:
        _normalize_chunk(x, scale, shift, 2, out, r0, r1)
    elif act == 3:
        _normalize_chunk(x, scale, shift, 3, out, r0, r1)
    else:
        _normalize_chunk(x, scale, shift, 0, out, r0, r1)


@njit(inline="always", **_opts)
def _grad_sums_chunk(dy, x, zs, zb, mu, inv_std, act, s1, s2, r0, r1):
    C = x.shape[1]
    a1, a2 = np.zeros(C), np.zeros(C)
    for r in range(r0, r1):
        xr, dr = x[r], dy[r]
        for c in range(C):
            g = _grad(np.float64(dr[c]), xr[c] * zs[c] + zb[c], act, 0.0)
            a1[c] += g
            a2[c] += g * ((xr[c] - mu[c]) * inv_std[c])
    s1[:] = a1
    s2[:] = a2


@njit(inline="always", **_opts)
def _grad_sums_by_act(dy, x, zs, zb, mu, inv_std, act, s1, s2, r0, r1):
    if act == 1:
        _grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 1, s1, s2, r0, r1)
    elif act == 2:
        _grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 2, s1, s2, r0, r1)
    elif act == 3:
        _grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 3, s1, s2, r0, r1)
    else:
        _grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 0, s1, s2, r0, r1)


@njit(inline="always", **_opts)
def _dx_chunk(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, r0, r1):
    for r in range(r0, r1):
        xr, dr, out = x[r], dy[r], dx[r]
        for c in range(x.shape[1]):
            g = _grad(dr[c], xr[c] * zs[c] + zb[c], act, dy.dtype.type(0))
            out[c] = a[c] * (g - b1[c] - (xr[c] - mu[c]) * inv_std[c] * b2[c])


@njit(inline="always", **_opts)
def _dx_by_act(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, r0, r1):
    if act == 1:
        _dx_chunk(dy, x, zs, zb, mu, inv_std, 1, a, b1, b2, dx, r0, r1)
    elif act == 2:
        _dx_chunk(dy, x, zs, zb, mu, inv_std, 2, a, b1, b2, dx, r0, r1)
    elif act == 3:
        _dx_chunk(dy, x, zs, zb, mu, inv_std, 3, a, b1, b2, dx, r0, r1)
    else:
        _dx_chunk(dy, x, zs, zb, mu, inv_std, 0, a, b1, b2, dx, r0, r1)


@njit(parallel=True, **_opts)
def _stats_rows(x, k, part):
    """part[t] = (sum(x - k), sum((x - k)^2)) over chunk t of the rows, float64."""
    M, T = x.shape[0], part.shape[0]
    for t in prange(T):
        _stats_chunk(x, k, part[t, 0], part[t, 1], t * M // T, (t + 1) * M // T)


@njit(**_opts)
def _stats_rows_serial(x, k, part):
    _stats_chunk(x, k, part[0, 0], part[0, 1], 0, x.shape[0])


@njit(parallel=True, **_opts)
def _normalize_rows(x, scale, shift, act, out):
    for r in prange(x.shape[0]):
        _normalize_by_act(x, scale, shift, act, out, r, r + 1)


@njit(**_opts)
def _normalize_rows_serial(x, scale, shift, act, out):
    _normalize_by_act(x, scale, shift, act, out, 0, x.shape[0])


@njit(parallel=True, **_opts)
def _grad_sums_rows(dy, x, zs, zb, mu, inv_std, act, part):
    M, T = x.shape[0], part.shape[0]
    for t in prange(T):
        _grad_sums_by_act(
            dy, x, zs, zb, mu, inv_std, act, part[t, 0], part[t, 1], t * M // T, (t + 1) * M // T
        )


@njit(**_opts)
def _grad_sums_rows_serial(dy, x, zs, zb, mu, inv_std, act, part):
    _grad_sums_by_act(dy, x, zs, zb, mu, inv_std, act, part[0, 0], part[0, 1], 0, x.shape[0])


@njit(parallel=True, **_opts)
def _dx_rows(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx):
    for r in prange(x.shape[0]):
        _dx_by_act(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, r, r + 1)


@njit(**_opts)
def _dx_rows_serial(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx):
    _dx_by_act(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, 0, x.shape[0])


ROWS = {  # parallel driver, serial driver
    "stats": (_stats_rows, _stats_rows_serial),
    "normalize": (_normalize_rows, _normalize_rows_serial),
    "grad_sums": (_grad_sums_rows, _grad_sums_rows_serial),
    "dx": (_dx_rows, _dx_rows_serial),
}


# --- planes: (N, C, P), NCHW -------------------------------------------------------------
# The same split: a body per channel (sums) or per (n, c) plane (elementwise), run by a
# parallel driver (prange over channels / planes, one writer each) or a serial one.


@njit(inline="always", **_opts)
def _stats_plane(x, k, sums, c):
    s, q = 0.0, 0.0
    for n in range(x.shape[0]):
        for p in range(x.shape[2]):
            d = np.float64(x[n, c, p]) - k[c]
            s += d
            q += d * d
    sums[0, c], sums[1, c] = s, q


@njit(inline="always", **_opts)
def _normalize_plane(x, scale, shift, act, out, nc):
    n, c = nc // x.shape[1], nc % x.shape[1]
    for p in range(x.shape[2]):
        out[n, c, p] = _act(x[n, c, p] * scale[c] + shift[c], act)


@njit(inline="always", **_opts)
def _grad_sums_plane(dy, x, zs, zb, mu, inv_std, act, sums, c):
    s1, s2 = 0.0, 0.0
    for n in range(x.shape[0]):
        for p in range(x.shape[2]):
            g = _grad(np.float64(dy[n, c, p]), x[n, c, p] * zs[c] + zb[c], act, 0.0)
            s1 += g
            s2 += g * ((x[n, c, p] - mu[c]) * inv_std[c])
    sums[0, c], sums[1, c] = s1, s2


@njit(inline="always", **_opts)
def _dx_plane(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, nc):
    n, c = nc // x.shape[1], nc % x.shape[1]
    for p in range(x.shape[2]):
        g = _grad(dy[n, c, p], x[n, c, p] * zs[c] + zb[c], act, dy.dtype.type(0))
        dx[n, c, p] = a[c] * (g - b1[c] - (x[n, c, p] - mu[c]) * inv_std[c] * b2[c])


@njit(parallel=True, **_opts)
def _stats_planes(x, k, sums):
    for c in prange(x.shape[1]):
        _stats_plane(x, k, sums, c)


@njit(**_opts)
def _stats_planes_serial(x, k, sums):
    for c in range(x.shape[1]):
        _stats_plane(x, k, sums, c)


@njit(parallel=True, **_opts)
def _normalize_planes(x, scale, shift, act, out):
    for nc in prange(x.shape[0] * x.shape[1]):
        _normalize_plane(x, scale, shift, act, out, nc)


@njit(**_opts)
def _normalize_planes_serial(x, scale, shift, act, out):
    for nc in range(x.shape[0] * x.shape[1]):
        _normalize_plane(x, scale, shift, act, out, nc)


@njit(parallel=True, **_opts)
def _grad_sums_planes(dy, x, zs, zb, mu, inv_std, act, sums):
    for c in prange(x.shape[1]):
        _grad_sums_plane(dy, x, zs, zb, mu, inv_std, act, sums, c)


@njit(**_opts)
def _grad_sums_planes_serial(dy, x, zs, zb, mu, inv_std, act, sums):
    for c in range(x.shape[1]):
        _grad_sums_plane(dy, x, zs, zb, mu, inv_std, act, sums, c)


@njit(parallel=True, **_opts)
def _dx_planes(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx):
    for nc in prange(x.shape[0] * x.shape[1]):
        _dx_plane(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, nc)


@njit(**_opts)
def _dx_planes_serial(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx):
    for nc in range(x.shape[0] * x.shape[1]):
        _dx_plane(dy, x, zs, zb, mu, inv_std, act, a, b1, b2, dx, nc)


PLANES = {  # parallel driver, serial driver
    "stats": (_stats_planes, _stats_planes_serial),
    "normalize": (_normalize_planes, _normalize_planes_serial),
    "grad_sums": (_grad_sums_planes, _grad_sums_planes_serial),
    "dx": (_dx_planes, _dx_planes_serial),
}


def _kernel(name, a, rows: bool):
    """The driver for ``a``'s layout and size (serial below ``SERIAL_BELOW`` elements)."""
    return (ROWS if rows else PLANES)[name][a.size < SERIAL_BELOW]


# --- public ------------------------------------------------------------------------------


def _view(a, rows: bool):
    """(N, C, H, W) or (N, C) -> the kernels' (M, C) rows or (N, C, P) planes (views)."""
    if a.ndim == 2:
        return a
    n, c, h, w = a.shape  # explicit sizes: -1 cannot be inferred for an empty batch
    return a.transpose(0, 2, 3, 1).reshape(n * h * w, c) if rows else a.reshape(n, c, h * w)


def _sums(name, a, *args, rows):
    """Run a per-channel sums kernel ("stats" or "grad_sums"); returns float64 (2, C)."""
    kernel = _kernel(name, a, rows)
    if rows:  # one (2, C) buffer per chunk of rows, reduced here
        serial = a.size < SERIAL_BELOW
        chunks = ROW_CHUNKS or PARTS
        part = np.empty((1 if serial else max(1, min(chunks, a.shape[0])), 2, a.shape[1]))
        kernel(a, *args, part)
        return part.sum(axis=0)
    sums = np.empty((2, a.shape[1]))
    kernel(a, *args, sums)
    return sums


def batch_norm(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    training,
    momentum=0.1,
    eps=1e-5,
    *,
    parts=None,
    activation=None,
):
    """Batch norm, then ``activation`` (None, "relu", "relu6" or "hardswish") in the same pass.

    Same contract as ``numpy_impl.functional.batch_norm`` (running statistics
    updated in place in training; ``parts``: the statistics of a global batch, part by part);
    x is (N, C, H, W) in either memory format, or (N, C). Returns ``(y, cache)``; y keeps x's
    memory format.
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
    if training and x.size // max(x.shape[1], 1) <= 1:
        raise ValueError(
            f"{fn}: expected more than 1 value per channel when training, got input of shape {x.shape}"
        )
    return forward(x, weight, bias, running_mean, running_var, training, momentum, eps, activation, parts)


def forward(x, weight, bias, running_mean, running_var, training, momentum, eps, activation=None, parts=None):
    """The body of :func:`batch_norm`, unchecked: x (N, C, H, W) or (N, C), the parameters (C,)
    or None, all of one float dtype; momentum in [0, 1], eps > 0, more than one value per channel
    in training. For callers that validated already (the fused block)."""
    c, m = x.shape[1], x.size // x.shape[1]
    rows = x.ndim == 2 or is_channels_last(x)
    if not rows:
        x = np.ascontiguousarray(x)
    xv = _view(x, rows)
    if training and parts is None:
        k = (xv[0] if rows else xv[0, :, 0]).astype(np.float64)  # shift: one sample per channel
        s, q = _sums("stats", xv, k, rows=rows)
    elif training:  # every process shifts by the same values: the running mean
        m = parts.batch * (m // x.shape[0])  # values per channel in the global batch
        k = np.zeros(c) if running_mean is None else running_mean.astype(np.float64)
        s, q = parts.total([_sums("stats", _view(x[p], rows), k, rows=rows) for p in parts.slices])
    if training:
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
    kernel = _kernel("normalize", xv, rows)
    kernel(xv, scale.astype(x.dtype), shift.astype(x.dtype), act, _view(y, rows))
    cache = {
        "x": x,
        "mu": mu,
        "inv_std": inv_std,
        "scale": scale,
        "shift": shift,
        "act": act,
        "rows": rows,
    }
    cache.update(training=bool(training), has_weight=weight is not None, has_bias=bias is not None)
    cache["parts"] = parts if training else None
    return y, cache


STATS_KEYS = ("mu", "inv_std", "scale", "shift", "act", "rows", "training", "has_weight", "has_bias")


def batch_norm_replay(x, stats):
    """Recompute a forward from its statistics (``{k: cache[k] for k in STATS_KEYS}``) without
    touching the running statistics: the recompute path of the fused block's backward."""
    rows = stats["rows"]
    x = x if rows else np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel = _kernel("normalize", x, rows)
    kernel(
        _view(x, rows),
        stats["scale"].astype(x.dtype),
        np.asarray(stats["shift"]).astype(x.dtype),
        stats["act"],
        _view(y, rows),
    )
    return y, {**stats, "x": x}


def batch_norm_backward(dout, cache):
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm` (through its fused activation)."""
    fn = "batch_norm_backward"
    if not isinstance(cache, dict) or "inv_std" not in cache or "rows" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by kernels.batch_norm, got {type(cache).__name__}"
        )
    x = cache["x"]
    dout = as_float_array(fn, "dout", dout, ndim=x.ndim)
    same_dtype(fn, "the forward input", x, dout=dout)
    check_shape(fn, "dout", dout, x.shape)
    return backward(dout, cache)


def backward(dout, cache):
    """The body of :func:`batch_norm_backward`, unchecked: ``dout`` of the forward's shape and dtype."""
    x, rows, act = cache["x"], cache["rows"], cache["act"]
    if not rows:
        dout = np.ascontiguousarray(dout)
    elif dout.ndim == 4 and not is_channels_last(dout):
        dout = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    doutv, xv = _view(dout, rows), _view(x, rows)
    mu, inv_std = cache["mu"].astype(x.dtype), cache["inv_std"].astype(x.dtype)
    # the activation's mask and slope from z = x * scale + shift, recomputed as the forward did
    zs, zb = cache["scale"].astype(x.dtype), np.asarray(cache["shift"]).astype(x.dtype)
    parts = cache.get("parts")
    if parts is None:
        s1, s2 = _sums("grad_sums", doutv, xv, zs, zb, mu, inv_std, act, rows=rows)
        m = x.size // x.shape[1]
    else:  # the global batch's sums, part by part
        sums = [
            _sums("grad_sums", _view(dout[p], rows), _view(x[p], rows), zs, zb, mu, inv_std, act, rows=rows)
            for p in parts.slices
        ]
        s1, s2 = parts.total(sums)
        m = parts.batch * (x.size // x.shape[1] // x.shape[0])
    b1, b2 = (s1 / m, s2 / m) if cache["training"] else (np.zeros_like(s1), np.zeros_like(s2))
    dx = np.empty_like(x)
    kernel = _kernel("dx", xv, rows)
    kernel(
        doutv,
        xv,
        zs,
        zb,
        mu,
        inv_std,
        act,
        cache["scale"].astype(x.dtype),
        b1.astype(x.dtype),
        b2.astype(x.dtype),
        _view(dx, rows),
    )
    dweight = s2.astype(x.dtype) if cache["has_weight"] else None
    dbias = s1.astype(x.dtype) if cache["has_bias"] else None
    return dx, dweight, dbias
