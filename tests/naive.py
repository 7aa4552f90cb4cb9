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
