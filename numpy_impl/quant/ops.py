"""Integer-only ops: every MobileNet layer on quantized tensors, int32 accumulation.

Inputs are integer arrays (uint8 values held in any integer dtype) with their zero point;
outputs are int32 arrays holding the output type's values (in [qmin, qmax]). How the int32
accumulator becomes the output is a :class:`Requant` (``numpy_impl.quant.affine``)::

    conv2d:   acc[n, k, h, w] = b[k] + sum_{c, i, j} (x[n, g*Cg + c, h*s + i - p, w*s + j - p] - z_x)
                                                      * w[k, c, i, j]      (padded taps add 0)
              y = requant(acc)                         g = k // (K / groups), Cg = C / groups
    linear:   acc[n, k] = b[k] + sum_c (x[n, c] - z_x) * w[k, c]
    add:      y = z_y + round((s_a (a - z_a) + s_b (b - z_b)) / s_y)       (the residual add)
    mul:      y = z_y + round(s_a s_b / s_y * (a - z_a)(b - z_b))           (squeeze-and-excite)
    avgpool:  y[n, c] = round(sum_{h, w} x[n, c, h, w] / (H W))          (the input's qparams)
    lookup:   y = table[x - qmin]                      (any elementwise function: hard-swish...)

Integer products are summed exactly: the products of 8-bit values are below 2**15, so float64
(exact for every integer below 2**53) carries them through BLAS with no rounding; the result is
checked to fit the int32 accumulator a kernel would use.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from . import affine

SCHEMES = ("float", "fixed")
MEMORY_FORMAT = "contiguous"  # any layout works; the numba backend's is channels-last


@dataclass(frozen=True)
class QParams:
    """A quantized tensor's description: ``real = scale * (q - zero_point)``, q in [qmin, qmax]."""

    scale: float
    zero_point: int
    qmin: int = 0
    qmax: int = 255

    def __post_init__(self):
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"QParams: scale must be finite and > 0, got {self.scale}")
        if not self.qmin <= self.zero_point <= self.qmax:
            raise ValueError(
                f"QParams: zero_point must be in [{self.qmin}, {self.qmax}], got {self.zero_point}"
            )


@dataclass(frozen=True)
class Requant:
    """From an int32 accumulator of scale ``s_in * s_w[k]`` to the integers of ``out``.

    ``lo``/``hi`` narrow the clamp below the type's range: a fused ReLU is ``lo = z_out``."""

    M: np.ndarray  # float32 (K,) or (): s_in * s_w / s_out
    out: QParams
    scheme: str = "float"
    lo: int | None = None
    hi: int | None = None

    @classmethod
    def make(cls, s_in, s_w, out: QParams, scheme="float", relu=False):
        if scheme not in SCHEMES:
            raise ValueError(f"Requant: scheme must be one of {SCHEMES}, got {scheme!r}")
        M = affine.multiplier(s_in, s_w, out.scale)
        return cls(M, out, scheme, lo=out.zero_point if relu else None)

    def __call__(self, acc, axis=1):
        lo = self.out.qmin if self.lo is None else max(self.lo, self.out.qmin)
        hi = self.out.qmax if self.hi is None else min(self.hi, self.out.qmax)
        if self.scheme == "float":
            return affine.requantize(acc, self.M, self.out.zero_point, lo, hi, axis)
        m0, shift = affine.quantize_multiplier(self.M)
        return affine.requantize_fixed(acc, m0, shift, self.out.zero_point, lo, hi, axis)


# --- checks -------------------------------------------------------------------------------


def _int_array(fn, name, a, ndim=None, lo=None, hi=None):
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.integer):
        got = getattr(a, "dtype", type(a).__name__)
        raise TypeError(f"{fn}: {name} must be a numpy array of integers, got {got}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {a.shape}")
    if a.size and lo is not None and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{fn}: {name} must hold values in [{lo}, {hi}], got [{a.min()}, {a.max()}]")
    return a


def _check_zp(fn, name, zp):
    if isinstance(zp, bool) or not isinstance(zp, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(zp).__name__}")
    return int(zp)


def _exact_sum_of_products(a, b):
    """``a @ b`` of integer arrays, exact, as int64 (float64 BLAS: every partial sum < 2**53)."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


def _to_int32(fn, acc):
    if acc.size and (acc.min() < -(2**31) or acc.max() >= 2**31):
        raise OverflowError(f"{fn}: the int32 accumulator overflows (range [{acc.min()}, {acc.max()}])")
    return acc


# --- convolutions -------------------------------------------------------------------------


def conv2d_acc(x, x_zero_point, w, b=None, stride=1, padding=0, groups=1):
    """The int32 accumulator of a convolution (N, K, H_out, W_out), int64 dtype.

    x : (N, C, H, W) integers, w : (K, C / groups, kh, kw) int8 values, b : (K,) int32 or None.
    H_out = (H + 2 padding - kh) // stride + 1 (torch.nn.Conv2d's).
    """
    fn = "conv2d"
    x = _int_array(fn, "x", x, 4)
    w = _int_array(fn, "w", w, 4, -128, 127)
    zp = _check_zp(fn, "x_zero_point", x_zero_point)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    if not isinstance(groups, int) or groups < 1 or C % groups or K % groups or Cg != C // groups:
        raise ValueError(
            f"{fn}: w must have shape (K, C / groups, kh, kw) with C={C}, groups={groups}, got {w.shape}"
        )
    s, p = int(stride), int(padding)
    if s < 1 or p < 0:
        raise ValueError(f"{fn}: need stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{fn}: kernel {kh}x{kw} larger than the padded input {H + 2 * p}x{W + 2 * p}")
    # subtracting the zero point first makes every padded tap real 0: it adds nothing
    xs = np.pad(x.astype(np.int64) - zp, ((0, 0), (0, 0), (p, p), (p, p)))  # (N, C, H+2p, W+2p)
    G, Kg = groups, K // groups
    xg = xs.reshape(N, G, Cg, H + 2 * p, W + 2 * p)
    wg = w.astype(np.int64).reshape(G, Kg, Cg, kh, kw)
    acc = np.zeros((N, G, Kg, Ho, Wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            win = xg[..., i : i + s * (Ho - 1) + 1 : s, j : j + s * (Wo - 1) + 1 : s]  # (N, G, Cg, Ho, Wo)
            if Cg == 1 and Kg == 1:  # depthwise: one product per channel
                acc += win * wg[None, :, 0, 0, i, j, None, None, None]
            else:
                rows = win.transpose(0, 1, 3, 4, 2).reshape(N, G, Ho * Wo, Cg)  # (N, G, HoWo, Cg)
                prod = _exact_sum_of_products(rows, wg[:, :, :, i, j].transpose(0, 2, 1))  # (N, G, HoWo, Kg)
                acc += prod.transpose(0, 1, 3, 2).reshape(N, G, Kg, Ho, Wo)
    acc = acc.reshape(N, K, Ho, Wo)
    if b is not None:
        acc += _int_array(fn, "b", b, 1).astype(np.int64).reshape(1, K, 1, 1)
    return _to_int32(fn, acc)


def conv2d(x, x_zero_point, w, b, requant: Requant, stride=1, padding=0, groups=1):
    """A quantized convolution: :func:`conv2d_acc` then ``requant`` (per output channel)."""
    return requant(conv2d_acc(x, x_zero_point, w, b, stride, padding, groups), axis=1)


def depthwise_conv2d(x, x_zero_point, w, b, requant: Requant, stride=1, padding=0):
    """``conv2d`` with groups = C = K: w : (C, 1, kh, kw)."""
    if w.ndim != 4 or w.shape[:2] != (x.shape[1], 1):
        raise ValueError(f"depthwise_conv2d: w must have shape ({x.shape[1]}, 1, kh, kw), got {w.shape}")
    return conv2d(x, x_zero_point, w, b, requant, stride, padding, groups=x.shape[1])


def pointwise_conv2d(x, x_zero_point, w, b, requant: Requant):
    """``conv2d`` with a 1x1 kernel, stride 1: w : (K, C, 1, 1); a GEMM over channels."""
    if w.ndim != 4 or w.shape[1:] != (x.shape[1], 1, 1):
        raise ValueError(f"pointwise_conv2d: w must have shape (K, {x.shape[1]}, 1, 1), got {w.shape}")
    return conv2d(x, x_zero_point, w, b, requant)


def linear(x, x_zero_point, w, b, requant: Requant):
    """x : (N, C), w : (K, C) int8 values, b : (K,) int32 or None -> (N, K)."""
    fn = "linear"
    x = _int_array(fn, "x", x, 2)
    w = _int_array(fn, "w", w, 2, -128, 127)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{fn}: w must have shape (K, {x.shape[1]}), got {w.shape}")
    acc = _exact_sum_of_products(x.astype(np.int64) - _check_zp(fn, "x_zero_point", x_zero_point), w.T)
    if b is not None:
        acc += _int_array(fn, "b", b, 1).astype(np.int64)
    return requant(_to_int32(fn, acc), axis=1)


def quantize_input(x, qp: QParams):
    """The model's float input to integers (:func:`numpy_impl.quant.affine.quantize`)."""
    return affine.quantize(x, qp.scale, qp.zero_point, qp.qmin, qp.qmax)


_linear = linear  # make_conv's parameter ``linear`` hides the function


def make_conv(w, b, x_zero_point, requant: Requant, stride=1, padding=0, groups=1, linear=False):
    """The backend contract's prepared convolution: a function of x alone (``kernels.qops``
    packs the weights once here; this reference has nothing to prepare)."""
    if linear:
        return lambda x: _linear(x, x_zero_point, w, b, requant)
    return lambda x: conv2d(x, x_zero_point, w, b, requant, stride, padding, groups)


# --- elementwise --------------------------------------------------------------------------


def add(a, qa: QParams, b, qb: QParams, out: QParams, scheme="float"):
    """The residual add, both inputs requantized to the output's scale.

    "float": ``z_y + rint((a - z_a) * (s_a / s_y) + (b - z_b) * (s_b / s_y))`` in float64.
    "fixed" (TFLite's ``ADD``): both inputs shifted left by 20 bits, brought to the scale
    ``2 max(s_a, s_b)`` by fixed-point multipliers, summed, then to ``s_y``."""
    a, b = _int_array("add", "a", a), _int_array("add", "b", b)
    if a.shape != b.shape:
        raise ValueError(f"add: a and b must have the same shape, got {a.shape} and {b.shape}")
    da, db = a.astype(np.int64) - qa.zero_point, b.astype(np.int64) - qb.zero_point
    if scheme == "float":
        y = np.rint(da * (qa.scale / out.scale) + db * (qb.scale / out.scale)).astype(np.int64)
    elif scheme == "fixed":
        twice_max = 2 * max(qa.scale, qb.scale)
        ma, sa = affine.quantize_multiplier(qa.scale / twice_max)
        mb, sb = affine.quantize_multiplier(qb.scale / twice_max)
        mo, so = affine.quantize_multiplier(twice_max / ((1 << 20) * out.scale))
        ra = affine.multiply_by_quantized_multiplier(da << 20, ma, sa)
        rb = affine.multiply_by_quantized_multiplier(db << 20, mb, sb)
        y = affine.multiply_by_quantized_multiplier(ra + rb, mo, so)
    else:
        raise ValueError(f"add: scheme must be one of {SCHEMES}, got {scheme!r}")
    return np.clip(y + out.zero_point, out.qmin, out.qmax).astype(np.int32)


def mul(a, qa: QParams, b, qb: QParams, out: QParams, scheme="float"):
    """Elementwise product (squeeze-and-excite's ``x * scale``, the scale broadcast over H, W):
    the int32 product ``(a - z_a)(b - z_b)`` requantized with ``M = s_a s_b / s_y`` (torch's
    ``quantized.mul``)."""
    a, b = _int_array("mul", "a", a), _int_array("mul", "b", b)
    acc = (a.astype(np.int64) - qa.zero_point) * (b.astype(np.int64) - qb.zero_point)
    return Requant.make(qa.scale, qb.scale, out, scheme)(acc, axis=0)


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C), keeping the input's scale and zero point (torch's quantized
    adaptive_avg_pool2d): ``y = round(sum_{h, w} x / (H W))``, ties to even, in integers. With the
    same qparams on both sides the zero point cancels: ``mean(q) - z`` is the real mean / s."""
    x = _int_array("global_avg_pool2d", "x", x, 4)
    total = x.astype(np.int64).sum(axis=(2, 3))  # (N, C)
    return divide_round_half_even(total, x.shape[2] * x.shape[3]).astype(np.int32)


def divide_round_half_even(num, den: int):
    """``round(num / den)`` for integers, ties to even, with integer operations only."""
    q, r = np.divmod(num, den)  # floor division: 0 <= r < den
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up


def lookup_table(fn, qin: QParams, out: QParams) -> np.ndarray:
    """``table[q - qmin] = quantize(fn(dequantize(q)))`` for every input integer q: any
    elementwise function on 8-bit values is a 256-entry table, made once, used by integers.
    ``fn`` runs on float32 (as torch's quantized hard-swish dequantizes, applies, quantizes)."""
    q = np.arange(qin.qmin, qin.qmax + 1)
    real = affine.dequantize(q, qin.scale, qin.zero_point)
    return affine.quantize(fn(real), out.scale, out.zero_point, out.qmin, out.qmax)


def lookup(x, table, qin: QParams):
    """``table[x - qmin]``."""
    x = _int_array("lookup", "x", x, lo=qin.qmin, hi=qin.qmax)
    if table.shape != (qin.qmax - qin.qmin + 1,):
        n = qin.qmax - qin.qmin + 1
        raise ValueError(f"lookup: table must have {n} entries, got shape {table.shape}")
    return table[x.astype(np.int64) - qin.qmin]


def hardswish_float(x):
    """``x * relu6(x + 3) / 6`` in float32, in torch's order."""
    return (x * np.clip(x + np.float32(3), 0, 6) / np.float32(6)).astype(np.float32)


def hardsigmoid_float(x):
    """``relu6(x + 3) / 6`` in float32."""
    return (np.clip(x + np.float32(3), 0, 6) / np.float32(6)).astype(np.float32)
