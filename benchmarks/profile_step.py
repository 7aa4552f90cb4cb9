"""Where the time goes, per op, each side alone in its process: one training step
(MobileNetV2-1.0, batch 16, 128 px) and one inference (batch 1, 224 px).

    python -m benchmarks.profile_step              # both sides, writes results/step_profile.{json,md}
    python -m benchmarks.profile_step --side numba # one side, prints its JSON

numba: every op of ``kernels`` (and those the fused block calls) wrapped in a timer that
keeps exclusive time (a block's own time excludes the ops it calls); what is left of the
step is Python and NumPy glue in the layers. torch: ``torch.profiler``'s self CPU time
per aten op (channels_last, torch's faster layout for this step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from .timing import RESULTS, cpu

STEPS = 5


STEPS_INFER = 20
SHAPES = {"train": (16, 128), "infer": (1, 224)}  # (batch, resolution)


def _data(mode="train"):
    n, r = SHAPES[mode]
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, r, r), dtype=np.float32), rng.standard_normal(
        (n, 1000), dtype=np.float32
    )


def profile_numba(threads, mode="train") -> dict:
    import numba

    import kernels
    from kernels import fused_block

    numba.set_num_threads(threads)
    totals, stack = {}, []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                child = stack.pop()
                totals[name] = totals.get(name, 0.0) + dt - child
                if stack:
                    stack[-1] += dt

        return wrapper

    names = [n for n in kernels.__all__ if callable(getattr(kernels, n)) and n != "is_channels_last"]
    for n in names:
        setattr(kernels, n, timed(n, getattr(kernels, n)))
        if hasattr(fused_block, n):
            setattr(fused_block, n, getattr(kernels, n))
    import numpy_impl

    m = numpy_impl.mobilenet_v2(backend="numba")
    x, d = _data(mode)
    steps = STEPS if mode == "train" else STEPS_INFER
    if mode == "infer":
        m.eval()

    def step():
        m.forward(x)
        if mode == "train":
            m.backward(d, input_grad=False)  # as torch: no gradient for the data

    for _ in range(2):  # warm: compiled, pages touched
        step()
    totals.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - t0) / steps * 1e3
    ops = {k: v / steps * 1e3 for k, v in totals.items()}
    ops["python and numpy glue in the layers"] = ms - sum(ops.values())
    return {"side": "numba", "mode": mode, "step_ms": ms, "ops_ms": ops}


def profile_torch(threads, mode="train") -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import torch_impl

    torch.set_num_threads(threads)
    t = torch_impl.mobilenet_v2().train(mode == "train").to(memory_format=torch.channels_last)
    xn, dn = _data(mode)
    x = torch.from_numpy(xn).contiguous(memory_format=torch.channels_last)
    d = torch.from_numpy(dn)
    steps = STEPS if mode == "train" else STEPS_INFER

    def step():
        if mode == "infer":
            with torch.no_grad():
                t(x)
            return
        t.zero_grad(set_to_none=True)
        t(x).backward(d)

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    total = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = {}
    for e in prof.key_averages():
        ops[e.key] = ops.get(e.key, 0.0) + e.self_cpu_time_total / 1e3 / steps
    ops = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
    return {"side": "torch_cl", "mode": mode, "step_ms": total, "ops_ms": ops}


def markdown(res) -> str:
    lines = [
        "# Per op: one training step (MobileNetV2-1.0, batch 16, 128 px), one inference (batch 1, 224 px)",
        "",
        f"{res['machine']['cpu']} ({res['machine']['simd']}), {res['threads']} threads, each side alone in its "
        f"process, mean of {STEPS} steps. numba: exclusive time of each kernel call; torch: the profiler's "
        "self CPU time per aten op (the profiler adds its own overhead, so its ops sum past the step).",
        "",
    ]
    for side in res["sides"] + res.get("infer", []):
        ops = sorted(side["ops_ms"].items(), key=lambda kv: -kv[1])
        top, rest = ops[:12], ops[12:]
        lines += [
            f"## {side['side']} {side.get('mode', 'train')}: {side['step_ms']:.1f} ms per step",
            "",
            "| op | ms per step | share |",
            "|---|---:|---:|",
        ]
        for k, v in top:
            lines.append(f"| {k} | {v:.1f} | {v / side['step_ms']:.0%} |")
        if rest:
            lines.append(
                f"| {len(rest)} other ops | {sum(v for _, v in rest):.1f} | "
                f"{sum(v for _, v in rest) / side['step_ms']:.0%} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=["numba", "torch_cl"])
    p.add_argument("--mode", choices=list(SHAPES), default="train")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.side:
        res = profile_numba(a.threads, a.mode) if a.side == "numba" else profile_torch(a.threads, a.mode)
        print(json.dumps(res))
        return
    env = {**os.environ}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(a.threads)
    runs = {"train": [], "infer": []}
    for mode in runs:
        for side in ("numba", "torch_cl"):
            cmd = [sys.executable, "-m", "benchmarks.profile_step", "--side", side, "--mode", mode]
            cmd += ["--threads", str(a.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=RESULTS.parent.parent)
            if out.returncode != 0:
                raise RuntimeError(f"{side} {mode} failed:\n{out.stderr[-3000:]}")
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{side} {mode}: {runs[mode][-1]['step_ms']:.1f} ms", flush=True)
    # "sides": the training step (the kernels chapter's table); "infer": one batch-1 inference
    res = {"machine": cpu(), "threads": a.threads, "sides": runs["train"], "infer": runs["infer"]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step_profile.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "step_profile.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
