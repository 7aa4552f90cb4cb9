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

# libgomp (Numba's default OpenMP threading layer) keeps its workers spinning for ~300k
# iterations after each parallel kernel; on 2 cores they starve OpenBLAS's threads in
# the GEMMs that follow (MobileNetV2 inference: 28 ms with the default, 13 ms with
# 10k; batch-8 142 ms vs 99 ms; docs/04-kernels.md). Read once, when libgomp loads:
# this works when kernels is imported before torch (which shares libgomp), or when
# the variable is exported.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

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
FUSED_BN_ACTIVATION = True  # batch_norm(..., activation="relu"|"relu6") in one pass

__all__ = [
    "FUSED_BN_ACTIVATION",
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
