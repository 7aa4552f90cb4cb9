"""The integer model's ops on Numba kernels: ``numpy_impl.quant.ops``'s names and results, bit for
bit, on uint8 activations laid out channels-last (an (N, C, H, W) array with NHWC memory).

A convolution is prepared once per layer (``make_conv``: the weights packed or widened, the zero
point's term folded into the bias, the int32 accumulator's range checked) and then called on
each input. Pointwise convolutions and linear layers are :mod:`kernels.qgemm`'s GEMM, the stem
convolution an im2col then the same GEMM, depthwise ones :mod:`kernels.qdepthwise` (version 4
where the CPU has VNNI, else versions 2 and 3). An inverted residual without squeeze-and-excite
can run as one call (``make_block``: :class:`Block`). The requantization is the "float" scheme
(torch's); the "fixed" one runs on NumPy's ops.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numpy_impl.quant.affine import multiplier

from . import qdepthwise, qgemm
from ._vnni import HAS_VNNI, lookup64
from .qgemm import requant

MEMORY_FORMAT = "channels_last"
_opts = {"cache": True, "error_model": "numpy", "nogil": True}


def nhwc(x):
    """The NHWC array behind an (N, C, H, W) array (a copy if its memory is not NHWC)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _check_uint8(fn, x, ndim, channels):
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise TypeError(
            f"{fn}: x must be a uint8 numpy array (the numba int8 path), got {getattr(x, 'dtype', type(x))}"
        )
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{fn}: x must be {ndim}-D with {channels} channels, got shape {x.shape}")


class Conv:
    """A prepared integer convolution (or linear layer): ``Conv(...)(x)`` is
    ``numpy_impl.quant.ops.conv2d(x, x_zero_point, w, b, requant, stride, padding, groups)``."""

    def __init__(self, w, b, x_zero_point, requant_, stride=1, padding=0, groups=1, linear=False):
        rq = requant_
        if rq.scheme != "float":
            raise ValueError(
                "the numba int8 kernels requantize with the 'float' scheme; run 'fixed' on numpy"
            )
        if rq.out.qmin < 0 or rq.out.qmax > 255:
            raise ValueError(
                f"the numba int8 kernels write uint8 activations, got range [{rq.out.qmin}, {rq.out.qmax}]"
            )
        w = np.asarray(w)
        K = w.shape[0]
        self.linear, self.stride, self.padding, self.groups = linear, int(stride), int(padding), int(groups)
        self.shape = w.shape
        self.zx = int(x_zero_point)
        M = np.asarray(rq.M, np.float32)
        if M.shape not in ((), (K,)):
            raise ValueError(f"Conv: the requantization has {M.size} multipliers for {K} output channels")
        self.M = np.array(np.broadcast_to(M, (K,)))
        self.zp = int(rq.out.zero_point)
        self.lo = max(rq.out.qmin, rq.lo if rq.lo is not None else rq.out.qmin)
        self.hi = min(rq.out.qmax, rq.hi if rq.hi is not None else rq.out.qmax)
        b = np.zeros(K, np.int32) if b is None else np.asarray(b, np.int32)
        taps = int(np.prod(w.shape[1:]))
        if taps * 255 * int(np.abs(w).max(initial=0)) + int(np.abs(b).max(initial=0)) >= 2**31:
            raise OverflowError("Conv: these weights could overflow the int32 accumulator")
        self.kind = "linear" if linear else self._kind(w)
        if self.kind == "depthwise":
            self.wt = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).astype(np.int16)  # (kh, kw, C)
            self.bias, self._tiles = b, {}
            kh, kw = self.wt.shape[:2]
            self.v4 = kh == kw and kh in qdepthwise.V4_KERNELS and HAS_VNNI
            if self.v4:  # version 4's operands: taps packed in words, zero point folded
                self.wpk = qdepthwise.pack_taps(self.wt)
                self.bias_f = qdepthwise.fold_taps(self.wt, b, self.zx)
        else:
            if self.kind == "conv":  # im2col's (i, j, c) order, channels padded to whole words
                wt = w.transpose(0, 2, 3, 1)  # (K, kh, kw, C)
                c4 = -(-wt.shape[3] // 4) * 4
                rows = np.zeros((*wt.shape[:3], c4), np.int8)
                rows[..., : wt.shape[3]] = wt
                rows = rows.reshape(K, -1)
            else:
                rows = w.reshape(K, -1)
            self.w_rows = np.ascontiguousarray(rows, np.int8)  # (K, taps)
            self.bias = qgemm.fold_bias(self.w_rows, b, self.zx)
            self.packed = qgemm.pack_weights(self.w_rows) if qgemm.BEST == 4 else None
            self.bias_blocks, self.M_blocks = qgemm.pad_to_blocks(self.bias), qgemm.pad_to_blocks(self.M)

    def _kind(self, w):
        K, Cg, kh, kw = w.shape
        if kh == kw == 1 and self.stride == 1 and self.padding == 0 and self.groups == 1:
            return "pointwise"
        if self.groups == K and Cg == 1:
            return "depthwise"
        if self.groups != 1:
            raise ValueError("Conv: grouped convolutions other than depthwise are not in these kernels")
        return "conv"

    def gemm(self, rows):
        out = np.empty((rows.shape[0], self.M.shape[0]), np.uint8)
        if self.packed is not None:
            args = (self.bias_blocks, self.M_blocks, self.zp, self.lo, self.hi, out)
            qgemm.gemm_v4(qgemm.as_words(rows), self.packed, *args)
        else:
            qgemm.gemm_v2(
                np.ascontiguousarray(rows), self.w_rows, self.bias, self.M, self.zp, self.lo, self.hi, out
            )
        return out

    def __call__(self, x):
        if self.kind == "linear":
            _check_uint8("linear", x, 2, self.shape[1])
            return self.gemm(x)
        _check_uint8("conv2d", x, 4, self.shape[1] * self.groups)
        N, _, H, W = x.shape
        kh, kw = self.shape[2:]
        s, p = self.stride, self.padding
        Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(f"conv2d: kernel {kh}x{kw} larger than the padded input {H + 2 * p}x{W + 2 * p}")
        xh = nhwc(x)  # (N, H, W, C)
        if self.kind == "depthwise":
            out = np.empty((N, Ho, Wo, self.shape[0]), np.uint8)
            q = (self.zx,)
            rq = (self.zp, self.lo, self.hi)
            if self.v4:
                v4 = (self.wt, self.bias, self.wpk, self.bias_f, self.M)
                qdepthwise.depthwise_v4(xh, *q, *v4, *rq, s, p, out)
            elif s == 1 and self.shape[0] <= qdepthwise.FLAT_MAX_CHANNELS:  # version 2, tiles once per width
                if Wo not in self._tiles:
                    self._tiles[Wo] = qdepthwise.tiles(self.wt, self.bias, self.M, Wo)
                qdepthwise.depthwise_v2(xh, *q, *self._tiles[Wo], *rq, p, out)
            else:
                kernel = qdepthwise.depthwise_v3.get(kh) if kh == kw else None
                kernel = kernel or qdepthwise.depthwise_v1  # other kernel sizes: version 1
                kernel(xh, *q, self.wt, self.bias, self.M, *rq, s, p, out)
            return out.transpose(0, 3, 1, 2)
        if self.kind == "conv":
            words = im2col(xh, kh, kw, s, p, self.zx)  # (N, Ho, Wo, kh kw Cw) int32
            rows = self.gemm(words.view(np.uint8).reshape(N * Ho * Wo, -1))
        else:
            rows = self.gemm(xh.reshape(N * Ho * Wo, -1))  # (N Ho Wo, K)
        return rows.reshape(N, Ho, Wo, -1).transpose(0, 3, 1, 2)


@njit(parallel=True, **_opts)
def _pad_words(x, pad, fill, out):
    """x (N, H, W, C) uint8 -> out (N, H + 2 pad, (W + 2 pad) Cw) int32: each pixel's C bytes in
    Cw = ceil(C / 4) words, the border and the spare bytes ``fill`` (the zero point: real 0)."""
    N, H, W, C = x.shape
    Hp, L = out.shape[1], out.shape[2]
    Cw = L // (W + 2 * pad)
    f = np.int32(fill)
    fw = f | (f << 8) | (f << 16) | (f << 24)
    for t in prange(N * Hp):
        n, h = t // Hp, t % Hp
        o = out[n, h]
        ih = h - pad
        if ih < 0 or ih >= H:
            for k in range(L):
                o[k] = fw
            continue
        for k in range(pad * Cw):
            o[k] = fw
            o[L - 1 - k] = fw
        src = x[n, ih]
        if C == 3:  # the stem's RGB: one word per pixel, the spare byte the zero point
            for w in range(W):
                rgb = np.int32(src[w, 0]) | (np.int32(src[w, 1]) << 8) | (np.int32(src[w, 2]) << 16)
                o[w + pad] = rgb | (f << 24)
            continue
        for w in range(W):
            for q in range(Cw):
                word = np.int32(0)
                for b in range(4):
                    byte = np.int32(src[w, 4 * q + b]) if 4 * q + b < C else f
                    word |= byte << (8 * b)
                o[(w + pad) * Cw + q] = word


@njit(parallel=True, **_opts)
def _im2col_words(xw, kh, kw, stride, Cw, out):
    """xw: the padded input's words (N, Hp, Wp Cw); out (N, Ho, Wo, kh kw Cw) int32: each output
    pixel's taps in (i, j, word) order, whole words copied (no bounds: the input is padded)."""
    N = xw.shape[0]
    Ho, Wo = out.shape[1], out.shape[2]
    for t in prange(N * Ho):
        n, oh = t // Ho, t % Ho
        o = out[n, oh]
        if kh == 3 and kw == 3 and Cw == 1:  # the stem: nine words, unrolled
            r0, r1, r2 = xw[n, oh * stride], xw[n, oh * stride + 1], xw[n, oh * stride + 2]
            for ow in range(Wo):
                s = np.uint64(ow * stride)
                o[ow, 0], o[ow, 1], o[ow, 2] = r0[s], r0[s + 1], r0[s + 2]
                o[ow, 3], o[ow, 4], o[ow, 5] = r1[s], r1[s + 1], r1[s + 2]
                o[ow, 6], o[ow, 7], o[ow, 8] = r2[s], r2[s + 1], r2[s + 2]
            continue
        for ow in range(Wo):
            k = 0
            for i in range(kh):
                r = xw[n, oh * stride + i]
                for q in range(kw * Cw):
                    o[ow, k] = r[ow * stride * Cw + q]
                    k += 1


def im2col(x, kh, kw, stride, pad, fill):
    """(N, H, W, C) uint8 -> (N, Ho, Wo, kh kw Cw) int32 words, Cw = ceil(C / 4): each output
    pixel's taps in (i, j, c) order, channels padded to whole words, the padding ``fill``."""
    N, H, W, C = x.shape
    Cw = -(-C // 4)
    words = np.empty((N, H + 2 * pad, (W + 2 * pad) * Cw), np.int32)
    _pad_words(x, pad, np.uint8(fill), words)
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    out = np.empty((N, Ho, Wo, kh * kw * Cw), np.int32)
    _im2col_words(words, kh, kw, stride, Cw, out)
    return out


_ROUND = np.float32(1.5 * 2**23)  # v + this - this rounds a float32 |v| < 2**22 to even


@njit(parallel=True, **_opts)
def _quantize(x, inv, zp, lo, hi, out):
    """A row at a time: each channel's plane row in contiguous vector loops, then its bytes
    spread into the channels-last row (quantizing straight into the strided layout did not
    vectorise: 3.5x slower). Clamped before it is rounded (the same integers), NaN to 0 as in
    ``affine.quantize``."""
    N, C, H, W = x.shape
    flo, fhi = np.float32(lo), np.float32(hi)
    for t in prange(N * H):
        n, h = t // H, t % H
        o = out[n, h].reshape(W * C)
        plane = np.empty(W, np.uint8)
        for c in range(C):
            xr = x[n, c, h]
            for w in range(W):
                v = np.float32(np.float64(xr[w]) * inv + zp)
                v = min(max(v, flo), fhi) if v == v else min(max(np.float32(0), flo), fhi)
                plane[w] = np.uint8(np.int32((v + _ROUND) - _ROUND))
            for w in range(W):
                o[w * C + c] = plane[w]


def quantize_input(x, qp):
    """``numpy_impl.quant.affine.quantize`` of float32 images (N, C, H, W), written as uint8
    channels-last (the same arithmetic: float64 product, one rounding to float32, ties to even)."""
    out = np.empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), np.uint8)
    inv = np.float64(np.float32(1) / np.float32(qp.scale))
    _quantize(x, inv, qp.zero_point, qp.qmin, qp.qmax, out)
    return out.transpose(0, 3, 1, 2)


def make_conv(w, b, x_zero_point, requant_, stride=1, padding=0, groups=1, linear=False):
    return Conv(w, b, x_zero_point, requant_, stride, padding, groups, linear)


# --- elementwise ----------------------------------------------------------------------------


@njit(parallel=True, **_opts)
def _add(a, za, ma, b, zb, mb, zo, lo, hi, out):
    for i in prange(a.shape[0]):
        out[i] = _sum(a[i], za, ma, b[i], zb, mb, zo, lo, hi)


@njit(inline="always", **_opts)
def _sum(a, za, ma, b, zb, mb, zo, lo, hi):
    """One element of the residual add: both inputs at the sum's scale, added, rounded once."""
    v = np.rint((np.int64(a) - za) * ma + (np.int64(b) - zb) * mb)
    return min(max(np.int64(v) + zo, lo), hi)


def add(a, qa, b, qb, out, scheme="float"):
    """``numpy_impl.quant.ops.add`` on uint8 arrays of one memory layout (channels-last)."""
    if scheme != "float":
        raise ValueError("add: the numba int8 kernels use the 'float' scheme; run 'fixed' on numpy")
    _check_uint8("add", a, a.ndim, a.shape[1])
    _check_uint8("add", b, a.ndim, a.shape[1])
    if a.shape != b.shape:
        raise ValueError(f"add: a and b must have the same shape, got {a.shape} and {b.shape}")
    ah, bh = nhwc(a), nhwc(b)
    y = np.empty(ah.shape, np.uint8)
    ma, mb = qa.scale / out.scale, qb.scale / out.scale
    _add(
        ah.reshape(-1),
        qa.zero_point,
        ma,
        bh.reshape(-1),
        qb.zero_point,
        mb,
        out.zero_point,
        out.qmin,
        out.qmax,
        y.reshape(-1),
    )
    return y.transpose(0, 3, 1, 2)


@njit(parallel=True, **_opts)
def _gate(x, zx, g, zg, M, zo, lo, hi, out):
    N, H, W, C = x.shape
    for t in prange(N * H):
        n, h = t // H, t % H
        for w in range(W):
            for c in range(C):
                acc = (np.int32(x[n, h, w, c]) - zx) * (np.int32(g[n, c]) - zg)
                out[n, h, w, c] = requant(acc, M, zo, lo, hi)


def mul(a, qa, b, qb, out, scheme="float"):
    """Squeeze-and-excite's product: a (N, C, H, W) channels-last by b (N, C, 1, 1)."""
    if scheme != "float":
        raise ValueError("mul: the numba int8 kernels use the 'float' scheme; run 'fixed' on numpy")
    _check_uint8("mul", a, 4, a.shape[1])
    if b.shape != (*a.shape[:2], 1, 1):
        raise ValueError(f"mul: b must have shape {(*a.shape[:2], 1, 1)}, got {b.shape}")
    ah = nhwc(a)
    y = np.empty(ah.shape, np.uint8)
    M = np.float32(multiplier(qa.scale, qb.scale, out.scale))
    _gate(
        ah,
        qa.zero_point,
        np.ascontiguousarray(b[:, :, 0, 0]),
        qb.zero_point,
        M,
        out.zero_point,
        out.qmin,
        out.qmax,
        y,
    )
    return y.transpose(0, 3, 1, 2)


@njit(parallel=True, **_opts)
def _pool(x, out):
    N, H, W, C = x.shape
    n_px = H * W
    for n in prange(N):
        tot = np.zeros(C, np.int64)
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    tot[c] += x[n, h, w, c]
        for c in range(C):
            q, r = tot[c] // n_px, tot[c] % n_px  # round half to even, in integers
            up = 2 * r > n_px or (2 * r == n_px and q % 2 == 1)
            out[n, c] = q + up


def global_avg_pool2d(x):
    """(N, C, H, W) uint8 -> (N, C) uint8, the input's qparams kept."""
    _check_uint8("global_avg_pool2d", x, 4, x.shape[1])
    out = np.empty(x.shape[:2], np.uint8)
    _pool(nhwc(x), out)
    return out


@njit(**_opts)
def _lookup_rows(x, tbl, out):
    """out = tbl[x] on one thread, 64 bytes per ``lookup64`` (a gather of single bytes does not
    vectorise), the last ones one by one. ``out`` may be ``x``."""
    n, i = x.shape[0], 0
    while i + 64 <= n:
        lookup64(out, x, i, tbl)
        i += 64
    for k in range(i, n):
        out[k] = tbl[x[k]]


_CHUNK = 64 * 64  # bytes per parallel task


@njit(parallel=True, **_opts)
def _lookup(x, tbl, out):
    n = x.shape[0]
    for t in prange(-(-n // _CHUNK)):
        lo, hi = t * _CHUNK, min(n, (t + 1) * _CHUNK)
        _lookup_rows(x[lo:hi], tbl, out[lo:hi])


def _table256(table, qin):
    """The 256-entry table ``lookup64`` indexes: ``table`` from ``qin.qmin`` on, zeros around it."""
    tbl = np.zeros(256, np.uint8)
    if table is not None:
        tbl[qin.qmin : qin.qmax + 1] = table
    return tbl


def lookup(x, table, qin):
    """``table[x - qmin]`` keeping x's memory layout."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise TypeError(f"lookup: x must be a uint8 numpy array, got {getattr(x, 'dtype', type(x))}")
    flat = nhwc(x) if x.ndim == 4 else np.ascontiguousarray(x)
    out = np.empty_like(flat)
    _lookup(flat.reshape(-1), _table256(table, qin), out.reshape(-1))
    return out.transpose(0, 3, 1, 2) if x.ndim == 4 else out


# --- the inverted-residual block, fused ------------------------------------------------------


@njit(**_opts)
def _add_rows(a, za, ma, b, zb, mb, zo, lo, hi, out):
    for i in range(a.shape[0]):
        out[i] = _sum(a[i], za, ma, b[i], zb, mb, zo, lo, hi)


@njit(parallel=True, **_opts)
def _block_tiles(x, x4, ex, dw, pj, ints, ma, mb, tiles, out):
    """The tiled block (a block with an expansion): tile t = output rows [ho0, ho1) of image n
    (``tiles[t]``), computed start to end by one thread, its expanded rows and depthwise output
    in buffers of its own that stay in cache: the expanded rows the band reads (its rows and the
    depthwise's halo: recomputed by the neighbouring band), their depthwise, its projection, the
    residual. Arguments as in :func:`_block`."""
    e_pk, e_b, e_M, e_tbl = ex
    d_wt, d_b, d_wpk, d_bf, d_M, d_tbl = dw
    p_pk, p_b, p_M = pj
    _, e_lut, d_lut, residual, e_zp, e_lo, e_hi, d_zx, d_zp, d_lo, d_hi, stride, pad = ints[:13]
    p_zp, p_lo, p_hi, za, zb, zo, lo, hi = ints[13:]
    N, H, W, C = x.shape
    _, Ho, Wo, Co = out.shape
    K, hidden = d_wt.shape[0], d_wt.shape[2]
    x2, o2 = x.reshape((N * H * W, C)), out.reshape((N * Ho * Wo, Co))
    for t in prange(tiles.shape[0]):
        n, ho0, ho1 = tiles[t, 0], tiles[t, 1], tiles[t, 2]
        r0, r1 = max(0, ho0 * stride - pad), min(H, (ho1 - 1) * stride - pad + K)
        e = np.empty(((r1 - r0) * W, hidden), np.uint8)
        qgemm.gemm_rows(x4[(n * H + r0) * W : (n * H + r1) * W], e_pk, e_b, e_M, e_zp, e_lo, e_hi, e)
        if e_lut:
            _lookup_rows(e.reshape(-1), e_tbl, e.reshape(-1))
        d = np.empty((1, ho1 - ho0, Wo, hidden), np.uint8)
        eh = e.reshape((1, r1 - r0, W, hidden))
        qdepthwise.depthwise_band(
            eh, r0, d_zx, d_wt, d_b, d_wpk, d_bf, d_M, d_zp, d_lo, d_hi, stride, pad, d, ho0
        )
        if d_lut:
            _lookup_rows(d.reshape(-1), d_tbl, d.reshape(-1))
        d4 = d.reshape(((ho1 - ho0) * Wo, hidden)).view(np.int32)
        p0, p1 = (n * Ho + ho0) * Wo, (n * Ho + ho1) * Wo
        if not residual:
            qgemm.gemm_rows(d4, p_pk, p_b, p_M, p_zp, p_lo, p_hi, o2[p0:p1])
            continue
        y = np.empty((p1 - p0, Co), np.uint8)
        qgemm.gemm_rows(d4, p_pk, p_b, p_M, p_zp, p_lo, p_hi, y)
        _add_rows(x2[p0:p1].reshape(-1), za, ma, y.reshape(-1), zb, mb, zo, lo, hi, o2[p0:p1].reshape(-1))


@njit(**_opts)
def _block(x, x4, ex, dw, pj, ints, ma, mb, out):
    """The untiled block: expand (a GEMM, then its table) -> depthwise (then its table) ->
    project (a GEMM) -> the residual add, each step the parallel kernel of the unfused layer,
    called from here (one call from Python for the whole block). For layers too small to tile.

    x (N, H, W, C) uint8 and x4, its rows as int32 words; ex: the expansion's packed weights,
    bias, multipliers and table; dw: the depthwise's weights (kh, kw, C) and bias, its packed
    taps and folded bias, multipliers and table; pj: the projection's packed weights, bias and
    multipliers; ints: [has an expansion, expansion's table?, depthwise's table?, residual?,
    then zp, lo, hi of the expansion, z_x, zp, lo, hi, stride, padding of the depthwise, zp,
    lo, hi of the projection, z_x, z_body, z_out, lo, hi of the add]; ma, mb: the add's
    multipliers."""
    e_pk, e_b, e_M, e_tbl = ex
    d_wt, d_b, d_wpk, d_bf, d_M, d_tbl = dw
    p_pk, p_b, p_M = pj
    expand, e_lut, d_lut, residual, e_zp, e_lo, e_hi, d_zx, d_zp, d_lo, d_hi, stride, pad = ints[:13]
    p_zp, p_lo, p_hi, za, zb, zo, lo, hi = ints[13:]
    N, H, W, C = x.shape
    _, Ho, Wo, Co = out.shape
    hidden = d_wt.shape[2]
    h = x
    if expand:
        e = np.empty((N * H * W, hidden), np.uint8)
        qgemm.gemm_v4(x4, e_pk, e_b, e_M, e_zp, e_lo, e_hi, e)
        if e_lut:
            _lookup(e.reshape(-1), e_tbl, e.reshape(-1))
        h = e.reshape((N, H, W, hidden))
    d = np.empty((N, Ho, Wo, hidden), np.uint8)
    qdepthwise.depthwise_v4(h, d_zx, d_wt, d_b, d_wpk, d_bf, d_M, d_zp, d_lo, d_hi, stride, pad, d)
    if d_lut:
        _lookup(d.reshape(-1), d_tbl, d.reshape(-1))
    d4 = d.reshape((N * Ho * Wo, hidden)).view(np.int32)
    o2 = out.reshape((N * Ho * Wo, Co))
    if not residual:
        qgemm.gemm_v4(d4, p_pk, p_b, p_M, p_zp, p_lo, p_hi, o2)
        return
    y = np.empty((N * Ho * Wo, Co), np.uint8)
    qgemm.gemm_v4(d4, p_pk, p_b, p_M, p_zp, p_lo, p_hi, y)
    _add(x.reshape(-1), za, ma, y.reshape(-1), zb, mb, zo, lo, hi, out.reshape(-1))


# Tiled blocks measured no faster than the untiled call on this machine (benchmarks/int8.py's
# "fusion": int8 tensors are a quarter of float's and stay in cache), so they are off by
# default; TILED = True runs them (the tests run both).
TILED = False
TILE_BYTES = 256 * 1024  # a tile's expanded rows and depthwise output (uint8)
TILE_MIN = 4  # tiles to share out among the threads, or the block runs untiled


def block_tiles(N, H, W, Ho, Wo, hidden, stride, k, tile_bytes=None, tile_min=None):
    """(T, 3) int64 tiles (n, ho0, ho1): bands of output rows whose expanded rows (with the
    halo) and depthwise output fit ``tile_bytes`` (TILE_BYTES); None when that gives fewer
    than ``tile_min`` (TILE_MIN) tiles."""
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    per_row = (stride * W + Wo) * hidden  # the expanded rows and depthwise row of one output row
    rows = max(1, (tile_bytes - (k - stride) * W * hidden) // per_row)
    bands = -(-Ho // rows)
    if N * bands < (TILE_MIN if tile_min is None else tile_min):
        return None
    cuts = [Ho * i // bands for i in range(bands + 1)]
    return np.array([(n, cuts[i], cuts[i + 1]) for n in range(N) for i in range(bands)], np.int64)


class Block:
    """A prepared inverted residual: ``Block(...)(x)`` is the unfused layers' result, bit for bit.

    ``convs``: the prepared :class:`Conv` of each layer of the body, [pointwise, depthwise,
    pointwise] or [depthwise, pointwise]; ``tables``: for each, ``(table, qin)`` of the
    hard-swish after it or None; ``add``: ``(q_x, q_body, q_out)`` of the residual add, or None.
    Built by :func:`make_block`, which returns None for a block these kernels do not fuse."""

    def __init__(self, convs, tables, add):
        *ex, dw, pj = convs
        e = self.ex = ex[0] if ex else None
        self.dw, self.cin, self.cout = dw, e.shape[1] if e else dw.shape[0], pj.shape[0]
        dt = tables[-2]
        none8, none32, nonef = np.zeros(0, np.int8), np.zeros((1, 1, 1), np.int32), np.zeros(0, np.float32)
        self.ex_arrays = (
            e.packed if e else none32,
            e.bias_blocks if e else none32[0, 0],
            e.M_blocks if e else nonef,
            _table256(*tables[0]) if e and tables[0] else none8.view(np.uint8),
        )
        table = _table256(*dt) if dt else none8.view(np.uint8)
        self.dw_arrays = (dw.wt, dw.bias, dw.wpk, dw.bias_f, dw.M, table)
        self.pj_arrays = (pj.packed, pj.bias_blocks, pj.M_blocks)
        qx, qb, qo = add if add else (None, None, None)
        ints = [e is not None, bool(e and tables[0]), dt is not None, add is not None]
        ints += [e.zp, e.lo, e.hi] if e else [0, 0, 0]
        ints += [dw.zx, dw.zp, dw.lo, dw.hi, dw.stride, dw.padding, pj.zp, pj.lo, pj.hi]
        ints += [qx.zero_point, qb.zero_point, qo.zero_point, qo.qmin, qo.qmax] if add else [0] * 5
        self.ints = np.array(ints, np.int64)
        self._tiles = {}
        self.ma, self.mb = (qx.scale / qo.scale, qb.scale / qo.scale) if add else (0.0, 0.0)

    def __call__(self, x):
        _check_uint8("inverted residual", x, 4, self.cin)
        N, _, H, W = x.shape
        k, s, p = self.dw.shape[2], self.dw.stride, self.dw.padding
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"inverted residual: {k}x{k} kernel larger than the padded input {H + 2 * p}x{W + 2 * p}"
            )
        xh = nhwc(x)
        x4 = xh.reshape(-1, self.cin).view(np.int32) if self.ex else np.zeros((1, 1), np.int32)
        out = np.empty((N, Ho, Wo, self.cout), np.uint8)
        key = (N, H, W)
        if key not in self._tiles:
            hidden = self.dw.shape[0]
            self._tiles[key] = block_tiles(N, H, W, Ho, Wo, hidden, s, k) if self.ex and TILED else None
        tiles = self._tiles[key]
        if tiles is None:
            _block(xh, x4, self.ex_arrays, self.dw_arrays, self.pj_arrays, self.ints, self.ma, self.mb, out)
        else:
            arrays = (self.ex_arrays, self.dw_arrays, self.pj_arrays)
            _block_tiles(xh, x4, *arrays, self.ints, self.ma, self.mb, tiles, out)
        return out.transpose(0, 3, 1, 2)


def make_block(convs, tables, add):
    """A :class:`Block` for these prepared layers, or None where the fused kernels do not apply
    (no VNNI, another layer order, channels not in whole words); the caller then runs the layers."""
    kinds = [c.kind for c in convs]
    if kinds not in (["pointwise", "depthwise", "pointwise"], ["depthwise", "pointwise"]):
        return None
    dw, pj = convs[-2], convs[-1]
    if not dw.v4 or pj.packed is None or dw.shape[0] % 4 or (len(convs) == 3 and convs[0].packed is None):
        return None
    if len(convs) == 3 and convs[0].shape[1] % 4:
        return None
    return Block(convs, tables, add)
