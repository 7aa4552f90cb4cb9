"""Hand-written kernels with ``numpy_impl.functional``'s names and signatures.

A drop-in ops module for the models (``backend="numba"``): the depthwise
convolution and batch norm are Numba kernels, the pointwise and the stem
convolutions go to the BLAS as single GEMMs over channels-last rows; the other
ops (activations, pooling, dropout, linear, loss) are the reference's, which
NumPy already runs at memory speed and which keep the memory format.

The models run this backend channels-last (``MEMORY_FORMAT``): an (N, C, H, W)
array whose memory is NHWC, as torch's ``channels_last``.
"""

import os

import numba

# Numba's default OpenMP layer keeps its workers spinning after each parallel kernel;
# on 2 cores they starve OpenBLAS's threads in the GEMMs that follow (MobileNetV2
# inference ran at 33 ms instead of 20 ms). The workqueue layer's workers sleep.
# Only when the user has not chosen a layer; set before any parallel kernel runs.
if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

from numpy_impl.functional import (  # noqa: E402
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

from ._prep import is_channels_last  # noqa: E402
from .batchnorm import batch_norm, batch_norm_backward  # noqa: E402
from .conv import conv2d, conv2d_backward  # noqa: E402
from .depthwise import depthwise_conv2d, depthwise_conv2d_backward  # noqa: E402
from .fused_block import inverted_residual, inverted_residual_backward  # noqa: E402
from .pointwise import pointwise_conv2d, pointwise_conv2d_backward  # noqa: E402

MEMORY_FORMAT = "channels_last"

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
    "inverted_residual",
    "inverted_residual_backward",
    "is_channels_last",
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
