"""Batch normalisation (Ioffe & Szegedy 2015) with torch.nn.functional.batch_norm's semantics."""

from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_number, check_shape, same_dtype


def check_batch_norm(fn, x, weight, bias, running_mean, running_var, training):
    x = as_float_array(fn, "x", x, ndim=(2, 3, 4, 5))
    c = x.shape[1]
    if c == 0:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    arrays = {"weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var}
    for name, a in arrays.items():
        if a is not None:
            as_float_array(fn, name, a, ndim=1)
            check_shape(fn, name, a, (c,))
    same_dtype(fn, "x", x, **arrays)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {type(training).__name__}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var are required when training=False")
    return x


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5, *, parts=None):
    """Batch norm over every axis but the channel axis 1.

    Parameters
    ----------
    x : (N, C, *) e.g. (N, C, H, W)
    weight, bias : (C,) or None (then 1 and 0: no affine transform)
    running_mean, running_var : (C,) or None; updated IN PLACE when ``training``
    training : bool; normalise with the batch statistics (True) or the running ones
    momentum : float in [0, 1]; eps : float > 0
    parts : a :class:`numpy_impl.parts.Parts` or None. In training, x is then this process's rows
        of a global batch, and the statistics are the global batch's, summed part by part in part
        order (synchronised batch norm, identical bits for any number of processes)

    Returns
    -------
    y : same shape as x
    cache : what :func:`batch_norm_backward` needs

    Equations::

        M = N * H * W (elements per channel)
        train: mu = mean(x),  var = mean((x - mu)^2)             (biased, used to normalise)
               running_mean <- (1 - momentum) * running_mean + momentum * mu
               running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)
        eval:  mu, var = running_mean, running_var
        xhat = (x - mu) / sqrt(var + eps);   y = weight * xhat + bias
    """
    fn = "batch_norm"
    x = check_batch_norm(fn, x, weight, bias, running_mean, running_var, training)
    momentum = check_number(fn, "momentum", momentum, 0.0, 1.0)
    eps = check_number(fn, "eps", eps, 0.0)
    if eps == 0.0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast (C,) against (N, C, *)
    m = x.size // x.shape[1]
    if training:
        if m <= 1:
            raise ValueError(
                f"{fn}: expected more than 1 value per channel when training, got input of shape {x.shape}"
            )
        # Reductions accumulate in float64 as torch's CPU kernels do (acc_type<float> is
        # double): BN backward cancels large sums, and float32 accumulators lose ~10x.
        if parts is None:
            mu = x.mean(axis=axes, dtype=np.float64)  # (C,)
            var = ((x - mu.reshape(bshape)) ** 2).mean(axis=axes)  # (C,) biased
        else:
            m = parts.batch * (m // x.shape[0])  # values per channel in the global batch
            mu = parts.total([x[s].sum(axis=axes, dtype=np.float64) for s in parts.slices]) / m
            var = parts.total([((x[s] - mu.reshape(bshape)) ** 2).sum(axis=axes) for s in parts.slices]) / m
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mu).astype(x.dtype)
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * var * (m / (m - 1))).astype(x.dtype)  # unbiased, as torch
    else:
        mu, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,)
    shift = mu * inv_std
    xhat = x * inv_std.astype(x.dtype).reshape(bshape) - shift.astype(x.dtype).reshape(bshape)
    y = xhat if weight is None else xhat * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    cache = {
        "xhat": xhat,
        "inv_std": inv_std,
        "weight": weight,
        "training": bool(training),
        "has_bias": bias is not None,
        "parts": parts if training else None,
    }
    return y.astype(x.dtype, copy=False), cache


def batch_norm_backward(dout, cache):
    """Gradients of :func:`batch_norm`: returns ``(dx, dweight, dbias)``.

    ``dweight``/``dbias`` are None where the forward had no weight/bias.

    Equations::

        dbias = sum(dout);  dweight = sum(dout * xhat);  dxhat = dout * weight
        train: dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        eval:  dx = dxhat * inv_std          (mu and var are constants)
    """
    fn = "batch_norm_backward"
    if not isinstance(cache, dict) or "xhat" not in cache:
        raise TypeError(f"{fn}: cache must be the dict returned by batch_norm, got {type(cache).__name__}")
    xhat, inv_std, weight = cache["xhat"], cache["inv_std"], cache["weight"]
    dout = as_float_array(fn, "dout", dout, ndim=xhat.ndim)
    same_dtype(fn, "the forward input", xhat, dout=dout)
    check_shape(fn, "dout", dout, xhat.shape)
    axes = (0,) + tuple(range(2, dout.ndim))
    bshape = (1, -1) + (1,) * (dout.ndim - 2)
    f64 = {"axis": axes, "dtype": np.float64}  # float64 accumulators, as in batch_norm
    dxhat = dout if weight is None else dout * weight.reshape(bshape)
    parts = cache.get("parts")
    if parts is None:
        dbias = dout.sum(**f64) if cache["has_bias"] else None
        dweight = (dout * xhat).sum(**f64) if weight is not None else None
        m = dout.size // dout.shape[1]
        if cache["training"]:
            s1 = dxhat.sum(**f64) / m  # (C,)  mean(dxhat)
            s2 = (dxhat * xhat).sum(**f64) / m  # (C,)  mean(dxhat * xhat)
    else:  # the four sums of the global batch, part by part: (4, C)
        sums = parts.total(
            [
                np.stack([d.sum(**f64), (d * xh).sum(**f64), dh.sum(**f64), (dh * xh).sum(**f64)])
                for d, dh, xh in ((dout[s], dxhat[s], xhat[s]) for s in parts.slices)
            ]
        )
        m = parts.batch * (dout.size // dout.shape[1] // dout.shape[0])
        dbias = sums[0] if cache["has_bias"] else None
        dweight = sums[1] if weight is not None else None
        s1, s2 = sums[2] / m, sums[3] / m
    if cache["training"]:
        dx = dxhat - s1.astype(dout.dtype).reshape(bshape) - xhat * s2.astype(dout.dtype).reshape(bshape)
        dx = dx * inv_std.astype(dout.dtype).reshape(bshape)
    else:
        dx = dxhat * inv_std.astype(dout.dtype).reshape(bshape)
    if dweight is not None:
        dweight = dweight.astype(dout.dtype)
    if dbias is not None:
        dbias = dbias.astype(dout.dtype)
    return dx.astype(dout.dtype, copy=False), dweight, dbias
