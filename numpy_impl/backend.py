"""The one place where a backend name becomes the module of ops a model calls.

A backend is any module offering every op of ``numpy_impl.functional.OPS`` with the
reference's parameters (keyword-only options may follow them) and declaring
``numpy_impl.functional.FLAGS``: ``MEMORY_FORMAT`` ("contiguous" NCHW or "channels_last"
NHWC memory, the layout the model converts its input to once, at the entry),
``FUSED_BN_ACTIVATIONS`` (the activations its batch_norm applies in the same pass),
``FUSED_INVERTED_RESIDUAL`` (whether the models call its inverted_residual for a whole
block) and ``FOLDED_CONV_BN`` (whether its conv2d and pointwise_conv2d take an eval-mode
batch norm to apply to their output: ``bn=``, ``eps=``, ``activation=``).
tests/test_backend.py checks them for every backend here.
"""

from __future__ import annotations

import importlib

BACKENDS = {"numpy": "numpy_impl.functional", "numba": "kernels"}
# the integer model's ops (numpy_impl.quant.ops's contract: make_conv, add, mul,
# global_avg_pool2d, lookup and MEMORY_FORMAT)
QUANT_BACKENDS = {"numpy": "numpy_impl.quant.ops", "numba": "kernels.qops"}


def get_backend(name: str):
    """Return the ops module for ``name`` (one of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}")
    return importlib.import_module(BACKENDS[name])


def get_quant_backend(name: str):
    """Return the integer ops module for ``name`` (one of :data:`QUANT_BACKENDS`)."""
    if name not in QUANT_BACKENDS:
        raise ValueError(f"backend must be one of {tuple(QUANT_BACKENDS)}, got {name!r}")
    return importlib.import_module(QUANT_BACKENDS[name])
