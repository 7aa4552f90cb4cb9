"""Activations, dropout, global average pooling, the linear layer and the loss."""

from __future__ import annotations

import numbers

import numpy as np

from ._checks import as_float_array, check_int, check_number, check_rng, check_shape, same_dtype


def _check_dout_like(fn, dout, x, name="x"):
    dout = as_float_array(fn, "dout", dout)
    same_dtype(fn, name, x, dout=dout)
    check_shape(fn, "dout", dout, x.shape)
    return dout


# --- ReLU and ReLU6 ---------------------------------------------------------------------


def relu(x):
    """``y = max(x, 0)``, any shape."""
    x = as_float_array("relu", "x", x)
    return np.maximum(x, 0)


def relu_backward(dout, x):
    """``dx = dout * [x > 0]`` (torch's threshold_backward: zero gradient at x == 0)."""
    x = as_float_array("relu_backward", "x", x)
    dout = _check_dout_like("relu_backward", dout, x)
    return np.where(x > 0, dout, 0).astype(x.dtype, copy=False)


def relu6(x):
    """``y = min(max(x, 0), 6)`` (MobileNetV2's activation, robust in low precision)."""
    x = as_float_array("relu6", "x", x)
    return np.clip(x, 0, 6)


def relu6_backward(dout, x):
    """``dx = dout * [0 < x < 6]`` (torch's hardtanh_backward: zero at both kinks)."""
    x = as_float_array("relu6_backward", "x", x)
    dout = _check_dout_like("relu6_backward", dout, x)
    return np.where((x > 0) & (x < 6), dout, 0).astype(x.dtype, copy=False)


# --- hard-sigmoid and hard-swish (MobileNetV3) -------------------------------------------
# Piecewise-linear stand-ins for sigmoid and x * sigmoid(x) (Howard et al. 2019, section 5.2):
# ReLU6 and a multiply, cheap on any hardware and exact in low precision.


def hardsigmoid(x):
    """``y = relu6(x + 3) / 6``: 0 below -3, 1 above 3, a line between."""
    x = as_float_array("hardsigmoid", "x", x)
    return np.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)


def hardsigmoid_backward(dout, x):
    """``dx = dout * (1/6)`` where ``-3 < x < 3``, else 0 (torch's: zero at both kinks)."""
    x = as_float_array("hardsigmoid_backward", "x", x)
    dout = _check_dout_like("hardsigmoid_backward", dout, x)
    sixth = x.dtype.type(1) / x.dtype.type(6)  # torch multiplies by a rounded 1/6
    return np.where((x > -3) & (x < 3), dout * sixth, 0).astype(x.dtype, copy=False)


def hardswish(x):
    """``y = x * relu6(x + 3) / 6``: 0 below -3, x above 3, a parabola between."""
    x = as_float_array("hardswish", "x", x)
    return x * np.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)  # torch's order of operations


def hardswish_backward(dout, x):
    """``dx = dout * (x / 3 + 1/2)`` for ``-3 < x < 3``, ``dout`` from 3 up, 0 from -3 down
    (torch's choice at the kinks)."""
    x = as_float_array("hardswish_backward", "x", x)
    dout = _check_dout_like("hardswish_backward", dout, x)
    t = x.dtype.type
    inner = dout * (x / t(3) + t(0.5))
    return np.where(x <= -3, 0, np.where(x < 3, inner, dout)).astype(x.dtype, copy=False)


# --- Dropout ----------------------------------------------------------------------------


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Parameters
    ----------
    x : any shape
    p : float in [0, 1]
    training : bool; in eval mode dropout is the identity
    rng : numpy.random.Generator, an int seed, or None (fresh entropy)

    Returns
    -------
    y : x's shape
    mask : x's shape, values 0 or 1/(1-p) (all ones in eval), for :func:`dropout_backward`

    Equations::

        keep ~ Bernoulli(1 - p);   mask = keep / (1 - p);   y = x * mask
    """
    fn = "dropout"
    x = as_float_array(fn, "x", x)
    p = check_number(fn, "p", p, 0.0, 1.0)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {type(training).__name__}")
    if not training or p == 0.0:
        return x.copy(), np.ones_like(x)
    if p == 1.0:
        return np.zeros_like(x), np.zeros_like(x)
    rng = check_rng(fn, "rng", rng)
    keep = rng.random(x.shape) >= p
    mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, mask


def dropout_backward(dout, mask):
    """``dx = dout * mask``."""
    mask = as_float_array("dropout_backward", "mask", mask)
    dout = _check_dout_like("dropout_backward", dout, mask, name="mask")
    return dout * mask


# --- Global average pooling -------------------------------------------------------------


def global_avg_pool2d(x):
    """Mean over H and W, flattened: (N, C, H, W) -> (N, C) (``adaptive_avg_pool2d(x, 1).flatten(1)``)."""
    x = as_float_array("global_avg_pool2d", "x", x, ndim=4)
    return x.mean(axis=(2, 3))


def global_avg_pool2d_backward(dout, x_shape):
    """``dx[n, c, h, w] = dout[n, c] / (H * W)``: returns dx of shape ``x_shape``."""
    fn = "global_avg_pool2d_backward"
    dout = as_float_array(fn, "dout", dout, ndim=2)
    if not isinstance(x_shape, (tuple, list)) or not all(isinstance(d, numbers.Integral) for d in x_shape):
        raise TypeError(f"{fn}: x_shape must be a tuple of ints (x.shape), got {x_shape!r}")
    x_shape = tuple(int(d) for d in x_shape)
    if len(x_shape) != 4 or x_shape[:2] != dout.shape or min(x_shape) < 0:
        raise ValueError(
            f"{fn}: x_shape must be (N, C, H, W) with (N, C) == dout.shape {dout.shape}, got {x_shape}"
        )
    hw = x_shape[2] * x_shape[3]
    return np.broadcast_to((dout / dout.dtype.type(hw))[:, :, None, None], x_shape).copy()


# --- Linear -----------------------------------------------------------------------------


def _check_linear(fn, x, w, b):
    x = as_float_array(fn, "x", x)
    w = as_float_array(fn, "w", w, ndim=2)
    if x.ndim == 0:
        raise ValueError(f"{fn}: x must have shape (*, F_in) with at least one dimension, got a 0-D array")
    same_dtype(fn, "x", x, w=w)
    if w.shape[1] != x.shape[-1]:
        raise ValueError(
            f"{fn}: w must have shape (F_out, F_in) with F_in == x.shape[-1] == {x.shape[-1]}, got {w.shape}"
        )
    if b is not None:
        b = as_float_array(fn, "b", b, ndim=1)
        same_dtype(fn, "x", x, b=b)
        check_shape(fn, "b", b, (w.shape[0],))
    return x, w, b


def linear(x, w, b=None):
    """``y = x @ w.T + b``: x (*, F_in), w (F_out, F_in), b (F_out,) -> y (*, F_out).

    Any leading dimensions (none included), as ``torch.nn.functional.linear``."""
    x, w, b = _check_linear("linear", x, w, b)
    y = x @ w.T  # (*, F_out)
    return y if b is None else y + b


def _check_linear_backward(fn, dout, x, w):
    x, w, _ = _check_linear(fn, x, w, None)
    dout = as_float_array(fn, "dout", dout)
    same_dtype(fn, "x", x, dout=dout)
    check_shape(fn, "dout", dout, (*x.shape[:-1], w.shape[0]))
    return dout, x, w


def linear_backward(dout, x, w):
    """Returns ``(dx, dw, db)``: ``dx = dout @ w`` (x's shape), and over the rows of every
    leading index, ``dw = dout.T @ x`` and ``db = sum dout``."""
    dout, x, w = _check_linear_backward("linear_backward", dout, x, w)
    d2, x2 = dout.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
    return dout @ w, d2.T @ x2, d2.sum(axis=0)


# --- Softmax cross-entropy --------------------------------------------------------------


def _check_ce_target(fn, target, logits, ignore_index):
    """Class indices (N,) in [0, K) or == ignore_index, or probabilities (N, K) of logits' dtype."""
    n, k = logits.shape
    if isinstance(target, np.ndarray) and np.issubdtype(target.dtype, np.integer):
        check_shape(fn, "target", target, (n,))
        bad = (target != ignore_index) & ((target < 0) | (target >= k))
        if bad.any():
            raise ValueError(
                f"{fn}: target values must be in [0, {k}) or equal ignore_index "
                f"({ignore_index}), got {target[bad][0]}"
            )
        return target, False
    if isinstance(target, np.ndarray) and target.dtype in (np.float32, np.float64) and target.ndim == 2:
        same_dtype(fn, "logits", logits, target=target)
        check_shape(fn, "target", target, (n, k))
        return target, True
    got = type(target).__name__
    if isinstance(target, np.ndarray):
        got = f"{target.dtype} array of shape {target.shape}"
    raise TypeError(
        f"{fn}: target must be an integer numpy.ndarray of class indices (N,) or a float array "
        f"of class probabilities (N, K), got {got}"
    )


def softmax_cross_entropy(logits, target, label_smoothing=0.0, *, weight=None, ignore_index=-100, total=None):
    """Mean softmax cross-entropy, as ``torch.nn.functional.cross_entropy`` (reduction "mean").

    Parameters
    ----------
    logits : (N, K) float
    target : (N,) integer class indices in [0, K) (or ``ignore_index``), or (N, K) float
        class probabilities (then ``ignore_index`` does not apply, as in torch)
    label_smoothing : float in [0, 1]
    weight : (K,) float or None, a rescaling weight per class
    ignore_index : int, class-index targets equal to it add nothing and are not counted
    total : float or None, what the summed loss is divided by in place of this batch's count
        (the sum of its rows' weights): the count of a whole batch of which ``logits`` is a part

    Returns
    -------
    loss : float (nan when every target is ignored, as torch)
    cache : for :func:`softmax_cross_entropy_backward`

    Equations (eps = label_smoothing, w = weight or ones, v[n] = 0 for ignored rows, else 1)::

        log p = logits - logsumexp(logits)                 (shifted by the row max for stability)
        loss = -sum_n sum_k Q[n, k] * log p[n, k]
        class indices:  Q[n, k] = v[n] ((1 - eps) w[t_n] onehot(t_n)[k] + eps w[k] / K) / sum_n v[n] w[t_n]
        probabilities:  Q[n, k] = w[k] ((1 - eps) t[n, k] + eps / K) / N
    """
    fn = "softmax_cross_entropy"
    logits = as_float_array(fn, "logits", logits, ndim=2)
    n, k = logits.shape
    if n == 0:
        raise ValueError(f"{fn}: logits must hold at least one row, got shape {logits.shape}")
    ignore_index = check_int(fn, "ignore_index", ignore_index, np.iinfo(np.int64).min)
    target, probs = _check_ce_target(fn, target, logits, ignore_index)
    eps = check_number(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    if weight is not None:
        weight = as_float_array(fn, "weight", weight, ndim=1)
        same_dtype(fn, "logits", logits, weight=weight)
        check_shape(fn, "weight", weight, (k,))
    w = np.ones(k, logits.dtype) if weight is None else weight
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, K)
    if total is not None:
        total = check_number(fn, "total", total, 0.0)
    if probs:
        q = w * ((1 - eps) * target + eps / k) / (n if total is None else logits.dtype.type(total))
    else:
        valid = target != ignore_index
        rows, cls = np.nonzero(valid)[0], target[valid]
        q = np.zeros_like(logits)
        q[rows, cls] = (1 - eps) * w[cls]
        q[rows] += eps / k * w
        total = w[cls].sum(dtype=np.float64) if total is None else total
        if total == 0:  # every row ignored: torch's loss is 0/0 = nan, its gradient zero
            return float("nan"), {"logp": logp, "q": q}
        q /= logits.dtype.type(total)
    # class targets read log p only where Q > 0, as torch's gather does: a -inf logit of another
    # class costs nothing (0 * -inf would be nan); probability targets multiply through, as torch
    terms = q * logp if probs else np.multiply(q, logp, where=q != 0, out=np.zeros_like(q))
    return float(-terms.sum()), {"logp": logp, "q": q}


def softmax_cross_entropy_backward(dout, cache):
    """``dlogits = dout * (sum_k Q[n, k] * softmax(logits)[n] - Q[n])``: (N, K); ``dout`` is the
    upstream gradient of the scalar loss (1.0 for the loss itself)."""
    fn = "softmax_cross_entropy_backward"
    if not isinstance(cache, dict) or "logp" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by softmax_cross_entropy, got {type(cache).__name__}"
        )
    dout = check_number(fn, "dout", dout)
    logp, q = cache["logp"], cache["q"]
    return dout * (q.sum(axis=1, keepdims=True) * np.exp(logp) - q)
