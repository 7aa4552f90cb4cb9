"""``mobilenet bench``: a model's latency on each backend, as a user of that library sees it.

Each backend runs alone in its own process (``python -m mobilenet.bench worker ...``): two
libraries in one process starve each other's thread pools on a small machine, by 2-2.5x in
either direction depending on import order. Every process gets the same thread count (the
OMP/MKL/OpenBLAS/Numba variables, ``numba.set_num_threads``, ``torch.set_num_threads``,
onnxruntime's ``intra_op_num_threads``). A round runs every backend once, the next round in
reverse order; a backend's figure is its best round's median, the spread how far its round
medians lie apart.

Backends: ``numba`` (the NumPy model on the kernels), ``numpy`` (the reference ops), ``torch``
(``torch_impl``, channels_last: torch's faster layout here) and ``onnxruntime`` (the torch model
exported to ONNX by a separate process first, so that the timed process never loads torch).
A training step is forward and backward (no optimiser step; no gradient for the input).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mobilenet_arch as A

from .timing import cpu, measure, versions

BACKENDS = ("numba", "numpy", "torch", "onnxruntime")
INFERENCE_ONLY = ("onnxruntime",)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed configuration."""

    arch: str = "v2"
    width_mult: float = 1.0
    resolution: int = 224
    batch: int = 1
    train: bool = False

    def validate(self):
        if self.arch not in A.ARCHS:
            raise ValueError(f"bench: arch must be one of {tuple(A.ARCHS)}, got {self.arch!r}")
        if not 0 < self.width_mult <= A.MAX_WIDTH_MULT:
            raise ValueError(f"bench: width_mult must be in (0, {A.MAX_WIDTH_MULT:g}], got {self.width_mult}")
        if self.resolution < A.MIN_RESOLUTION:
            raise ValueError(f"bench: resolution must be >= {A.MIN_RESOLUTION}, got {self.resolution}")
        if self.batch < (2 if self.train else 1):
            why = " for a training step (batch norm in training mode)" if self.train else ""
            raise ValueError(f"bench: batch must be >= {2 if self.train else 1}{why}, got {self.batch}")
        return self

    @property
    def key(self) -> str:
        what = "train" if self.train else "infer"
        return f"{self.arch} {self.width_mult:g} {self.resolution}px b{self.batch} {what}"

    def onnx_name(self) -> str:
        return f"{self.arch}_{self.width_mult:g}_{self.resolution}.onnx"


# --- inside a worker process ----------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _input(case: Case):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.batch, 3, case.resolution, case.resolution), dtype=np.float32)
    return x, rng.standard_normal((case.batch, 1000), dtype=np.float32)


def _numpy_model_fn(case: Case, ops: str):
    numpy_impl = importlib.import_module("numpy_impl")
    m = numpy_impl.mobilenet(case.arch, width_mult=case.width_mult, backend=ops)
    x, d = _input(case)
    if not case.train:
        m.eval()
        return lambda: m.forward(x)

    def step():
        m.forward(x)
        m.backward(d, input_grad=False)

    return step


def _torch_fn(case: Case):
    torch = importlib.import_module("torch")
    torch_impl = importlib.import_module("torch_impl")
    m = torch_impl.mobilenet(case.arch, width_mult=case.width_mult).train(case.train)
    m = m.to(memory_format=torch.channels_last)
    x, d = (torch.from_numpy(a) for a in _input(case))
    x = x.contiguous(memory_format=torch.channels_last)
    if not case.train:

        def run():
            with torch.no_grad():
                m(x)

        return run

    def step():
        m.zero_grad(set_to_none=True)
        m(x).backward(d)

    return step


def _ort_fn(case: Case, onnx_dir: str, threads: int):
    ort = importlib.import_module("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(
        str(Path(onnx_dir) / case.onnx_name()), opts, providers=["CPUExecutionProvider"]
    )
    x, _ = _input(case)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def _set_threads(backend: str, threads: int):
    """Import the backend's libraries (before the memory baseline) and fix its threads."""
    if backend in ("numba", "numpy"):
        importlib.import_module("numpy_impl")
    if backend == "numba":
        importlib.import_module("kernels")
        importlib.import_module("numba").set_num_threads(threads)
    elif backend == "onnxruntime":
        importlib.import_module("onnxruntime")
    elif backend == "torch":
        importlib.import_module("torch_impl")
        torch = importlib.import_module("torch")
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)


def worker(backend: str, cases: list[Case], threads: int, min_time: float, onnx_dir: str | None) -> dict:
    _set_threads(backend, threads)
    out = {}
    for case in cases:
        base = _peak_mb()
        if backend in ("numba", "numpy"):
            fn = _numpy_model_fn(case, backend)
        elif backend == "torch":
            fn = _torch_fn(case)
        else:
            fn = _ort_fn(case, onnx_dir, threads)
        t = measure(fn, min_time, block_time=0 if case.train else 0.01)
        # peak RSS only grows: beyond a process's first case it is an upper bound
        out[case.key] = {**t, "peak_mb": _peak_mb() - base, "first_in_process": case is cases[0]}
    mods = [sys.modules[m] for m in ("numba", "torch", "onnxruntime") if m in sys.modules]
    return {"backend": backend, "results": out, "versions": versions(*mods)}


def export_all(cases: list[Case], folder: str) -> None:
    """Each case's model as ONNX (fresh weights): run in a process of its own."""
    deploy = importlib.import_module("mobilenet.deploy")
    for case in {c.onnx_name(): c for c in cases}.values():
        deploy.export_onnx(
            Path(folder) / case.onnx_name(),
            arch=case.arch,
            width_mult=case.width_mult,
            resolution=case.resolution,
        )


# --- the orchestrator -----------------------------------------------------------------------


def _env(threads: int) -> dict:
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(args: list[str], threads: int) -> dict:
    cmd = [sys.executable, "-m", "mobilenet.bench", *args]
    res = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the benchmark process {' '.join(args[:3])} failed: {tail}")
    lines = res.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def available(backend: str) -> bool:
    code = f"import {backend}" + (", onnx" if backend == "onnxruntime" else "")  # each names its module
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def bench(cases, backends, rounds=2, threads=2, min_time=0.5, progress=print) -> dict:
    """Every case on every backend, each backend alone in its process, ``rounds`` alternating
    rounds. Returns ``{"machine", "threads", "rounds", "versions", "results": {backend: {case:
    {"ms", "spread", "q1_ms", "q3_ms", "peak_mb", "rounds_ms"}}}, "skipped": {backend: why}}``."""
    cases = [c.validate() for c in cases]
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"bench: backends must be among {BACKENDS}, got {b!r}")
    if not isinstance(rounds, int) or rounds < 1 or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"bench: rounds and threads must be ints >= 1, got {rounds!r} and {threads!r}")
    skipped = {}
    for b in backends:
        if not available(b):
            skipped[b] = f"{b} is not installed (pip install '.[onnx]' for onnxruntime)"
        elif b in INFERENCE_ONLY and all(c.train for c in cases):
            skipped[b] = f"{b} runs inference only"
    live = [b for b in backends if b not in skipped]
    runs, vers = {}, {}
    with tempfile.TemporaryDirectory(prefix="mobilenet-bench-") as onnx_dir:
        if "onnxruntime" in live:
            t0 = time.perf_counter()
            _run(
                ["export", "--dir", onnx_dir, "--cases", json.dumps([dataclasses.asdict(c) for c in cases])],
                threads,
            )
            n = len({c.onnx_name() for c in cases})
            progress(f"  exported {n} ONNX models in {time.perf_counter() - t0:.0f} s")
        for r in range(rounds):
            for b in live if r % 2 == 0 else live[::-1]:
                mine = [c for c in cases if not (c.train and b in INFERENCE_ONLY)]
                t0 = time.perf_counter()
                out = _run(
                    [
                        "worker",
                        "--backend",
                        b,
                        "--threads",
                        str(threads),
                        "--min-time",
                        str(min_time),
                        "--onnx-dir",
                        onnx_dir,
                        "--cases",
                        json.dumps([dataclasses.asdict(c) for c in mine]),
                    ],
                    threads,
                )
                vers.update(out["versions"])
                for key, t in out["results"].items():
                    runs.setdefault(b, {}).setdefault(key, []).append(t)
                progress(f"  round {r + 1}/{rounds} {b:12s} {time.perf_counter() - t0:6.1f} s")
    results = {}
    for b, per_case in runs.items():
        for key, ts in per_case.items():
            meds = [t["median_us"] / 1e3 for t in ts]
            best = min(ts, key=lambda t: t["median_us"])
            results.setdefault(b, {})[key] = {
                "ms": best["median_us"] / 1e3,
                "q1_ms": best["q1_us"] / 1e3,
                "q3_ms": best["q3_us"] / 1e3,
                "spread": max(meds) / min(meds) - 1,
                "rounds_ms": meds,
                "peak_mb": max(t["peak_mb"] for t in ts),
                "peak_mb_exact": all(t["first_in_process"] for t in ts),
            }
    return {
        "machine": cpu(),
        "threads": threads,
        "rounds": rounds,
        "min_time": min_time,
        "versions": vers,
        "cases": [c.key for c in cases],
        "results": results,
        "skipped": skipped,
    }


def machine_line(res: dict) -> str:
    m, v = res["machine"], res["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "onnxruntime") if k in v)
    return (
        f"{m['cpu']} ({m['simd']}, {m['cores']} cores); {res['threads']} threads on every side; "
        f"Python {v.get('python', '?')}, {libs}; {res['rounds']} round{'s' * (res['rounds'] > 1)}, "
        "each backend alone in its process, best round's median"
    )


def format_table(res: dict) -> str:
    lines = [machine_line(res), ""]
    head = "| case | backend | median ms | IQR ms | spread | per image ms | peak MB | vs torch |"
    lines += [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key in res["cases"]:
        torch_ms = res["results"].get("torch", {}).get(key, {}).get("ms")
        batch = int(key.split(" b")[1].split()[0])
        for b, per_case in res["results"].items():
            r = per_case.get(key)
            if r is None:
                continue
            ratio = f"{r['ms'] / torch_ms:.2f}x" if torch_ms else "-"
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb_exact"] else f"<= {r['peak_mb']:.0f}"
            lines.append(
                f"| {key} | {b} | {r['ms']:.2f} | {r['q1_ms']:.2f}-{r['q3_ms']:.2f} | ±{r['spread']:.0%} | "
                f"{r['ms'] / batch:.2f} | {peak} | {ratio} |"
            )
    for b, why in res["skipped"].items():
        lines.append(f"\n{b}: skipped ({why})")
    lines.append(
        "\nspread: how far the rounds' medians lie apart; peak MB: the process's peak resident memory "
        "above its size after imports (weights, activations, workspace); vs torch: time / torch's time"
    )
    return "\n".join(lines)


def _main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mobilenet.bench", description="a benchmark process")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--backend", choices=BACKENDS, required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--min-time", type=float, default=0.5)
    w.add_argument("--onnx-dir", default=None)
    w.add_argument("--cases", required=True, help="JSON list of Case fields")
    e = sub.add_parser("export")
    e.add_argument("--dir", required=True)
    e.add_argument("--cases", required=True)
    a = p.parse_args(argv)
    cases = [Case(**c).validate() for c in json.loads(a.cases)]
    if a.what == "export":
        export_all(cases, a.dir)
        print(json.dumps({"exported": len(cases)}))
    else:
        print(json.dumps(worker(a.backend, cases, a.threads, a.min_time, a.onnx_dir)))


if __name__ == "__main__":
    _main()
