"""Whole models on the Numba kernels: against torch (float64 and float32) and the NumPy backend."""

import numpy as np
import pytest

import numpy_impl
from mobilenet.verify import FLOAT64_TOL, QUANTITIES, compare


@pytest.mark.parametrize(
    "arch,width,res,batch,training",
    [
        ("v1", 0.5, 64, 3, True),
        ("v1", 0.25, 45, 2, False),
        ("v2", 1.0, 64, 2, True),
        ("v2", 0.35, 33, 4, True),
        ("v2", 0.5, 64, 1, False),
    ],
)
def test_numba_backend_matches_torch_float64(arch, width, res, batch, training):
    r = compare(arch, width, "float64", res, batch, seed=4, training=training, backend="numba")
    for q in QUANTITIES:
        assert r[q] <= FLOAT64_TOL, f"{q}: {r[q]:.3e} ({r})"


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_numba_backend_float32_is_as_accurate_as_torch_float32(arch):
    r = compare(arch, 0.5, "float32", 64, 3, seed=6, backend="numba")
    assert r["ok"], r


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_numba_and_numpy_backends_agree_in_float32_eval(arch):
    kw = {"width_mult": 0.5, "num_classes": 10, "dtype": np.float32}
    a = getattr(numpy_impl, f"mobilenet_{arch}")(**kw).eval()
    b = getattr(numpy_impl, f"mobilenet_{arch}")(backend="numba", **kw).eval()
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    oa, ob = a.forward(x), b.forward(x)
    d = np.random.default_rng(1).standard_normal(oa.shape).astype(np.float32)
    da, db = a.backward(d), b.backward(d)
    # eval mode is well conditioned: float32 rounding of ~50 layers of <=1e4-term dot products
    np.testing.assert_allclose(ob, oa, rtol=0, atol=1e-4 * np.abs(oa).max())
    np.testing.assert_allclose(db, da, rtol=0, atol=1e-4 * np.abs(da).max())
    for k in a.grads:
        np.testing.assert_allclose(
            b.grads[k], a.grads[k], rtol=0, atol=1e-4 * np.abs(a.grads[k]).max() + 1e-30, err_msg=k
        )


def test_importing_the_kernels_leaves_thread_settings_alone_and_tunes_malloc_unless_told_not_to():
    """kernels changes no thread setting on import (no GOMP_SPINCOUNT, numpy's BLAS threads as they
    were) and raises glibc's malloc thresholds, unless MOBILENET_MALLOC=default."""
    import os
    import platform
    import subprocess
    import sys

    code = (
        "import os, json; from threadpoolctl import threadpool_info\n"
        "before = [i['num_threads'] for i in threadpool_info()]\n"
        "import kernels\n"
        "print(json.dumps([kernels._memory.MALLOC_TUNED, 'GOMP_SPINCOUNT' in os.environ,\n"
        "                  before == [i['num_threads'] for i in threadpool_info()][:len(before)]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "MOBILENET_MALLOC")}
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    for extra, tuned in (({}, glibc), ({"MOBILENET_MALLOC": "default"}, False)):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == f"[{str(tuned).lower()}, false, true]", (extra, out)
