"""BLAS thread control without threadpoolctl's per-call library scan."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache


@lru_cache(maxsize=1)
def _blas_controllers():
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextmanager
def blas_threads(n: int):
    """The BLAS uses ``n`` threads while inside (so the thread count follows numba's)."""
    ctls = _blas_controllers()
    old = [c.get_num_threads() for c in ctls]
    for c in ctls:
        c.set_num_threads(n)
    try:
        yield
    finally:
        for c, k in zip(ctls, old):
            c.set_num_threads(k)
