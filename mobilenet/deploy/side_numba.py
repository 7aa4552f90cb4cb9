"""`mobilenet bench`'s numba side: the NumPy model on the kernels, alone in its process."""

from __future__ import annotations

import numba

import kernels  # noqa: F401  (loaded before the memory baseline, as the model would load it)

from .cases import Case
from .side_numpy import model_step


def setup(threads: int) -> list:
    """Numba's pool fixed at ``threads``."""
    numba.set_num_threads(threads)
    return [numba]


def timed(case: Case, folder, threads: int):
    return model_step(case, "numba", folder)
