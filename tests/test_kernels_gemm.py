"""kernels._gemm: the GEMM drivers of the pointwise, linear and im2col kernels against numpy's
products, every split (row blocks, column blocks of a transposed weight, row blocks of b for few
rows; for a^T b, partial sums per row block or column blocks for few rows)."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from kernels import _gemm as KG

from .helpers import DTYPES


@example(m=1, k=7, n=1, transposed=True, dtype=np.float32, seed=0)  # one row, one column
@example(m=255, k=3, n=9, transposed=True, dtype=np.float64, seed=1)  # the last size split by columns
@example(m=256, k=3, n=9, transposed=True, dtype=np.float64, seed=2)  # the first split by rows
@example(m=5, k=4, n=6, transposed=False, dtype=np.float32, seed=3)  # few rows, b's rows split
@example(m=5, k=1, n=6, transposed=False, dtype=np.float32, seed=4)  # one row of b: two row blocks of a
@given(
    m=st.integers(1, 700),
    k=st.integers(1, 24),
    n=st.integers(1, 24),
    transposed=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_gemm_matmul_matches_numpy(m, k, n, transposed, dtype, seed):
    """``_gemm.matmul``'s splits (row blocks; for few rows, column blocks of a transposed weight,
    else b's rows in two blocks with partial sums, or two row blocks when b has one row) against
    NumPy's product, within k roundings of |a| @ |b|."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = w.T if transposed else np.ascontiguousarray(w.T)
    got = KG.matmul(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = (k + 1) * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert got.shape == (m, n) and got.dtype == dtype
    assert np.all(np.abs(got - exact) <= bound)


@example(m=255, k=3, n=9, dtype=np.float64, seed=1)  # the last size split by columns
@example(m=256, k=3, n=9, dtype=np.float64, seed=2)  # the first reduced in row blocks
@example(m=4, k=5, n=1, dtype=np.float32, seed=3)  # one column: row blocks
@given(
    m=st.integers(0, 700),
    k=st.integers(1, 24),
    n=st.integers(1, 24),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_gemm_matmul_tn_matches_numpy(m, k, n, dtype, seed):
    """``_gemm.matmul_tn`` (a weight gradient): row blocks with partial sums, or for few rows the
    columns of b split, within m roundings of |a|^T |b|; zeros for no rows."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((m, n)).astype(dtype)
    got = KG.matmul_tn(a, b)
    exact = a.T.astype(np.float64) @ b.astype(np.float64)
    bound = (m + 1) * np.finfo(dtype).eps * (np.abs(a.T).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert got.shape == (k, n) and got.dtype == dtype
    assert np.all(np.abs(got - exact) <= bound)
