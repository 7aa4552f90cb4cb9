"""The classifier's fully connected layer with its GEMMs on Numba's pool (``_gemm``),
``numpy_impl.functional``'s checks and signatures.

Why not numpy's ``@``: OpenBLAS's threads keep spinning for a long while after a call
and take a core from the next forward's parallel kernels (MobileNetV2 inference,
batch 1: 25 ms with numpy's ``@`` for the last layer, 10 ms without; measured).
"""

from __future__ import annotations

import numpy as np

from numpy_impl.functional.basic import _check_linear, _check_linear_backward

from . import _gemm


def linear(x, w, b=None):
    """``y = x @ w.T + b``, x (*, F_in); see ``numpy_impl.functional.linear``."""
    x, w, b = _check_linear("linear", x, w, b)
    x2 = np.ascontiguousarray(x.reshape(-1, w.shape[1]))
    y = _gemm.matmul(x2, w.T).reshape(*x.shape[:-1], w.shape[0])
    return y if b is None else y + b


def linear_backward(dout, x, w):
    """``(dx, dw, db)``; see ``numpy_impl.functional.linear_backward``."""
    dout, x, w = _check_linear_backward("linear_backward", dout, x, w)
    d = np.ascontiguousarray(dout.reshape(-1, w.shape[0]))
    x2 = np.ascontiguousarray(x.reshape(-1, w.shape[1]))
    return _gemm.matmul(d, w).reshape(x.shape), _gemm.matmul_tn(d, x2), d.sum(axis=0)
