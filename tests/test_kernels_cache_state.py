"""The kernels give the same bits whether Numba compiled them in this process or loaded them from
its cache: a run's results do not depend on whether it is the first on a machine."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import kernels
from kernels import _cache


def batch_norm_arrays() -> dict:
    """Batch norm forward and backward, channels-last and large enough for the parallel row
    kernels (with LLVM's reassociation allowed, their dx differed in one value of four between
    a fresh compile and a cached load), with and without a fused activation."""
    rng = np.random.default_rng(0)
    shape = (32, 48, 16, 16)
    out = {}
    for act in (None, "relu6", "hardswish"):
        x = rng.standard_normal(shape).astype(np.float32)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        w, b = rng.standard_normal((2, 48)).astype(np.float32)
        rm, rv = np.zeros(48, np.float32), np.ones(48, np.float32)
        y, cache = kernels.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, activation=act)
        dy = np.ascontiguousarray(rng.standard_normal(shape).astype(np.float32).transpose(0, 2, 3, 1))
        dx, dw, db = kernels.batch_norm_backward(dy.transpose(0, 3, 1, 2), cache)
        for name, a in dict(y=y, dx=dx, dw=dw, db=db, rm=rm, rv=rv).items():
            out[f"{act}_{name}"] = np.asarray(a)
    return out


def test_a_fresh_compile_and_a_cached_load_give_the_same_bits(tmp_path):
    """This process runs the kernels as it compiled them (on a fresh clone, and after any edit to
    a kernel file, which drops the package's cached kernels: kernels._cache); a new process
    loads them from the cache this one wrote. Both must give the same arrays."""
    here = batch_norm_arrays()
    assert any(_cache.cache_folder().glob("batchnorm.*.nbi")), "no cached batch-norm kernel to load"
    code = "import sys, numpy as np; from tests.test_kernels_cache_state import batch_norm_arrays as f; "
    code += "np.savez(sys.argv[1], **f())"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there.npz")], check=True, timeout=600)
    with np.load(tmp_path / "there.npz") as there:
        assert sorted(there.files) == sorted(here)
        assert [k for k in here if not np.array_equal(here[k], there[k])] == []


def test_cached_kernels_built_from_other_sources_are_dropped(tmp_path):
    """Numba checks a cached kernel against its own file only; the package drops them all when
    any of its files changed (kernels._cache), and only then."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "b.py").write_text("y = 2\n")
    before = _cache.sources_digest(src)
    (src / "b.py").write_text("y = 3\n")  # another file than the one a kernel lives in
    after = _cache.sources_digest(src)
    assert before != after

    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("a.f-10.py311.nbi", "a.f-10.py311.1.nbc", "a.cpython-311.pyc"):
        (cache / name).write_text("")
    (cache / _cache.MARKER).write_text(before)
    assert _cache.refresh(cache, before) is False  # built from these sources: kept
    assert (cache / "a.f-10.py311.nbi").exists()
    assert _cache.refresh(cache, after) is True
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", _cache.MARKER]
    assert (cache / _cache.MARKER).read_text() == after
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert _cache.refresh(not_a_folder, after) is False  # nothing it can write: left alone, no error
