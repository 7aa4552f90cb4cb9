"""Validation and layout preparation shared by the public kernel wrappers.

Every public kernel validates with the same checks as the NumPy reference
(same messages), then hands C-contiguous arrays in one of two layouts to a
private ``@njit`` kernel:

* NCHW: the array is C-contiguous as (N, C, H, W);
* NHWC: the array's memory is channels-last, i.e. ``x.transpose(0, 2, 3, 1)``
  is C-contiguous (torch's ``channels_last``). Such an input is used without a
  copy and the output is returned in the same memory format.

Anything else (a strided view, a Fortran array) is copied to NCHW first.
"""

from __future__ import annotations

import numpy as np


def is_channels_last(x: np.ndarray) -> bool:
    """True if the (N, C, H, W) array ``x`` is laid out as NHWC in memory (and not also NCHW)."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous and not x.flags.c_contiguous


def as_layout(x: np.ndarray, channels_last: bool) -> np.ndarray:
    """The memory of ``x`` as a C-contiguous (N, H, W, C) or (N, C, H, W) array (copy only if needed)."""
    if channels_last:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C)
    return np.ascontiguousarray(x)  # (N, C, H, W)


def from_layout(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """An (N, C, H, W) view of a kernel's output in either layout (no copy)."""
    return a.transpose(0, 3, 1, 2) if channels_last else a
