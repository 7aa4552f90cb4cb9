"""The timer and the machine record of every benchmark: plain Python, no torch, so that a
process timing the kernels never loads a second thread pool. ``mobilenet bench`` and
``benchmarks/`` measure the same way through it."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def measure(fn, min_time: float = 0.3, block_time: float = 0.01, max_blocks: int = 400) -> dict:
    """Time ``fn()``: median, quartiles and count of per-call times in microseconds.

    Calls are grouped in blocks of ~``block_time`` seconds (so that the timer's own cost
    is negligible for microsecond kernels); blocks are repeated until ``min_time`` has
    passed and at least 5 were taken. The median of the blocks is the figure: a burst
    of load from elsewhere on a shared machine lands in a few blocks, not in the median.
    """
    fn()
    fn()  # warm: compiled, caches and pages touched
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(block_time / once))
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or (time.perf_counter() - start < min_time and len(samples) < max_blocks):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e6)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return {
        "median_us": float(med),
        "q1_us": float(q1),
        "q3_us": float(q3),
        "blocks": len(samples),
        "number": number,
    }


def cpu() -> dict:
    """CPU model and the widest SIMD it has (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    names = {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX", "sse4_2": "SSE4.2"}
    simd = next((v for k, v in names.items() if k in flags), "unknown")
    return {"cpu": model, "simd": simd, "cores": os.cpu_count()}


def versions(*modules) -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for m in modules:
        out[m.__name__] = m.__version__
    return out
