"""The simplest correct code: explicit loops, for checking the vectorised ops."""

import numpy as np


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """x (N, C, H, W), w (O, C/groups, kh, kw), padding (top, bottom, left, right)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    t, bo, l, r = padding
    xp = np.zeros((n, c, h + t + bo, wd + l + r), x.dtype)
    xp[:, :, t : t + h, l : l + wd] = x
    ho = (h + t + bo - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + l + r - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo), np.float64)
    for ni in range(n):
        for oi in range(o):
            g = oi // og
            for hi in range(ho):
                for wi in range(wo):
                    acc = 0.0 if b is None else float(b[oi])
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += (
                                    w[oi, ci, i, j]
                                    * xp[
                                        ni,
                                        g * cg + ci,
                                        hi * stride[0] + i * dilation[0],
                                        wi * stride[1] + j * dilation[1],
                                    ]
                                )
                    out[ni, oi, hi, wi] = acc
    return out


def _pad(x, t, l):
    """x's planes placed at offset (t, l) of a zero canvas two kernel spans larger."""
    n, c, h, wd = x.shape
    xp = np.zeros((n, c, h + 2 * t + 4, wd + 2 * l + 4), np.float64)
    xp[:, :, t : t + h, l : l + wd] = x
    return xp


def depthwise_conv2d(x, w, stride=(1, 1), padding=(0, 0)):
    """x (N, C, H, W), w (C, 1, kh, kw), padding (top, left) on both sides: one filter per channel."""
    return conv2d(x, w, None, stride, (padding[0], padding[0], padding[1], padding[1]), (1, 1), x.shape[1])


def depthwise_conv2d_backward(dout, x, w, stride=(1, 1), padding=(0, 0)):
    """(dx, dw): every output pixel sends dout * w back to the input pixel each tap read, and
    dout * x to the tap's weight."""
    n, c, h, wd = x.shape
    _, _, kh, kw = w.shape
    t, l = padding
    xp = _pad(x, t, l)
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape, np.float64)
    for ni in range(n):
        for ci in range(c):
            for hi in range(dout.shape[2]):
                for wi in range(dout.shape[3]):
                    g = dout[ni, ci, hi, wi]
                    for i in range(kh):
                        for j in range(kw):
                            r, s = hi * stride[0] + i, wi * stride[1] + j
                            dxp[ni, ci, r, s] += g * w[ci, 0, i, j]
                            dw[ci, 0, i, j] += g * xp[ni, ci, r, s]
    return dxp[:, :, t : t + h, l : l + wd], dw


def pointwise_conv2d(x, w):
    """x (N, C, H, W), w (O, C, 1, 1): every pixel's channels times a matrix."""
    n, c, h, wd = x.shape
    out = np.zeros((n, w.shape[0], h, wd), np.float64)
    for ni in range(n):
        for oi in range(w.shape[0]):
            for ci in range(c):
                out[ni, oi] += w[oi, ci, 0, 0] * x[ni, ci]
    return out


def pointwise_conv2d_backward(dout, x, w):
    """(dx, dw) of :func:`pointwise_conv2d`."""
    dx = np.zeros(x.shape, np.float64)
    dw = np.zeros(w.shape, np.float64)
    for oi in range(w.shape[0]):
        for ci in range(x.shape[1]):
            dx[:, ci] += w[oi, ci, 0, 0] * dout[:, oi]
            dw[oi, ci, 0, 0] = sum(float(a) for a in (dout[:, oi] * x[:, ci]).ravel())
    return dx, dw


def batch_norm(x, weight, bias, mean=None, var=None, eps=1e-5):
    """Per channel: (x - mean) / sqrt(var + eps) * weight + bias; mean and var from the batch
    (biased variance, as training mode) unless given (eval mode). Returns y, mean, var."""
    c = x.shape[1]
    y = np.zeros(x.shape, np.float64)
    means, variances = np.zeros(c), np.zeros(c)
    for ci in range(c):
        vals = [float(v) for v in x[:, ci].ravel()]
        mu = sum(vals) / len(vals) if mean is None else float(mean[ci])
        va = sum((v - mu) ** 2 for v in vals) / len(vals) if var is None else float(var[ci])
        means[ci], variances[ci] = mu, va
        y[:, ci] = (x[:, ci] - mu) / np.sqrt(va + eps) * weight[ci] + bias[ci]
    return y, means, variances


def batch_norm_backward(dout, x, weight, mean=None, var=None, eps=1e-5):
    """(dx, dweight, dbias), the chain rule written out per channel. Without ``mean``/``var``
    (training) they are the batch's and depend on every x of the channel; given (eval mode),
    they are constants."""
    c = x.shape[1]
    dx = np.zeros(x.shape, np.float64)
    dweight, dbias = np.zeros(c), np.zeros(c)
    for ci in range(c):
        xc, gc = x[:, ci].astype(np.float64), dout[:, ci].astype(np.float64)
        m = xc.size
        mu = xc.sum() / m if mean is None else float(mean[ci])
        va = ((xc - mu) ** 2).sum() / m if var is None else float(var[ci])
        inv = 1.0 / np.sqrt(va + eps)
        xhat = (xc - mu) * inv
        dbias[ci], dweight[ci] = gc.sum(), (gc * xhat).sum()
        dxhat = gc * weight[ci]
        if mean is None:  # d xhat_k / d x_j = inv (delta_jk - 1/m) - xhat_k xhat_j inv / m
            dx[:, ci] = inv * (dxhat - dxhat.sum() / m - xhat * (dxhat * xhat).sum() / m)
        else:
            dx[:, ci] = dxhat * inv
    return dx, dweight, dbias


def relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def relu6_backward(dout, x):
    return dout * ((x > 0) & (x < 6))


def inverted_residual(x, weights, bns, stride, training, eps=1e-5):
    """The MobileNetV2 block from the loops above, and its backward: returns ``(y, backward)``,
    ``backward(dout) -> (dx, dweights, dbns)``. ``bns``: (weight, bias, running_mean,
    running_var) tuples, the running statistics used in eval mode and left alone."""
    expand_w, dw_w, project_w = weights
    saved, h = [], x
    for i, w in enumerate(weights):
        if w is None:
            continue
        inp = h
        h = depthwise_conv2d(inp, w, (stride, stride), (1, 1)) if i == 1 else pointwise_conv2d(inp, w)
        stats = (None, None) if training else (bns[i][2], bns[i][3])
        pre, _, _ = batch_norm(h, bns[i][0], bns[i][1], *stats, eps=eps)
        saved.append((i, inp, h, stats))
        h = relu6(pre) if i < 2 else pre
        saved[-1] += (pre,)
    residual = stride == 1 and project_w.shape[0] == x.shape[1]
    y = h + x if residual else h

    def backward(dout):
        dws, dbns, g = [None] * 3, [None] * 3, dout
        for i, inp, conv_out, stats, pre in reversed(saved):
            if i < 2:
                g = relu6_backward(g, pre)
            g, dbw, dbb = batch_norm_backward(g, conv_out, bns[i][0], *stats, eps=eps)
            dbns[i] = (dbw, dbb)
            if i == 1:
                g, dws[i] = depthwise_conv2d_backward(g, inp, weights[i], (stride, stride), (1, 1))
            else:
                g, dws[i] = pointwise_conv2d_backward(g, inp, weights[i])
        return (g + dout if residual else g), dws, dbns

    return y, backward
