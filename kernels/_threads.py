"""BLAS thread control without threadpoolctl's per-call library scan."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

# Reductions split their work into PARTS parts whatever the thread count (numba's prange deals
# the parts out to the threads) and add the partial sums in part order, so every result is
# bit-identical on 1, 2 or 64 threads: a run reproduces, and resumes exactly, on another machine.
# 8 parts keep up to 8 threads busy; on 2 threads each takes 4.
PARTS = 8

# LLVM's fast-math flags for the float kernels: every one but "reassoc". With reassociation
# allowed, a parallel kernel compiled afresh and the same kernel loaded from Numba's cache
# rounded differently (measured: batch norm's dx, one value in four off in the last bit), so
# a run's bits depended on whether its kernels had been compiled before. Without it, each
# expression keeps its written order; the loops still vectorise across channels and fuse
# multiply-adds ("contract"), which both paths do alike.
FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}  # (numba wants a set)


@lru_cache(maxsize=1)
def _blas_controllers():
    from threadpoolctl import ThreadpoolController

    _numba_blas()  # loaded, so that it is among them
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@lru_cache(maxsize=1)
def _numba_blas():
    """The BLAS that ``np.dot`` in Numba code calls: scipy's (``scipy.linalg.cython_blas``).

    With pip's wheels it is a library of its own, not the one numpy's ``@`` uses; where one
    BLAS serves both (a system build), this is that one."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads it)
    from threadpoolctl import ThreadpoolController

    ctls = ThreadpoolController().select(user_api="blas").lib_controllers
    root = Path(scipy.__file__).resolve().parent.parent
    own = [
        c
        for c in ctls
        if Path(c.filepath).resolve().parent.name in ("scipy.libs", "scipy")
        or Path(c.filepath).resolve().is_relative_to(root / "scipy")
    ]
    return tuple(own or ctls)


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


def single_threaded_blas() -> None:
    """Inside a Numba parallel region every thread calls the BLAS (``np.dot``): one BLAS
    thread each, so that OpenMP's threads are the only pool on the cores.

    Set once and left so: restoring a count of 2 after each call wakes OpenBLAS's threads,
    which then spin against OpenMP's (MobileNetV2 inference 25 ms instead of 10 ms,
    measured). This is scipy's BLAS only; numpy's ``@`` keeps its threads."""
    for c in _numba_blas():
        if c.get_num_threads() != 1:
            c.set_num_threads(1)
