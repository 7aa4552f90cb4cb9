"""The performance analysis chapter's tables and figures, from measured results only.

Read by ``docs/make_figures.py`` (which owns the generated blocks and the figure list):
``benchmarks/results/perf.json`` (``python -m benchmarks.perf``) and
``benchmarks/results/step_profile.json`` (``python -m benchmarks.profile_step``), both run
by ``make bench``. Analytic numbers (mult-adds, parameters, activation bytes) come from
``mobilenet.summary``; published accuracies are the papers'.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet.summary import activation_memory, layer_rows, summary_dict, totals

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
BACKENDS = ("numba", "torch", "onnxruntime")
COLORS = {"numba": "tab:blue", "torch": "tab:red", "onnxruntime": "tab:gray"}

# Published ImageNet top-1 (%): V1 paper Tables 6-7; V2: TF-slim's released checkpoints (the
# paper's own 1.0/224 figure is 72.0, the released checkpoint's 71.8)
PUBLISHED_TOP1 = {
    ("v1", 1.0, 224): 70.6,
    ("v1", 0.75, 224): 68.4,
    ("v1", 0.5, 224): 63.7,
    ("v1", 0.25, 224): 50.6,
    ("v1", 1.0, 192): 69.1,
    ("v1", 1.0, 160): 67.2,
    ("v1", 1.0, 128): 64.4,
    ("v2", 1.4, 224): 75.0,
    ("v2", 1.0, 224): 71.8,
    ("v2", 0.75, 224): 69.8,
    ("v2", 0.5, 224): 65.4,
    ("v2", 0.35, 224): 60.3,
    ("v2", 1.0, 192): 70.7,
    ("v2", 1.0, 160): 68.8,
    ("v2", 1.0, 128): 65.3,
    ("v2", 1.0, 96): 60.3,
}
MISSING = "(run `make bench` to produce benchmarks/results/perf.json)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _md(header, rows) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _key(arch, w, r):
    return f"{arch} {w:g} {r}px b1 infer"


def _sweep_ms(res, arch, w, r, backend):
    row = res["sweep"]["results"].get(backend, {}).get(_key(arch, w, r))
    return row["ms"] if row else math.nan


def machine() -> str:
    """The machine and versions every number of the chapter was measured with."""
    res = _load("perf")
    if not res or "sweep" not in res:
        return MISSING
    m, v = res["machine"], res["sweep"]["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "onnxruntime") if k in v)
    return (
        f"Measured on {m['cpu']} ({m['simd']}, {m['cores']} cores), {res['threads']} threads on every "
        f"side; Python {v.get('python', '?')}, {libs}. Each library alone in its process, "
        f"{res['sweep']['rounds']} alternating rounds, best round's median."
    )


# --- a. latency against alpha and rho ---------------------------------------------------


def sweep_rows(res):
    """(arch, alpha, rho, M mult-adds, published top-1, {backend: ms}) over the measured grid."""
    rows = []
    for key in res["sweep"]["cases"]:
        arch, w, r = key.split()[0], float(key.split()[1]), int(key.split()[2][:-2])
        macs = summary_dict(arch, w, r)["macs"] / 1e6
        ms = {b: _sweep_ms(res, arch, w, r, b) for b in BACKENDS}
        rows.append((arch, w, r, macs, PUBLISHED_TOP1.get((arch, w, r)), ms))
    return rows


def sweep_table() -> str:
    res = _load("perf")
    if not res or "sweep" not in res:
        return MISSING
    out = []
    for arch, w, r, macs, top1, ms in sweep_rows(res):
        spread = {
            b: res["sweep"]["results"][b][_key(arch, w, r)]["spread"]
            for b in BACKENDS
            if _key(arch, w, r) in res["sweep"]["results"].get(b, {})
        }
        cells = [f"{ms[b]:.2f} (±{spread[b]:.0%})" if b in spread else "-" for b in BACKENDS]
        ratio = ms["numba"] / ms["torch"]
        out.append((arch.upper(), f"{w:g}", r, f"{macs:.0f}", top1 or "-", *cells, f"{ratio:.2f}x"))
    header = (
        "model",
        "alpha",
        "px",
        "M mult-adds",
        "top-1 %",
        *(f"{b} ms" for b in BACKENDS),
        "numba / torch",
    )
    notes = []
    rows = sweep_rows(res)
    for arch in ("v1", "v2"):
        for what, pick, x in (("alpha", lambda r: r[2] == 224, 1), ("rho", lambda r: r[1] == 1.0, 2)):
            sel = sorted((r for r in rows if r[0] == arch and pick(r)), key=lambda r: r[x])
            lo, hi = sel[0], sel[-1]
            times = ", ".join(f"{b} {hi[5][b] / lo[5][b]:.1f}x" for b in BACKENDS)
            notes.append(
                f"{arch.upper()}, {what} from {hi[x]:g} down to {lo[x]:g}: mult-adds fall "
                f"{hi[3] / lo[3]:.1f}x, time {times}."
            )
    return _md(header, out) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def fig_latency(path):
    plt = _pyplot()

    res = _load("perf")
    if not res or "sweep" not in res:
        return
    rows = sweep_rows(res)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for i, arch in enumerate(("v1", "v2")):
        mine = [r for r in rows if r[0] == arch]
        for j, (label, pick, xval) in enumerate(
            [
                ("width multiplier alpha (224 px)", lambda r: r[2] == 224, 1),
                ("resolution (alpha 1.0)", lambda r: r[1] == 1.0, 2),
            ]
        ):
            ax = axes[i, j]
            sel = sorted((r for r in mine if pick(r)), key=lambda r: r[xval])
            for b in BACKENDS:
                ax.plot([r[xval] for r in sel], [r[5][b] for r in sel], "o-", color=COLORS[b], label=b)
            ax2 = ax.twinx()
            ax2.plot([r[xval] for r in sel], [r[3] for r in sel], "k--", lw=1, label="mult-adds")
            ax2.set_ylabel("M mult-adds (dashed)")
            ax.set_xlabel(label)
            ax.set_ylabel("ms per image (batch 1)")
            ax.set_title(f"MobileNet{arch.upper()}")
            ax.set_ylim(bottom=0)
            ax2.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Inference latency against alpha and rho, each library alone in its process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plain_log_ticks(axis, ticks):
    """A log axis labelled with plain numbers at ``ticks`` (not 6x10^1), no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _marker_box(ax, xy, half=5):
    """The display box of a marker at data point ``xy``: ``half`` pixels around it."""
    from matplotlib.transforms import Bbox

    x, y = ax.transData.transform(xy)
    return Bbox([[x - half, y - half], [x + half, y + half]])


OFFSETS = ((6, -3), (6, 5), (-6, 5), (-6, -3), (4, -13), (-4, -13), (4, 11), (-4, 11))  # points, in turn


def _place_label(ax, text, xy, placed: list):
    """Annotate ``xy`` with ``text`` at the first offset whose box overlaps none of ``placed``
    (the boxes of the labels before it, to which its own is added)."""
    renderer = ax.figure.canvas.get_renderer()
    for dx, dy in OFFSETS:
        a = ax.annotate(
            text,
            xy,
            fontsize=6,
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
        )
        box = a.get_window_extent(renderer).padded(2)  # a gap, not only no overlap
        if not any(box.overlaps(b) for b in placed):
            break
        a.remove()
    else:
        a = ax.annotate(text, xy, fontsize=6, xytext=OFFSETS[0], textcoords="offset points")
        box = a.get_window_extent(renderer)
    placed.append(box)


def fig_accuracy(path):
    plt = _pyplot()

    res = _load("perf")
    if not res or "sweep" not in res:
        return
    rows = [r for r in sweep_rows(res) if r[4] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[1].set_xscale("log")
    axes[1].set_xlim(min(r[3] for r in rows) / 1.3, max(r[3] for r in rows) * 1.3)
    axes[1].set_ylim(min(r[4] for r in rows) - 2, max(r[4] for r in rows) + 2)
    placed = [_marker_box(axes[1], (r[3], r[4])) for r in rows]  # labels go around every marker
    for arch, marker in (("v1", "o"), ("v2", "s")):
        mine = [r for r in rows if r[0] == arch]
        for b in BACKENDS:
            axes[0].scatter(
                [r[5][b] for r in mine],
                [r[4] for r in mine],
                marker=marker,
                color=COLORS[b],
                label=f"{arch.upper()} {b}",
                alpha=0.8,
            )
        axes[1].scatter(
            [r[3] for r in mine], [r[4] for r in mine], marker=marker, color="k", label=arch.upper()
        )
        for r in mine:
            _place_label(axes[1], f"{r[1]:g}/{r[2]}", (r[3], r[4]), placed)
    axes[0].set_xscale("log")
    _plain_log_ticks(axes[0].xaxis, (0.5, 1, 2, 5, 10, 20, 50))
    axes[0].set_xlabel("measured ms per image (batch 1, log)")
    axes[0].set_title("published top-1 against measured latency")
    axes[1].set_xscale("log")
    _plain_log_ticks(axes[1].xaxis, (25, 50, 100, 200, 400, 800))
    axes[1].set_xlabel("M mult-adds (log)")
    axes[1].set_title("published top-1 against mult-adds (alpha/px)")
    for ax in axes:
        ax.set_ylabel("ImageNet top-1 % (published)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- b and c. standard vs depthwise separable, and the roofline --------------------------


def _layer_costs(c_in, c_out, h, s):
    """Mult-adds and the bytes each op must move at least (float32: input, weights, output once)."""
    ho = (h - 1) // s + 1
    ops = {
        "full": (A.Conv(c_in, c_out, 3, s), (c_in, h, h)),
        "dw": (A.Conv(c_in, c_in, 3, s, groups=c_in), (c_in, h, h)),
        "pw": (A.Conv(c_in, c_out, 1), (c_in, ho, ho)),
    }
    out = {}
    for op, (conv, shape) in ops.items():
        t = totals(layer_rows(conv, shape))
        o = layer_rows(conv, shape)[-1].output_shape
        nbytes = 4 * (shape[0] * shape[1] * shape[2] + t["params"] + o[0] * o[1] * o[2])
        out[op] = {"macs": t["macs"], "bytes": nbytes, "intensity": 2 * t["macs"] / nbytes}
    return out


def separable_rows(res):
    sep = res["separable"]["results"]
    rows = []
    for case in [k[5:] for k in sep["numba"] if k.startswith("full ")]:
        io, hw, st = case.split()
        c_in, c_out = map(int, io.split("-"))
        h, s = int(hw.split("x")[0]), int(st[1:])
        cost = _layer_costs(c_in, c_out, h, s)
        t = {side: {op: sep[side][f"{op} {case}"]["us"] for op in ("full", "dw", "pw")} for side in sep}
        rows.append({"case": case, "cost": cost, "us": t})
    return rows


def separable_table() -> str:
    res = _load("perf")
    if not res or "separable" not in res:
        return MISSING
    out = []
    for r in separable_rows(res):
        c, t = r["cost"], r["us"]
        macs_ratio = c["full"]["macs"] / (c["dw"]["macs"] + c["pw"]["macs"])
        cells = []
        for side in ("torch", "numba"):
            cells.append(f"{t[side]['full'] / (t[side]['dw'] + t[side]['pw']):.1f}x")
        out.append(
            (
                r["case"],
                f"{macs_ratio:.1f}x",
                *cells,
                f"{c['full']['intensity']:.0f}",
                f"{c['dw']['intensity']:.1f}",
                f"{c['pw']['intensity']:.0f}",
                f"{t['torch']['dw'] / (t['torch']['dw'] + t['torch']['pw']):.0%}",
            )
        )
    rows = separable_rows(res)
    below = {
        side: sum(
            r["us"][side]["full"] / (r["us"][side]["dw"] + r["us"][side]["pw"])
            < r["cost"]["full"]["macs"] / (r["cost"]["dw"]["macs"] + r["cost"]["pw"]["macs"])
            for r in rows
        )
        for side in ("torch", "numba")
    }
    note = (
        f"\n\nThe time saving is below the mult-add saving on {below['torch']} of {len(rows)} layers "
        f"with torch and on {below['numba']} of {len(rows)} with numba."
    )
    header = (
        "layer (C_in-C_out, input, stride)",
        "mult-add saving",
        "time saving, torch",
        "time saving, numba",
        "FLOP/byte full",
        "FLOP/byte dw",
        "FLOP/byte 1x1",
        "dw share of torch's separable time",
    )
    return _md(header, out) + note


def fig_separable(path):
    plt = _pyplot()

    res = _load("perf")
    if not res or "separable" not in res:
        return
    rows = separable_rows(res)
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    macs = [r["cost"]["full"]["macs"] / (r["cost"]["dw"]["macs"] + r["cost"]["pw"]["macs"]) for r in rows]
    axes[0].bar(x - 0.27, macs, 0.27, color="k", label="mult-add ratio (full / separable)")
    for k, side in enumerate(("torch", "numba")):
        t = [r["us"][side]["full"] / (r["us"][side]["dw"] + r["us"][side]["pw"]) for r in rows]
        axes[0].bar(x + 0.27 * k, t, 0.27, color=COLORS[side], label=f"time ratio, {side}")
    axes[0].set_xticks(x, [r["case"].replace(" ", "\n") for r in rows], fontsize=7)
    axes[0].set_ylabel("standard 3x3 / depthwise separable")
    axes[0].set_title("what the separable layer saves: mult-adds vs measured time")
    axes[0].legend(fontsize=8)
    for k, side in enumerate(("torch", "numba")):
        dw = [r["us"][side]["dw"] / 1e3 for r in rows]
        pw = [r["us"][side]["pw"] / 1e3 for r in rows]
        axes[1].bar(x + 0.4 * k - 0.2, dw, 0.4, color=COLORS[side], alpha=0.5, label=f"{side} depthwise")
        axes[1].bar(x + 0.4 * k - 0.2, pw, 0.4, bottom=dw, color=COLORS[side], label=f"{side} 1x1")
    axes[1].set_xticks(x, [r["case"].replace(" ", "\n") for r in rows], fontsize=7)
    axes[1].set_ylabel("ms (batch 1)")
    axes[1].set_title("the separable layer's time: depthwise (light) and 1x1 (dark)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ceilings(res):
    """{"dram": GB/s, "l2": GB/s, "peak": GFLOP/s}: the best measured of each."""
    roof = res["roofline"]["results"]
    rows = [v for side in roof.values() for v in side.values()]
    return {
        "dram": max(v["GBps"] for v in rows if "GBps" in v and not v.get("cache")),
        "l2": max((v["GBps"] for v in rows if v.get("cache")), default=math.nan),
        "peak": max(v["GFLOPs"] for v in rows if "GFLOPs" in v),
    }


def roofline_points(res):
    """(label, side, op, FLOP/byte, GFLOP/s) of every measured op."""
    pts = []
    for r in separable_rows(res):
        for side in ("numba", "torch"):
            for op in ("full", "dw", "pw"):
                c = r["cost"][op]
                pts.append((r["case"], side, op, c["intensity"], 2 * c["macs"] / r["us"][side][op] / 1e3))
    return pts


def roofline_table() -> str:
    res = _load("perf")
    if not res or "roofline" not in res or "separable" not in res:
        return MISSING
    c = ceilings(res)
    rows = []
    for side, d in res["roofline"]["results"].items():
        for k, v in d.items():
            rate = f"{v['GBps']:.1f} GB/s" if "GBps" in v else f"{v['GFLOPs']:.0f} GFLOP/s"
            rows.append((f"{side}: {k}", rate, f"±{v['spread']:.0%}"))
    lines = [_md(("ceiling measured", "rate", "spread"), rows), ""]
    lines.append(
        f"Ridge points: {c['peak']:.0f} GFLOP/s over {c['dram']:.1f} GB/s from memory = "
        f"{c['peak'] / c['dram']:.1f} FLOP/byte; over {c['l2']:.0f} GB/s from L2 = "
        f"{c['peak'] / c['l2']:.1f} FLOP/byte. Below a ridge point a layer is bound by that "
        "bandwidth, above it by arithmetic."
    )
    summary = []
    pts = roofline_points(res)
    for side in ("numba", "torch"):
        for op, name in (("dw", "depthwise 3x3"), ("pw", "1x1"), ("full", "standard 3x3")):
            sel = [p for p in pts if p[1] == side and p[2] == op]
            ai, rate = sorted(p[3] for p in sel), sorted(p[4] for p in sel)
            shares = []
            for bw in (c["dram"], c["l2"]):
                frac = sorted(p[4] / min(c["peak"], bw * p[3]) for p in sel)
                shares.append(f"{frac[len(frac) // 2]:.0%}")
            summary.append(
                (side, name, f"{ai[0]:.1f}-{ai[-1]:.1f}", f"{rate[0]:.0f}-{rate[-1]:.0f}", *shares)
            )
    header = ("side", "op", "FLOP/byte", "GFLOP/s", "median of its roof, memory", "median of its roof, L2")
    return "\n".join(lines) + "\n\n" + _md(header, summary)


def fig_roofline(path):
    plt = _pyplot()

    res = _load("perf")
    if not res or "roofline" not in res or "separable" not in res:
        return
    c = ceilings(res)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ai = np.logspace(-1, 3, 200)
    # the roofs are keyed in the legend: a label written beside a slope ends up on another line
    peak = f"GEMM peak {c['peak']:.0f} GFLOP/s"
    ax.plot(
        ai,
        np.minimum(c["peak"], c["dram"] * ai),
        "k-",
        lw=2,
        label=f"memory roof {c['dram']:.0f} GB/s, {peak}",
    )
    ax.plot(ai, np.minimum(c["peak"], c["l2"] * ai), "k:", lw=1.5, label=f"L2 roof {c['l2']:.0f} GB/s")
    markers = {"full": "s", "dw": "o", "pw": "^"}
    names = {"full": "standard 3x3", "dw": "depthwise 3x3", "pw": "1x1"}
    for side in ("numba", "torch"):
        for op in ("full", "dw", "pw"):
            sel = [p for p in roofline_points(res) if p[1] == side and p[2] == op]
            ax.scatter(
                [p[3] for p in sel],
                [p[4] for p in sel],
                marker=markers[op],
                color=COLORS[side],
                label=f"{side} {names[op]}",
                alpha=0.75,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis, (0.1, 1, 10, 100, 1000))
    _plain_log_ticks(ax.yaxis, (2, 5, 10, 20, 50, 100, 200, 500))
    ax.set_xlabel("arithmetic intensity (FLOP per byte it must move)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("Roofline: every MobileNetV1 layer shape, batch 1")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- d and e. memory, and V1 against V2 --------------------------------------------------


def memory_table() -> str:
    res = _load("perf")
    out = []
    for arch in ("v1", "v2"):
        blocks = activation_memory(arch)
        unf = max(blocks, key=lambda b: b["unfused"])
        fus = max(blocks, key=lambda b: b["fused"])
        rss = []
        for b in BACKENDS:
            row = (
                (res or {})
                .get("memory", {})
                .get(arch, {})
                .get("results", {})
                .get(b, {})
                .get(_key(arch, 1.0, 224))
            )
            rss.append(f"{row['peak_mb']:.0f}" if row else "-")
        out.append(
            (
                f"{arch.upper()}-1.0/224",
                f"{unf['unfused'] / 2**20:.2f} ({unf['name']})",
                f"{fus['fused'] / 2**20:.2f} ({fus['name']})",
                f"{summary_dict(arch)['params'] * 4 / 2**20:.1f}",
                *rss,
            )
        )
    header = (
        "model",
        "peak activations MiB, unfused",
        "peak activations MiB, fused blocks",
        "weights MiB",
        *(f"peak RSS MB, {b}" for b in BACKENDS),
    )
    return _md(header, out)


def fig_memory(path):
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for arch, how, style in (("v1", "unfused", "o-"), ("v2", "unfused", "s-"), ("v2", "fused", "s--")):
        blocks = activation_memory(arch)
        ax.plot(
            range(len(blocks)),
            [b[how] / 2**20 for b in blocks],
            style,
            label=f"{arch.upper()} {how}"
            + (" (expanded tensor one tile at a time)" if how == "fused" else ""),
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # blocks are whole
    ax.set_xlabel("features entry (block), input to output")
    ax.set_ylabel("peak activation MiB (batch 1, float32)")
    ax.set_title(
        "Activation memory per block at 1.0/224: the inverted residual's expansion need not exist whole"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions_table() -> str:
    res = _load("perf")
    if not res or "sweep" not in res:
        return MISSING
    rows = []
    cols = {}
    for arch in ("v1", "v2"):
        d = summary_dict(arch)
        blocks = activation_memory(arch)
        mem = res.get("memory", {}).get(arch, {}).get("results", {})
        cols[arch] = [
            f"{d['params'] / 1e6:.2f}",
            f"{d['macs'] / 1e6:.0f}",
            f"{PUBLISHED_TOP1[(arch, 1.0, 224)]}",
            *(f"{_sweep_ms(res, arch, 1.0, 224, b):.2f}" for b in BACKENDS),
            f"{max(b['unfused'] for b in blocks) / 2**20:.2f}",
            f"{max(b['fused'] for b in blocks) / 2**20:.2f}",
            *(f"{mem[b][_key(arch, 1.0, 224)]['peak_mb']:.0f}" if b in mem else "-" for b in BACKENDS),
        ]
    names = [
        "parameters (M)",
        "mult-adds (M)",
        "published top-1 %",
        *(f"latency ms, {b} (batch 1)" for b in BACKENDS),
        "peak activations MiB, unfused",
        "peak activations MiB, fused blocks",
        *(f"peak RSS MB, {b}" for b in BACKENDS),
    ]
    for i, name in enumerate(names):
        rows.append((name, cols["v1"][i], cols["v2"][i]))
    macs = summary_dict("v1")["macs"] / summary_dict("v2")["macs"]
    speed = ", ".join(
        f"{b} {_sweep_ms(res, 'v1', 1.0, 224, b) / _sweep_ms(res, 'v2', 1.0, 224, b):.2f}x" for b in BACKENDS
    )
    ratios = {b: _sweep_ms(res, "v1", 1.0, 224, b) / _sweep_ms(res, "v2", 1.0, 224, b) for b in BACKENDS}
    ranked = sorted(ratios, key=ratios.get, reverse=True)
    note = (
        f"\n\nV1 over V2: {macs:.2f}x the mult-adds; time: {speed}. Of V2's smaller arithmetic, "
        f"{ranked[0]} turns the most into time and {ranked[-1]} the least."
    )
    return _md(("at 1.0/224", "MobileNetV1", "MobileNetV2"), rows) + note


# --- the same configuration, timed by several tasks of one run ------------------------------

SAME_CONFIG = {  # case: (bench.json's task and key, perf.json's sweep key, perf.json v3 key)
    "inference, batch 1, 224 px": ("model", "infer b1 224", _key("v2", 1.0, 224), "v2 1 224px b1 infer"),
    "training step, batch 16, 128 px": ("train", "train b16 128", None, "v2 1 128px b16 train"),
}
TORCH_SIDE = {"numba": "numba", "torch": "torch_cl", "onnxruntime": "onnxruntime"}  # bench.json's names


def same_config_timings(case: str) -> list:
    """[(task, {backend: ms})]: every timing of MobileNetV2-1.0 in ``case`` that ``make bench``
    took, one per task that measured it (each task alternates its own processes and rounds)."""
    task, bench_key, sweep_key, v3_key = SAME_CONFIG[case]
    out = []
    bench = _load("bench")
    if bench:
        got = bench["summary"].get(task, {})
        ms = {b: got[s][bench_key]["us"] / 1e3 for b, s in TORCH_SIDE.items() if bench_key in got.get(s, {})}
        out.append(("kernel targets (`benchmarks.run`)", ms))
    perf = _load("perf") or {}
    if sweep_key and "sweep" in perf:
        ms = {
            b: perf["sweep"]["results"][b][sweep_key]["ms"]
            for b in BACKENDS
            if sweep_key in perf["sweep"]["results"].get(b, {})
        }
        out.append(("alpha and rho sweep (`benchmarks.perf`)", ms))
    if "v3" in perf:
        ms = {
            b: perf["v3"]["results"][b][v3_key]["ms"]
            for b in BACKENDS
            if v3_key in perf["v3"]["results"].get(b, {})
        }
        out.append(("V2 against V3 (`benchmarks.perf --tasks v3`)", ms))
    prof = _load("step_profile")
    if prof:
        runs = prof["infer"] if task == "model" else prof["sides"]
        ms = {b: r["step_ms"] for r in runs for b, s in TORCH_SIDE.items() if r["side"] == s}
        out.append(("per-op profile (`benchmarks.profile_step`, profiler on)", ms))
    return [(what, ms) for what, ms in out if ms]


def ratios(case: str, timed=None) -> list:
    """numba / torch, one per task that timed ``case`` without a profiler (which slows both)."""
    return [
        ms["numba"] / ms["torch"]
        for what, ms in (timed or same_config_timings(case))
        if "numba" in ms and "torch" in ms and "profile" not in what
    ]


def ratio_range(case: str, timed=None) -> tuple:
    """(lowest, median, highest) of :func:`ratios`."""
    rs = sorted(ratios(case, timed))
    return (rs[0], float(np.median(rs)), rs[-1]) if rs else None


def same_config_table() -> str:
    """MobileNetV2-1.0 as timed by each task of the run: the spread a reader should expect."""
    rows, lines = [], []
    for case in SAME_CONFIG:
        timed = same_config_timings(case)
        for what, ms in timed:
            cells = [f"{ms[b]:.2f}" if b in ms else "-" for b in BACKENDS]
            ratio = f"{ms['numba'] / ms['torch']:.2f}x" if "numba" in ms and "torch" in ms else "-"
            rows.append((case, what, *cells, ratio))
        r = ratio_range(case, timed)
        if r:
            lines.append(
                f"- {case}: numba / torch from {r[0]:.2f}x to {r[2]:.2f}x across the tasks timed without"
                f" a profiler, median {r[1]:.2f}x."
            )
    if not rows:
        return MISSING
    header = ("MobileNetV2-1.0", "timed by", *(f"{b} ms" for b in BACKENDS), "numba / torch")
    return _md(header, rows) + "\n\n" + "\n".join(lines)


# --- f. where the time goes -------------------------------------------------------------

OP_GROUPS = [  # (group, substrings of the op names that belong to it), first match wins
    ("inverted residual block, one call (convs, BN, activations)", ("inverted_residual",)),
    ("convolution", ("pointwise", "depthwise", "conv2d", "convolution")),
    ("batch norm", ("batch_norm",)),
    ("activation", ("relu", "hardtanh", "clamp")),
    ("linear", ("linear", "addmm", "aten::mm")),
]


def _group(op):
    for name, keys in OP_GROUPS:
        if any(k in op for k in keys):
            return name
    return "other"


def breakdown(side) -> dict:
    total = sum(side["ops_ms"].values())
    out = {}
    for op, ms in side["ops_ms"].items():
        g = _group(op)
        out[g] = out.get(g, 0.0) + ms / total
    return out


def breakdown_table() -> str:
    res = _load("step_profile")
    if not res or "infer" not in res:
        return "(run `make bench` to produce benchmarks/results/step_profile.json)"
    runs = [("inference, batch 1, 224 px", s) for s in res["infer"]] + [
        ("training step, batch 16, 128 px", s) for s in res["sides"]
    ]
    groups = [g for g, _ in OP_GROUPS] + ["other"]
    rows = []
    for what, s in runs:
        b = breakdown(s)
        rows.append((what, s["side"], f"{s['step_ms']:.1f}", *(f"{b.get(g, 0):.0%}" for g in groups)))
    return _md(("run", "side", "ms", *groups), rows)


def fig_breakdown(path):
    plt = _pyplot()

    res = _load("step_profile")
    if not res or "infer" not in res:
        return
    groups = [g for g, _ in OP_GROUPS] + ["other"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, (title, runs) in zip(
        axes,
        [("inference, batch 1, 224 px", res["infer"]), ("training step, batch 16, 128 px", res["sides"])],
    ):
        for i, s in enumerate(runs):
            b, left = breakdown(s), 0.0
            for j, g in enumerate(groups):
                w = b.get(g, 0.0) * s["step_ms"]
                ax.barh(i, w, left=left, color=plt.cm.tab10(j), label=g if i == 0 else None)
                left += w
            ax.text(left, i, f" {s['step_ms']:.1f} ms", va="center", fontsize=8)
        ax.set_yticks(range(len(runs)), [s["side"] for s in runs])
        ax.set_xlabel("ms, split by op group")
        ax.set_title(title)
        ax.set_xlim(0, max(s["step_ms"] for s in runs) * 1.2)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=len(groups), loc="lower center")
    fig.suptitle("Where the time goes: MobileNetV2-1.0, each side alone in its process")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


TABLES = {
    "perf_machine": machine,
    "perf_sweep": sweep_table,
    "perf_separable": separable_table,
    "perf_roofline": roofline_table,
    "perf_memory": memory_table,
    "perf_versions": versions_table,
    "perf_breakdown": breakdown_table,
    "perf_same_config": same_config_table,
}
FIGURES = {
    "perf_latency.png": fig_latency,
    "perf_accuracy.png": fig_accuracy,
    "perf_separable.png": fig_separable,
    "perf_roofline.png": fig_roofline,
    "perf_memory.png": fig_memory,
    "perf_breakdown.png": fig_breakdown,
}
