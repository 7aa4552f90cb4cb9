"""Depthwise convolution, forward and backward (dx and dw together): our kernels against
torch on CPU, on every depthwise layer shape of MobileNetV2-1.0 at 224 px.

    python -m benchmarks.bench_depthwise [--batch 1 8] [--threads 2] [--versions]

torch runs in NCHW and in channels_last, ours in channels-last memory (its fast
layout); "speed-up" compares each side in its faster format. ``--versions`` also
times every numbered version of depthwise_versions.py at batch 1 (the road to the
fast kernel). Writes benchmarks/results/depthwise.{json,md}.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kernels import depthwise as K
from kernels import depthwise_versions as V

from .common import geomean, machine, median_us, set_threads, v2_depthwise_shapes, write


def _inputs(n, c, h, w, s, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    dout = rng.standard_normal((n, c, ho, wo)).astype(np.float32)
    cl = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # noqa: E731
    return x, wt, dout, cl(x), cl(dout)


def time_shape(n, c, h, w, s, threads, versions):
    x, wt, dout, x_cl, dout_cl = _inputs(n, c, h, w, s)
    xt, wtt, dt = torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(dout)
    g = {
        "K": K, "F": torch.nn.functional, "aten": torch.ops.aten, "x": x, "w": wt, "dout": dout,
        "x_cl": x_cl, "dout_cl": dout_cl, "s": s, "c": c, "xt": xt, "wt": wtt, "dt": dt,
        "xt_cl": xt.contiguous(memory_format=torch.channels_last),
        "dt_cl": dt.contiguous(memory_format=torch.channels_last),
    }  # fmt: skip
    bwd = "aten.convolution_backward({d}, {x}, wt, None, [s, s], [1, 1], [1, 1], False, [0, 0], c, [True, True, False])"
    r = {
        "torch_fwd_nchw": median_us("F.conv2d(xt, wt, None, s, 1, 1, c)", g, threads),
        "torch_fwd_cl": median_us("F.conv2d(xt_cl, wt, None, s, 1, 1, c)", g, threads),
        "torch_bwd_nchw": median_us(bwd.format(d="dt", x="xt"), g, threads),
        "torch_bwd_cl": median_us(bwd.format(d="dt_cl", x="xt_cl"), g, threads),
        "ours_fwd_cl": median_us("K.depthwise_conv2d(x_cl, w, s, 1)", g, threads),
        "ours_bwd_cl": median_us("K.depthwise_conv2d_backward(dout_cl, x_cl, w, s, 1)", g, threads),
        "ours_fwd_nchw": median_us("K.depthwise_conv2d(x, w, s, 1)", g, threads),
        "ours_bwd_nchw": median_us("K.depthwise_conv2d_backward(dout, x, w, s, 1)", g, threads),
    }
    if versions:
        for v in V.FORWARD:
            xin = "x_cl" if v in V.NHWC_FORWARD else "x"
            r[f"fwd_v{v}"] = median_us(f"K.depthwise_conv2d({xin}, w, s, 1, version={v})", g, threads, 0.1)
        for v in V.BACKWARD:
            a = "dout_cl, x_cl" if v in V.NHWC_BACKWARD else "dout, x"
            r[f"bwd_v{v}"] = median_us(
                f"K.depthwise_conv2d_backward({a}, w, s, 1, version={v})", g, threads, 0.1
            )
    for d in ("fwd", "bwd"):
        torch_best = min(r[f"torch_{d}_nchw"], r[f"torch_{d}_cl"])
        ours_best = min(r[f"ours_{d}_cl"], r[f"ours_{d}_nchw"])
        r[f"speedup_{d}"] = torch_best / ours_best
    return r


def markdown(header, rows) -> str:
    lines = [
        "# Depthwise 3x3 convolution: Numba kernels vs torch (CPU)",
        "",
        f"Machine: {header['machine']['cpu']}; threads {header['machine']['threads']} on both sides; "
        f"numpy {header['machine']['numpy']}, numba {header['machine']['numba']}, torch {header['machine']['torch']}. "
        "Medians in microseconds (torch.utils.benchmark). Backward = dx and dw together. "
        "Speed-up = torch in its faster format / ours in its faster format.",
        "",
        "| batch | C | H | stride | torch fwd NCHW | torch fwd CL | ours fwd CL | ours fwd NCHW | fwd speed-up "
        "| torch bwd NCHW | torch bwd CL | ours bwd CL | ours bwd NCHW | bwd speed-up |",
        "|" + "---|" * 4 + "---:|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['C']} | {r['H']} | {r['stride']} | {r['torch_fwd_nchw']:.0f} | {r['torch_fwd_cl']:.0f} "
            f"| {r['ours_fwd_cl']:.0f} | {r['ours_fwd_nchw']:.0f} | {r['speedup_fwd']:.2f}x | {r['torch_bwd_nchw']:.0f} "
            f"| {r['torch_bwd_cl']:.0f} | {r['ours_bwd_cl']:.0f} | {r['ours_bwd_nchw']:.0f} | {r['speedup_bwd']:.2f}x |"
        )
    for b in sorted({r["batch"] for r in rows}):
        sel = [r for r in rows if r["batch"] == b]
        lines.append("")
        lines.append(
            f"Batch {b}: geometric-mean speed-up forward {geomean(r['speedup_fwd'] for r in sel):.2f}x, "
            f"backward {geomean(r['speedup_bwd'] for r in sel):.2f}x; slower than torch on "
            f"{sum(r['speedup_fwd'] < 1 for r in sel)} forward and {sum(r['speedup_bwd'] < 1 for r in sel)} "
            f"backward shapes of {len(sel)}."
        )
    vrows = [r for r in rows if "fwd_v1" in r]
    if vrows:
        fv = [k for k in vrows[0] if k.startswith("fwd_v")]
        bv = [k for k in vrows[0] if k.startswith("bwd_v")]
        lines += ["", "## The road: every version at batch 1 (microseconds)", "",
                  "| C | H | stride | " + " | ".join(fv + bv) + " | torch fwd CL | torch bwd CL |",
                  "|" + "---|" * 3 + "---:|" * (len(fv) + len(bv) + 2)]  # fmt: skip
        for r in vrows:
            vals = " | ".join(f"{r[k]:.0f}" for k in fv + bv)
            lines.append(
                f"| {r['C']} | {r['H']} | {r['stride']} | {vals} | {r['torch_fwd_cl']:.0f} | {r['torch_bwd_cl']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--versions", action="store_true", help="also time every numbered version (batch 1)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    shapes = list(dict.fromkeys(v2_depthwise_shapes()))  # unique, in network order
    rows = []
    for b in args.batch:
        for c, h, w, s in shapes:
            r = {"batch": b, "C": c, "H": h, "W": w, "stride": s}
            r.update(time_shape(b, c, h, w, s, args.threads, args.versions and b == 1))
            rows.append(r)
            print(f"batch {b} C {c:4d} {h:3d}x{w:<3d} s{s}: fwd {r['speedup_fwd']:.2f}x  bwd {r['speedup_bwd']:.2f}x",
                  flush=True)  # fmt: skip
    header = {"benchmark": "depthwise", "machine": machine(args.threads)}
    write("depthwise", header, rows, markdown(header, rows))


if __name__ == "__main__":
    main()
