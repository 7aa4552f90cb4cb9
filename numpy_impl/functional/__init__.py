"""Every MobileNet op as a NumPy forward/backward pair, float32 and float64.

This module is also the backend contract (``numpy_impl.backend``): a backend offers every
name in :data:`OPS` with the same parameters (it may add keyword-only options after
them) and declares the :data:`FLAGS` below. ``kernels`` is the other backend.

One backward convention: ``op_backward(dout, saved...)``, the upstream gradient first, always
named ``dout``, then what the forward kept: its inputs for an op that returns one array
(``relu_backward(dout, x)``), its cache for an op that returns ``(out, cache)``
(``batch_norm_backward(dout, cache)``).
"""

from .basic import (
    dropout,
    dropout_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    hardsigmoid,
    hardsigmoid_backward,
    hardswish,
    hardswish_backward,
    linear,
    linear_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
from .block import inverted_residual, inverted_residual_backward
from .conv import (
    conv2d,
    conv2d_backward,
    depthwise_conv2d,
    depthwise_conv2d_backward,
    pointwise_conv2d,
    pointwise_conv2d_backward,
)
from .metric import arcface_logits, arcface_logits_backward
from .norm import batch_norm, batch_norm_backward
from .se import squeeze_excite, squeeze_excite_backward

# --- what a backend declares, and this one's values ---
MEMORY_FORMAT = (
    "contiguous"  # the layout models convert their input to: "contiguous" (NCHW) or "channels_last"
)
FUSED_BN_ACTIVATIONS = ()  # activations batch_norm(..., activation=...) applies in the same pass
FUSED_INVERTED_RESIDUAL = False  # whether the models should call inverted_residual for a whole block
# whether conv2d and pointwise_conv2d take keyword-only bn=(weight, bias, mean, var), eps and
# activation: an eval-mode batch norm (and its activation) folded into the convolution's output
FOLDED_CONV_BN = False
FLAGS = ("MEMORY_FORMAT", "FUSED_BN_ACTIVATIONS", "FUSED_INVERTED_RESIDUAL", "FOLDED_CONV_BN")

__all__ = [
    "FLAGS",
    "FOLDED_CONV_BN",
    "FUSED_BN_ACTIVATIONS",
    "FUSED_INVERTED_RESIDUAL",
    "MEMORY_FORMAT",
    "OPS",
    "arcface_logits",
    "arcface_logits_backward",
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
    "hardsigmoid",
    "hardsigmoid_backward",
    "hardswish",
    "hardswish_backward",
    "inverted_residual",
    "inverted_residual_backward",
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
    "squeeze_excite",
    "squeeze_excite_backward",
]
# applied to a model's output, never inside a model: a backend need not offer them
HEAD_OPS = ("arcface_logits", "arcface_logits_backward")
OPS = tuple(name for name in __all__ if name.islower() and name not in HEAD_OPS)  # every backend offers these
