"""One AVX-512 VNNI instruction, and the GEMM microkernel built on it, written in LLVM IR.

``vpdpbusd acc, a, b`` (AVX-512 VNNI): in each of its 16 int32 lanes,

    acc[j] += sum_{t < 4} a.u8[4 j + t] * b.s8[4 j + t]

64 multiply-adds of unsigned by signed bytes into int32, exactly (no saturation: that is the
``s`` variant), in one instruction: four times a float32 FMA's 16. LLVM does not emit it from a
loop (it widens to int16 and uses ``vpdpwssd``, 32 per instruction, at best), so the microkernel
below calls it by name, ``llvm.x86.avx512.vpdpbusd.512``, from a Numba ``@intrinsic``.

:func:`dpbusd_tile` computes one ``MR x 32`` tile of ``out = a @ b``::

    out[r, j] = sum_k4 sum_t a_u8[p0 + r, 4 k4 + t] * b_s8[nb][k4][j][t]      r < MR, j < 32

- ``a``: (P, K4) int32, the bytes of a (P, 4 K4) uint8 matrix (4 consecutive k in each int32);
  rows past P - 1 read row P - 1 (their results are not used), so any P works.
- ``b``: (NB, K4, 32) int32, the bytes of the packed weights: for each block of 32 output
  channels, for each k4, 32 lanes of 4 consecutive k (:func:`kernels.qgemm.pack_weights`).
- ``out``: (MR, 32) int32; or, for :func:`dpbusd_tile_q`, the whole (P, N) uint8 output, into
  which the tile is written requantized in registers (``bias`` and ``M`` (NB * 32,) int32 and
  float32, then ``zp``, ``lo``, ``hi``): the int32 accumulators never reach memory.

Registers: 2 MR accumulators (16 lanes each) live across the whole k loop, two vectors of
weights are loaded once per k4 and used by the MR rows, and each row's 4 bytes are broadcast
to 16 lanes: with MR = 8, 16 accumulators + 2 + 1 of the 32 zmm registers, 16 vpdpbusd per
2 weight loads.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

HAS_VNNI = bool(llvm.get_host_cpu_features().get("avx512vnni", False))
LANES = 16  # int32 lanes in a zmm register
NR = 2 * LANES  # output channels per tile: two registers

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16 = ir.VectorType(_I32, LANES)


def _tile_codegen(mr, epilogue):
    def codegen(context, builder, sig, args):
        out = context.make_array(sig.args[0])(context, builder, args[0])
        a = context.make_array(sig.args[1])(context, builder, args[1])
        b = context.make_array(sig.args[3])(context, builder, args[3])
        p0, nb = args[2], args[4]
        P, K4 = builder.extract_value(a.shape, 0), builder.extract_value(a.shape, 1)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V16, [_V16] * 3), "llvm.x86.avx512.vpdpbusd.512"
        )

        def at(base, offset, ty):  # a typed pointer at a byte offset
            return builder.inttoptr(builder.add(base, offset), ty.as_pointer())

        def const(v):
            return ir.Constant(_I64, v)

        # row pointers (rows past the end read the last row) and the weight block's start
        a_base = builder.ptrtoint(a.data, _I64)
        rows = []
        for r in range(mr):
            p = builder.add(p0, const(r))
            p = builder.select(builder.icmp_signed("<", p, P), p, builder.sub(P, const(1)))
            rows.append(builder.add(a_base, builder.mul(p, builder.extract_value(a.strides, 0))))
        b_base = builder.add(
            builder.ptrtoint(b.data, _I64), builder.mul(nb, builder.extract_value(b.strides, 0))
        )
        # accumulators in allocas: LLVM's mem2reg keeps them in registers through the loop
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V16, None)) for _ in range(2 * mr)]
        with cgutils.for_range(builder, K4) as loop:
            k = loop.index
            w_at = builder.add(b_base, builder.mul(k, const(4 * NR)))
            w = [builder.load(at(w_at, const(64 * h), _V16), align=4) for h in range(2)]
            for r in range(mr):
                x = builder.load(at(rows[r], builder.mul(k, const(4)), _I32), align=1)
                x = builder.insert_element(ir.Constant(_V16, ir.Undefined), x, ir.Constant(_I32, 0))
                x = builder.shuffle_vector(x, ir.Constant(_V16, ir.Undefined), ir.Constant(_V16, [0] * LANES))
                for h in range(2):
                    acc = accs[2 * r + h]
                    builder.store(builder.call(fn, [builder.load(acc), x, w[h]]), acc)
        o_base = builder.ptrtoint(out.data, _I64)
        o_row = builder.extract_value(out.strides, 0)
        if not epilogue:
            for r in range(mr):
                for h in range(2):
                    where = builder.add(builder.mul(const(r), o_row), const(64 * h))
                    builder.store(builder.load(accs[2 * r + h]), at(o_base, where, _V16), align=4)
            return context.get_dummy_value()
        # the requantized tile straight into out (P, N) uint8: rows past P skipped, and a
        # vector that reaches past N stored lane by lane
        finish = _requantize(context, builder, sig, args, nb)
        N = builder.extract_value(out.shape, 1)
        n0 = builder.mul(nb, const(NR))
        for r in range(mr):
            p = builder.add(p0, const(r))
            with builder.if_then(builder.icmp_signed("<", p, P), likely=True):
                row = builder.add(o_base, builder.add(builder.mul(p, o_row), n0))
                for h in range(2):
                    y = finish(builder.load(accs[2 * r + h]), h)
                    left = builder.sub(builder.sub(N, n0), const(LANES * h))  # outputs from this lane on
                    full = builder.icmp_signed(">=", left, const(LANES))
                    with builder.if_else(full, likely=True) as (whole, part):
                        with whole:
                            builder.store(y, at(row, const(LANES * h), _V16B), align=1)
                        with part:
                            with cgutils.for_range(
                                builder,
                                builder.select(builder.icmp_signed(">", left, const(0)), left, const(0)),
                            ) as lane:
                                byte = builder.extract_element(y, builder.trunc(lane.index, _I32))
                                builder.store(
                                    byte, at(row, builder.add(const(LANES * h), lane.index), ir.IntType(8))
                                )
        return context.get_dummy_value()

    return codegen


_F32 = ir.FloatType()
_VF = ir.VectorType(_F32, LANES)
_V16B = ir.VectorType(ir.IntType(8), LANES)


def _requantize(context, builder, sig, args, nb):
    """:func:`_requantize_at` for the tile's output block ``nb`` (arguments 5 to 9)."""
    return _requantize_at(context, builder, sig, args, 5, builder.mul(nb, ir.Constant(_I64, NR)))


def _requantize_at(context, builder, sig, args, k, first):
    """The epilogue of :func:`kernels.qgemm.requant` on 16 lanes at once::

        y = clamp(rint(float32(acc + bias) * M), lo - zp, hi - zp) + zp         (as uint8)

    Clamping before rounding gives the same integers as after (rint keeps integers and order),
    and keeps the conversion to int32 in range. Arguments ``k`` to ``k + 4`` are ``bias`` and
    ``M`` (int32 and float32 arrays), ``zp``, ``lo`` and ``hi``; lane 0 is channel ``first``."""
    bias = context.make_array(sig.args[k])(context, builder, args[k])
    M = context.make_array(sig.args[k + 1])(context, builder, args[k + 1])
    zp, lo, hi = (builder.trunc(v, _I32) for v in args[k + 2 : k + 5])
    mod = builder.module
    vf2 = ir.FunctionType(_VF, [_VF, _VF])
    fmax = cgutils.get_or_insert_function(mod, vf2, "llvm.maxnum.v16f32")
    fmin = cgutils.get_or_insert_function(mod, vf2, "llvm.minnum.v16f32")
    rint = cgutils.get_or_insert_function(mod, ir.FunctionType(_VF, [_VF]), "llvm.rint.v16f32")

    def splat(v, ty):
        vec = builder.insert_element(ir.Constant(ty, ir.Undefined), v, ir.Constant(_I32, 0))
        return builder.shuffle_vector(vec, ir.Constant(ty, ir.Undefined), ir.Constant(_V16, [0] * LANES))

    f_lo = splat(builder.sitofp(builder.sub(lo, zp), _F32), _VF)
    f_hi = splat(builder.sitofp(builder.sub(hi, zp), _F32), _VF)
    z = splat(zp, _V16)
    bias_at = builder.gep(bias.data, [first])
    m_at = builder.gep(M.data, [first])

    def finish(acc, h):
        off = [ir.Constant(_I64, LANES * h)]
        bv = builder.load(builder.bitcast(builder.gep(bias_at, off), _V16.as_pointer()), align=4)
        mv = builder.load(builder.bitcast(builder.gep(m_at, off), _VF.as_pointer()), align=4)
        f = builder.fmul(builder.sitofp(builder.add(acc, bv), _VF), mv)
        f = builder.call(rint, [builder.call(fmin, [builder.call(fmax, [f, f_lo]), f_hi])])
        return builder.trunc(builder.add(builder.fptosi(f, _V16), z), _V16B)

    return finish


def _make_tile(mr):
    @intrinsic
    def tile(typingctx, out, a, p0, b, nb):
        return types.void(out, a, p0, b, nb), _tile_codegen(mr, epilogue=False)

    return tile


def _make_tile_q(mr):
    @intrinsic
    def tile_q(typingctx, out, a, p0, b, nb, bias, M, zp, lo, hi):
        return types.void(out, a, p0, b, nb, bias, M, zp, lo, hi), _tile_codegen(mr, epilogue=True)

    return tile_q


MR = 8  # rows per tile (a 7x7 layer at batch 1 is 49 rows: 7 tiles)
dpbusd_tile = _make_tile(MR)
dpbusd_tile_q = _make_tile_q(MR)
dpbusd_row_q = _make_tile_q(1)  # one row: a layer with fewer rows than MR (a classifier at batch 1)


# --- depthwise: taps side by side in the bytes of a word ------------------------------------


def _dw_codegen(K, checked):
    """:func:`dpbusd_dw_q`'s code for one K and ``checked``."""
    groups = -(-K // 4)

    def codegen(context, builder, sig, args):
        out = context.make_array(sig.args[0])(context, builder, args[0])
        x = context.make_array(sig.args[1])(context, builder, args[1])
        n, ih0, iw0, oh, ow, c0 = args[2:8]
        wpk = context.make_array(sig.args[8])(context, builder, args[8])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V16, [_V16] * 3), "llvm.x86.avx512.vpdpbusd.512"
        )
        v16b = ir.VectorType(ir.IntType(8), 16)
        zero16 = ir.Constant(v16b, None)

        def const(v):
            return ir.Constant(_I64, v)

        def at(base, offset, ty):
            return builder.inttoptr(builder.add(base, offset), ty.as_pointer())

        def stride(arr, d):
            return builder.extract_value(arr.strides, d)

        H, W = builder.extract_value(x.shape, 1), builder.extract_value(x.shape, 2)

        def clamp(v, hi):  # (index within [0, hi), whether it was)
            inside = builder.and_(builder.icmp_signed(">=", v, const(0)), builder.icmp_signed("<", v, hi))
            return builder.select(inside, v, const(0)), inside

        if checked:
            zx = builder.trunc(args[14], ir.IntType(8))
            zsplat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(v16b, ir.Undefined), zx, ir.Constant(_I32, 0)),
                ir.Constant(v16b, ir.Undefined),
                ir.Constant(_V16, [0] * LANES),
            )
        pixel = builder.add(builder.ptrtoint(x.data, _I64), builder.add(builder.mul(n, stride(x, 0)), c0))
        w_at = builder.add(builder.ptrtoint(wpk.data, _I64), builder.mul(c0, const(4)))
        cat2 = ir.Constant(_V32I, list(range(32)))
        cat4 = ir.Constant(ir.VectorType(_I32, 64), list(range(64)))
        # byte 4 l + t of the word vector is column t's channel l: a 4 x 16 byte transpose
        spread = ir.Constant(ir.VectorType(_I32, 64), [16 * t + l for l in range(16) for t in range(4)])
        acc = ir.Constant(_V16, None)
        for i in range(K):
            ih = builder.add(ih0, const(i))
            if checked:
                ih, row_in = clamp(ih, H)
            row = builder.add(pixel, builder.mul(ih, stride(x, 1)))
            for g in range(groups):
                cols = []
                for t in range(4):
                    j = 4 * g + t
                    if j >= K:
                        cols.append(zero16)
                        continue
                    iw = builder.add(iw0, const(j))
                    if checked:
                        iw, col_in = clamp(iw, W)
                    v = builder.load(at(row, builder.mul(iw, stride(x, 2)), v16b), align=1)
                    if checked:
                        v = builder.select(builder.and_(row_in, col_in), v, zsplat)
                    cols.append(v)
                lo32 = builder.shuffle_vector(cols[0], cols[1], cat2)
                hi32 = builder.shuffle_vector(cols[2], cols[3], cat2)
                cols64 = builder.shuffle_vector(lo32, hi32, cat4)
                words = builder.shuffle_vector(cols64, ir.Constant(_V64B, None), spread)
                w_off = builder.add(
                    builder.mul(const(i), stride(wpk, 0)), builder.mul(const(g), stride(wpk, 1))
                )
                w = builder.load(at(w_at, w_off, _V16), align=4)
                acc = builder.call(fn, [acc, builder.bitcast(words, _V16), w])
        finish = _requantize_at(context, builder, sig, args, 9, c0)
        o_at = builder.add(
            builder.ptrtoint(out.data, _I64),
            builder.add(
                builder.add(builder.mul(n, stride(out, 0)), builder.mul(oh, stride(out, 1))),
                builder.add(builder.mul(ow, stride(out, 2)), c0),
            ),
        )
        builder.store(finish(acc, 0), at(o_at, const(0), _V16B), align=1)
        return context.get_dummy_value()

    return codegen


_V32I = ir.VectorType(_I32, 32)
_V64B = ir.VectorType(ir.IntType(8), 64)


@intrinsic
def dpbusd_dw_q(typingctx, K, checked, out, x, n, ih0, iw0, oh, ow, c0, wpk, bias, M, zp, lo, hi, zx):
    """One output pixel's 16 channels (from ``c0``) of a K x K depthwise convolution::

        out[n, oh, ow, c0:c0 + 16] = requant(bias[c] + sum_{i,j} x[n, ih0 + i, iw0 + j, c] wt[i, j, c])

    ``wpk`` (K, ceil(K / 4), C) int32: each kernel row's weights, 4 columns to a word
    (:func:`kernels.qdepthwise.pack_taps`); ``bias`` with the zero point's term folded in.
    ``K`` and ``checked`` are compile-time constants: ``checked`` reads the zero point ``zx``
    for a tap outside x instead of memory."""
    if not isinstance(K, types.IntegerLiteral) or not isinstance(checked, types.BooleanLiteral):
        return None  # (numba then retries with the constants' literal types)
    gen = _dw_codegen(K.literal_value, checked.literal_value)
    rest = (out, x, n, ih0, iw0, oh, ow, c0, wpk, bias, M, zp, lo, hi, zx)

    def codegen(context, builder, sig, args):
        return gen(context, builder, types.void(*sig.args[2:]), args[2:])

    return types.void(K, checked, *rest), codegen


# --- a 256-entry byte table, 64 bytes at a time (AVX-512 VBMI) --------------------------------

HAS_VBMI = bool(llvm.get_host_cpu_features().get("avx512vbmi", False))


@intrinsic
def lookup64(typingctx, out, x, i, tbl):
    """``out[i:i + 64] = tbl[x[i:i + 64]]`` for uint8 arrays, ``tbl`` 256 entries: two
    ``vpermi2b`` (each a 128-entry table: the index's low 7 bits) and the index's top bit
    choosing between them. Without AVX-512 VBMI (a Cascade Lake has VNNI but not VBMI), 64
    byte loads instead: LLVM cannot emit ``vpermi2b`` there."""

    def codegen(context, builder, sig, args):
        o = context.make_array(sig.args[0])(context, builder, args[0])
        xa = context.make_array(sig.args[1])(context, builder, args[1])
        t = context.make_array(sig.args[3])(context, builder, args[3])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V64B, [_V64B] * 3), "llvm.x86.avx512.vpermi2var.qi.512"
        )

        def vec(arr, offset):
            ptr = builder.gep(arr.data, [offset])
            return builder.bitcast(ptr, _V64B.as_pointer())

        if not HAS_VBMI:
            for k in range(64):
                at = builder.add(args[2], ir.Constant(_I64, k))
                byte = builder.load(builder.gep(xa.data, [at]))
                value = builder.load(builder.gep(t.data, [builder.zext(byte, _I64)]))
                builder.store(value, builder.gep(o.data, [at]))
            return context.get_dummy_value()
        idx = builder.load(vec(xa, args[2]), align=1)
        quarters = [builder.load(vec(t, ir.Constant(_I64, 64 * k)), align=1) for k in range(4)]
        low = builder.call(fn, [quarters[0], idx, quarters[1]])
        high = builder.call(fn, [quarters[2], idx, quarters[3]])
        top = builder.icmp_signed("<", idx, ir.Constant(_V64B, None))  # index >= 128
        builder.store(builder.select(top, high, low), vec(o, args[2]), align=1)
        return context.get_dummy_value()

    return types.void(out, x, i, tbl), codegen
