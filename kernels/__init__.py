"""Hand-written kernels with ``numpy_impl.functional``'s names and signatures.

A drop-in ops module for the models (``backend="numba"``): the depthwise
convolution and batch norm are Numba kernels, the pointwise and stem convolutions
and the classifier are GEMMs over channels-last rows (BLAS calls on Numba's
threads); squeeze-and-excite is the reference's composite with its two GEMMs there too; the other
ops (activations, pooling, dropout, loss) are the reference's,
which NumPy already runs at memory speed and which keep the memory format: any op of
``numpy_impl.functional.OPS`` not defined here is the reference's.

The models run this backend channels-last (``MEMORY_FORMAT``): an (N, C, H, W)
array whose memory is NHWC, as torch's ``channels_last``.

Threads: every parallel piece, GEMMs included (``_gemm``: a single-threaded BLAS call
per thread), runs on Numba's OpenMP pool. Importing this module changes no thread
setting; the first GEMM sets scipy's BLAS (the one Numba's ``np.dot`` calls) to one
thread and leaves it so. numpy's BLAS and torch's threads are left as they are.

Memory: importing this module raises glibc's mmap and trim thresholds (``_memory``), so
that freed activations are reused by the next step instead of page-faulted in again;
``MOBILENET_MALLOC=default`` opts out.
"""

import numpy_impl.functional as _reference

from ._cache import STALE_DROPPED  # drops cached kernels built from other sources, on import
from ._memory import MALLOC_TUNED  # applies the allocator settings on import
from ._prep import is_channels_last
from .batchnorm import batch_norm, batch_norm_backward
from .conv import conv2d, conv2d_backward
from .depthwise import depthwise_conv2d, depthwise_conv2d_backward
from .fused_block import inverted_residual, inverted_residual_backward
from .linear import linear, linear_backward
from .pointwise import pointwise_conv2d, pointwise_conv2d_backward
from .se import squeeze_excite, squeeze_excite_backward

MEMORY_FORMAT = "channels_last"
FUSED_BN_ACTIVATIONS = ("relu", "relu6", "hardswish")  # batch_norm(..., activation=...) in one pass
FUSED_INVERTED_RESIDUAL = True  # the whole MobileNetV2 block in one call (fused_block)
FOLDED_CONV_BN = True  # conv2d, pointwise_conv2d(..., bn=, eps=, activation=): eval BN in the GEMM

__all__ = sorted({*_reference.OPS, *_reference.FLAGS, "is_channels_last"})


def __getattr__(name):
    """The reference op for every op this backend does not override."""
    if name in _reference.OPS:
        return getattr(_reference, name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")


def __dir__():
    return __all__
