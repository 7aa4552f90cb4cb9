"""The performance analysis chapter's measurements, each side alone in its process.

    python -m benchmarks.perf              # everything (~10 min on 2 cores): results/perf.json
    python -m benchmarks.perf --quick      # 1 round, shorter timings (a few minutes)
    python -m benchmarks.perf --tasks separable roofline

Tasks:
  sweep      MobileNetV1 and V2 inference latency (batch 1) over the papers' width (alpha) and
             resolution (rho) grids, on numba, torch and onnxruntime (``mobilenet.deploy.bench``)
  memory     the peak resident memory of one inference at 1.0/224 px, each model alone in a
             process per backend
  separable  every distinct MobileNetV1 layer shape: a standard 3x3 convolution against its
             depthwise separable replacement (3x3 depthwise + 1x1), each op timed alone, numba
             and torch
  roofline   this machine's memory bandwidth (numpy copy, one thread; a Numba copy, all threads)
             and float32 GEMM rate
  v3         MobileNetV3-Large and Small beside V2: inference (1.0/224 px, batch 1) on the
             same three backends, and a training step (batch 16, 128 px) on numba and torch

``docs/make_figures.py`` turns results/perf.json into the chapter's figures and tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import numpy as np

from mobilenet.deploy import bench as B

from .timing import RESULTS, cpu, measure, versions

# the papers' grids: V1 Tables 6-7, V2 (TF-slim's published checkpoints)
V1_GRID = [(w, 224) for w in (0.25, 0.5, 0.75, 1.0)] + [(1.0, r) for r in (128, 160, 192)]
V2_GRID = [(w, 224) for w in (0.35, 0.5, 0.75, 1.0, 1.4)] + [(1.0, r) for r in (96, 128, 160, 192)]
SWEEP_BACKENDS = ["numba", "torch", "onnxruntime"]
THREAD_VARIABLES = B.THREAD_VARIABLES
TASKS = ("sweep", "memory", "separable", "roofline", "v3")
V3_CASES = ("v2", "v3-large", "v3-small")  # width 1: V3 beside V2 in one session


def v1_layer_shapes(resolution=224):
    """(C_in, C_out, H, stride) of every distinct depthwise separable layer of MobileNetV1-1.0."""
    import mobilenet_arch as A

    shapes, h = [], resolution // 2
    for c_in, (c_out, stride) in zip([32] + [c for c, _ in A.V1_LAYERS], A.V1_LAYERS):
        shapes.append((c_in, c_out, h, stride))
        h = (h - 1) // stride + 1
    return list(dict.fromkeys(shapes))


def _cl(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _layer_arrays(c_in, c_out, h, s):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c_in, h, h), dtype=np.float32)
    ho = (h - 1) // s + 1
    d = rng.standard_normal((1, c_in, ho, ho), dtype=np.float32)
    wf = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32)
    wd = rng.standard_normal((c_in, 1, 3, 3), dtype=np.float32)
    wp = rng.standard_normal((c_out, c_in, 1, 1), dtype=np.float32)
    return x, d, wf, wd, wp


# --- worker processes -------------------------------------------------------------------


def separable_numba(min_time):
    import kernels

    out = {}
    for c_in, c_out, h, s in v1_layer_shapes():
        x, d, wf, wd, wp = _layer_arrays(c_in, c_out, h, s)
        x, d = _cl(x), _cl(d)
        key = f"{c_in}-{c_out} {h}x{h} s{s}"
        out[f"full {key}"] = measure(functools.partial(kernels.conv2d, x, wf, None, s, 1), min_time)
        out[f"dw {key}"] = measure(functools.partial(kernels.depthwise_conv2d, x, wd, s, 1), min_time)
        out[f"pw {key}"] = measure(functools.partial(kernels.pointwise_conv2d, d, wp), min_time)
    return out


def separable_torch(min_time):
    import torch
    import torch.nn.functional as F

    out = {}
    cl = torch.channels_last
    with torch.no_grad():
        for c_in, c_out, h, s in v1_layer_shapes():
            x, d, wf, wd, wp = (torch.from_numpy(a) for a in _layer_arrays(c_in, c_out, h, s))
            x, d = x.contiguous(memory_format=cl), d.contiguous(memory_format=cl)
            wf, wd, wp = (w.contiguous(memory_format=cl) for w in (wf, wd, wp))
            key = f"{c_in}-{c_out} {h}x{h} s{s}"
            out[f"full {key}"] = measure(functools.partial(F.conv2d, x, wf, None, s, 1), min_time)
            out[f"dw {key}"] = measure(functools.partial(F.conv2d, x, wd, None, s, 1, 1, c_in), min_time)
            out[f"pw {key}"] = measure(functools.partial(F.conv2d, d, wp), min_time)
    return out


def roofline(threads, min_time):
    import numba
    from threadpoolctl import threadpool_limits

    @numba.njit(parallel=True, cache=False)
    def par_copy(dst, src):
        for i in numba.prange(src.size):
            dst[i] = src[i]

    a = np.random.default_rng(0).standard_normal(16 << 20, dtype=np.float32)  # 64 MiB: past the caches
    b = np.empty_like(a)
    out = {}
    t = measure(lambda: np.copyto(b, a), min_time)
    out["copy numpy 1 thread"] = {**t, "GBps": 2 * a.nbytes / t["median_us"] / 1e3}
    t = measure(lambda: par_copy(b, a), min_time)
    out[f"copy numba {threads} threads"] = {**t, "GBps": 2 * a.nbytes / t["median_us"] / 1e3}
    # 2 x 256 KiB per thread: source and destination stay in each core's L2
    small, small_out = a[: 64 * 1024 * threads].copy(), np.empty(64 * 1024 * threads, np.float32)
    t = measure(lambda: par_copy(small_out, small), min_time)
    out[f"copy numba {threads} threads, in L2"] = {
        **t,
        "GBps": 2 * small.nbytes / t["median_us"] / 1e3,
        "cache": True,
    }
    m = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        t = measure(lambda: m @ m, min_time)
    out[f"sgemm 1024 {threads} threads"] = {**t, "GFLOPs": 2 * 1024**3 / t["median_us"] / 1e3}
    return out


def roofline_torch(threads, min_time):
    """The GEMM rate torch reaches: torch.mm, and a large 1x1 convolution (oneDNN's JIT kernels,
    which may use wider vectors on this CPU than BLAS does)."""
    import torch
    import torch.nn.functional as F

    out = {}
    cl = torch.channels_last
    x = torch.randn(1, 256, 56, 56).contiguous(memory_format=cl)
    w = torch.randn(256, 256, 1, 1).contiguous(memory_format=cl)
    w3 = torch.randn(256, 256, 3, 3).contiguous(memory_format=cl)
    with torch.no_grad():
        t = measure(lambda: F.conv2d(x, w), min_time)
        out[f"oneDNN 1x1 conv 256->256 56x56 {threads} threads"] = {
            **t,
            "GFLOPs": 2 * 256 * 3136 * 256 / t["median_us"] / 1e3,
        }
        t = measure(lambda: F.conv2d(x, w3, None, 1, 1), min_time)
        out[f"oneDNN 3x3 conv 256->256 56x56 {threads} threads"] = {
            **t,
            "GFLOPs": 2 * 9 * 256 * 3136 * 256 / t["median_us"] / 1e3,
        }
    for n in (1024, 2048):
        m = torch.randn(n, n)
        t = measure(lambda m=m: torch.mm(m, m), min_time)
        out[f"sgemm {n} {threads} threads"] = {**t, "GFLOPs": 2 * n**3 / t["median_us"] / 1e3}
    return out


def worker_main(side, task, threads, min_time):
    if side == "numba":
        import numba

        numba.set_num_threads(threads)
        res = separable_numba(min_time) if task == "separable" else roofline(threads, min_time)
    else:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        res = separable_torch(min_time) if task == "separable" else roofline_torch(threads, min_time)
    mods = [sys.modules[m] for m in ("numba", "torch") if m in sys.modules]
    print(json.dumps({"versions": versions(*mods), "results": res}))


# --- the orchestrator -----------------------------------------------------------------------


def run_worker(side, task, threads, min_time) -> dict:
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}
    cmd = [sys.executable, "-m", "benchmarks.perf", "--worker", side, task, "--threads", str(threads)]
    cmd += ["--min-time", str(min_time)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=RESULTS.parent.parent)
    if res.returncode != 0:
        raise RuntimeError(f"{side} {task} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def collect_ops(task, sides, rounds, threads, min_time) -> dict:
    """{side: {case: {us, spread, rounds_us}}}: each side alone in its process, alternating rounds."""
    runs, vers = {}, {}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            t0 = time.perf_counter()
            out = run_worker(side, task, threads, min_time)
            vers.update(out["versions"])
            for case, t in out["results"].items():
                runs.setdefault(side, {}).setdefault(case, []).append(t)
            print(f"  {task} round {r + 1}/{rounds} {side:6s} {time.perf_counter() - t0:5.1f} s", flush=True)
    summary = {}
    for side, cases in runs.items():
        for case, ts in cases.items():
            meds = [t["median_us"] for t in ts]
            best = min(ts, key=lambda t: t["median_us"])
            row = {"us": best["median_us"], "spread": max(meds) / min(meds) - 1, "rounds_us": meds}
            row.update({k: best[k] for k in ("GBps", "GFLOPs", "cache") if k in best})
            summary.setdefault(side, {})[case] = row
    return {"results": summary, "versions": vers}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round, shorter timings")
    p.add_argument("--rounds", type=int, default=None, help="default 2 (1 with --quick)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--worker", nargs=2, metavar=("SIDE", "TASK"), help=argparse.SUPPRESS)
    p.add_argument("--min-time", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker_main(*a.worker, a.threads, a.min_time)
    rounds = a.rounds or (1 if a.quick else 2)
    min_time = 0.1 if a.quick else 0.3
    path = RESULTS / "perf.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    if "sweep" in a.tasks or "machine" not in res:  # the chapter's machine line is the sweep's
        res.update({"machine": cpu(), "threads": a.threads})
    t0 = time.perf_counter()
    if "roofline" in a.tasks:
        res["roofline"] = collect_ops("roofline", ["numba", "torch"], max(rounds, 2), a.threads, 2 * min_time)
    if "separable" in a.tasks:
        res["separable"] = collect_ops("separable", ["numba", "torch"], rounds, a.threads, min_time / 2)
    if "sweep" in a.tasks:
        cases = [B.Case("v1", w, r) for w, r in V1_GRID] + [B.Case("v2", w, r) for w, r in V2_GRID]
        print(f"sweep: {len(cases)} models x {len(SWEEP_BACKENDS)} backends, {rounds} rounds", flush=True)
        res["sweep"] = B.bench(cases, SWEEP_BACKENDS, rounds, a.threads, min_time)
    if "memory" in a.tasks:
        res["memory"] = {}
        for arch in ("v1", "v2"):  # one model per process: its peak is its own
            print(f"memory: {arch}", flush=True)
            res["memory"][arch] = B.bench([B.Case(arch)], SWEEP_BACKENDS, 1, a.threads, 0.05)
    if "v3" in a.tasks:
        print(f"v3: {len(V3_CASES)} models x {len(SWEEP_BACKENDS)} backends, {rounds} rounds", flush=True)
        cases = [B.Case(arch) for arch in V3_CASES]  # inference, batch 1, 224 px
        cases += [B.Case(arch, resolution=128, batch=16, train=True) for arch in V3_CASES]  # a training step
        res["v3"] = B.bench(cases, SWEEP_BACKENDS, rounds, a.threads, min_time)
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path} in {res['seconds']:.0f} s; now run docs/make_figures.py")


if __name__ == "__main__":
    main()
