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
- ``out``: (MR, 32) int32.

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


def _tile_codegen(mr):
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
        for r in range(mr):
            for h in range(2):
                where = builder.add(builder.mul(const(r), o_row), const(64 * h))
                builder.store(builder.load(accs[2 * r + h]), at(o_base, where, _V16), align=4)
        return context.get_dummy_value()

    return codegen


def _make_tile(mr):
    @intrinsic
    def tile(typingctx, out, a, p0, b, nb):
        return types.void(out, a, p0, b, nb), _tile_codegen(mr)

    return tile


MR = 8  # rows per tile (a 7x7 layer at batch 1 is 49 rows: 7 tiles)
dpbusd_tile = _make_tile(MR)
