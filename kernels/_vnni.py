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
    """The epilogue of :func:`kernels.qgemm.requant` on 16 lanes at once::

        y = clamp(rint(float32(acc + bias) * M), lo - zp, hi - zp) + zp         (as uint8)

    Clamping before rounding gives the same integers as after (rint keeps integers and order),
    and keeps the conversion to int32 in range."""
    bias = context.make_array(sig.args[5])(context, builder, args[5])
    M = context.make_array(sig.args[6])(context, builder, args[6])
    zp, lo, hi = (builder.trunc(v, _I32) for v in args[7:10])
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
    first = builder.mul(nb, ir.Constant(_I64, NR))
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
