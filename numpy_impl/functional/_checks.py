"""Input validation shared by every op: errors name the function, the parameter,
what was expected and what was got."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def as_float_array(fn: str, name: str, a, ndim=None) -> np.ndarray:
    """Return ``a`` as a float32/float64 ndarray with one of the allowed ``ndim``."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(map(str, allowed))
            raise ValueError(f"{fn}: {name} must be {want}-D, got {a.ndim}-D array of shape {a.shape}")
    return a


def same_dtype(fn: str, ref_name: str, ref: np.ndarray, **others) -> None:
    """Every array in ``others`` (None allowed) must share ``ref``'s dtype, like torch."""
    for name, a in others.items():
        if a is not None and a.dtype != ref.dtype:
            raise TypeError(
                f"{fn}: {name} must have the same dtype as {ref_name} ({ref.dtype}), got {a.dtype}; "
                f"cast with .astype(np.{ref.dtype})"
            )


def check_shape(fn: str, name: str, a: np.ndarray, shape: tuple) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {a.shape}")


def int_pair(fn: str, name: str, v, minimum: int) -> tuple[int, int]:
    """``v`` as (int, int), each >= ``minimum``; accepts an int or a pair like torch."""
    if type(v) is int and v >= minimum:  # the common case, without the ABC checks below
        return v, v
    items = (v, v) if isinstance(v, numbers.Integral) else v
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}") from None
    if len(items) != 2 or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, bool):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}")
    if min(items) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v!r}")
    return int(items[0]), int(items[1])


def check_number(fn: str, name: str, v, lo=None, hi=None) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi) or v != v:
        where = "a number, not nan" if lo is None and hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{fn}: {name} must be {where}, got {v}")
    return float(v)


def check_rng(fn: str, name: str, v) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed >= 0 or None (fresh entropy)."""
    if isinstance(v, np.random.Generator):
        return v
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise TypeError(
            f"{fn}: {name} must be a numpy.random.Generator, an int seed or None, got {type(v).__name__}"
        )
    if v is not None and v < 0:
        raise ValueError(f"{fn}: {name} must be >= 0 (a seed), got {v}")
    return np.random.default_rng(v)


def check_int(fn: str, name: str, v, lo: int) -> int:
    """An int (numpy integers too, not bool) >= ``lo``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{fn}: {name} must be >= {lo}, got {v}")
    return int(v)
