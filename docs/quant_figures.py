"""The quantization chapter's tables and figures.

Read by ``docs/make_figures.py`` (which owns the generated blocks and the figure list).
Accuracies, layer noise, weight ranges and the calibration histogram come from
``docs/results/quant.json`` (``python docs/make_quant_results.py``); speeds from
``benchmarks/results/int8.json`` (``python -m benchmarks.int8``); the worked examples and the
drawings of the affine map and of the hard-swish table are computed here from the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from perf_figures import _load, _md, ceilings  # beside this file, as make_figures imports both

import mobilenet_arch as A
import numpy_impl
from numpy_impl.quant import affine, ops
from numpy_impl.quant.model import quantize

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"
BENCH = DOCS.parent / "benchmarks" / "results"


def _name(r: dict) -> str:
    """``MobileNetV2-0.5, digits (10 classes, 359 test images)`` from a result's own config."""
    c = r["config"]
    return (
        f"{A.model_name(c['arch'])}-{c['width_mult']:g}, {c['data']} "
        f"({r['classes']} classes, {r['test_images']} test images)"
    )


class Missing(Exception):
    """A results file not written yet: its blocks say which command writes it."""


def _read(path: Path, command: str) -> dict:
    if not path.is_file():
        raise Missing(f"(not measured yet: run `{command}`)")
    return json.loads(path.read_text())


def _quant():
    return _read(RESULTS / "quant.json", "python docs/make_quant_results.py")


def _int8():
    return _read(BENCH / "int8.json", "python -m benchmarks.int8")


def _tolerant(fn):
    def block():
        try:
            return fn()
        except Missing as e:
            return str(e)

    block.__doc__ = fn.__doc__
    return block


def _pts(a, b) -> str:
    return f"{100 * (a - b):+.1f}"


# --- worked examples (computed, not measured) -----------------------------------------------


def quant_example() -> str:
    """One output of a convolution requantized both ways, step by step."""
    s_x, s_w, s_y, z_y = 0.0235, 0.0031, 0.0417, 7
    acc = 13_333
    M = float(affine.multiplier(s_x, s_w, s_y))
    m0, shift = affine.quantize_multiplier(M)
    flt = int(affine.requantize(np.array([acc]), np.float32(M), z_y, 0, 255)[0])
    fix = int(affine.requantize_fixed(np.array([acc]), m0, shift, z_y, 0, 255)[0])
    rows = [
        ("scales", f"s_x = {s_x}, s_w = {s_w}, s_y = {s_y}, z_y = {z_y}"),
        ("accumulator", f"acc = {acc:,} (int32), real value s_x s_w acc = {s_x * s_w * acc:.5f}"),
        ("multiplier", f"M = s_x s_w / s_y = {M:.10f} (float32)"),
        ("float scheme", f"rint({acc} x M) + {z_y} = rint({acc * M:.4f}) + {z_y} = **{flt}**"),
        (
            "fixed point",
            f"M = {int(m0)} / 2^31 / 2^{int(shift)}: SRDHM then a rounding shift, + {z_y} = **{fix}**",
        ),
        ("back to real", f"s_y (q - z_y) = {s_y * (flt - z_y):.5f}"),
    ]
    return _md(("step", "value"), rows)


# --- accuracy -------------------------------------------------------------------------------


def quant_accuracy() -> str:
    """Top-1 of each float model and of its integer versions, in points against float."""
    q = _quant()
    settings = [s["setting"] for s in next(iter(q.values()))["settings"]]
    keep = [s for s in settings if "8 bits" in s]
    header = ("model", "float", *keep, "fixed point", "onnxruntime quantize_static")
    rows = []
    for r in q.values():
        by = {s["setting"]: s["accuracy"] for s in r["settings"]}
        f = r["float_accuracy"]
        rows.append(
            (
                _name(r),
                f"{100 * f:.1f}",
                *(f"{100 * by[s]:.1f} ({_pts(by[s], f)})" for s in keep),
                f"{100 * r['fixed_point_accuracy']:.1f} ({_pts(r['fixed_point_accuracy'], f)})",
                f"{100 * r['onnxruntime_static']['accuracy']:.1f} "
                f"({_pts(r['onnxruntime_static']['accuracy'], f)})",
            )
        )
    n = next(iter(q.values()))
    note = (
        "\n\nTop-1 (%) on each test split, at 32 px; in brackets, points against float. "
        f"{n['calibration_images']} calibration images from the training split; weights int8 per channel "
        'unless said, activations uint8 per tensor; "fixed point": min/max, per channel, gemmlowp\'s '
        "requantization. onnxruntime's own tool (QDQ, per channel, S8S8) quantized our float ONNX export "
        "on the same images."
    )
    return _md(header, rows) + note


def quant_bits() -> str:
    """Accuracy against bits, min/max against histogram."""
    q = _quant()
    rows = []
    for r in q.values():
        by = {(s["observer"], s["per_channel"], s["bits"]): s["accuracy"] for s in r["settings"]}
        f = r["float_accuracy"]
        cells = []
        for bits in (8, 6, 4):
            for obs in ("minmax", "histogram"):
                a = by.get((obs, True, bits))
                cells.append("-" if a is None else f"{100 * a:.1f} ({_pts(a, f)})")
        rows.append((_name(r), f"{100 * f:.1f}", *cells))
    header = ("model", "float", *(f"{b} bits {o}" for b in (8, 6, 4) for o in ("min/max", "histogram")))
    return _md(header, rows)


def quant_findings() -> str:
    """What the accuracy table says, in sentences whose numbers are read from it."""
    q = _quant()
    spans = [
        (np.max(c) / max(np.min(c), 1e-12), layer["layer"])
        for layer in q["v2-digits"]["depthwise_ranges"]
        for c in [np.array(layer["channel_max"])]
    ]
    widest, where = max(spans)
    v2 = q["v2-digits"]["config"]
    lines = [
        f"- Per tensor against per channel: {A.model_name(v2['arch'])}-{v2['width_mult']:g}'s folded "
        "depthwise weights span at most "
        f"a factor {widest:.0f} between a layer's channels ({where}), so one scale per tensor still "
        f"leaves its narrowest channel {127 / widest:.0f} of the 127 levels; the textbook collapse "
        "(Krishnamoorthi 2018) is ImageNet-trained MobileNetV2's, whose folded depthwise ranges span "
        "orders of magnitude (Nagel et al. 2019, figure 2)."
    ]
    for r in q.values():
        f = r["float_accuracy"]
        by = {(s["observer"], s["per_channel"], s["bits"]): s["accuracy"] for s in r["settings"]}
        best8 = max(by[(o, True, 8)] for o in ("minmax", "histogram", "moving-average"))
        lines.append(
            f"- {_name(r)}: int8 (min/max, per channel) "
            f"{_pts(by[('minmax', True, 8)], f)} points, "
            f"best 8-bit setting {_pts(best8, f)}; per tensor {_pts(by[('minmax', False, 8)], f)}; "
            f"4 bits {_pts(by[('minmax', True, 4)], f)} (min/max) and {_pts(by[('histogram', True, 4)], f)} "
            "(histogram)."
        )
    return "\n".join(lines)


# --- speed ----------------------------------------------------------------------------------


def quant_speed() -> str:
    """Whole models on the six sides, per case: ms and ratios."""
    res = _int8()["models"]
    rows = []
    for key in res["cases"]:
        get = {b: res["results"].get(b, {}).get(key, {}).get("ms") for b in res["results"]}
        f, q = get.get("numba"), get.get("numba-int8")
        cell = {b: ("-" if v is None else f"{v:.2f}") for b, v in get.items()}
        rows.append(
            (
                key,
                *(
                    cell.get(b, "-")
                    for b in ("numba", "numba-int8", "torch-int8", "onnxruntime", "onnxruntime-int8")
                ),
                f"{q / f:.2f}x" if f and q else "-",
                f"{q / get['onnxruntime-int8']:.2f}x" if q and get.get("onnxruntime-int8") else "-",
                f"{q / get['torch-int8']:.2f}x" if q and get.get("torch-int8") else "-",
            )
        )
    m = res["machine"]
    head = ("case", "numba", "numba-int8", "torch-int8", "onnxruntime", "onnxruntime-int8",
            "int8 / our float", "vs onnxruntime-int8", "vs torch-int8")  # fmt: skip
    return (
        f"{m['cpu']} ({m['simd']}), {res['threads']} threads on every side, each alone in its process, "
        f"{res['rounds']} rounds, best round's median, ms.\n\n" + _md(head, rows)
    )


def quant_targets() -> str:
    """The int8 speed targets (MobileNetV2-1.0/224, batch 1) against the repeated measurement:
    the sides alternate within each round, so each round gives one ratio; the median ratio and
    the rounds on the target's side are shown (a single best-of-rounds time swings by a third
    on this shared machine)."""
    reps = _int8().get("repeats") or []
    key = "v2 1 224px b1 infer"
    res = next((r["results"] for r in reps if key in r["results"].get("numba-int8", {})), None)
    if res is None:
        raise Missing("(not measured yet: run `python -m benchmarks.int8 --only repeats`)")
    ours = res["numba-int8"][key]["rounds_ms"]
    rows = []
    for what, other, target in (
        ("numba-int8 / our float32 (numba)", "numba", 0.6),
        ("numba-int8 / torch-int8", "torch-int8", 1.0),
        ("numba-int8 / onnxruntime-int8", "onnxruntime-int8", 1.0),
    ):
        if key not in res.get(other, {}):
            rows.append((what, f"<= {target:g}x", "not measured", "-", "-"))
            continue
        ratios = np.array(ours) / np.array(res[other][key]["rounds_ms"])
        med = float(np.median(ratios))
        rows.append(
            (
                what,
                f"<= {target:g}x",
                f"{med:.2f}x ({ratios.min():.2f}-{ratios.max():.2f})",
                f"{int((ratios <= target).sum())} of {len(ratios)}",
                "met" if med <= target else "not met",
            )
        )
    head = ("MobileNetV2-1.0/224, batch 1", "target", "median ratio (range)", "rounds within", "")
    return _md(head, rows)


def quant_sizes() -> str:
    """MobileNetV2-1.0's weights in memory, float32 against int8 (computed from the models), and
    the peak resident memory of each side's process at batch 1 (measured, ``int8.json``)."""
    m = numpy_impl.mobilenet("v2").eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    float_mb = sum(a.nbytes for a in m.state_dict().values()) / 1e6
    int8_mb = sum(np.asarray(a).nbytes for a in quantize(m, [x]).state_dict().values()) / 1e6
    res = _int8()["models"]["results"]
    key = "v2 1 224px b1 infer"
    peaks = ", ".join(f"{b} {r[key]['peak_mb']:.0f} MB" for b, r in res.items() if key in r)
    return (
        f"MobileNetV2-1.0's weights: {float_mb:.1f} MB in float32 (batch-norm statistics included), "
        f"{int8_mb:.1f} MB as int8 weights, int32 biases and float32 scales. Peak memory of each "
        f"process at batch 1 while it loads and runs the model, above its size before: {peaks}."
    )


def quant_repeats() -> str:
    """MobileNetV2-1.0/224 measured again, more rounds: each round's median, to show the spread."""
    rows = []
    for res in _int8().get("repeats", []):
        for b, per_case in res["results"].items():
            for key, r in per_case.items():
                rounds = ", ".join(f"{v:.2f}" for v in r["rounds_ms"])
                rows.append((key, b, f"{r['ms']:.2f}", rounds))
    return _md(("case", "backend", "best round's median ms", "every round's median, in order"), rows)


def quant_kernels() -> str:
    """The int8 kernels' road on MobileNetV2-1.0/224's layers (batch 1)."""
    k = _int8()["kernels"]
    rows = [(f"GEMM version {v}", f"{r['ms']:.2f}", f"{r['gops']:.0f}") for v, r in k["gemm"].items()]
    rows += [
        (f"depthwise version {v}", f"{r['ms']:.2f}", f"{r['gops']:.0f}") for v, r in k["depthwise"].items()
    ]
    table = _md(("kernel, summed over the layers", "ms", "GOP/s"), rows)
    r = _int8()["roofline"]
    P, K, N = r["gemm_shape"]
    best_gemm = min(k["gemm"].values(), key=lambda g: g["ms"])
    best_dw = min(k["depthwise"].values(), key=lambda d: d["ms"])
    mb = k["depthwise_bytes"] / 1e6
    perf = _load("perf")
    # one memory bandwidth for the whole tutorial: chapter 9's roofline, when make bench measured it
    bw, named = (
        (ceilings(perf)["dram"], "This machine's memory bandwidth (chapter 9's roofline) is")
        if perf and "roofline" in perf
        else (r["copy_GBps"], "A parallel copy moves")
    )
    return table + (
        f"\n\nThe ceilings, measured the same way: version 4 on one large product ({P} x {K} x {N}) "
        f"reaches {r['gemm_gops']:.0f} GOP/s, so V2's pointwise layers run at "
        f"{best_gemm['gops'] / r['gemm_gops']:.0%} of it (their narrow layers, K = 16 to 32, leave "
        f"the tile little work per call). {named} {bw:.1f} GB/s; the depthwise "
        f"layers read and write {mb:.1f} MB of int8 activations, {mb / bw:.2f} ms at that "
        f"rate against the {best_dw['ms']:.2f} ms they take: "
        + (
            "they are bound by instructions, not by memory."
            if mb / bw < 0.7 * best_dw["ms"]
            else "memory is close to their bound."
        )
    )


def quant_profile() -> str:
    """Milliseconds per kind of layer of the integer MobileNetV2-1.0/224 (batch 1)."""
    p = _int8()["profile"]
    names = {"pointwise": "pointwise GEMMs", "depthwise": "depthwise", "conv": "stem (im2col + GEMM)",
             "linear": "classifier"}  # fmt: skip
    rows = [(names.get(k, k), f"{v:.2f}") for k, v in sorted(p["int8"].items(), key=lambda kv: -kv[1])]
    rest = p["int8_total"] - sum(p["int8"].values())
    rows += [("the rest", f"{rest:.2f}"), ("whole int8 forward", f"{p['int8_total']:.2f}")]
    rows.append(("(whole float32 forward, numba)", f"{p['float_total']:.2f}"))
    return _md(("layers", "ms"), rows)


def quant_fusion() -> str:
    """MobileNetV2-1.0/224's integer forward with its blocks run three ways (one process, the
    ways alternating)."""
    f = _int8().get("fusion")
    if f is None:
        raise Missing("(not measured yet: run `python -m benchmarks.int8 --only fusion`)")
    ways = ("layers", "call", "tiled")
    rows = [(f"batch {b}", *(f"{r[w]:.2f}" for w in ways), f"{r['tiled_blocks']}") for b, r in f.items()]
    names = {"layers": "layer by layer", "call": "one call per block", "tiled": "tiled"}
    lines = []
    for b, r in f.items():
        best = min(ways, key=lambda w: r[w])
        others = ", ".join(f"{names[w]} {r[w] / r[best] - 1:+.0%}" for w in ways if w != best)
        lines.append(f"- batch {b}: fastest {names[best]}; {others}.")
    head = ("MobileNetV2-1.0/224", "layer by layer, ms", "one call per block, ms", "tiled, ms",
            "blocks with tiles")  # fmt: skip
    return _md(head, rows) + "\n\n" + "\n".join(lines)


TABLES = {
    name: _tolerant(fn)
    for name, fn in {
        "quant_example": quant_example,
        "quant_accuracy": quant_accuracy,
        "quant_bits": quant_bits,
        "quant_findings": quant_findings,
        "quant_speed": quant_speed,
        "quant_kernels": quant_kernels,
        "quant_profile": quant_profile,
        "quant_repeats": quant_repeats,
        "quant_sizes": quant_sizes,
        "quant_fusion": quant_fusion,
        "quant_targets": quant_targets,
    }.items()
}


# --- figures --------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_affine(path):
    """The affine map: a real range onto 0..15 (4 bits, for legibility), zero exact."""
    plt = _plt()
    lo, hi = -1.3, 2.6
    scale, zp = affine.choose_qparams(lo, hi, 0, 15)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.axhline(1, color="0.3")
    ax.axhline(0, color="0.3")
    for q in range(16):
        r = scale * (q - zp)
        ax.plot([r, r], [0, 1], color="C0" if q != zp else "C3", lw=1 if q != zp else 2)
        ax.text(r, -0.18, str(q), ha="center", fontsize=7)
    ax.text(lo, 1.12, f"real: scale {scale:.3f}, range [{lo}, {hi}]", fontsize=8)
    ax.text(lo, -0.45, f"integers q (zero point {zp}: real 0 exactly)", fontsize=8)
    ax.set_xlim(lo - 0.2, hi + 0.2)
    ax.set_ylim(-0.6, 1.3)
    ax.axis("off")
    ax.set_title("real = scale * (q - zero_point)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_hardswish(path):
    """Hard-swish as the 256-entry table an integer network uses."""
    plt = _plt()
    qin, qout = ops.QParams(*affine.choose_qparams(-5, 5)), ops.QParams(*affine.choose_qparams(-0.4, 5))
    table = ops.lookup_table(ops.hardswish_float, qin, qout)
    q = np.arange(256)
    x = affine.dequantize(q, qin.scale, qin.zero_point)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(x, ops.hardswish_float(x), color="0.6", lw=3, label="hard-swish (float)")
    ax.step(
        x, affine.dequantize(table, qout.scale, qout.zero_point), where="mid", lw=1, label="the uint8 table"
    )
    ax.set_xlabel("input (dequantized)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_histogram(path):
    plt = _plt()
    h = _quant()["v2-digits"]["histogram"]
    edges, counts = np.array(h["edges"]), np.array(h["counts"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="0.7")
    ax.set_yscale("log")
    ax.axvline(h["minmax"][1], color="C0", label=f"min/max: {h['minmax'][1]:.2f}")
    for i, (bits, (_, top)) in enumerate(h["histogram"].items()):
        ax.axvline(top, color=f"C{i + 1}", ls="--", label=f"histogram, {bits} bits: {top:.2f}")
    ax.set_title(f"calibration values of {h['layer']} (ReLU6) and the chosen top of the range", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_depthwise_ranges(path):
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    layers = _quant()["v2-digits"]["depthwise_ranges"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, layer in enumerate(layers):
        m = np.array(layer["channel_max"])
        ax.scatter(
            np.full(m.size, i) + np.random.default_rng(i).uniform(-0.25, 0.25, m.size), m, s=3, color="C0"
        )
        ax.plot([i - 0.35, i + 0.35], [m.max(), m.max()], color="C3")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # plain 0.2, 0.5, 1, 2, ...
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(
        range(len(layers)), [lay["layer"].replace(".conv", "") for lay in layers], rotation=90, fontsize=6
    )
    ax.set_ylabel("max |w| of a channel (BN folded)")
    ax.set_title(
        "Depthwise layers: each channel's range (dots); one per-tensor scale must cover the red line",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_sqnr(path):
    plt = _plt()
    rows = _quant()["v2-digits"]["sqnr"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot([r["sqnr_db"] for r in rows], marker=".")
    ax.set_xticks(range(len(rows)), [r["layer"].replace(".conv", "") for r in rows], rotation=90, fontsize=5)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Signal-to-quantization-noise ratio of each layer's output, int8 against float", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES = {
    "quant_affine.png": fig_affine,
    "quant_hardswish.png": fig_hardswish,
    "quant_histogram.png": fig_histogram,
    "quant_depthwise_ranges.png": fig_depthwise_ranges,
    "quant_sqnr.png": fig_sqnr,
}
