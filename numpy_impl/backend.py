"""The one place where a backend name becomes the module of ops a model calls.

A backend is any module exposing ``numpy_impl.functional``'s names and signatures,
and ``MEMORY_FORMAT``: "contiguous" (NCHW) or "channels_last" (NHWC memory), the
layout the model converts its input to once, at the entry.
"""

from __future__ import annotations

import importlib

BACKENDS = {"numpy": "numpy_impl.functional", "numba": "kernels"}


def get_backend(name: str):
    """Return the ops module for ``name`` (one of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}")
    return importlib.import_module(BACKENDS[name])
