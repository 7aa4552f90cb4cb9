"""Data-parallel training on this machine, and what it would give on many.

    python -m benchmarks.distributed              # writes results/distributed.json (about 10 minutes)
    python -m benchmarks.distributed --only ddp   # one part: "speed", "ddp", or "project" (from the file)

Measured: ``mobilenet train --backend numba`` three ways, each a job of its own (its processes
alone on the machine), ways alternating over ``--rounds`` rounds:

* ``1x2 whole``: one process, two threads, each batch at once (``--parts 1``: the fused kernels);
* ``1x2 parts``: one process, two threads, each batch in 8 parts (the sums a job of 1, 2, 4 or 8
  processes shares, bit for bit);
* ``2x1 parts``: two processes of one thread each (``--nproc 2``), the same 8 parts.

For each: training seconds per step (the history's, evaluation excluded) and, for the job of
two, rank 0's seconds and calls in collectives per step. Two cases: the default digits model
(MobileNetV2-0.5, 32 px, batch 32) and MobileNetV2-1.0 at 224 px (batch 16).

Agreement (``ddp``): the torch backend's job of two processes (DistributedDataParallel,
synchronised batch norm) against its one-process run after 1, 2 and 3 steps, in float64 and in
float32, beside the NumPy model against the torch model, both in one process: the largest
difference of any weight.

Projected: the per-image compute of the 224 px case and MobileNetV2-1.0's gradient bytes give,
on paper, the scaling efficiency of N machines at 10 and 100 Gbit/s (``project``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mobilenet_arch as A
from mobilenet import checkpoint as ckpt
from mobilenet.summary import summary_dict

from .timing import RESULTS, cpu, versions

CASES = {  # name: (arguments, steps)
    "digits": (["--arch", "v2", "--width-mult", "0.5", "--resolution", "32", "--batch-size", "32"], 24),
    "v2-224": (["--arch", "v2", "--width-mult", "1.0", "--resolution", "224", "--batch-size", "16"], 4),
}
WAYS = {  # name: (processes, threads each, parts)
    "1x2 whole": (1, 2, 1),
    "1x2 parts": (1, 2, 8),
    "2x1 parts": (2, 1, 8),
}
PER_MACHINE_BATCH = 32  # images per machine and step in the projection (weak scaling)
LATENCY = 50e-6  # seconds per message hop between machines (a datacentre network, one switch)


def run_way(case: str, way: str) -> dict:
    args, steps = CASES[case]
    n, threads, parts = WAYS[way]
    batch = int(args[args.index("--batch-size") + 1])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mobilenet.cli", "train", "--backend", "numba", "--epochs", "1"]
        cmd += [*args, "--train-limit", str(batch * steps), "--parts", str(parts), "--no-progress"]
        cmd += ["--out", f"{tmp}/run"] + (["--nproc", str(n)] if n > 1 else [])
        env = {**os.environ, **{v: str(threads) for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}}
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        h = json.loads(Path(f"{tmp}/run/metrics.json").read_text())["history"][0]
    out = {"step_seconds": h["seconds"] / steps, "images_per_second": h["images_per_second"], "wall": wall}
    if n > 1:
        out["collective_seconds_per_step"] = h["collective_seconds"] / steps
        out["collective_calls_per_step"] = h["collective_calls"] / steps
    return out


def measure(cases, rounds: int, say=print) -> dict:
    res = {c: {w: [] for w in WAYS} for c in cases}
    for r in range(rounds):
        for case in cases:
            order = list(WAYS) if r % 2 == 0 else list(reversed(WAYS))  # alternate who goes first
            for way in order:
                got = run_way(case, way)
                res[case][way].append(got)
                say(f"round {r + 1} {case} {way}: {got['step_seconds'] * 1e3:.0f} ms/step")
    return res


DDP_ARGS = ["--width-mult", "0.25", "--batch-size", "16", "--dropout", "0", "--epochs", "1", "--no-progress"]


def _weights(backend: str, dtype: str, steps: int, nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "mobilenet.cli",
            "train",
            "--backend",
            backend,
            "--dtype",
            dtype,
            *DDP_ARGS,
        ]
        cmd += ["--train-limit", str(16 * steps), "--out", f"{tmp}/run", "--nproc", str(nproc)]
        if backend != "torch":
            cmd += ["--parts", "1"]  # the plain one-process run
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        arrays = ckpt.load(next(Path(tmp, "run").glob("checkpoint.*")))[0]
    return {k: v for k, v in arrays.items() if k.startswith("model/") and v.dtype.kind == "f"}


def _largest(a: dict, b: dict) -> float:
    """The largest difference of any array, relative to its largest value (at least 1: weights
    are of order 1, running variances of any size)."""
    return max(float(abs(a[k].astype("float64") - b[k]).max() / max(1.0, abs(a[k]).max())) for k in a)


def agreement(say=print, steps=(1, 2, 3)) -> list:
    rows = []
    for dtype in ("float64", "float32"):
        for k in steps:
            one = _weights("torch", dtype, k, 1)
            row = {
                "dtype": dtype,
                "steps": k,
                "ddp_vs_one": _largest(one, _weights("torch", dtype, k, 2)),
                "numpy_vs_torch": _largest(one, _weights("numpy", dtype, k, 1)),
            }
            say(f"{dtype} after {k} steps: {row}")
            rows.append(row)
    return rows


def gradient_bytes(width_mult=1.0) -> int:
    """float32 gradient bytes of MobileNetV2 with ImageNet's 1000 classes (every parameter)."""
    return 4 * summary_dict("v2", width_mult)["params"]


def bn_layers(width_mult=1.0) -> int:
    return sum(isinstance(leaf, A.BatchNorm) for _, leaf in A.walk(A.v2_spec(width_mult=width_mult)))


SPEEDUPS = (1, 10, 100)  # machines as fast as this one, and 10 and 100 times faster at computing


def project(image_seconds: float, grad_bytes: int, bns: int, machines=(2, 4, 8, 16, 32, 64)) -> list:
    """Scaling efficiency (compute / (compute + communication), nothing overlapped, as this loop
    runs) of N machines, each with PER_MACHINE_BATCH images a step:

    - ring all-reduce (DDP): each machine sends and receives 2 (N-1)/N of the gradient, in
      2 (N-1) hops; with synchronised batch norm, each layer's 2C values are all-reduced
      twice more (``ring``), without it the batch norms' statistics stay per machine
      (``ring_grads``, the common practice, which changes what is computed);
    - ordered gather (same bits): each machine receives every other machine's part of the
      gradient, (N-1) G, and the batch norms' sums likewise, in N-1 hops per gather.
    """
    rows = []
    for speedup, gbit, n in ((s, g, n) for s in SPEEDUPS for g in (10, 100) for n in machines):
        compute = PER_MACHINE_BATCH * image_seconds / speedup
        bw = gbit * 1e9 / 8  # bytes per second
        ring_grads = 2 * (n - 1) / n * grad_bytes / bw + 2 * (n - 1) * LATENCY
        ring = ring_grads + 2 * (n - 1) * LATENCY * 2 * bns  # and the batch norms' all-reduces
        gather = (n - 1) * grad_bytes / bw + (n - 1) * LATENCY * (1 + 2 * bns)
        rows.append(
            {
                "speedup": speedup,
                "gbit": gbit,
                "machines": n,
                "compute": compute,
                "ring_grads": ring_grads,
                "ring": ring,
                "gather": gather,
                "ring_grads_efficiency": compute / (compute + ring_grads),
                "ring_efficiency": compute / (compute + ring),
                "gather_efficiency": compute / (compute + gather),
            }
        )
    return rows


def summarize(out: dict) -> dict:
    """Medians of the measured rounds, and the projection from the 224 px case's compute."""
    med = {
        c: {w: statistics.median(r["step_seconds"] for r in runs) for w, runs in ways.items()}
        for c, ways in out["rounds"].items()
    }
    batch = int(CASES["v2-224"][0][CASES["v2-224"][0].index("--batch-size") + 1])
    image, g, bns = med["v2-224"]["1x2 whole"] / batch, gradient_bytes(), bn_layers()
    projection = {
        "image_seconds": image,
        "gradient_bytes": g,
        "bn_layers": bns,
        "per_machine_batch": PER_MACHINE_BATCH,
        "latency": LATENCY,
        "rows": project(image, g, bns),
    }
    return {**out, "median_step_seconds": med, "projection": projection}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--only", choices=("speed", "ddp", "project"), default=None, help="one part (the rest kept)"
    )
    p.add_argument("--out", default=str(RESULTS / "distributed.json"))
    args = p.parse_args(argv)
    import numba
    import numpy
    import torch

    path = Path(args.out)
    old = json.loads(path.read_text()) if path.exists() else {}
    if args.only == "ddp":
        old["agreement"] = agreement()
        path.write_text(json.dumps(old, indent=2) + "\n")
        print(f"wrote {path}")
        return 0
    if args.only == "project":
        out = summarize(old)
    else:
        rounds = measure(list(CASES), args.rounds)
        out = summarize(
            {
                **old,
                "machine": {**cpu(), **versions(numpy, numba, torch)},
                "cases": {c: {"args": a, "steps": n} for c, (a, n) in CASES.items()},
                "ways": {w: dict(zip(("processes", "threads", "parts"), v)) for w, v in WAYS.items()},
                "rounds": rounds,
            }
        )
        if args.only is None:
            out["agreement"] = agreement()
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
