"""`mobilenet bench`'s numba-int8 side: the integer model on the int8 kernels (``kernels.qops``),
alone in its process."""

from __future__ import annotations

import numba

import kernels.qops  # noqa: F401  (loaded before the memory baseline)

from .cases import Case, inputs
from .prepared import int8_model


def setup(threads: int) -> list:
    numba.set_num_threads(threads)
    return [numba]


def timed(case: Case, folder, threads: int):
    q = int8_model(case, folder, backend="numba")
    x, _ = inputs(case)
    return lambda: q.forward(x)
