"""The kernels give the same bits whether Numba compiled them in this process or loaded them from
its cache: a run's results do not depend on whether it is the first on a machine."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

# Batch norm forward and backward, channels-last and large enough for the parallel row kernels
# (with LLVM's reassociation allowed, their dx differed in one value of four between a fresh
# compile and a cached load), with and without a fused activation.
SCRIPT = """
import sys
import numpy as np
import kernels

rng = np.random.default_rng(0)
shape = (32, 48, 16, 16)
out = {}
for act in (None, "relu6", "hardswish"):
    x = rng.standard_normal(shape).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w, b = rng.standard_normal((2, 48)).astype(np.float32)
    rm, rv = np.zeros(48, np.float32), np.ones(48, np.float32)
    y, cache = kernels.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, activation=act)
    dy = rng.standard_normal(shape).astype(np.float32).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
    dx, dw, db = kernels.batch_norm_backward(dy, cache)
    for name, a in dict(y=y, dx=dx, dw=dw, db=db, rm=rm, rv=rv).items():
        out[f"{act}_{name}"] = np.asarray(a)
np.savez(sys.argv[1], **out)
"""


def test_a_fresh_compile_and_a_cached_load_give_the_same_bits(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # starts empty: the first run compiles
    for run in ("compiled", "cached"):
        subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / f"{run}.npz")],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
    assert any((tmp_path / "cache").rglob("*.nbc")), "the first run wrote no cache"
    with np.load(tmp_path / "compiled.npz") as a, np.load(tmp_path / "cached.npz") as b:
        assert a.files == b.files
        assert [k for k in a.files if not np.array_equal(a[k], b[k])] == []
