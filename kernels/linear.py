"""The classifier's fully connected layer with its GEMMs on Numba's pool (``_gemm``),
``numpy_impl.functional``'s checks and signatures.

Why not numpy's ``@``: OpenBLAS's threads keep spinning for a long while after a call
and take a core from the next forward's parallel kernels (MobileNetV2 inference,
batch 1: 25 ms with numpy's ``@`` for the last layer, 10 ms without; measured).
"""

from __future__ import annotations

import numpy as np

from numpy_impl.functional._checks import as_float_array, check_shape, same_dtype
from numpy_impl.functional.basic import _check_linear

from . import _gemm


def linear(x, w, b=None):
    """``y = x @ w.T + b``; see ``numpy_impl.functional.linear``."""
    x, w, b = _check_linear("linear", x, w, b)
    y = _gemm.matmul(np.ascontiguousarray(x), w.T)  # (N, F_out)
    return y if b is None else y + b


def linear_backward(dout, x, w):
    """``(dx, dw, db)``; see ``numpy_impl.functional.linear_backward``."""
    fn = "linear_backward"
    x, w, _ = _check_linear(fn, x, w, None)
    dout = as_float_array(fn, "dout", dout, ndim=2)
    same_dtype(fn, "x", x, dout=dout)
    check_shape(fn, "dout", dout, (x.shape[0], w.shape[0]))
    d = np.ascontiguousarray(dout)
    return _gemm.matmul(d, w), _gemm.matmul_tn(d, np.ascontiguousarray(x)), dout.sum(axis=0)
