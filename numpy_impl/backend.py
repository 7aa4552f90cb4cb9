"""The one place where a backend name becomes the module of ops a model calls.

A backend is any module exposing ``numpy_impl.functional``'s names and signatures.
"""

from __future__ import annotations

import importlib

BACKENDS = {"numpy": "numpy_impl.functional"}


def get_backend(name: str):
    """Return the ops module for ``name`` (one of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}")
    return importlib.import_module(BACKENDS[name])
