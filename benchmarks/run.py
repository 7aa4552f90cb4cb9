"""The benchmarks as a user sees them: every side alone in its own process, sides alternating.

    python -m benchmarks.run            # everything, 3 rounds (~10 min on 2 cores)
    python -m benchmarks.run --quick    # 2 rounds, shorter timings, batch 1 models (a few minutes)
    python -m benchmarks.run --tasks depthwise --rounds 2

Each (task, side) runs as ``python -m benchmarks.worker SIDE TASK`` with the same thread
count everywhere (OMP/MKL/OpenBLAS/Numba variables, ``torch.set_num_threads``,
onnxruntime's ``intra_op_num_threads``); a round runs every side once, the next round
in reverse order. A side's figure is its best round's median; the spread is how far
its round medians lie apart. Two libraries are never timed in one process, except by
the ``mixed`` task, whose point that is.

Writes benchmarks/results/bench.{json,md} and docs/figures/bench_*.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

from .timing import RESULTS, cpu, depthwise_bytes, geomean, v2_depthwise_shapes

SIDES = {
    "roofline": ["numba"],
    "depthwise": ["numba", "torch_nchw", "torch_cl"],
    "versions": ["numba"],
    "model": ["numba", "torch_nchw", "torch_cl", "onnxruntime"],
    "train": ["numba", "torch_nchw", "torch_cl"],
    "mixed": ["numba+torch", "torch+numba"],
}


@functools.lru_cache(maxsize=1)
def has_onnxruntime() -> bool:
    code = "import onnx, onnxruntime"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def run_side(side, task, threads, min_time, batches) -> dict:
    env = {**os.environ}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        side,
        task,
        "--threads",
        str(threads),
        "--min-time",
        str(min_time),
        "--batch",
        *map(str, batches),
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=RESULTS.parent.parent)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {task:9s} {side:12s} {time.perf_counter() - t0:6.1f} s", flush=True)
    return out


def collect(tasks, rounds, threads, quick) -> dict:
    min_time = 0.1 if quick else 0.3
    runs, versions = {}, {}
    for r in range(rounds):
        print(f"round {r + 1} of {rounds}", flush=True)
        for task in tasks:
            sides = SIDES[task] if r % 2 == 0 else SIDES[task][::-1]
            for side in sides:
                if side == "onnxruntime" and not has_onnxruntime():
                    continue
                batches = [1] if quick and task in ("model", "mixed") else [1, 8]
                t = min_time * (3 if task in ("model", "train", "mixed") else 1)
                out = run_side(side, task, threads, t, batches)
                versions.update(out["versions"])
                for case, timing in out["results"].items():
                    runs.setdefault(task, {}).setdefault(side, {}).setdefault(case, []).append(timing)
    return {"runs": runs, "versions": versions}


def summarise(runs) -> dict:
    """task -> side -> case -> {best: best round's median (us), spread: max/min of round medians - 1}."""
    out = {}
    for task, sides in runs.items():
        for side, cases in sides.items():
            for case, timings in cases.items():
                meds = [t["median_us"] for t in timings]
                best = min(timings, key=lambda t: t["median_us"])
                row = {
                    "us": best["median_us"],
                    "q1": best["q1_us"],
                    "q3": best["q3_us"],
                    "spread": max(meds) / min(meds) - 1,
                    "rounds": len(meds),
                }
                row.update({k: v for k, v in best.items() if k in ("GBps", "GFLOPs")})
                out.setdefault(task, {}).setdefault(side, {})[case] = row
    return out


def depthwise_rows(s) -> list[dict]:
    """Per shape and direction: each side's time, speed-up over torch's faster layout, GB/s."""
    dw = s.get("depthwise", {})
    if not {"numba", "torch_nchw", "torch_cl"} <= dw.keys():
        return []
    rows = []
    for case in dw["numba"]:
        d, b, c, hw, st = case.split()
        h, w = map(int, hw.split("x"))
        n, c_, s_ = int(b[1:]), int(c[1:]), int(st[1:])
        ours, nchw, cl = dw["numba"][case], dw["torch_nchw"][case], dw["torch_cl"][case]
        torch_best = min(nchw["us"], cl["us"])
        nbytes = depthwise_bytes(n, c_, h, w, s_, d)
        rows.append(
            {
                "dir": d,
                "batch": n,
                "C": c_,
                "H": h,
                "W": w,
                "stride": s_,
                "ours_us": ours["us"],
                "ours_spread": ours["spread"],
                "torch_nchw_us": nchw["us"],
                "torch_cl_us": cl["us"],
                "speedup": torch_best / ours["us"],
                "ours_GBps": nbytes / ours["us"] / 1e3,
                "torch_GBps": nbytes / torch_best / 1e3,
            }
        )
    return rows


def targets(s, dw_rows) -> list[dict]:
    out = []
    for b in (1, 8):
        for d, name in (("fwd", "forward"), ("bwd", "backward (dx + dw)")):
            sp = [r["speedup"] for r in dw_rows if r["batch"] == b and r["dir"] == d]
            if sp:
                out.append(
                    {
                        "target": f"depthwise {name}, batch {b}",
                        "goal": "every shape >= 1x, geo-mean >= 1.5x",
                        "measured": f"geo-mean {geomean(sp):.2f}x, min {min(sp):.2f}x, "
                        f"{sum(x < 1 for x in sp)}/{len(sp)} slower",
                        "met": min(sp) >= 1 and geomean(sp) >= 1.5,
                    }
                )
    for task, case, goal, limit in (
        ("model", "infer b1 224", "<= 0.5x torch's time", 0.5),
        ("model", "infer b8 224", "faster than torch", 1.0),
        ("train", "train b16 128", "<= 1.0x torch's time", 1.0),
    ):
        t = s.get(task, {})
        if "numba" in t and case in t["numba"] and "torch_cl" in t:
            torch_best = min(t[k][case]["us"] for k in ("torch_nchw", "torch_cl"))
            ratio = t["numba"][case]["us"] / torch_best
            out.append(
                {
                    "target": f"MobileNetV2-1.0 {case}",
                    "goal": goal,
                    "measured": f"{t['numba'][case]['us'] / 1e3:.1f} ms vs {torch_best / 1e3:.1f} ms: "
                    f"{ratio:.2f}x torch's time",
                    "met": ratio <= limit,
                }
            )
    m, alone = s.get("mixed", {}), s.get("model", {})
    for side in m:
        for lib, ref in (("numba", "numba"), ("torch_cl", "torch_cl")):
            case = f"{lib} infer b1 224"
            if case in m[side] and ref in alone and "infer b1 224" in alone[ref]:
                ratio = m[side][case]["us"] / alone[ref]["infer b1 224"]["us"]
                out.append(
                    {
                        "target": f"{lib.split('_')[0]} inference beside the other library ({side} import order)",
                        "goal": "within 1.10x of alone",
                        "measured": f"{ratio:.2f}x of alone",
                        "met": ratio <= 1.10,
                    }
                )
    return out


def machine_line(res) -> str:
    m, v = res["machine"], res["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "onnxruntime") if k in v)
    return (
        f"{m['cpu']} ({m['simd']}, {m['cores']} cores); {res['threads']} threads on every side; "
        f"Python {v.get('python', '?')}, {libs}; {res['rounds']} rounds, each side alone in its "
        f"process, best round's median."
    )


def markdown(res) -> str:
    s, lines = res["summary"], ["# Benchmarks: each side alone in its process", "", machine_line(res), ""]
    roof = s.get("roofline", {}).get("numba", {})
    if roof:
        lines += [
            f"This machine: copy bandwidth {roof['copy 64MiB']['GBps']:.1f} GB/s (one thread, 64 MiB), "
            f"float32 GEMM {roof['sgemm 1024']['GFLOPs']:.0f} GFLOP/s (1024^3, {res['threads']} threads).",
            "",
        ]
    lines += ["## Targets", "", "| target | goal | measured | status |", "|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(
            f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else 'not met'} |"
        )
    for task, title in (
        ("model", "Whole model, inference (224 px)"),
        ("train", "Training step (batch 16, 128 px)"),
    ):
        t = s.get(task)
        if not t:
            continue
        sides = [k for k in ("numba", "torch_nchw", "torch_cl", "onnxruntime") if k in t]
        lines += [
            "",
            f"## {title}",
            "",
            "| case | " + " | ".join(sides) + " |",
            "|---|" + "---:|" * len(sides),
        ]
        for case in t[sides[0]]:
            cells = [f"{t[k][case]['us'] / 1e3:.1f} ms (±{t[k][case]['spread']:.0%})" for k in sides]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    if "mixed" in s:
        lines += [
            "",
            "## Both libraries in one process (MobileNetV2 inference, batch 1)",
            "",
            "| import order | numba | torch channels_last |",
            "|---|---:|---:|",
        ]
        for side, cases in s["mixed"].items():
            lines.append(
                f"| {side} | {cases['numba infer b1 224']['us'] / 1e3:.1f} ms | "
                f"{cases['torch_cl infer b1 224']['us'] / 1e3:.1f} ms |"
            )
    if res["depthwise"]:
        lines += [
            "",
            "## Depthwise 3x3, every MobileNetV2-1.0/224 layer (microseconds)",
            "",
            "Speed-up = torch in its faster layout / ours (channels-last). GB/s = the bytes the layer "
            "must move (inputs read once, outputs written once) / time.",
            "",
            "| dir | batch | C | H | s | ours | torch NCHW | torch CL | speed-up | ours GB/s | torch GB/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["depthwise"]:
            lines.append(
                f"| {r['dir']} | {r['batch']} | {r['C']} | {r['H']} | {r['stride']} | {r['ours_us']:.0f} | "
                f"{r['torch_nchw_us']:.0f} | {r['torch_cl_us']:.0f} | {r['speedup']:.2f}x | "
                f"{r['ours_GBps']:.1f} | {r['torch_GBps']:.1f} |"
            )
    road = s.get("versions", {}).get("numba")
    if road:
        shapes = [f"b1 C{c} {h}x{w} s{st}" for c, h, w, st in v2_depthwise_shapes()]
        names = sorted({k.rsplit(" ", 4)[0] for k in road}, key=lambda v: (v[:3], int(v.split("v")[-1])))
        lines += [
            "",
            "## The road: every numbered version at batch 1 (microseconds)",
            "",
            "| shape | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for sh in shapes:
            lines.append(
                f"| {sh[3:]} | " + " | ".join(f"{road[f'{v} {sh}']['us']:.0f}" for v in names) + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, short timings, batch-1 models")
    p.add_argument("--rounds", type=int, default=None, help="default 3, or 2 with --quick")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", nargs="+", choices=list(SIDES), default=list(SIDES))
    a = p.parse_args(argv)
    rounds = a.rounds or (2 if a.quick else 3)
    if rounds < 1 or a.threads < 1:
        p.error("--rounds and --threads must be >= 1")
    t0 = time.perf_counter()
    got = collect(a.tasks, rounds, a.threads, a.quick)
    res = {"machine": cpu(), "threads": a.threads, "rounds": rounds, "quick": a.quick, **got}
    res["summary"] = summarise(got["runs"])
    res["depthwise"] = depthwise_rows(res["summary"])
    res["targets"] = targets(res["summary"], res["depthwise"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "bench.md").write_text(markdown(res))
    print(markdown(res).split("## Whole model")[0])
    print(
        f"wrote {RESULTS / 'bench.json'} and bench.md in {time.perf_counter() - t0:.0f} s;"
        " the figures: python docs/make_figures.py"
    )


if __name__ == "__main__":
    main()
