"""``mobilenet bench``: a model's latency on each backend, as a user of that library sees it.

Each backend runs alone in its own process (``python -m mobilenet.deploy.bench worker ...``): two
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
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobilenet import backends as B
from mobilenet import registry

from .cases import Case
from .prepare import prepare
from .prepared import float_state, int8_model
from .timing import cpu, measure, versions

BACKENDS = tuple(B.BENCH_SIDES)
INFERENCE_ONLY = ("onnxruntime", "numba-int8", "torch-int8", "onnxruntime-int8")
INT8 = tuple(b for b in BACKENDS if b.endswith("-int8"))
LIBRARY = {b: b.removesuffix("-int8") for b in BACKENDS}  # the module a side imports
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
ROOT = Path(__file__).resolve().parents[2]


# --- inside a worker process ----------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_baseline():
    """Start counting a case's peak memory: (its resident size now, whether the peak could be
    reset to it). Linux resets the peak (VmHWM) to the current size on writing 5 to
    ``/proc/self/clear_refs``; without that, the peak since the process started is the best
    left, and a spike while importing the libraries can hide the case's own memory."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss = _status_mb("VmRSS")
        if rss is not None and _status_mb("VmHWM") is not None:
            return rss, True
    except OSError:
        pass
    return _peak_mb(), False


def _peak_since(base) -> float:
    rss, reset = base
    return (_status_mb("VmHWM") if reset else _peak_mb()) - rss


def worker(backend: str, cases: list[Case], threads: int, min_time: float, folder: str) -> dict:
    """Time ``cases`` on ``backend`` with the models :func:`prepared.prepare` wrote into ``folder``."""
    side = registry.bench_side(backend)  # its libraries load here, before the memory baseline
    mods = side.setup(threads)
    out = {}
    for case in cases:
        base = _peak_baseline()
        fn = side.timed(case, folder, threads)
        t = measure(fn, min_time, block_time=0 if case.train else 0.01)
        # without a reset the peak only grows: beyond a process's first case it is an upper bound
        exact = base[1] or case is cases[0]
        out[case.key] = {**t, "peak_mb": _peak_since(base), "peak_exact": exact}
    return {"backend": backend, "results": out, "versions": versions(*mods)}


def export_all(cases: list[Case], folder: str, float_onnx: bool, qdq: bool) -> None:
    """Each case's prepared model as ONNX (float through torch's exporter, int8 as our QDQ
    graph): run in a process of its own."""
    for case in {c.stem: c for c in cases}.values():
        if float_onnx:
            registry.onnx_exporter().export_onnx(
                Path(folder) / case.onnx_name(),
                arch=case.arch,
                width_mult=case.width_mult,
                num_classes=case.num_classes,
                resolution=case.resolution,
                state=float_state(case, folder),
            )
        if qdq:
            proto = registry.onnx_qdq().qdq_model(int8_model(case, folder), case.resolution)
            (Path(folder) / case.qdq_name()).write_bytes(proto.SerializeToString())


# --- the orchestrator -----------------------------------------------------------------------


def _env(threads: int) -> dict:
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(args: list[str], threads: int) -> dict:
    cmd = [sys.executable, "-m", "mobilenet.deploy.bench", *args]
    res = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the benchmark process {' '.join(args[:3])} failed: {tail}")
    lines = res.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def available(backend: str) -> bool:
    lib = LIBRARY[backend]
    code = f"import {lib}" + (", onnx" if lib == "onnxruntime" else "")
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
            skipped[b] = f"{LIBRARY[b]} is not installed (pip install '.[onnx]' for onnxruntime)"
        elif b in INFERENCE_ONLY and all(c.train for c in cases):
            skipped[b] = f"{b} runs inference only"
    live = [b for b in backends if b not in skipped]
    runs, vers = {}, {}
    with tempfile.TemporaryDirectory(prefix="mobilenet-bench-") as folder:
        t0 = time.perf_counter()
        todo = json.dumps([dataclasses.asdict(c) for c in cases])
        int8 = any(b in INT8 for b in live)
        _run(["prepare", "--dir", folder, "--cases", todo] + (["--int8"] if int8 else []), threads)
        progress(f"  prepared the weights{' and the int8 models' * int8} in {time.perf_counter() - t0:.0f} s")
        exports = [
            flag for flag, b in (("--float", "onnxruntime"), ("--qdq", "onnxruntime-int8")) if b in live
        ]
        if exports:
            t0 = time.perf_counter()
            _run(["export", "--dir", folder, "--cases", todo, *exports], threads)
            progress(f"  exported the ONNX models in {time.perf_counter() - t0:.0f} s")
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
                        "--dir",
                        folder,
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
                "peak_mb_exact": all(t["peak_exact"] for t in ts),
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
    head = "| case | backend | median ms | IQR ms | spread | per image ms | peak MB | vs torch | vs numba |"
    lines += [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in res["cases"]:
        torch_ms = res["results"].get("torch", {}).get(key, {}).get("ms")
        numba_ms = res["results"].get("numba", {}).get(key, {}).get("ms")
        batch = int(key.split(" b")[1].split()[0])
        for b, per_case in res["results"].items():
            r = per_case.get(key)
            if r is None:
                continue
            ratio = f"{r['ms'] / torch_ms:.2f}x" if torch_ms else "-"
            ours = f"{r['ms'] / numba_ms:.2f}x" if numba_ms else "-"
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb_exact"] else f"<= {r['peak_mb']:.0f}"
            lines.append(
                f"| {key} | {b} | {r['ms']:.2f} | {r['q1_ms']:.2f}-{r['q3_ms']:.2f} | ±{r['spread']:.0%} | "
                f"{r['ms'] / batch:.2f} | {peak} | {ratio} | {ours} |"
            )
    for b, why in res["skipped"].items():
        lines.append(f"\n{b}: skipped ({why})")
    lines.append(
        "\nspread: how far the rounds' medians lie apart; peak MB: the process's peak resident memory "
        "during the case above its size before it (weights, activations, workspace); vs torch, vs numba: "
        "time / float torch's, float numba's time"
    )
    return "\n".join(lines)


def _main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mobilenet.deploy.bench", description="a benchmark process")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--backend", choices=BACKENDS, required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--min-time", type=float, default=0.5)
    w.add_argument("--dir", required=True, help="the folder the prepare process wrote")
    w.add_argument("--cases", required=True, help="JSON list of Case fields")
    e = sub.add_parser("export")
    e.add_argument("--dir", required=True)
    e.add_argument("--cases", required=True)
    e.add_argument("--float", action="store_true")
    e.add_argument("--qdq", action="store_true")
    pr = sub.add_parser("prepare")
    pr.add_argument("--dir", required=True)
    pr.add_argument("--cases", required=True)
    pr.add_argument("--int8", action="store_true")
    a = p.parse_args(argv)
    cases = [Case(**c).validate() for c in json.loads(a.cases)]
    if a.what == "prepare":
        prepare(cases, a.dir, a.int8)
        print(json.dumps({"prepared": len(cases)}))
    elif a.what == "export":
        if not (a.float or a.qdq):
            p.error("export: nothing to export; pass --float, --qdq or both")
        export_all(cases, a.dir, a.float, a.qdq)
        print(json.dumps({"exported": len(cases)}))
    else:
        print(json.dumps(worker(a.backend, cases, a.threads, a.min_time, a.dir)))


if __name__ == "__main__":
    _main()
