"""kernels.qgemm (and the VNNI microkernel of kernels._vnni): every version equals the NumPy
integer reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from kernels import qgemm
from kernels._vnni import HAS_VNNI
from numpy_impl.quant import ops


@st.composite
def gemm_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P, K, N = draw(st.integers(1, 30)), draw(st.integers(1, 70)), draw(st.integers(1, 70))
    x = rng.integers(0, 256, (P, K)).astype(np.uint8)
    extreme = draw(st.booleans())  # weights at +-127 and inputs at 255: the accumulator's far end
    w = (rng.choice([-127, 127], (N, K)) if extreme else rng.integers(-127, 128, (N, K))).astype(np.int8)
    if extreme:
        x[:] = 255
    b = rng.integers(-(2**20), 2**20, N).astype(np.int32)
    out = ops.QParams(float(np.float32(rng.uniform(0.5, 50))), int(rng.integers(0, 256)))
    rq = ops.Requant.make(
        float(np.float32(rng.uniform(0.01, 0.1))),
        rng.uniform(0.001, 0.01, N).astype(np.float32),
        out,
        relu=draw(st.booleans()),
    )
    return x, int(rng.integers(0, 256)), w, b, rq


def _run(version, x, zx, w, b, rq):
    M = np.broadcast_to(rq.M, (w.shape[0],)).astype(np.float32)
    lo = max(rq.out.qmin, rq.lo if rq.lo is not None else 0)
    out = np.empty((x.shape[0], w.shape[0]), np.uint8)
    args = (qgemm.fold_bias(w, b, zx), M, rq.out.zero_point, lo, rq.out.qmax, out)
    if version == 3:
        qgemm.gemm_v3(qgemm.as_words(x), qgemm.pack_weights(w), *args)
    elif version == 4:
        bias, M = (qgemm.pad_to_blocks(a) for a in args[:2])
        qgemm.gemm_v4(qgemm.as_words(x), qgemm.pack_weights(w), bias, M, *args[2:])
    else:
        qgemm.GEMMS[version](x, w, *args)
    return out


@pytest.mark.parametrize("version", [1, 2, 3, 4] if HAS_VNNI else [1, 2])
@given(case=gemm_case())
def test_every_version_equals_the_reference(version, case):
    x, zx, w, b, rq = case
    np.testing.assert_array_equal(_run(version, x, zx, w, b, rq), ops.linear(x, zx, w, b, rq))


def test_pack_weights_layout():
    w = np.arange(-60, 60, dtype=np.int8).reshape(40, 3)  # N = 40: two blocks, K = 3: one word
    packed = qgemm.pack_weights(w).view(np.int8).reshape(2, 1, 32, 4)
    assert packed[0, 0, 5, :3].tolist() == w[5].tolist() and packed[0, 0, 5, 3] == 0
    assert packed[1, 0, 7, :3].tolist() == w[39].tolist() and not packed[1, 0, 8:].any()


def test_fold_bias():
    w, b = np.array([[1, -2, 3], [0, 0, 5]], np.int8), np.array([10, -10], np.int32)
    np.testing.assert_array_equal(qgemm.fold_bias(w, b, 4), [10 - 4 * 2, -10 - 4 * 5])
    with pytest.raises(OverflowError, match="overflows int32"):
        qgemm.fold_bias(w, np.array([2**31 - 1, 0], np.int32), -100)


def _asm(kernel, *args):
    """The machine code of a fresh, uncached compile of ``kernel`` for ``args`` (Numba does not
    disassemble what it loaded from its cache)."""
    fresh = njit(error_model="numpy")(kernel.py_func)  # serial: the loop body in one function
    fresh(*args)
    return fresh.inspect_asm(fresh.signatures[0])


@pytest.mark.skipif(not HAS_VNNI, reason="this CPU has no AVX-512 VNNI")
def test_the_tile_is_vnni_and_version_2_widens_to_int16_pairs():
    """What the versions are about, in the machine code LLVM made."""
    x, w = np.ones((9, 8), np.uint8), np.ones((3, 8), np.int8)
    args = (np.zeros(3, np.int32), np.ones(3, np.float32), 0, 0, 255, np.empty((9, 3), np.uint8))
    v3 = _asm(qgemm.gemm_v3, qgemm.as_words(x), qgemm.pack_weights(w), *args)
    assert "vpdpbusd" in v3 and "zmm" in v3
    v2 = _asm(qgemm.gemm_v2, x, w, *args)
    assert "vpdpwssd" in v2 or "vpmaddwd" in v2


@pytest.mark.parametrize("version", [1, 2, 3, 4] if HAS_VNNI else [1, 2])
def test_ties_round_to_even(version):
    """Accumulators 1..40 times M = 0.5: every odd one is a tie, which must go to the even side."""
    x = np.arange(1, 41, dtype=np.uint8).reshape(40, 1)
    w = np.ones((1, 1), np.int8)
    rq = ops.Requant.make(1.0, np.float32(0.5), ops.QParams(1.0, 10))
    expected = np.rint(np.arange(1, 41) * 0.5).astype(int) + 10
    np.testing.assert_array_equal(_run(version, x, 0, w, np.zeros(1, np.int32), rq)[:, 0], expected)
