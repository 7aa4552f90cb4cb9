"""The whole MobileNetV2 block, fused: 1x1 expand + BN + ReLU6 -> 3x3 depthwise + BN +
ReLU6 -> 1x1 project + BN (+ x when the block keeps its shape).

Inference (``training=False``) folds each BN into its convolution (w' = w * scale,
b' = shift: eval-mode BN is affine) and runs the block tile by tile: a tile is a
band of output rows of one image, or several whole images when an image is small;
when a layer has too few rows to give every thread a tile, each tile is further
split by hidden channels (expand, depthwise and project all work on a slice of the
t*C channels; the slices' project outputs are summed).
For a tile it computes only the expanded rows that band needs (its rows plus a
one-row halo), in a buffer sized to stay in cache (``TILE_BYTES``)::

    e   = relu6(x[rows] @ We' + be')          GEMM (rows*W, C) x (C, t*C), then one fused pass
    d   = relu6(dwconv3x3(e) + bd')           Numba: nine taps, bias and clamp in one pass
    out = d @ Wp' + bp' (+ x[band])           GEMM, the residual added to the tile

so the expanded tensor, t = 6 times wider than the block's input and output, never
exists whole: its peak is one tile. That is where the time goes in an unfused
block on a CPU: the expanded tensor written and read back three or four times.

Training (``training=True``) needs the batch statistics of the expanded tensor
before it can normalise any of it, so it cannot be tiled in one pass; it runs the
composition of the kernels (pointwise, batch norm with its activation fused,
depthwise) and stores the intermediates backward needs (each conv's input and each
BN's output). The alternative, storing only x and the BN statistics and
recomputing the expansion in backward, trades one extra expand GEMM and BN pass
for the memory of the expanded tensors: ``benchmarks/bench_kernels.py`` measures the
peak memory and the step time of both.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from numpy_impl.functional._checks import as_float_array, check_number, check_shape, same_dtype
from numpy_impl.functional.block import check_bn_dtypes, check_inverted_residual

from . import _gemm
from . import batchnorm as bn
from . import depthwise as dw
from . import pointwise as pw
from . import se as sq
from ._threads import FASTMATH, single_threaded_blas
from .batchnorm import ACTIVATIONS, STATS_KEYS, _act, _bn_affine, batch_norm_replay

TILE_BYTES = 1024 * 1024  # expanded + depthwise tile; 0.5-4 MiB measured: batch 8 wants >= 1 MiB
TRAINING_MEMORY = "store"  # default of inverted_residual(memory=...): "store" or "recompute"
# Inference runs every tile of a block in one Numba parallel region (``_eval_tiles``):
# each thread calls a single-threaded BLAS (np.dot) for its tile's GEMMs, so one pool
# (OpenMP's) owns the cores. The older path (EVAL_POOL = False) runs the tiles from
# Python with serial tile kernels and the GEMMs on the BLAS's own threads; parallel
# tile kernels between those GEMMs had two pools spinning against each other on 2 cores.
_opts = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy", "nogil": True}


@njit(**_opts)
def _affine_act_(a, scale, shift, act):
    """a = act(a * scale + shift) in place; a (M, C), scale and shift (C,)."""
    M, C = a.shape
    for r in range(M):
        for c in range(C):
            a[r, c] = _act(a[r, c] * scale[c] + shift[c], act)


@njit(**_opts)
def _affine_(a, scale, shift):
    """a = a * scale + shift in place (the project BN); a (M, C)."""
    M, C = a.shape
    for r in range(M):
        for c in range(C):
            a[r, c] = a[r, c] * scale[c] + shift[c]


@njit(**_opts)
def _dw_affine_act(e, r0, H, w, scale, shift, ho0, sh, sw, out, act):
    """out[n, ro] = act(dwconv(e)[n, ho0 + ro] * scale + shift), k x k (3 or 5), padding k // 2.

    e (B, R, W, C) holds input rows r0 .. r0+R-1 of images of height H; rows outside
    [0, H) are the zero padding. w (k, k, C). An interior pixel's k*k products are one
    expression (the compiler keeps them in registers: each input and weight loaded once per
    vector of channels, one store).
    """
    if w.shape[0] == 3:
        _dw3_affine_act(e, r0, H, w, scale, shift, ho0, sh, sw, out, act)
    else:
        _dw5_affine_act(e, r0, H, w, scale, shift, ho0, sh, sw, out, act)


@njit(**_opts)
def _dw3_affine_act(e, r0, H, w, scale, shift, ho0, sh, sw, out, act):
    B, R, W, C = e.shape
    _, Ro, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=e.dtype)
    for q in range(B * Ro):
        n, ro = q // Ro, q % Ro
        h0 = (ho0 + ro) * sh - 1
        x0 = e[n, h0 - r0] if 0 <= h0 < H else zero
        x1 = e[n, h0 + 1 - r0] if 0 <= h0 + 1 < H else zero
        x2 = e[n, h0 + 2 - r0] if 0 <= h0 + 2 < H else zero
        orow = out[n, ro]
        for wo in range(Wo):
            a = wo * sw - 1
            if a >= 0 and a + 2 < W:
                for c in range(C):
                    v = (
                        x0[a, c] * w[0, 0, c] + x0[a + 1, c] * w[0, 1, c] + x0[a + 2, c] * w[0, 2, c]
                        + x1[a, c] * w[1, 0, c] + x1[a + 1, c] * w[1, 1, c] + x1[a + 2, c] * w[1, 2, c]
                        + x2[a, c] * w[2, 0, c] + x2[a + 1, c] * w[2, 1, c] + x2[a + 2, c] * w[2, 2, c]
                    )  # fmt: skip
                    orow[wo, c] = _act(v * scale[c] + shift[c], act)
            else:
                for c in range(C):
                    v = x0[a + 1, c] * 0  # zero of the right type
                    for j in range(3):
                        if 0 <= a + j < W:
                            v += (
                                x0[a + j, c] * w[0, j, c]
                                + x1[a + j, c] * w[1, j, c]
                                + x2[a + j, c] * w[2, j, c]
                            )
                    orow[wo, c] = _act(v * scale[c] + shift[c], act)


@njit(inline="always", **_opts)
def _taps5(xrow, a, wrow, c):
    """One input row's five taps of channel c at columns a .. a+4."""
    return (
        xrow[a, c] * wrow[0, c] + xrow[a + 1, c] * wrow[1, c] + xrow[a + 2, c] * wrow[2, c]
        + xrow[a + 3, c] * wrow[3, c] + xrow[a + 4, c] * wrow[4, c]
    )  # fmt: skip


@njit(**_opts)
def _dw5_affine_act(e, r0, H, w, scale, shift, ho0, sh, sw, out, act):
    """5x5 as the 3x3 above: an interior pixel's 25 products in one expression (1.2-1.6x the
    tap-by-tap sum into the output row, which loads and stores it per tap), zero rows for the
    padding; the border columns tap by tap (a 25-term sum with bounds checks does worse)."""
    B, R, W, C = e.shape
    _, Ro, Wo, _ = out.shape
    zero = np.zeros((W, C), dtype=e.dtype)
    for q in range(B * Ro):
        n, ro = q // Ro, q % Ro
        h0 = (ho0 + ro) * sh - 2
        x0 = e[n, h0 - r0] if 0 <= h0 < H else zero
        x1 = e[n, h0 + 1 - r0] if 0 <= h0 + 1 < H else zero
        x2 = e[n, h0 + 2 - r0] if 0 <= h0 + 2 < H else zero
        x3 = e[n, h0 + 3 - r0] if 0 <= h0 + 3 < H else zero
        x4 = e[n, h0 + 4 - r0] if 0 <= h0 + 4 < H else zero
        orow = out[n, ro]
        for wo in range(Wo):
            a = wo * sw - 2
            if a >= 0 and a + 4 < W:
                for c in range(C):
                    v = (
                        _taps5(x0, a, w[0], c) + _taps5(x1, a, w[1], c) + _taps5(x2, a, w[2], c)
                        + _taps5(x3, a, w[3], c) + _taps5(x4, a, w[4], c)
                    )  # fmt: skip
                    orow[wo, c] = _act(v * scale[c] + shift[c], act)
            else:  # tap by tap into the output row (in L1), as the general loop
                acc = orow[wo]
                acc[:] = 0
                for i in range(5):
                    if 0 <= h0 + i < H:
                        xrow = e[n, h0 + i - r0]
                        for j in range(5):
                            if 0 <= a + j < W:
                                for c in range(C):
                                    acc[c] += xrow[a + j, c] * w[i, j, c]
                for c in range(C):
                    acc[c] = _act(acc[c] * scale[c] + shift[c], act)


def _tiles(n_img, H, Ho, W, hidden, stride, itemsize, parts=1):
    """(n0, n1, ho0, ho1) tiles: whole images when one fits TILE_BYTES, else bands of rows.

    ``parts``: the bands of an image are evened out to a multiple of it (the threads), so
    that no thread is left with one tile more than the other (7 tiles on 2 threads: 4 + 3)."""
    per_out_row = (stride * W + W // stride + 1) * hidden * itemsize  # expanded rows + dw row
    rows = max(1, TILE_BYTES // per_out_row)
    if rows >= Ho:
        per_img = max(1, rows // Ho)
        return [(n0, min(n_img, n0 + per_img), 0, Ho) for n0 in range(0, n_img, per_img)]
    bands = -(-Ho // rows)
    if (n_img * bands) % parts:
        bands = min(Ho, -(-bands // parts) * parts)
    cuts = [Ho * i // bands for i in range(bands + 1)]
    return [(n, n + 1, cuts[i], cuts[i + 1]) for n in range(n_img) for i in range(bands)]


def _band(ho0, ho1, stride, k, H):
    """Input rows [r0, r1) that output rows [ho0, ho1) of a k x k depthwise read (padding k // 2)."""
    p = k // 2
    return max(0, ho0 * stride - p), min(H, (ho1 - 1) * stride - p + k)


def _forward_eval(x, weights, bns, stride, residual, eps, act):
    # Eval BN is a per-channel affine map: applied in the passes that already exist
    # (the activation pass after the expand GEMM, the depthwise kernel, the residual pass),
    # so no weight is rescaled per call.
    expand_w, dw_w, project_w = weights
    n, c, h, w = x.shape
    xr = x.transpose(0, 2, 3, 1)  # (N, H, W, C): C-contiguous for channels-last input
    if not xr.flags.c_contiguous:
        xr = np.ascontiguousarray(xr)
    hidden, k = dw_w.shape[0], dw_w.shape[-1]
    dt = x.dtype
    if expand_w is not None:
        we = expand_w[:, :, 0, 0].T  # (C, hidden) view: BLAS takes the transposed operand as is
        es, eb = _bn_affine(bns[0], eps, dt)
    wd = np.ascontiguousarray(dw_w[:, 0].transpose(1, 2, 0))  # (k, k, hidden)
    sd, bd = _bn_affine(bns[1], eps, dt)
    wp = project_w[:, :, 0, 0].T  # (hidden, C_out) view
    sp, bp = _bn_affine(bns[2], eps, dt)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.empty((n, ho, wo, wp.shape[1]), dtype=dt)

    def work(tile):
        n0, n1, ho0, ho1 = tile
        r0, r1 = _band(ho0, ho1, stride, k, h)
        rows = xr[n0:n1, r0:r1]  # (B, R, W, C)
        if expand_w is not None:
            e = _gemm.matmul(rows.reshape(-1, c), we)  # (B*R*W, hidden)
            _affine_act_(e, es, eb, act)
            e = e.reshape(n1 - n0, r1 - r0, w, hidden)
        else:
            e = rows
        d = np.empty((n1 - n0, ho1 - ho0, wo, hidden), dtype=dt)
        _dw_affine_act(e, r0, h, wd, sd, bd, ho0, stride, stride, d, act)
        o = out[n0:n1, ho0:ho1].reshape(-1, wp.shape[1])  # a view: the GEMM writes the output in place
        _gemm.matmul(d.reshape(-1, hidden), wp, out=o)
        _affine_(o, sp, bp)
        if residual:
            o += xr[n0:n1, ho0:ho1].reshape(-1, c)

    for tile in _tiles(n, h, ho, w, hidden, stride, x.itemsize):
        work(tile)
    return out.transpose(0, 3, 1, 2)  # channels-last (N, C_out, Ho, Wo)


@njit(**_opts)
def _expand_dw(x2, H, W, ew, es, eb, wd, sd, bd, act, stride, tile, d):
    """One tile's expansion (its rows and halo, its hidden channels) and depthwise output,
    into d (B, rows, Wo, hidden channels of the tile): see :func:`_eval_tiles`."""
    n0, n1, ho0, ho1, h0, h1, _ = tile
    hid, k = h1 - h0, wd.shape[0]
    r0, r1 = max(0, ho0 * stride - k // 2), min(H, (ho1 - 1) * stride - k // 2 + k)
    i0, i1 = (n0 * H + r0) * W, ((n1 - 1) * H + r1) * W  # those rows, flat (a band is one image)
    if ew.shape[0] > 0:
        e = np.empty((i1 - i0, hid), dtype=x2.dtype)
        np.dot(x2[i0:i1], ew[h0:h1].T, e)
        _affine_act_(e, es[h0:h1], eb[h0:h1], act)
    else:  # t == 1: no expansion (and one chunk)
        e = x2[i0:i1]
    wdk = np.ascontiguousarray(wd[:, :, h0:h1])  # k * k * hid values; contiguous, so the taps vectorise
    _dw_affine_act(
        e.reshape(n1 - n0, r1 - r0, W, hid), r0, H, wdk, sd[h0:h1], bd[h0:h1], ho0, stride, stride, d, act
    )


@njit(**_opts)
def _project(d2, pw, sp, bp, x2, o2, partial, residual, Ho, Wo, tile):
    """A tile's projection: into the output (BN and residual applied) when the hidden channels
    are whole, else into its chunk's partial sums."""
    n0, n1, ho0, ho1, h0, h1, k = tile
    j0, j1 = (n0 * Ho + ho0) * Wo, ((n1 - 1) * Ho + ho1) * Wo
    if partial.shape[0] == 1:
        o = o2[j0:j1]
        np.dot(d2, pw.T, o)
        _affine_(o, sp, bp)
        if residual:
            o += x2[j0:j1]
    else:
        np.dot(d2, np.ascontiguousarray(pw[:, h0:h1]).T, partial[k, j0:j1])


@njit(parallel=True, **_opts)
def _add_partials(partial, sp, bp, x2, o2, residual):
    """o2 = BN(sum of the chunks' projections) (+ x): in chunk order, whatever the threads."""
    K, J, Co = partial.shape
    for j in prange(J):
        for c in range(Co):
            v = partial[0, j, c]
            for k in range(1, K):
                v += partial[k, j, c]
            o2[j, c] = v * sp[c] + bp[c] + (x2[j, c] if residual else 0)


@njit(parallel=True, **_opts)
def _eval_tiles(xr, ew, es, eb, wd, sd, bd, act, pw, sp, bp, out, tiles, stride, residual, partial):
    """Every tile of the block in one parallel region: one thread pool, the GEMMs on
    single-threaded BLAS inside it (``np.dot``).

    tiles[t] = (n0, n1, ho0, ho1, h0, h1, k): output rows [ho0, ho1) of images [n0, n1),
    hidden channels [h0, h1), which are chunk k. Weights as stored: ew (hidden, C) (empty
    when t == 1), wd (k, k, hidden), pw (C_out, hidden). With one chunk the project GEMM
    writes ``out``; with several (small layers: too few rows to share out) chunk k's goes
    to partial[k], summed after the loop.
    """
    N, H, W, C = xr.shape
    _, Ho, Wo, Co = out.shape
    x2 = xr.reshape(N * H * W, C)
    o2 = out.reshape(N * Ho * Wo, Co)
    for t in prange(tiles.shape[0]):
        n0, n1, ho0, ho1, h0, h1, _ = tiles[t]
        d = np.empty((n1 - n0, ho1 - ho0, Wo, h1 - h0), dtype=xr.dtype)
        _expand_dw(x2, H, W, ew, es, eb, wd, sd, bd, act, stride, tiles[t], d)
        _project(d.reshape(-1, h1 - h0), pw, sp, bp, x2, o2, partial, residual, Ho, Wo, tiles[t])


@njit(parallel=True, **_opts)
def _expand_dw_tiles(xr, ew, es, eb, wd, sd, bd, act, tiles, offsets, stride, Wo, buf, sums):
    """The first half of a block with squeeze-and-excite: every tile's depthwise output, kept
    whole in ``buf`` (tile t's (B, rows, Wo, hidden channels) from offsets[t], contiguous, so
    the second half multiplies and projects it in place), and its per-image channel sums in
    sums[t, b] (float64, summed while the tile is in cache)."""
    N, H, W, C = xr.shape
    x2 = xr.reshape(N * H * W, C)
    for t in prange(tiles.shape[0]):
        n0, n1, ho0, ho1, h0, h1, _ = tiles[t]
        B, hid = n1 - n0, h1 - h0
        d = buf[offsets[t] : offsets[t + 1]].reshape(B, ho1 - ho0, Wo, hid)
        _expand_dw(x2, H, W, ew, es, eb, wd, sd, bd, act, stride, tiles[t], d)
        for b in range(B):
            acc = sums[t, b]
            acc[:] = 0
            for r in range(ho1 - ho0):
                for q in range(Wo):
                    for c in range(hid):
                        acc[c] += d[b, r, q, c]


@njit(**_opts)
def _excite_scale(tiles, sums, N, P, w1, b1, w2, b2):
    """Squeeze-and-excite's (N, hidden) scale: the mean over P pixels (the tiles' sums added in
    tile order, so the same on any number of threads), the two small products, ReLU and
    hard-sigmoid. Serial: a few thousand values, less than waking the pool."""
    s = np.zeros((N, w1.shape[1]), dtype=np.float64)
    for t in range(tiles.shape[0]):
        n0, n1, _, _, h0, h1, _ = tiles[t]
        for b in range(n1 - n0):
            for c in range(h1 - h0):
                s[n0 + b, h0 + c] += sums[t, b, c]
    m = (s / P).astype(w1.dtype)
    h = np.dot(m, w1.T) + b1
    for i in range(h.size):
        h.flat[i] = max(h.flat[i], 0)
    g = np.dot(h, w2.T) + b2
    for i in range(g.size):
        g.flat[i] = min(max(g.flat[i] + 3, 0), 6) / 6
    return g


@njit(parallel=True, **_opts)
def _excited_project_tiles(xr, buf, offsets, scale, pw, sp, bp, out, tiles, residual, partial):
    """The second half: each tile's depthwise output, multiplied in place by its image's scale,
    projected."""
    N, H, W, C = xr.shape
    _, Ho, Wo, Co = out.shape
    x2 = xr.reshape(N * H * W, C)
    o2 = out.reshape(N * Ho * Wo, Co)
    for t in prange(tiles.shape[0]):
        n0, n1, ho0, ho1, h0, h1, _ = tiles[t]
        hid, per_img = h1 - h0, (ho1 - ho0) * Wo
        d = buf[offsets[t] : offsets[t + 1]].reshape((n1 - n0) * per_img, hid)
        for r in range(d.shape[0]):
            sc = scale[n0 + r // per_img]
            for c in range(hid):
                d[r, c] *= sc[h0 + c]
        _project(d, pw, sp, bp, x2, o2, partial, residual, Ho, Wo, tiles[t])


# The eval plan's parts (row tiles evened out to a multiple of it, hidden channels split that many
# ways when tiles are few): a constant, so the sums of the split projection are the same on any
# number of threads. 2 is this project's measured machine; on more threads, tiles still spread.
EVAL_PARTS = 2
EVAL_POOL = True  # the one-pool eval path above; False: tiles in Python, serial tile kernels (no SE)


@lru_cache(maxsize=256)
def _pool_plan(n_img, H, Ho, W, Wo, hidden, stride, itemsize, threads, can_split, tile_bytes):
    """(tiles (T, 7) int64, K, offsets (T + 1,), most images in a tile): row tiles, or each
    row tile in K channel chunks when too few; offsets[t] is where tile t's depthwise output
    starts in a buffer of all of them (squeeze-and-excite). Memoised (read-only arrays): a
    model asks for the same few plans on every call. ``tile_bytes`` is TILE_BYTES, a key."""
    tiles = _tiles(n_img, H, Ho, W, hidden, stride, itemsize, threads)
    k = threads if len(tiles) < 2 * threads and can_split else 1
    bounds = [hidden * i // k for i in range(k + 1)]
    plan = np.array([(*t, bounds[i], bounds[i + 1], i) for t in tiles for i in range(k)], dtype=np.int64)
    sizes = (plan[:, 1] - plan[:, 0]) * (plan[:, 3] - plan[:, 2]) * Wo * (plan[:, 5] - plan[:, 4])
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    plan.flags.writeable = offsets.flags.writeable = False
    return plan, k, offsets, int((plan[:, 1] - plan[:, 0]).max())


def _forward_eval_pool(x, weights, bns, stride, residual, eps, act, se):
    expand_w, dw_w, project_w = weights
    n, c, h, w = x.shape
    dt = x.dtype
    xr = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # no copy for channels-last input
    hidden = dw_w.shape[0]
    threads = EVAL_PARTS  # not numba's count: the plan, and with it the rounding, is fixed
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    tiles, k, offsets, most = _pool_plan(
        n, h, ho, w, wo, hidden, stride, x.itemsize, threads, expand_w is not None, TILE_BYTES
    )
    if expand_w is not None:
        ew = np.ascontiguousarray(expand_w[:, :, 0, 0])  # (hidden, C): a view when contiguous
        es, eb = _bn_affine(bns[0], eps, dt)
    else:
        ew, es, eb = np.empty((0, c), dt), np.empty(hidden, dt), np.empty(hidden, dt)
    wd = np.ascontiguousarray(dw_w[:, 0].transpose(1, 2, 0))  # (k, k, hidden)
    sd, bd = _bn_affine(bns[1], eps, dt)
    pw = np.ascontiguousarray(project_w[:, :, 0, 0])  # (C_out, hidden)
    sp, bp = _bn_affine(bns[2], eps, dt)
    out = np.empty((n, ho, wo, pw.shape[0]), dtype=dt)
    partial = np.empty((k, n * ho * wo if k > 1 else 0, pw.shape[0]), dtype=dt)
    single_threaded_blas()
    if se is None:
        _eval_tiles(xr, ew, es, eb, wd, sd, bd, act, pw, sp, bp, out, tiles, stride, residual, partial)
    else:  # the scale needs the whole depthwise output: two passes over the tiles, the scale between
        buf = np.empty(offsets[-1], dtype=dt)
        sums = np.empty((len(tiles), most, hidden))
        _expand_dw_tiles(xr, ew, es, eb, wd, sd, bd, act, tiles, offsets, stride, wo, buf, sums)
        w1, b1, w2, b2 = (np.ascontiguousarray(a.reshape(a.shape[:2])) for a in se)
        scale = _excite_scale(tiles, sums, n, ho * wo, w1, b1, w2, b2)
        _excited_project_tiles(xr, buf, offsets, scale, pw, sp, bp, out, tiles, residual, partial)
    if k > 1:
        o2, x2 = out.reshape(-1, pw.shape[0]), xr.reshape(-1, c)
        _add_partials(partial, sp, bp, x2, o2, residual)
    return out.transpose(0, 3, 1, 2)


def _forward_train(x, weights, bns, stride, residual, momentum, eps, memory, activation, se):
    expand_w, dw_w, project_w = weights
    cache = {"x": x, "weights": weights, "stride": stride, "residual": residual, "memory": memory}
    cache.update(activation=activation, se=se)
    h = x  # every sub-op's body, unchecked: inverted_residual validated the whole block
    if expand_w is not None:
        cache["e_in"] = h
        h = pw.forward(h, expand_w)
        h, cache["bn0"] = bn.forward(h, *bns[0], True, momentum, eps, activation)
    cache["d_in"] = h
    h = dw.forward(h, dw_w, stride, dw_w.shape[-1] // 2)
    h, cache["bn1"] = bn.forward(h, *bns[1], True, momentum, eps, activation)
    if se is not None:
        h, cache["se_cache"] = sq.forward(h, *se)
    cache["p_in"] = h
    h = pw.forward(h, project_w)
    h, cache["bn2"] = bn.forward(h, *bns[2], True, momentum, eps)
    cache["out_hw"] = h.shape[2:]
    if memory == "recompute":  # keep x and the BN statistics only; backward rebuilds the rest
        for key in ("e_in", "d_in", "p_in", "se_cache"):
            cache.pop(key, None)
        for key in ("bn0", "bn1", "bn2"):
            if key in cache:
                cache[key] = {k: cache[key][k] for k in STATS_KEYS}
    return (h + x if residual else h), cache


def _replay(cache):
    """The stored variant's cache, recomputed from x and the BN statistics."""
    expand_w, dw_w, project_w = cache["weights"]
    out = dict(cache)
    h = cache["x"]
    if expand_w is not None:
        out["e_in"] = h
        h, out["bn0"] = batch_norm_replay(pw.forward(h, expand_w), cache["bn0"])
    out["d_in"] = h
    d = dw.forward(h, dw_w, cache["stride"], dw_w.shape[-1] // 2)
    h, out["bn1"] = batch_norm_replay(d, cache["bn1"])
    if cache["se"] is not None:
        h, out["se_cache"] = sq.forward(h, *cache["se"])
    out["p_in"] = h
    _, out["bn2"] = batch_norm_replay(pw.forward(h, project_w), cache["bn2"])
    return out


def inverted_residual(
    x,
    weights,
    bns,
    stride=1,
    residual=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
    *,
    activation="relu6",
    se=None,
    memory=None,
):
    """The fused inverted-residual block; ``numpy_impl.functional.inverted_residual`` is its reference.

    Parameters
    ----------
    x : (N, C, H, W), either memory format
    weights : (expand (t*C, C, 1, 1) or None when t == 1, depthwise (t*C, 1, k, k) with k 3
               or 5, project (C_out, t*C, 1, 1))
    bns : three (weight, bias, running_mean, running_var) tuples, the first None when t == 1;
          running statistics are updated in place in training
    stride : 1 or 2; residual : add x (default: stride == 1 and C_out == C)
    training : batch statistics and a cache for :func:`inverted_residual_backward`,
               or eval mode, tiled (then the cache is None)
    activation : "relu6" (MobileNetV2), "relu" or "hardswish" (V3), after the expand and
                 depthwise batch norms
    se : None, or a squeeze-and-excite's (w1, b1, w2, b2) on the depthwise output (V3)
    memory : training only: "store" the intermediates backward needs, or "recompute"
             them in backward from x and the BN statistics (default TRAINING_MEMORY)

    Returns
    -------
    y : (N, C_out, H_out, W_out), channels-last memory
    cache
    """
    fn = "inverted_residual"
    x, residual = check_inverted_residual(fn, x, weights, bns, stride, residual, activation, se)
    memory = TRAINING_MEMORY if memory is None else memory
    if memory not in ("store", "recompute"):
        raise ValueError(f"{fn}: memory must be 'store' or 'recompute', got {memory!r}")
    if training:  # what the sub-ops' public wrappers would check, once for the block
        check_bn_dtypes(fn, x, bns)
        momentum = check_number(fn, "momentum", momentum, 0.0, 1.0)
        if check_number(fn, "eps", eps, 0.0) == 0.0:
            raise ValueError(f"{fn}: eps must be > 0, got {eps}")
        n, _, h, w = x.shape
        if min(n * h * w, n * ((h - 1) // stride + 1) * ((w - 1) // stride + 1)) <= 1:
            raise ValueError(
                f"{fn}: expected more than 1 value per channel when training, got input of shape {x.shape}"
            )
        return _forward_train(x, weights, bns, stride, residual, momentum, eps, memory, activation, se)
    if x.shape[0] == 0:  # an empty batch: nothing to tile
        ho, wo = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
        return np.empty((0, weights[2].shape[0], ho, wo), x.dtype), None
    act = ACTIVATIONS[activation]
    if EVAL_POOL or se is not None:
        return _forward_eval_pool(x, weights, bns, stride, residual, eps, act, se), None
    return _forward_eval(x, weights, bns, stride, residual, eps, act), None


def inverted_residual_backward(dout, cache):
    """Gradients of a training-mode :func:`inverted_residual`.

    Returns ``(dx, dweights, dbns)``: dweights like ``weights``, dbns three
    (dweight, dbias) pairs (the first None when t == 1); with a squeeze-and-excite,
    ``(dx, dweights, dbns, dse)``, dse its (dw1, db1, dw2, db2).
    """
    fn = "inverted_residual_backward"
    if not isinstance(cache, dict) or "memory" not in cache:
        raise TypeError(
            f"{fn}: cache must come from a training-mode inverted_residual, got {type(cache).__name__}"
        )
    x = cache["x"]
    dout = as_float_array(fn, "dout", dout, ndim=4)
    same_dtype(fn, "x", x, dout=dout)
    out_shape = (x.shape[0], cache["weights"][2].shape[0], *cache["out_hw"])
    check_shape(fn, "dout", dout, out_shape)
    if cache["memory"] == "recompute":
        cache = _replay(cache)
    expand_w, dw_w, project_w = cache["weights"]
    g, dbn2w, dbn2b = bn.backward(dout, cache["bn2"])  # the sub-ops' bodies, dout checked above
    g, dpw = pw.backward(g, cache["p_in"], project_w)
    dse = None
    if cache["se"] is not None:
        g, *dse = sq.backward(g, cache["se_cache"])
    g, dbn1w, dbn1b = bn.backward(g, cache["bn1"])
    g, ddw = dw.backward(g, cache["d_in"], dw_w, cache["stride"], dw_w.shape[-1] // 2)
    dew, dbn0 = None, None
    if expand_w is not None:
        g, dbn0w, dbn0b = bn.backward(g, cache["bn0"])
        g, dew = pw.backward(g, cache["e_in"], expand_w)
        dbn0 = (dbn0w, dbn0b)
    if cache["residual"]:
        g = g + dout
    grads = g, (dew, ddw, dpw), (dbn0, (dbn1w, dbn1b), (dbn2w, dbn2b))
    return grads if dse is None else (*grads, tuple(dse))
