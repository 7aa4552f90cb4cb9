"""The kernels on their own (no torch in this process): pointwise calls against the bare
GEMM of the same size, training memory (store vs recompute) and the compile time.

    python -m benchmarks.bench_kernels [--threads 2] [--quick]

Writes benchmarks/results/kernels.{json,md}. Comparisons with torch and onnxruntime
are in ``benchmarks/run.py``, each library alone in its process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from functools import partial

import numba
import numpy as np

import kernels
import numpy_impl
from kernels._threads import blas_threads

from .timing import RESULTS, cpu, measure, versions


def median_us(fn, min_time=0.3) -> float:
    return measure(fn, min_time)["median_us"]


V2_POINTWISE = [  # (C_in, C_out, H): the expand and project 1x1 convs of MobileNetV2-1.0 at 224 px
    (16, 96, 112),
    (96, 24, 56),
    (24, 144, 56),
    (144, 24, 56),
    (144, 32, 28),
    (32, 192, 28),
    (192, 64, 14),
    (64, 384, 14),
    (384, 96, 14),
    (96, 576, 14),
    (576, 160, 7),
    (160, 960, 7),
    (960, 320, 7),
    (320, 1280, 7),
]


def cl(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def bench_pointwise(threads, batches):
    rows = []
    for b in batches:
        for cin, cout, h in V2_POINTWISE:
            rng = np.random.default_rng(0)
            x = cl(rng.standard_normal((b, cin, h, h)).astype(np.float32))
            w = rng.standard_normal((cout, cin, 1, 1)).astype(np.float32)
            dout = cl(rng.standard_normal((b, cout, h, h)).astype(np.float32))
            a = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, cin)  # the same GEMM, plain
            d2 = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, cout)
            w2 = np.ascontiguousarray(w[:, :, 0, 0])
            w2t = w2.T

            def gemm_bwd(d2=d2, w2=w2, a=a):
                d2 @ w2
                d2.T @ a

            with blas_threads(threads):
                r = {
                    "batch": b,
                    "C_in": cin,
                    "C_out": cout,
                    "H": h,
                    "ours_fwd": median_us(partial(kernels.pointwise_conv2d, x, w)),
                    "gemm_fwd": median_us(partial(np.matmul, a, w2t)),
                    "ours_bwd": median_us(partial(kernels.pointwise_conv2d_backward, dout, x, w)),
                    "gemm_bwd": median_us(gemm_bwd),
                }
            r["fwd_vs_gemm"] = r["ours_fwd"] / r["gemm_fwd"]
            r["bwd_vs_gemm"] = r["ours_bwd"] / r["gemm_bwd"]
            rows.append(r)
            print(
                f"pointwise b{b} {cin}->{cout} {h}x{h}: fwd {r['fwd_vs_gemm']:.2f}x gemm, "
                f"bwd {r['bwd_vs_gemm']:.2f}x gemm",
                flush=True,
            )
    return rows


def _peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_training_memory(threads):
    """Whole-model training step with the fused blocks storing or recomputing their intermediates."""
    from kernels import fused_block

    x = np.random.default_rng(0).standard_normal((16, 3, 128, 128)).astype(np.float32)
    d = np.random.default_rng(1).standard_normal((16, 1000)).astype(np.float32)
    out = {}
    for mode in ("store", "recompute"):
        fused_block.TRAINING_MEMORY = mode
        m = numpy_impl.mobilenet_v2(backend="numba")

        def step(m=m):
            m.forward(x)
            m.backward(d)

        step()
        out[f"peak_{mode}"] = _peak_bytes(step)
        out[f"time_{mode}"] = measure(step, 3.0, block_time=0)["median_us"]
        print(
            f"training memory {mode}: peak {out[f'peak_{mode}'] / 2**20:.0f} MiB, "
            f"step {out[f'time_{mode}'] / 1e3:.0f} ms",
            flush=True,
        )
    fused_block.TRAINING_MEMORY = "store"
    return out


def bench_compile():
    """First-call time with an empty Numba cache, in a fresh process, vs a cached call."""
    code = (
        "import time, numpy as np; t0 = time.perf_counter(); import numpy_impl\n"
        "m = numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=10, backend='numba')\n"
        "x = np.zeros((2, 3, 32, 32), np.float32); t1 = time.perf_counter()\n"
        "o = m.forward(x); m.backward(np.ones_like(o)); m.eval().forward(x); t2 = time.perf_counter()\n"
        "print(t2 - t1)\n"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty_cache_s", "warm_cache_s"):
            t = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            out[label] = float(res.stdout.strip().splitlines()[-1])
            out[label.replace("_s", "_process_s")] = time.perf_counter() - t
    print(
        f"compile: first forward+backward {out['empty_cache_s']:.1f} s with an empty cache, "
        f"{out['warm_cache_s']:.2f} s cached",
        flush=True,
    )
    return out


def markdown(res) -> str:
    m = res["machine"]
    lines = [
        "# The kernels on their own",
        "",
        f"Machine: {m['cpu']} ({m['simd']}); {res['threads']} threads; "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
        + ". Medians of benchmarks.timing.measure, microseconds unless stated.",
        "",
        "## Pointwise (1x1) convolution against the plain GEMM of the same size",
        "",
        "| batch | C_in -> C_out | H | ours fwd | GEMM fwd | ratio | ours bwd | 2 GEMMs | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["pointwise"]:
        lines.append(
            f"| {r['batch']} | {r['C_in']} -> {r['C_out']} | {r['H']} | {r['ours_fwd']:.0f} | "
            f"{r['gemm_fwd']:.0f} | {r['fwd_vs_gemm']:.2f} | {r['ours_bwd']:.0f} | {r['gemm_bwd']:.0f} | "
            f"{r['bwd_vs_gemm']:.2f} |"
        )
    t = res["training_memory"]
    lines += [
        "",
        "## Training: store or recompute the block intermediates (MobileNetV2-1.0, 128 px, batch 16)",
        "",
        "| variant | peak allocated (tracemalloc) | step time |",
        "|---|---:|---:|",
        f"| store | {t['peak_store'] / 2**20:.0f} MiB | {t['time_store'] / 1e3:.0f} ms |",
        f"| recompute | {t['peak_recompute'] / 2**20:.0f} MiB | {t['time_recompute'] / 1e3:.0f} ms |",
    ]
    c = res["compile"]
    lines += [
        "",
        f"Compile: the first forward+backward of a small model takes {c['empty_cache_s']:.1f} s with an "
        f"empty Numba cache and {c['warm_cache_s']:.2f} s from the cache (`cache=True`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="batch 1 only")
    args = p.parse_args(argv)
    numba.set_num_threads(args.threads)
    res = {"benchmark": "kernels", "machine": cpu(), "threads": args.threads, "versions": versions(numba)}
    res["compile"] = bench_compile()
    res["training_memory"] = bench_training_memory(args.threads)
    res["pointwise"] = bench_pointwise(args.threads, [1] if args.quick else [1, 8])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernels.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "kernels.md").write_text(markdown(res))
    print(f"wrote {RESULTS / 'kernels'}.json and .md")


if __name__ == "__main__":
    main()
