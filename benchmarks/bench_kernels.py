"""Pointwise GEMMs, the fused block, the whole model and the compile time, against torch.

    python -m benchmarks.bench_kernels [--threads 2] [--quick]

Writes benchmarks/results/kernels.{json,md}. Every time is a median from
torch.utils.benchmark with the same thread count on both sides (torch threads,
numba threads, and the BLAS threads the kernels set from numba's count).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import torch

import kernels
import numpy_impl
import torch_impl
from kernels._threads import blas_threads
from mobilenet import arch as A
from numpy_impl import functional as F

from .common import machine, median_us, set_threads, write

V2_POINTWISE = [  # (C_in, C_out, H): the expand and project 1x1 convs of MobileNetV2-1.0 at 224 px
    (16, 96, 112), (96, 24, 56), (24, 144, 56), (144, 24, 56), (144, 32, 28), (32, 192, 28), (192, 64, 14),
    (64, 384, 14), (384, 96, 14), (96, 576, 14), (576, 160, 7), (160, 960, 7), (960, 320, 7), (320, 1280, 7),
]  # fmt: skip


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
            xt = torch.from_numpy(x)  # channels_last tensor
            g = {"K": kernels, "x": x, "w": w, "dout": dout, "a": a, "d2": d2, "w2": w2, "np": np, "F": torch.nn.functional,
                 "xt": xt, "wt": torch.from_numpy(w)}  # fmt: skip
            with blas_threads(threads):
                r = {
                    "batch": b, "C_in": cin, "C_out": cout, "H": h,
                    "ours_fwd": median_us("K.pointwise_conv2d(x, w)", g, threads),
                    "gemm_fwd": median_us("a @ w2.T", g, threads),
                    "ours_bwd": median_us("K.pointwise_conv2d_backward(dout, x, w)", g, threads),
                    "gemm_bwd": median_us("d2 @ w2; d2.T @ a", g, threads),
                    "torch_fwd_cl": median_us("F.conv2d(xt, wt)", g, threads),
                }  # fmt: skip
            r["fwd_vs_gemm"] = r["ours_fwd"] / r["gemm_fwd"]
            r["bwd_vs_gemm"] = r["ours_bwd"] / r["gemm_bwd"]
            rows.append(r)
            print(f"pointwise b{b} {cin}->{cout} {h}x{h}: fwd {r['fwd_vs_gemm']:.2f}x gemm, "
                  f"bwd {r['bwd_vs_gemm']:.2f}x gemm", flush=True)  # fmt: skip
    return rows


def _block_arrays(block_spec, rng):
    """numpy weights and eval BN statistics for a spec Block."""
    convs = [c for _, c in A.walk(block_spec) if isinstance(c, A.Conv)]
    ws = [rng.standard_normal((c.out_channels, c.in_channels // c.groups, c.kernel_size, c.kernel_size)).astype(
        np.float32) * 0.2 for c in convs]  # fmt: skip
    if len(ws) == 2:
        ws = [None, *ws]

    def bn(c):
        return [(rng.random(c) + 0.5).astype(np.float32), rng.standard_normal(c).astype(np.float32) * 0.1,
                rng.standard_normal(c).astype(np.float32) * 0.1, (rng.random(c) + 0.5).astype(np.float32)]  # fmt: skip

    bns = [None if w is None else bn(w.shape[0]) for w in ws]
    return ws, bns


def _peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_blocks(threads, batches):
    """Every distinct V2 block in inference: fused kernel vs torch eager running the same block."""
    spec = dict(A.v2_spec().children)["features"]
    blocks, shape, seen = [], (3, 224, 224), set()
    from mobilenet.summary import layer_rows

    for name, child in spec:
        if isinstance(child, A.Block):
            convs = [c for _, c in A.walk(child) if isinstance(c, A.Conv)]
            key = (shape, convs[-1].out_channels, convs[-2].stride, len(convs))
            if key not in seen:
                seen.add(key)
                blocks.append((name, child, shape))
        shape = layer_rows(child, shape)[-1].output_shape
    rows = []
    for b in batches:
        for name, block, (c, h, w) in blocks:
            rng = np.random.default_rng(0)
            ws, bns = _block_arrays(block, rng)
            stride = [c_ for _, c_ in A.walk(block) if isinstance(c_, A.Conv)][-2].stride
            x = cl(rng.standard_normal((b, c, h, w)).astype(np.float32))
            tb = torch_impl.models.build(block).eval()
            with torch.no_grad():
                convs = [m for m in tb.modules() if isinstance(m, torch.nn.Conv2d)]
                bnm = [m for m in tb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                for m, wt in zip(convs, [w_ for w_ in ws if w_ is not None]):
                    m.weight.copy_(torch.from_numpy(wt))
                for m, p in zip(bnm, [b_ for b_ in bns if b_ is not None]):
                    m.weight.copy_(torch.from_numpy(p[0]))
                    m.bias.copy_(torch.from_numpy(p[1]))
                    m.running_mean.copy_(torch.from_numpy(p[2]))
                    m.running_var.copy_(torch.from_numpy(p[3]))
            xt = torch.from_numpy(np.ascontiguousarray(x))
            xt_cl = xt.contiguous(memory_format=torch.channels_last)
            tb_cl = torch_impl.models.build(block).eval().to(memory_format=torch.channels_last)
            tb_cl.load_state_dict(tb.state_dict())
            y, _ = kernels.inverted_residual(x, ws, bns, stride, None, False)
            with torch.no_grad():
                err = float(np.abs(y - tb(xt).numpy()).max() / np.abs(y).max())
            g = {"K": kernels, "x": x, "ws": ws, "bns": bns, "s": stride, "tb": tb, "tb_cl": tb_cl, "xt": xt,
                 "xt_cl": xt_cl, "torch": torch}  # fmt: skip
            r = {"batch": b, "block": f"features.{name}", "C": c, "H": h, "stride": stride,
                 "hidden": ws[1].shape[0], "C_out": ws[2].shape[0], "max_rel_err": err,
                 "ours": median_us("K.inverted_residual(x, ws, bns, s, None, False)", g, threads),
                 "torch_nchw": median_us("with torch.no_grad(): tb(xt)", g, threads),
                 "torch_cl": median_us("with torch.no_grad(): tb_cl(xt_cl)", g, threads)}  # fmt: skip
            r["speedup"] = min(r["torch_nchw"], r["torch_cl"]) / r["ours"]
            r.update(_peaks(x, ws, bns, stride))
            rows.append(r)
            print(f"block b{b} features.{name} {c}x{h}x{w} s{stride}: {r['speedup']:.2f}x torch, "
                  f"peak {r['peak_fused'] / 2**20:.2f} MiB fused vs {r['peak_unfused'] / 2**20:.2f} unfused",
                  flush=True)  # fmt: skip
    return rows


def _peaks(x, ws, bns, stride) -> dict:
    """Peak bytes allocated: the fused tiles, the same block unfused (reference ops), and training."""
    stats = [None if p is None else [a.copy() for a in p] for p in bns]  # training updates them
    return {
        "peak_fused": _peak_bytes(lambda: kernels.inverted_residual(x, ws, bns, stride, None, False)),
        "peak_unfused": _peak_bytes(lambda: _unfused_eval(x, ws, bns, stride)),
        "peak_train_stored": _peak_bytes(lambda: kernels.inverted_residual(x, ws, stats, stride, None, True)),
    }


def _unfused_eval(x, ws, bns, stride):
    h = x
    if ws[0] is not None:
        h = F.relu6(F.batch_norm(F.pointwise_conv2d(h, ws[0]), *bns[0], False)[0])
    h = F.relu6(F.batch_norm(F.depthwise_conv2d(h, ws[1], stride, 1), *bns[1], False)[0])
    return F.batch_norm(F.pointwise_conv2d(h, ws[2]), *bns[2], False)[0]


def bench_model(threads, quick):
    rows = []
    m = numpy_impl.mobilenet_v2(backend="numba").eval()
    t = torch_impl.mobilenet_v2().eval()
    t.load_state_dict(torch_impl.state_dict_to_torch(m.state_dict()))
    t_cl = torch_impl.mobilenet_v2().eval().to(memory_format=torch.channels_last)
    t_cl.load_state_dict(t.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)
    g = {"m": m, "x": x, "t": t, "t_cl": t_cl, "xt": xt, "xt_cl": xt.contiguous(memory_format=torch.channels_last),
         "torch": torch}  # fmt: skip
    m.forward(x)
    r = {"case": "MobileNetV2-1.0 224px batch 1 inference",
         "ours": median_us("m.forward(x)", g, threads, 2.0),
         "torch_nchw": median_us("with torch.no_grad(): t(xt)", g, threads, 2.0),
         "torch_cl": median_us("with torch.no_grad(): t_cl(xt_cl)", g, threads, 2.0)}  # fmt: skip
    r["speedup"] = min(r["torch_nchw"], r["torch_cl"]) / r["ours"]
    rows.append(r)
    print(f"model inference: ours {r['ours'] / 1e3:.1f} ms, torch {r['torch_nchw'] / 1e3:.1f} / "
          f"{r['torch_cl'] / 1e3:.1f} ms (NCHW / CL): {r['speedup']:.2f}x", flush=True)  # fmt: skip
    if quick:
        return rows
    mt = numpy_impl.mobilenet_v2(backend="numba")
    tt = torch_impl.mobilenet_v2()
    x16 = np.random.default_rng(0).standard_normal((16, 3, 128, 128)).astype(np.float32)
    d16 = np.random.default_rng(1).standard_normal((16, 1000)).astype(np.float32)
    x16t, d16t = torch.from_numpy(x16), torch.from_numpy(d16)

    def ours_step():
        mt.forward(x16)
        mt.backward(d16)

    def torch_step():
        tt.zero_grad(set_to_none=True)
        tt(x16t).backward(d16t)

    ours_step()
    g = {"ours_step": ours_step, "torch_step": torch_step}
    r = {
        "case": "MobileNetV2-1.0 128px batch 16 forward+backward (training mode)",
        "ours": median_us("ours_step()", g, threads, 5.0),
        "torch_nchw": median_us("torch_step()", g, threads, 5.0),
    }
    r["torch_cl"] = float("nan")
    r["speedup"] = r["torch_nchw"] / r["ours"]
    rows.append(r)
    print(f"model training step: ours {r['ours'] / 1e3:.0f} ms, torch {r['torch_nchw'] / 1e3:.0f} ms: "
          f"{r['speedup']:.2f}x", flush=True)  # fmt: skip
    return rows


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
        out[f"time_{mode}"] = median_us("step()", {"step": step}, threads, 3.0)
        print(f"training memory {mode}: peak {out[f'peak_{mode}'] / 2**20:.0f} MiB, "
              f"step {out[f'time_{mode}'] / 1e3:.0f} ms", flush=True)  # fmt: skip
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
    print(f"compile: first forward+backward {out['empty_cache_s']:.1f} s with an empty cache, "
          f"{out['warm_cache_s']:.2f} s cached", flush=True)  # fmt: skip
    return out


def markdown(res) -> str:
    m = res["machine"]
    lines = ["# Kernels against torch (CPU)", "",
             f"Machine: {m['cpu']}; {m['threads']} threads on both sides; numpy {m['numpy']}, numba {m['numba']}, "
             f"torch {m['torch']}. Medians (torch.utils.benchmark), microseconds unless stated.", "",
             "## Whole model", "", "| case | ours | torch NCHW | torch channels_last | speed-up |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["model"]:
        lines.append(f"| {r['case']} | {r['ours'] / 1e3:.1f} ms | {r['torch_nchw'] / 1e3:.1f} ms | "
                     f"{r['torch_cl'] / 1e3:.1f} ms | {r['speedup']:.2f}x |")  # fmt: skip
    lines += ["", "## Fused inverted-residual block, inference", "",
              "| batch | block | input | stride | hidden | ours | torch NCHW | torch CL | speed-up | peak fused | peak unfused | peak training (stored) |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["blocks"]:
        lines.append(f"| {r['batch']} | {r['block']} | {r['C']}x{r['H']}x{r['H']} | {r['stride']} | {r['hidden']} | "
                     f"{r['ours']:.0f} | {r['torch_nchw']:.0f} | {r['torch_cl']:.0f} | {r['speedup']:.2f}x | "
                     f"{r['peak_fused'] / 2**20:.2f} MiB | {r['peak_unfused'] / 2**20:.2f} MiB | "
                     f"{r['peak_train_stored'] / 2**20:.2f} MiB |")  # fmt: skip
    lines += ["", "## Pointwise (1x1) convolution against the plain GEMM of the same size", "",
              "| batch | C_in -> C_out | H | ours fwd | GEMM fwd | ratio | ours bwd | 2 GEMMs | ratio | torch fwd CL |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["pointwise"]:
        lines.append(f"| {r['batch']} | {r['C_in']} -> {r['C_out']} | {r['H']} | {r['ours_fwd']:.0f} | "
                     f"{r['gemm_fwd']:.0f} | {r['fwd_vs_gemm']:.2f} | {r['ours_bwd']:.0f} | {r['gemm_bwd']:.0f} | "
                     f"{r['bwd_vs_gemm']:.2f} | {r['torch_fwd_cl']:.0f} |")  # fmt: skip
    t = res["training_memory"]
    lines += ["", "## Training: store or recompute the block intermediates (MobileNetV2-1.0, 128 px, batch 16)", "",
              "| variant | peak allocated (tracemalloc) | step time |", "|---|---:|---:|",
              f"| store | {t['peak_store'] / 2**20:.0f} MiB | {t['time_store'] / 1e3:.0f} ms |",
              f"| recompute | {t['peak_recompute'] / 2**20:.0f} MiB | {t['time_recompute'] / 1e3:.0f} ms |"]  # fmt: skip
    c = res["compile"]
    lines += ["", f"Compile: the first forward+backward of a small model takes {c['empty_cache_s']:.1f} s with an "
              f"empty Numba cache and {c['warm_cache_s']:.2f} s from the cache (`cache=True`)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="batch 1 only, no training step")
    args = p.parse_args(argv)
    set_threads(args.threads)
    batches = [1] if args.quick else [1, 8]
    res = {"benchmark": "kernels", "machine": machine(args.threads)}
    res["compile"] = bench_compile()
    res["model"] = bench_model(args.threads, args.quick)
    res["training_memory"] = bench_training_memory(args.threads)
    res["blocks"] = bench_blocks(args.threads, batches)
    res["pointwise"] = bench_pointwise(args.threads, batches)
    write("kernels", {k: v for k, v in res.items()}, [], markdown(res))


if __name__ == "__main__":
    main()
