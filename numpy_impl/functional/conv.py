"""Convolutions: general (grouped, dilated) ``conv2d``, and the two halves of a
depthwise separable convolution, ``depthwise_conv2d`` and ``pointwise_conv2d``.

Every op loops over the kh*kw kernel taps and does one vectorised product per
tap. For tap (i, j) the input "window" is the strided view

    win_ij[n, c, h, w] = xp[n, c, h*sh + i*dh, w*sw + j*dw]      (N, C, H_out, W_out)

of the zero-padded input ``xp``, so a convolution is a sum of kh*kw products of
these windows, and its input gradient scatters back through the same windows.
Output size (torch.nn.Conv2d):

    H_out = floor((H + pad_top + pad_bottom - dh*(kh - 1) - 1) / sh) + 1
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._checks import as_float_array, check_shape, int_pair, same_dtype


@dataclass(frozen=True)
class Geometry:
    """Resolved stride, dilation, padding (top, bottom, left, right) and output size."""

    stride: tuple
    dilation: tuple
    pads: tuple
    kernel: tuple
    out_hw: tuple


def _resolve_padding(fn, padding, kernel, stride, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' requires stride 1 (as in torch), got stride={stride}")
            # torch puts the odd extra pixel at the bottom/right.
            th, tw = (d * (k - 1) for d, k in zip(dilation, kernel))
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"{fn}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = int_pair(fn, "padding", padding, 0)
    return (ph, ph, pw, pw)


def geometry(fn, x_hw, kernel, stride, padding, dilation) -> Geometry:
    """Validate stride/padding/dilation and compute the output size (memoised: models call
    the same few geometries over and over, and the checks cost more than a small kernel)."""
    # exact types only: True == 1 and 1.0 == 1 would hit the cache of 1 and skip their TypeError
    if type(stride) is int and type(dilation) is int and type(padding) in (int, str):
        return _geometry_cached(fn, tuple(x_hw), tuple(kernel), stride, padding, dilation)
    return _geometry(fn, x_hw, kernel, stride, padding, dilation)


def _geometry(fn, x_hw, kernel, stride, padding, dilation) -> Geometry:
    stride = int_pair(fn, "stride", stride, 1)
    dilation = int_pair(fn, "dilation", dilation, 1)
    pads = _resolve_padding(fn, padding, kernel, stride, dilation)
    hp, wp = x_hw[0] + pads[0] + pads[1], x_hw[1] + pads[2] + pads[3]
    span = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if span[0] > hp or span[1] > wp:
        raise ValueError(
            f"{fn}: kernel {tuple(kernel)} with dilation {dilation} spans {span}, larger than the "
            f"padded input ({hp}, {wp}); use a smaller kernel or more padding"
        )
    out_hw = ((hp - span[0]) // stride[0] + 1, (wp - span[1]) // stride[1] + 1)
    return Geometry(stride, dilation, pads, tuple(kernel), out_hw)


_geometry_cached = functools.lru_cache(maxsize=1024)(_geometry)


def pad(x: np.ndarray, g: Geometry) -> np.ndarray:
    t, b, l, r = g.pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))  # (N, C, H + t + b, W + l + r)


def unpad(xp: np.ndarray, g: Geometry) -> np.ndarray:
    t, b, l, r = g.pads
    return xp[:, :, t : xp.shape[2] - b, l : xp.shape[3] - r]  # (N, C, H, W)


def window(xp: np.ndarray, i: int, j: int, g: Geometry) -> np.ndarray:
    """The view ``xp[:, :, h*sh + i*dh, w*sw + j*dw]`` over all outputs: (N, C, H_out, W_out)."""
    (sh, sw), (dh, dw), (ho, wo) = g.stride, g.dilation, g.out_hw
    return xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]


def _batched(fn, x):
    """Accept unbatched (C, H, W) input as torch does; return (x4, was_unbatched)."""
    x = as_float_array(fn, "x", x, ndim=(3, 4))
    x, unbatched = (x[None], True) if x.ndim == 3 else (x, False)
    if x.shape[1] == 0:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    return x, unbatched


def _check_weight(fn, w):
    w = as_float_array(fn, "w", w, ndim=4)
    if 0 in w.shape:
        raise ValueError(f"{fn}: w must have no zero-sized dimension, got shape {w.shape}")
    return w


def check_dout(fn, dout, x, unbatched, shape):
    dout = as_float_array(fn, "dout", dout, ndim=3 if unbatched else 4)
    same_dtype(fn, "x", x, dout=dout)
    dout = dout[None] if unbatched else dout
    check_shape(fn, "dout", dout, shape)
    return dout


# ---------------------------------------------------------------------------------------
# General convolution
# ---------------------------------------------------------------------------------------


def check_conv(fn, x, w, b, groups):
    x, unbatched = _batched(fn, x)
    w = _check_weight(fn, w)
    same_dtype(fn, "x", x, w=w)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    c, o = x.shape[1], w.shape[0]
    if c % groups or o % groups:
        raise ValueError(
            f"{fn}: in channels ({c}) and out channels ({o}) must both be divisible by groups ({groups})"
        )
    if w.shape[1] != c // groups:
        raise ValueError(
            f"{fn}: w must have shape (C_out, C_in/groups, kh, kw) with C_in/groups == {c}/{groups} "
            f"== {c // groups}, got w.shape={w.shape} (x has {c} channels)"
        )
    if b is not None:
        b = as_float_array(fn, "b", b, ndim=1)
        same_dtype(fn, "x", x, b=b)
        check_shape(fn, "b", b, (o,))
    return x, w, b, unbatched


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) with torch.nn.functional.conv2d's semantics.

    Parameters
    ----------
    x : (N, C_in, H, W) or unbatched (C_in, H, W), float32 or float64
    w : (C_out, C_in/groups, kh, kw), same dtype
    b : (C_out,) or None
    stride, dilation : int or (int, int), >= 1
    padding : int or (int, int) >= 0, or "same" (stride 1 only) or "valid"
    groups : int; C_in and C_out divisible by it

    Returns
    -------
    out : (N, C_out, H_out, W_out), ``H_out = floor((H + 2p - d(kh-1) - 1)/s) + 1``

    Equations::

        G = groups, Cg = C_in/G, Og = C_out/G, output channel o = g*Og + q
        out[n, o, h, w] = b[o] + sum_{c<Cg, i<kh, j<kw}
                          w[o, c, i, j] * xp[n, g*Cg + c, h*sh + i*dh, w*sw + j*dw]
    """
    fn = "conv2d"
    x, w, b, unbatched = check_conv(fn, x, w, b, groups)
    o, cg, kh, kw = w.shape
    g = geometry(fn, x.shape[2:], (kh, kw), stride, padding, dilation)
    n, p = x.shape[0], g.out_hw[0] * g.out_hw[1]
    xp = pad(x, g)
    wg = w.reshape(groups, o // groups, cg, kh, kw)  # (G, Og, Cg, kh, kw)
    out = np.zeros((n, groups, o // groups, p), dtype=x.dtype)  # (N, G, Og, P)
    for i in range(kh):
        for j in range(kw):
            win = window(xp, i, j, g).reshape(n, groups, cg, p)  # (N, G, Cg, P)
            out += wg[:, :, :, i, j] @ win  # (G, Og, Cg) @ (N, G, Cg, P) -> (N, G, Og, P)
    out = out.reshape(n, o, *g.out_hw)  # (N, C_out, H_out, W_out)
    if b is not None:
        out += b[:, None, None]
    return out[0] if unbatched else out


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *, input_grad=True):
    """Gradients of :func:`conv2d`: returns ``(dx, dw, db)``.

    ``dout`` has the shape of the forward output; ``x``, ``w`` and the
    parameters are those of the forward call. ``db`` is ``dout`` summed over
    (N, H_out, W_out); use it or not depending on whether the forward had a bias.
    ``input_grad=False`` skips dx (returned as None): a network's first layer, whose
    input is data, needs only its weight gradient.

    Equations::

        dw[o, c, i, j] = sum_{n, h, w} dout[n, o, h, w] * xp[n, g*Cg + c, h*sh + i*dh, w*sw + j*dw]
        dxp[n, g*Cg + c, h*sh + i*dh, w*sw + j*dw] += sum_q w[g*Og + q, c, i, j] * dout[n, g*Og + q, h, w]
        db[o] = sum_{n, h, w} dout[n, o, h, w]
    """
    fn = "conv2d_backward"
    x, w, _, unbatched = check_conv(fn, x, w, None, groups)
    o, cg, kh, kw = w.shape
    g = geometry(fn, x.shape[2:], (kh, kw), stride, padding, dilation)
    n, p = x.shape[0], g.out_hw[0] * g.out_hw[1]
    dout = check_dout(fn, dout, x, unbatched, (n, o, *g.out_hw))
    xp = pad(x, g)
    dxp = np.zeros_like(xp)
    wg = w.reshape(groups, o // groups, cg, kh, kw)  # (G, Og, Cg, kh, kw)
    dwg = np.zeros_like(wg)
    dout_g = dout.reshape(n, groups, o // groups, p)  # (N, G, Og, P)
    for i in range(kh):
        for j in range(kw):
            win = window(xp, i, j, g).reshape(n, groups, cg, p)  # (N, G, Cg, P)
            dwg[:, :, :, i, j] = (dout_g @ win.swapaxes(2, 3)).sum(0)  # (G, Og, Cg)
            if input_grad:
                dwin = wg[:, :, :, i, j].swapaxes(1, 2) @ dout_g  # (G, Cg, Og) @ (N, G, Og, P): (N, G, Cg, P)
                window(dxp, i, j, g)[...] += dwin.reshape(n, groups * cg, *g.out_hw)
    dx = unpad(dxp, g) if input_grad else None
    db = dout.sum(axis=(0, 2, 3))
    return (dx[0] if unbatched and input_grad else dx), dwg.reshape(w.shape), db


# ---------------------------------------------------------------------------------------
# Depthwise convolution: one kh x kw filter per (input channel, multiplier) pair
# ---------------------------------------------------------------------------------------


def check_depthwise(fn, x, w):
    x, unbatched = _batched(fn, x)
    w = _check_weight(fn, w)
    same_dtype(fn, "x", x, w=w)
    c = x.shape[1]
    if w.shape[1] != 1 or w.shape[0] % c or w.shape[0] == 0:
        raise ValueError(
            f"{fn}: w must have shape (C*m, 1, kh, kw) with C == x.shape[1] == {c} and m >= 1, got {w.shape}"
        )
    return x, w, unbatched


def depthwise_conv2d(x, w, stride=1, padding=0, dilation=1):
    """Depthwise convolution: ``conv2d(x, w, groups=C)`` written for what it is.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    w : (C*m, 1, kh, kw), channel multiplier m >= 1 (output channel c*m + k reads input channel c)
    stride, padding, dilation : as :func:`conv2d`

    Returns
    -------
    out : (N, C*m, H_out, W_out)

    Equations::

        out[n, c*m + k, h, w] = sum_{i, j} w[c*m + k, 0, i, j] * xp[n, c, h*sh + i*dh, w*sw + j*dw]

    Cost: C*m * H_out*W_out * kh*kw multiply-adds, against C_in*C_out*... for a full conv.
    """
    fn = "depthwise_conv2d"
    x, w, unbatched = check_depthwise(fn, x, w)
    (n, c), (cm, _, kh, kw) = x.shape[:2], w.shape
    g = geometry(fn, x.shape[2:], (kh, kw), stride, padding, dilation)
    xp = pad(x, g)
    wm = w.reshape(c, cm // c, kh, kw)  # (C, m, kh, kw)
    out = np.zeros((n, c, cm // c, *g.out_hw), dtype=x.dtype)  # (N, C, m, H_out, W_out)
    for i in range(kh):
        for j in range(kw):
            # each output pixel gets tap (i, j) of its own channel's filter
            out += wm[:, :, i, j, None, None] * window(xp, i, j, g)[:, :, None]
    out = out.reshape(n, cm, *g.out_hw)  # (N, C*m, H_out, W_out)
    return out[0] if unbatched else out


def depthwise_conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1):
    """Gradients of :func:`depthwise_conv2d`: returns ``(dx, dw)``.

    Equations::

        dw[c*m + k, 0, i, j] = sum_{n, h, w} dout[n, c*m + k, h, w] * xp[n, c, h*sh + i*dh, w*sw + j*dw]
        dxp[n, c, h*sh + i*dh, w*sw + j*dw] += sum_k w[c*m + k, 0, i, j] * dout[n, c*m + k, h, w]
    """
    fn = "depthwise_conv2d_backward"
    x, w, unbatched = check_depthwise(fn, x, w)
    (n, c), (cm, _, kh, kw) = x.shape[:2], w.shape
    g = geometry(fn, x.shape[2:], (kh, kw), stride, padding, dilation)
    dout = check_dout(fn, dout, x, unbatched, (n, cm, *g.out_hw))
    xp = pad(x, g)
    dxp = np.zeros_like(xp)
    wm = w.reshape(c, cm // c, kh, kw)  # (C, m, kh, kw)
    dwm = np.zeros_like(wm)
    dout_m = dout.reshape(n, c, cm // c, *g.out_hw)  # (N, C, m, H_out, W_out)
    for i in range(kh):
        for j in range(kw):
            win = window(xp, i, j, g)  # (N, C, H_out, W_out)
            dwm[:, :, i, j] = np.einsum("ncmhw,nchw->cm", dout_m, win)
            window(dxp, i, j, g)[...] += np.einsum("cm,ncmhw->nchw", wm[:, :, i, j], dout_m)
    dx = unpad(dxp, g)
    return (dx[0] if unbatched else dx), dwm.reshape(w.shape)


# ---------------------------------------------------------------------------------------
# Pointwise (1x1) convolution: a matrix product over the channel axis
# ---------------------------------------------------------------------------------------


def check_pointwise(fn, x, w):
    x, unbatched = _batched(fn, x)
    w = _check_weight(fn, w)
    same_dtype(fn, "x", x, w=w)
    if w.shape[1:] != (x.shape[1], 1, 1):
        raise ValueError(
            f"{fn}: w must have shape (C_out, C_in, 1, 1) with C_in == x.shape[1] == {x.shape[1]}, "
            f"got {w.shape}"
        )
    return x, w, unbatched


def pointwise_conv2d(x, w):
    """1x1 convolution, stride 1, no padding: a GEMM per image.

    Parameters
    ----------
    x : (N, C_in, H, W) or (C_in, H, W)
    w : (C_out, C_in, 1, 1)

    Returns
    -------
    out : (N, C_out, H, W)

    Equations::

        out[n, o, h, w] = sum_c w[o, c] * x[n, c, h, w]       i.e.  out_n = W @ x_n  with x_n (C_in, H*W)
    """
    fn = "pointwise_conv2d"
    x, w, unbatched = check_pointwise(fn, x, w)
    n, c, h, wd = x.shape
    out = w[:, :, 0, 0] @ x.reshape(n, c, h * wd)  # (C_out, C_in) @ (N, C_in, HW) -> (N, C_out, HW)
    out = out.reshape(n, w.shape[0], h, wd)  # (N, C_out, H, W)
    return out[0] if unbatched else out


def pointwise_conv2d_backward(dout, x, w):
    """Gradients of :func:`pointwise_conv2d`: returns ``(dx, dw)``.

    Equations::

        dx_n = W^T @ dout_n                 (C_in, HW)
        dW   = sum_n dout_n @ x_n^T         (C_out, C_in)
    """
    fn = "pointwise_conv2d_backward"
    x, w, unbatched = check_pointwise(fn, x, w)
    n, c, h, wd = x.shape
    o = w.shape[0]
    dout = check_dout(fn, dout, x, unbatched, (n, o, h, wd))
    d3, x3 = dout.reshape(n, o, h * wd), x.reshape(n, c, h * wd)  # (N, C_out, HW), (N, C_in, HW)
    dx = (w[:, :, 0, 0].T @ d3).reshape(x.shape)  # (C_in, C_out) @ (N, C_out, HW) -> (N, C_in, H, W)
    dw = np.tensordot(d3, x3, axes=([0, 2], [0, 2]))  # (C_out, C_in)
    return (dx[0] if unbatched else dx), dw.reshape(w.shape)
