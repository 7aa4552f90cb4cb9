"""Every MobileNet op as a NumPy forward/backward pair, float32 and float64.

The Numba kernels (``kernels``) use the same names and signatures, so a model
can run on either: see ``numpy_impl.backend``.
"""

from .basic import (
    dropout,
    dropout_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    linear,
    linear_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
from .conv import (
    conv2d,
    conv2d_backward,
    depthwise_conv2d,
    depthwise_conv2d_backward,
    pointwise_conv2d,
    pointwise_conv2d_backward,
)
from .norm import batch_norm, batch_norm_backward

MEMORY_FORMAT = "contiguous"  # the models feed this backend C-contiguous NCHW arrays

__all__ = [
    "MEMORY_FORMAT",
    "batch_norm",
    "batch_norm_backward",
    "conv2d",
    "conv2d_backward",
    "depthwise_conv2d",
    "depthwise_conv2d_backward",
    "dropout",
    "dropout_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "linear",
    "linear_backward",
    "pointwise_conv2d",
    "pointwise_conv2d_backward",
    "relu",
    "relu6",
    "relu6_backward",
    "relu_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]
