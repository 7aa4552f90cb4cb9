"""Squeeze-and-excite on this backend: ``numpy_impl.functional.se``'s composite with its two
small products on Numba's pool (``kernels.linear``). With numpy's ``@`` there, OpenBLAS's
threads wake for each of MobileNetV3's SE layers and keep spinning into the next parallel
kernel (see ``kernels/linear.py``)."""

from __future__ import annotations

from numpy_impl.functional import se as _se

from .linear import linear, linear_backward


def squeeze_excite(x, w1, b1, w2, b2):
    """See ``numpy_impl.functional.squeeze_excite``."""
    return _se.forward(x, w1, b1, w2, b2, linear)


def squeeze_excite_backward(dout, cache):
    """See ``numpy_impl.functional.squeeze_excite_backward``."""
    return _se.backward(dout, cache, linear_backward)
