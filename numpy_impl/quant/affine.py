"""The affine map between real numbers and integers, and requantization.

A quantized tensor stores integers ``q`` with a ``scale`` and a ``zero_point`` (Jacob et
al. 2018, eq. 1; gemmlowp's ``doc/quantization.md``)::

    real = scale * (q - zero_point)                 q in [qmin, qmax]

- Activations: one (scale, zero_point) per tensor, ``uint8`` in [0, 255] (torch's ``quint8``).
  Real 0 is the integer ``zero_point`` exactly, so the zero padding of a convolution is exact.
- Weights: ``int8`` in [-127, 127], one scale per output channel, zero point 0 (symmetric, as
  TFLite's spec; -128 is left out so that ``-q`` is always representable).

A convolution of ``x_q`` (scale ``s_x``, zero point ``z_x``) with ``w_q`` (scales ``s_w[k]``)
sums integer products into an int32 accumulator; the bias is stored as int32 in the
accumulator's scale ``s_x * s_w[k]``::

    acc[k] = sum_i (x_q[i] - z_x) * w_q[k, i] + b_q[k]        real = s_x * s_w[k] * acc[k]
    y_q[k] = clamp(z_y + round(M[k] * acc[k]), qmin, qmax)       M[k] = s_x * s_w[k] / s_y

The clamp is also how ReLU and ReLU6 are applied: their output range *is* [qmin, qmax].
Two ways to apply the real multiplier ``M`` (``M < 1`` in practice):

- ``requantize`` (scheme "float"): float32 ``M`` and float32 arithmetic, round half to even.
  This is torch's x86 engine (fbgemm's ``ReQuantizeOutput``) and XNNPACK's "fp32" scheme;
  the op-by-op checks against torch are exact with it.
- ``requantize_fixed`` (scheme "fixed"): integers only. ``M = m0 * 2**-shift`` with ``m0`` an
  int32 in [2**30, 2**31), applied by gemmlowp's ``SaturatingRoundingDoublingHighMul`` and
  ``RoundingDivideByPOT`` (TFLite's reference kernels).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..functional._checks import as_float_array

# (qmin, qmax) of the two integer types, and of symmetric weights
UINT8 = (0, 255)
INT8 = (-128, 127)
EPS = float(np.finfo(np.float32).eps)  # the smallest scale: a constant tensor must not give 0 or inf


def activation_range(dtype="uint8", bits=8, reduce_range=False) -> tuple[int, int]:
    """(qmin, qmax) of an activation type with ``bits`` bits (one fewer with ``reduce_range``:
    torch's x86 default, see :func:`numpy_impl.quant.ops.conv2d`)."""
    if dtype not in ("uint8", "int8"):
        raise ValueError(f"activation_range: dtype must be 'uint8' or 'int8', got {dtype!r}")
    bits = check_bits("activation_range", bits) - bool(reduce_range)
    return (0, 2**bits - 1) if dtype == "uint8" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def weight_range(bits=8) -> tuple[int, int]:
    """(-qmax, qmax) of symmetric weights: [-127, 127] at 8 bits."""
    qmax = 2 ** (check_bits("weight_range", bits) - 1) - 1
    return -qmax, qmax


def check_bits(fn, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 2 <= bits <= 8:
        raise ValueError(f"{fn}: bits must be an int in [2, 8], got {bits!r}")
    return int(bits)


def _check_range(fn, qmin, qmax):
    if not (isinstance(qmin, numbers.Integral) and isinstance(qmax, numbers.Integral)) or not qmin < qmax:
        raise ValueError(f"{fn}: need integers qmin < qmax, got ({qmin!r}, {qmax!r})")


def f32(v) -> float:
    """``v`` rounded to float32 (scales are float32 everywhere, as in torch's kernels)."""
    return float(np.float32(v))


# --- choosing scales and zero points ------------------------------------------------------


def choose_qparams(lo, hi, qmin=0, qmax=255) -> tuple[float, int]:
    """Scale and zero point that map the real range [lo, hi] onto [qmin, qmax] (torch's
    ``_calculate_qparams``, affine)::

        lo, hi = min(lo, 0), max(hi, 0)         # real 0 must be in range, to be exact
        scale = max((hi - lo) / (qmax - qmin), eps)
        zero_point = clamp(qmin - round(lo / scale), qmin, qmax)
    """
    _check_range("choose_qparams", qmin, qmax)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"choose_qparams: need finite lo <= hi, got lo={lo}, hi={hi}")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = f32(max((hi - lo) / (qmax - qmin), EPS))
    zero_point = int(np.clip(qmin - np.rint(lo / scale), qmin, qmax))
    return scale, zero_point


def weight_scales(w, bits=8, per_channel=True) -> np.ndarray:
    """Symmetric scales of ``w`` (K, ...): ``max|w[k]| / qmax`` per output channel ``k`` (or one
    for the whole tensor, repeated K times, with ``per_channel=False``), float32, >= eps."""
    w = as_float_array("weight_scales", "w", w)
    if w.ndim < 1 or w.shape[0] == 0:
        raise ValueError(f"weight_scales: w must have an output-channel axis, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight_scales: w holds NaN or inf; a float model must be finite to quantize")
    qmax = weight_range(bits)[1]
    amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1).astype(np.float64)
    if not per_channel:
        amax[:] = amax.max()
    return np.maximum(amax / qmax, EPS).astype(np.float32)


# --- quantize and dequantize --------------------------------------------------------------


def _qparams_along(scale, zero_point, ndim, axis):
    """``scale`` (float32) and ``zero_point`` (int64) as arrays that broadcast along ``axis`` of
    an ``ndim``-D array (per channel), or as given for ``axis=None`` (per tensor)."""
    scale, zero_point = np.asarray(scale, np.float32), np.asarray(zero_point, np.int64)
    if axis is None:
        return scale, zero_point
    return _along(scale, ndim, axis), _along(zero_point, ndim, axis)


def quantize(x, scale, zero_point, qmin=0, qmax=255, axis=None):
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)``, as an int32 array.

    Computed as torch's kernels do, so that both see the same integers: ``x * (1/scale) +
    zero_point`` with one rounding to float32 (their fused multiply-add; float64 holds the
    product of two float32 values exactly), then round half to even. ``scale`` and
    ``zero_point`` are scalars, or arrays along ``axis`` (per channel)."""
    x = as_float_array("quantize", "x", x)
    _check_range("quantize", qmin, qmax)
    scale, zero_point = _qparams_along(scale, zero_point, x.ndim, axis)
    if np.any(scale <= 0) or not np.isfinite(scale).all():
        raise ValueError(f"quantize: scale must be finite and > 0, got {scale.ravel()[:4]}")
    inv = (np.float32(1) / scale).astype(np.float64)
    q = np.rint((x.astype(np.float32).astype(np.float64) * inv + zero_point).astype(np.float32))
    return np.clip(np.nan_to_num(q, nan=0.0), qmin, qmax).astype(np.int32)


def dequantize(q, scale, zero_point, axis=None) -> np.ndarray:
    """``real = scale * (q - zero_point)`` in float32."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"dequantize: q must hold integers, got dtype {q.dtype}")
    scale, zero_point = _qparams_along(scale, zero_point, q.ndim, axis)
    return (scale * (q.astype(np.int64) - zero_point).astype(np.float32)).astype(np.float32)


# --- requantization: float scheme ---------------------------------------------------------


def multiplier(s_in, s_w, s_out) -> np.ndarray:
    """``M = (s_in * s_w) / s_out`` in float32, in that order (fbgemm's ``act_times_w_scale``
    then ``C_multiplier``): the same float32 number torch multiplies by."""
    prod = np.float32(s_in) * np.asarray(s_w, np.float32)
    return (prod / np.float32(s_out)).astype(np.float32)


def requantize(acc, M, zero_point, qmin, qmax, axis=1):
    """Scheme "float": ``y = clamp(rint(float32(acc) * M) + zero_point, qmin, qmax)``, round half
    to even, float32 product; ``M`` a scalar or one per channel along ``axis``."""
    acc = _check_acc("requantize", acc)
    M = _along(np.asarray(M, np.float32), acc.ndim, axis)
    y = np.rint(acc.astype(np.float32) * M).astype(np.int64) + int(zero_point)
    return np.clip(y, qmin, qmax).astype(np.int32)


def _check_acc(fn, acc):
    acc = np.asarray(acc)
    if not np.issubdtype(acc.dtype, np.integer):
        raise TypeError(f"{fn}: acc must hold integers (the int32 accumulator), got dtype {acc.dtype}")
    if acc.size and (acc.min() < -(2**31) or acc.max() >= 2**31):
        raise OverflowError(f"{fn}: acc overflows int32 (range [{acc.min()}, {acc.max()}])")
    return acc


def _along(a, ndim, axis):
    if a.ndim == 0:
        return a
    shape = [1] * ndim
    shape[axis] = -1
    return a.reshape(shape)


# --- requantization: fixed-point scheme (gemmlowp / TFLite) -------------------------------


def quantize_multiplier(M) -> tuple[np.ndarray, np.ndarray]:
    """``M ≈ m0 * 2**-31 * 2**-shift`` with ``m0`` an int32 in [2**30, 2**31) (TFLite's
    ``QuantizeMultiplier``): ``M = f * 2**e`` with f in [0.5, 1), ``m0 = round(f * 2**31)``,
    ``shift = -e`` (negative for M >= 1: a left shift). Arrays of int64 (m0, shift)."""
    M = np.asarray(M, np.float64)
    if not np.isfinite(M).all() or np.any(M <= 0) or np.any(M >= 2.0**31):
        raise ValueError(f"quantize_multiplier: M must be in (0, 2**31), got {M.ravel()[:4]}")
    f, e = np.frexp(M)
    m0 = np.rint(f * 2.0**31).astype(np.int64)
    carry = m0 == 2**31  # f rounded up to 1.0
    m0 = np.where(carry, 2**30, m0)
    return m0, (-(e + carry)).astype(np.int64)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``round(a * b / 2**31)`` on int32, the
    one overflowing case (a == b == -2**31) saturated to 2**31 - 1. Ties go up (towards +inf):
    the nudge of a negative product is ``1 - 2**30``, then C's division truncates towards 0."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C's int64 division truncates toward zero; numpy's // floors
    q = ab + nudge
    out = np.where(q >= 0, q >> 31, -((-q) >> 31))
    return np.where((a == b) & (a == -(2**31)), 2**31 - 1, out)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away from 0."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc, m0, shift):
    """``acc * M`` in integers: TFLite's ``MultiplyByQuantizedMultiplier``. A negative ``shift``
    (M >= 1) shifts left first, saturating to int32 as a 32-bit register would."""
    acc, shift = np.asarray(acc, np.int64), np.asarray(shift, np.int64)
    left = np.maximum(-shift, 0)
    shifted = np.clip(acc << left, -(2**31), 2**31 - 1)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), np.maximum(shift, 0))


def requantize_fixed(acc, m0, shift, zero_point, qmin, qmax, axis=1):
    """Scheme "fixed": ``y = clamp(zero_point + MultiplyByQuantizedMultiplier(acc, m0, shift))``,
    integer arithmetic only. Differs from :func:`requantize` by at most one unit: both round
    ``acc * M``, this one with ``M`` rounded to 31 bits and its own tie rules (up in the
    multiplication, away from zero in the shift)."""
    acc = _check_acc("requantize_fixed", acc)
    m0 = _along(np.asarray(m0, np.int64), acc.ndim, axis)
    shift = _along(np.asarray(shift, np.int64), acc.ndim, axis)
    if np.any(shift < -31) or np.any(shift > 62):
        raise ValueError(f"requantize_fixed: shift must be in [-31, 62], got {np.ravel(shift)[:4]}")
    y = multiply_by_quantized_multiplier(acc, m0, shift) + int(zero_point)
    return np.clip(y, qmin, qmax).astype(np.int32)
