"""Regenerate every table and figure of the tutorial from the project's own code.

    python docs/make_figures.py           # rewrite the generated blocks of docs/*.md and the PNGs
    python docs/make_figures.py --check   # exit 1 if a generated block is out of date (run by the tests)

A generated block in a Markdown file sits between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``; NAME is a key of :data:`TABLES`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet.summary import layer_rows, summarize, summary_dict, totals

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_figures  # noqa: E402  (the training chapter's data-parallel tables and figure)
import drawings  # noqa: E402  (drawings made by code)
import excerpts  # noqa: E402  (the code the chapters show, pulled from the source)
import families  # noqa: E402  (MobileNet among other families: the papers' tables recounted)
import perf_figures  # noqa: E402  (the performance chapter's tables and figures, beside this file)
import quant_figures  # noqa: E402  (the quantization chapter's)
import run_figures  # noqa: E402  (training curves, transfer, embeddings, detection, kernel benchmarks)
import v3_figures  # noqa: E402  (the MobileNetV3 chapter's)

DOCS = Path(__file__).resolve().parent
FIGURES = DOCS / "figures"


def _md(header, rows) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


# --- depthwise separable costs ---------------------------------------------------------


def separable_costs(m: int, n: int, k: int, f: int) -> dict:
    """Mult-adds and weights of a full k x k conv and of its depthwise separable
    replacement, M -> N channels on an f x f map, counted by the summary code."""
    full = layer_rows(A.Conv(m, n, k), (m, f, f))
    sep = layer_rows(A._seq(A.Conv(m, m, k, groups=m), A.Conv(m, n, 1)), (m, f, f))
    return {"full": totals(full), "separable": totals(sep)}


def table3() -> str:
    """V1 paper Table 3: one 14x14, 512 -> 512 layer, and what alpha and rho do to it."""
    rows = []
    for label, m, f, paper in [
        ("Convolution", 512, 14, (462, 2.36)),
        ("Depthwise separable conv", 512, 14, (52.3, 0.27)),
        ("alpha = 0.75", 384, 14, (29.6, 0.15)),
        ("rho = 0.714", 384, 10, (15.1, 0.15)),
    ]:
        c = separable_costs(m, m, 3, f)["full" if label == "Convolution" else "separable"]
        rows.append((label, f"{c['macs'] / 1e6:.1f}", f"{c['params'] / 1e6:.2f}", paper[0], paper[1]))
    return _md(("layer (M = N = 512, D_F = 14)", "M mult-adds", "M params", "paper", "paper params"), rows)


def v1_reduction() -> str:
    """Per-layer cost of each V1 depthwise separable layer against the full conv it replaces."""
    rows = []
    shape = (32, 112, 112)
    for i, (n, s) in enumerate(A.V1_LAYERS, start=1):
        m, f = shape[0], (shape[1] - 1) // s + 1  # output side of the stride-s depthwise
        costs = separable_costs(m, n, 3, f)  # costs depend on the output map only
        full, sep = costs["full"]["macs"], costs["separable"]["macs"]
        rows.append(
            (
                f"features.{i}",
                f"{m} -> {n}",
                f"{f}x{f}",
                s,
                f"{full / 1e6:.1f}",
                f"{sep / 1e6:.1f}",
                f"{full / sep:.1f}x",
                f"{1 / (1 / n + 1 / 9):.1f}x",
            )
        )
        shape = (n, f, f)
    header = ("layer", "M -> N", "D_F", "stride", "full conv M", "separable M", "saving", "1/(1/N + 1/9)")
    return _md(header, rows)


# --- width and resolution multipliers ---------------------------------------------------

V1_PAPER = {
    (1.0, 224): (70.6, 569, 4.2),
    (0.75, 224): (68.4, 325, 2.6),
    (0.5, 224): (63.7, 149, 1.3),
    (0.25, 224): (50.6, 41, 0.5),
    (1.0, 192): (69.1, 418, 4.2),
    (1.0, 160): (67.2, 290, 4.2),
    (1.0, 128): (64.4, 186, 4.2),
}


def v1_multipliers() -> str:
    rows = []
    for (w, r), (top1, macs, params) in V1_PAPER.items():
        d = summary_dict("v1", w, r)
        rows.append((w, r, f"{d['macs'] / 1e6:.1f}", macs, f"{d['params'] / 1e6:.2f}", params, top1))
    header = ("alpha", "resolution", "M mult-adds", "paper", "M params", "paper", "paper top-1 %")
    return _md(header, rows)


# V1 paper Table 2: (share of mult-adds %, share of parameters %) by kind of layer
V1_TABLE2 = {
    "Conv 1x1": (94.86, 74.59),
    "Conv DW 3x3": (3.06, 1.06),
    "Conv 3x3": (1.19, 0.02),
    "Fully connected": (0.18, 24.33),
}


def v1_shares() -> str:
    """The V1 paper's Table 2: where MobileNetV1's mult-adds and parameters are, by kind of layer."""
    rows = summarize(A.v1_spec(), 224)
    kinds = {
        "Conv 1x1": lambda t: t.startswith("Conv1x1"),
        "Conv DW 3x3": lambda t: t.startswith("DWConv"),
        "Conv 3x3": lambda t: t.startswith("Conv3x3"),
        "Fully connected": lambda t: t == "Linear",
    }
    total = totals(rows)

    def weights(r):  # as the paper counts: no batch norm, no bias
        return r.params - (r.output_shape[0] if r.type == "Linear" else 0)

    all_weights = sum(weights(r) for r in rows if any(match(r.type) for match in kinds.values()))
    out, macs = [], {}
    for kind, match in kinds.items():
        m = sum(r.macs for r in rows if match(r.type))
        p = sum(weights(r) for r in rows if match(r.type))
        macs[kind] = m
        paper = V1_TABLE2[kind]
        out.append(
            (kind, f"{100 * m / total['macs']:.2f}", paper[0], f"{100 * p / all_weights:.2f}", paper[1])
        )
    first = macs["Conv 3x3"]
    note = (
        f"\n\nParameters as the paper counts them: the weights of the convolutions and the classifier,"
        " without batch norm and biases. The first 3x3 convolution"
        f" does {first / 1e6:.1f} M of {total['macs'] / 1e6:.1f} M mult-adds,"
        f" {100 * first / total['macs']:.2f}%; the paper prints {V1_TABLE2['Conv 3x3'][0]}%, and only"
        f" {100 * first / total['macs']:.2f} makes its four shares add up to"
        f" {sum(v[0] for k, v in V1_TABLE2.items() if k != 'Conv 3x3') + 100 * first / total['macs']:.2f}%."
    )
    return _md(("type", "mult-adds %", "paper", "parameters %", "paper"), out) + note


V1_TABLE4 = {False: (71.7, 4866, 29.3), True: (70.6, 569, 4.2)}  # separable: (top-1 %, M mult-adds, M params)


def v1_full_conv() -> str:
    """The V1 paper's Table 4: MobileNet with full 3x3 convolutions against the separable one."""
    rows = []
    for separable, (top1, macs, params) in V1_TABLE4.items():
        t = totals(summarize(A.v1_spec(separable=separable), 224))
        name = "MobileNet (depthwise separable)" if separable else "Conv MobileNet (full 3x3 convolutions)"
        rows.append((name, f"{t['macs'] / 1e6:.1f}", macs, f"{t['params'] / 1e6:.2f}", params, top1))
    full, sep = (totals(summarize(A.v1_spec(separable=s), 224)) for s in (False, True))
    header = ("model, 224 px", "M mult-adds", "paper", "M params", "paper", "paper top-1 %")
    return _md(header, rows) + (
        f"\n\nThe separable network does {full['macs'] / sep['macs']:.1f}x fewer mult-adds with "
        f"{full['params'] / sep['params']:.1f}x fewer parameters, for "
        f"{V1_TABLE4[False][0] - V1_TABLE4[True][0]:.1f} points of the paper's top-1."
    )


V2_SLIM = {
    1.0: (300, 221, 154, 99, 56),
    0.75: (209, 153, 107, 69, 39),
    0.5: (97, 71, 50, 32, 18),
    0.35: (59, 43, 30, 20, 11),
}
RESOLUTIONS = (224, 192, 160, 128, 96)


def v2_multipliers() -> str:
    rows = []
    for w, published in V2_SLIM.items():
        ours = [f"{summary_dict('v2', w, r)['macs'] / 1e6:.0f} ({p})" for r, p in zip(RESOLUTIONS, published)]
        rows.append((w, f"{summary_dict('v2', w, 224)['params'] / 1e6:.2f}", *ours))
    return _md(("alpha", "M params", *(f"{r} px" for r in RESOLUTIONS)), rows)


def v2_blocks() -> str:
    """The V2 stages (paper Table 2) as built, with the expanded width of each block."""
    rows = []
    shape = (3, 224, 224)
    spec = A.v2_spec()
    for name, block in dict(spec.children)["features"]:
        block_rows = layer_rows(block, shape)
        out = block_rows[-1].output_shape
        if isinstance(block, A.Block):
            convs = [c for _, c in A.walk(block) if isinstance(c, A.Conv)]
            hidden = convs[-1].in_channels
            kind = f"bottleneck t={hidden // shape[0]}" + (" + residual" if block.residual else "")
        else:
            kind, hidden = "conv", "-"
        rows.append(
            (
                f"features.{name}",
                kind,
                "x".join(map(str, shape)),
                hidden,
                "x".join(map(str, out)),
                f"{totals(block_rows)['macs'] / 1e6:.1f}",
            )
        )
        shape = out
    return _md(("block", "kind", "input", "expanded", "output", "M mult-adds"), rows)


# --- kernels: the road and the measured results (from benchmarks/results/*.json) ---------

RESULTS = DOCS.parent / "benchmarks" / "results"


def _load(name):
    import json

    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _versions(kind):
    """(number, description) of each numbered version in depthwise_versions' docstring."""
    import kernels.depthwise_versions as V

    doc = V.__doc__.split(f"{kind} versions", 1)[1]
    out, current = [], None
    for line in doc.splitlines()[1:]:
        m = re.match(r"\s{3,4}(\d+)\s{2}(.*)", line)
        if m:
            current = [int(m.group(1)), m.group(2).strip()]
            out.append(current)
        elif current and line.startswith("       ") and line.strip():
            current[1] += " " + line.strip()
        elif out and line.strip() and not line.startswith(" "):
            break
    return out


def depthwise_road() -> str:
    """Each numbered version's time at three layer shapes, from ``make bench`` (separate processes)."""
    res = _load("bench")
    s = (res or {}).get("summary", {})
    road, dw = s.get("versions", {}).get("numba", {}), s.get("depthwise", {})
    shapes = [(32, 112, 1), (144, 56, 1), (576, 14, 2)]
    keys = [f"b1 C{c} {h}x{h} s{st}" for c, h, st in shapes]
    out = []
    for kind, prefix in (("Forward", "fwd"), ("Backward", "bwd")):
        for v, text in _versions(kind):
            t = [
                f"{road[f'{prefix} v{v} {k}']['us']:.0f}" if f"{prefix} v{v} {k}" in road else "-"
                for k in keys
            ]
            out.append((f"{prefix} v{v}", text, *t))
        cl = dw.get("torch_cl", {})
        t = [f"{cl[f'{prefix} {k}']['us']:.0f}" if f"{prefix} {k}" in cl else "-" for k in keys]
        out.append((f"torch {prefix}", "oneDNN, channels_last", *t))
    header = ("version", "what changed", *(f"C{c} {h}x{h} s{st} (us)" for c, h, st in shapes))
    note = f"\n\n{_bench_machine(res)}" if res else "\n\n(run `make bench` to time the versions)"
    return _md(header, out) + note


def _bench_machine(res) -> str:
    m, v = res["machine"], res["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "onnxruntime") if k in v)
    return (
        f"{m['cpu']} ({m['simd']}), {res['threads']} threads on every side, {libs}; each side alone in "
        f"its process, {res['rounds']} alternating rounds, best round's median."
    )


RATIO_TARGETS = {  # bench.json's whole-model targets timed by other tasks too: case, goal ratio
    "MobileNetV2-1.0 infer b1 224": ("inference, batch 1, 224 px", 0.5),
    "MobileNetV2-1.0 train b16 128": ("training step, batch 16, 128 px", 1.0),
}


def _target_row(t) -> tuple:
    """A target of bench.json; a whole-model one is judged on every task's timing of it."""
    status = "met" if t["met"] else "not met"
    if t["target"] not in RATIO_TARGETS:
        return t["target"], t["goal"], t["measured"], status
    case, goal = RATIO_TARGETS[t["target"]]
    rs = perf_figures.ratios(case)
    met = sum(r <= goal for r in rs)
    if len(rs) > 1:
        status = (
            "met" if met == len(rs) else ("not met" if met == 0 else f"met in {met} of {len(rs)} timings")
        )
        measured = f"{t['measured']}; every timing of this run: {min(rs):.2f}x to {max(rs):.2f}x"
        return t["target"], t["goal"], measured, status
    return t["target"], t["goal"], t["measured"], status


def machine_ceilings() -> tuple:
    """(memory bandwidth GB/s, GEMM peak GFLOP/s): chapter 9's roofline, the one measurement of them."""
    perf = perf_figures._load("perf")
    if not perf or "roofline" not in perf:
        return None
    c = perf_figures.ceilings(perf)
    return c["dram"], c["peak"]


def kernel_results() -> str:
    """The targets table of ``make bench`` (benchmarks/results/bench.json) and the kernels-only figures."""
    res, kr = _load("bench"), _load("kernels")
    if not res:
        return "(run `make bench` to produce benchmarks/results/)"
    out = [_target_row(t) for t in res["targets"]]
    ceil = machine_ceilings()
    if ceil:
        rates = f"{ceil[0]:.1f} GB/s / {ceil[1]:.0f} GFLOP/s"
        out.append(("memory bandwidth / GEMM peak (the roofline of chapter 9)", "measured", rates, "-"))
    if kr and "compile" in kr:
        c = kr["compile"]
        times = f"{c['empty_cache_s']:.0f} s empty cache, {c['warm_cache_s']:.2f} s cached"
        out.append(("first-call compile (small model fwd+bwd+eval)", "measured", times, "-"))
    return _md(("target", "goal", "measured", "status"), out) + f"\n\n{_bench_machine(res)}"


def headline() -> str:
    """One sentence for the README: the whole-model speeds against torch, from ``make bench``."""
    res = _load("bench")
    s = (res or {}).get("summary", {})
    parts = []
    for task, case, what in (
        ("model", "infer b1 224", "MobileNetV2-1.0/224 inference at batch 1"),
        ("train", "train b16 128", "a batch-16 128 px training step"),
    ):
        t = s.get(task, {})
        if "numba" in t and case in t["numba"] and "torch_cl" in t:
            r = perf_figures.ratio_range(RATIO_TARGETS[f"MobileNetV2-1.0 {case}"][0])
            parts.append(f"{what} in {r[0]:.2f}x to {r[2]:.2f}x torch eager's time (median {r[1]:.2f}x)")
    if not parts:
        return "(run `make bench` for the measured speeds)"
    m = res["machine"]
    line = (
        f"On this {m['cores']}-core machine ({m['cpu']}) the Numba backend runs "
        + " and ".join(parts)
        + " (each alone in its process, over the tasks of one `make bench` run that timed it)."
    )
    v3 = (_load("perf") or {}).get("v3")
    if v3 and v3.get("machine") == m:
        ms = v3["results"]
        ratios = [
            f"{ms['numba'][case]['ms'] / ms['torch'][case]['ms']:.2f}x"
            for case in ("v3-large 1 224px b1 infer", "v3-small 1 224px b1 infer")
            if case in ms.get("numba", {}) and case in ms.get("torch", {})
        ]
        if len(ratios) == 2:
            line += (
                f" MobileNetV3-Large and -Small inference at batch 1 take {ratios[0]} and"
                f" {ratios[1]} torch eager's time."
            )
    return line


def bench_gaps() -> str:
    """The depthwise layers still slower than torch, with each side's GB/s against the copy bandwidth."""
    res = _load("bench")
    if not res or not res.get("depthwise"):
        return "(run `make bench` to produce benchmarks/results/)"
    ceil = machine_ceilings()
    rows = [
        (
            r["dir"],
            r["batch"],
            r["C"],
            f"{r['H']}x{r['W']}",
            r["stride"],
            f"{r['speedup']:.2f}x",
            f"{r['ours_GBps']:.1f}",
            f"{r['torch_GBps']:.1f}",
        )
        for r in res["depthwise"]
        if r["speedup"] < 1
    ]
    if not rows:
        return "Every depthwise layer is at least as fast as torch's faster layout."
    note = "\n\nGB/s counts the bytes a layer must move at least (each input read once, each output once)."
    if ceil:
        note += f" This machine's memory bandwidth (the roofline of chapter 9): {ceil[0]:.1f} GB/s."
    return _md(("dir", "batch", "C", "H x W", "stride", "speed-up", "ours GB/s", "torch GB/s"), rows) + note


def v2_b1_gap() -> str:
    """MobileNetV2-1.0 inference at batch 1 against the goal of half torch's time: every timing of
    the run, the arithmetic rate each side reaches, and where numba's time goes."""
    timed = perf_figures.same_config_timings("inference, batch 1, 224 px")
    r = perf_figures.ratio_range("inference, batch 1, 224 px", timed)
    ceil, prof = machine_ceilings(), _load("step_profile")
    if not r or not ceil:
        return "(run `make bench` to produce benchmarks/results/)"
    goal = RATIO_TARGETS["MobileNetV2-1.0 infer b1 224"][1]
    met = sum(r <= goal for r in perf_figures.ratios("inference, batch 1, 224 px", timed))
    flop = 2 * summary_dict("v2")["macs"]
    sweep = dict(timed)["alpha and rho sweep (`benchmarks.perf`)"]
    rates = ", ".join(
        f"{b} {flop / sweep[b] / 1e6:.0f} GFLOP/s ({sweep[b]:.2f} ms)"
        for b in perf_figures.BACKENDS
        if b in sweep
    )
    lines = [
        f"- numba / torch over the run's timings: {r[0]:.2f}x to {r[2]:.2f}x (median {r[1]:.2f}x); the goal"
        f" of {goal}x holds in {met} of them (chapter 9 lists each).",
        f"- {flop / 1e9:.2f} GFLOP per image. In the sweep: {rates}; the GEMM peak is {ceil[1]:.0f} GFLOP/s,"
        f" {flop / ceil[1] / 1e6:.2f} ms for the whole network if every layer ran at it.",
    ]
    if prof:
        numba = next(s for s in prof["infer"] if s["side"] == "numba")
        shares = perf_figures.breakdown(numba)
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            "- Where numba's time goes (per-op profile): " + ", ".join(f"{g} {v:.0%}" for g, v in top) + "."
        )
    return "\n".join(lines)


def step_profile() -> str:
    """Where a training step's time goes, per op, both sides (benchmarks/profile_step.py)."""
    res = _load("step_profile")
    if not res:
        return "(run `make bench` to produce benchmarks/results/step_profile.json)"
    out = []
    for side in res["sides"]:
        ops = sorted(side["ops_ms"].items(), key=lambda kv: -kv[1])[:8]
        out.append(f"**{side['side']}**: {side['step_ms']:.0f} ms per step\n")
        rows = [(k, f"{v:.1f}", f"{v / side['step_ms']:.0%}") for k, v in ops]
        out.append(_md(("op", "ms per step", "share"), rows))
        out.append("")
    m = res["machine"]
    note = (
        f"\n{m['cpu']} ({m['simd']}), {res['threads']} threads, each side alone in its process; "
        "torch: the profiler's self CPU time per aten op."
    )
    return "\n".join(out) + note


# --- training chapters: rendered from docs/results/*.json (docs/make_training_results.py) ----

TRAIN_RESULTS = DOCS / "results"


def _train_result(name):
    import json

    path = TRAIN_RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine_line(r) -> str:
    m = r["machine"]
    return (
        f"Measured on {m['cpus']} cores, {m['threads']} Numba threads; Python {m['python']}, "
        f"NumPy {m['numpy']}, Numba {m['numba']}, torch {m['torch']}."
    )


NOT_RUN = "(not run yet: `python docs/make_training_results.py`)"


def v2_ablation() -> str:
    """The V2 paper's Figure 6 on digits: each variant's test accuracy over three seeds."""
    r = _train_result("ablation")
    if r is None:
        return "(not run yet: `python docs/make_training_results.py --only ablation`)"
    rows, means = [], {}
    for name, accs in r["runs"].items():
        a = np.array(accs)
        means[name] = a.mean()
        spec = ", ".join(f"{k}={v!r}" for k, v in r.get("variants", {}).get(name, {}).items()) or "defaults"
        rows.append(
            (
                name,
                f"`{spec}`",
                " / ".join(f"{100 * v:.2f}" for v in accs),
                f"{100 * a.mean():.2f}",
                f"{100 * a.std():.2f}",
            )
        )
    c = r["config"]
    ref, *others = means
    lines = []
    for name in others:
        gap = 100 * (means[ref] - means[name])
        spread = 100 * max(np.std(r["runs"][ref]), np.std(r["runs"][name]))
        verdict = "ahead of" if gap > 0 else "behind"
        within = " (within the larger of the two spreads across seeds)" if abs(gap) <= spread else ""
        lines.append(f"- The paper's block is {abs(gap):.2f} points {verdict} '{name}'{within}.")
    header = (
        "variant",
        "`v2_spec` keywords",
        "test accuracy %, seeds " + ", ".join(map(str, r["seeds"])),
        "mean",
        "std",
    )
    return (
        _md(header, rows)
        + f"\n\nMobileNetV2-{c['width_mult']:g} at {c['resolution']} px on {c['data']}, "
        + f"{c['epochs']} epochs, {c['backend']} backend, the training chapter's other settings; the mean of "
        + f"{len(r['seeds'])} seeds.\n\n"
        + "\n".join(lines)
        + f"\n\n{_machine_line(r)}"
    )


def training_run() -> str:
    r = _train_result("train")
    if r is None:
        return NOT_RUN
    rows = [
        (
            h["epoch"],
            f"{h['lr']:.4f}",
            f"{h['train_loss']:.3f}",
            f"{h['train_accuracy']:.3f}",
            f"{h['test_loss']:.3f}",
            f"{h['test_accuracy']:.3f}",
            f"{h['images_per_second']:.0f}",
        )
        for h in r["history"]
    ]
    header = ("epoch", "lr (end)", "train loss", "train acc", "test loss", "test acc", "images/s")
    head = (
        f"`{r['command']}`: test accuracy **{r['test_accuracy']:.4f}** after {r['epochs']} epochs, "
        f"{r['seconds']:.0f} s of training ({r['images_per_second']:.0f} images/s). {_machine_line(r)}"
    )
    return head + "\n\n" + _md(header, rows)


def loss_overlay() -> str:
    r = _train_result("overlay")
    if r is None:
        return NOT_RUN
    c, first = r["config"], r["first_step_rel_diff_above_1e-2"]
    drift = "never" if first is None else f"first at step {first}"
    acc = r["test_accuracy"]
    return (
        f"{r['steps']} steps of batch {c['batch_size']}, MobileNetV2-{c['width_mult']:g} at "
        f"{c['resolution']} px, float32. Relative loss difference: at most "
        f"{r['max_rel_diff_first_10_steps']:.1e} over the first 10 steps, "
        f"median {r['median_rel_diff']:.1e} over the run, above 1e-2 {drift}. Test accuracy after "
        f"the run: NumPy model {acc['numba']:.3f}, torch {acc['torch']:.3f}. In float64 after 200 warm-up "
        f"steps, {r['float64_warm']['steps']} steps: at most {r['float64_warm']['max_rel_diff']:.1e}. "
        + _machine_line(r)
    )


def transfer_results() -> str:
    r = _train_result("transfer")
    if r is None or "summary" not in r:
        return NOT_RUN
    from mobilenet.apps.transfer import transfer_table

    tail = (
        f"`{r['command']}` (`mobilenet pretrain`'s defaults, then {r['steps']} SGD steps per adaptation at "
        f"a peak learning rate of {r['lr']:g}). {_machine_line(r)}"
    )
    return transfer_table(r).rstrip() + "\n\n" + tail


def transfer_findings() -> str:
    """What the transfer table says, in sentences whose numbers come from the same results."""
    r = _train_result("transfer")
    if r is None or "summary" not in r:
        return NOT_RUN
    from mobilenet.apps.transfer import METHODS, TARGETS

    mean = {(s["target"], s["k"], s["method"]): s["mean"] for s in r["summary"]}
    lines = []
    for target in dict.fromkeys(s["target"] for s in r["summary"]):
        for k in sorted({s["k"] for s in r["summary"] if s["target"] == target}):
            best = max(METHODS, key=lambda m: mean[(target, k, m)])
            gain = mean[(target, k, "finetune_last")] - mean[(target, k, "scratch")]
            lines.append(
                f"- {TARGETS[target]}, k = {k}: best is {METHODS[best].split(' (')[0]} "
                f"({mean[(target, k, best)]:.3f}); fine-tuning the last blocks "
                f"{'beats' if gain > 0 else 'trails'} training from scratch by {abs(gain) * 100:.1f} points."
            )
    return "\n".join(lines)


def embed_results() -> str:
    r = _train_result("embed")
    if r is None or "phases" not in r:
        return NOT_RUN
    from mobilenet.apps.embed import embed_glyphs_table

    soft, arc = r["phases"]["softmax"], r["phases"]["arcface"]
    c = arc["config"]
    phases = (
        f"Pretraining: the softmax classifier, {soft['epochs']} epochs in {soft['seconds'] / 60:.1f} minutes "
        f"(test accuracy {soft['test_accuracy']:.3f}); then ArcFace from its weights, {arc['epochs']} epochs "
        f"in {arc['seconds'] / 60:.1f} minutes (s = {c['arcface_scale']:g}, m = {c['arcface_margin']:g}, "
        f"a {c['embed_dim']}-value embedding; test accuracy {arc['test_accuracy']:.3f} by nearest centre)."
    )
    return f"{embed_glyphs_table(r).rstrip()}\n\n{phases}\n\n`{r['command']}`. {_machine_line(r)}"


def embed_findings() -> str:
    """Whether the metric embedding beats each baseline, from the same results."""
    r = _train_result("embed")
    if r is None or "phases" not in r:
        return NOT_RUN
    res = r["results"]
    metric, pooled = (next(k for k in res if k.startswith(p)) for p in ("metric", "ArcFace"))
    keys = (("identification_top1", "top-1"), ("auc", "AUC"), ("tar_at_far_1e-2", "TAR at FAR 1e-2"))

    def compare(a, b):
        diffs = ", ".join(f"{label} {res[a][k] - res[b][k]:+.3f}" for k, label in keys)
        wins = all(res[a][k] > res[b][k] for k in ("identification_top1", "auc"))
        draws = [
            f"{sum(x > y for x, y in zip(res[a][f'{k}_draws'], res[b][f'{k}_draws']))} of "
            f"{len(res[a][f'{k}_draws'])} draws in {label}"
            for k, label in keys[:2]
        ]
        verdict = "better" if wins else "not better"
        return f"{diffs} ({verdict} on average in both top-1 and AUC; higher in {' and '.join(draws)})"

    lines = [
        f"- the metric embedding against {b}: {compare(metric, b)}" for b in res if b not in (metric, pooled)
    ]
    lines.append(
        f"- the ArcFace network's pooled features against the metric embedding: {compare(pooled, metric)}"
    )
    return "\n".join(lines)


# --- detection chapter ---------------------------------------------------------------------------


def detect_heads() -> str:
    """SSDLite's cost, with its heads against SSD's regular 3x3 heads (the V2 paper's comparison)."""
    from mobilenet.summary import ssdlite_summary

    rows = []
    for width, res, classes, what in (
        (1.0, 320, 91, "the V2 paper's setting (COCO, 90 classes + background)"),
        (0.5, 128, 7, "this chapter's (6 classes + background)"),
    ):
        d = ssdlite_summary(width, res, classes)
        rows.append(
            (
                what,
                f"{width:g}",
                res,
                f"{d['params'] / 1e6:.2f} M",
                f"{d['macs'] / 1e6:.0f} M",
                f"{d['head_macs'] / 1e6:.1f} M",
                f"{d['regular_head_macs'] / 1e6:.1f} M",
                f"{d['regular_head_macs'] / d['head_macs']:.1f}x",
            )
        )
    header = ("setting", "alpha", "px", "params", "mult-adds", "heads", "regular 3x3 heads", "saving")
    return _md(header, rows)


def _detect_result():
    return _train_result("detect")


def detect_results() -> str:
    r = _detect_result()
    if r is None:
        return NOT_RUN
    rows = []
    for backend, m in r["runs"].items():
        rows.append(
            (
                backend,
                f"{m['map_50']:.3f}",
                f"{m['map_50_95']:.3f}",
                m["test_images"],
                m["steps"],
                f"{m['seconds_per_step']:.3f}",
                f"{m['wall_seconds'] / 60:.1f}",
            )
        )
    header = (
        "backend",
        "mAP@0.5",
        "mAP@[.5:.95]",
        "held-out scenes",
        "steps",
        "s / step",
        "whole command (min)",
    )
    cfg = next(iter(r["runs"].values()))["config"]
    head = (
        f"`{r['command']}`: SSDLite-MobileNetV2-{cfg['width_mult']:g} at {cfg['resolution']} px, "
        f"{cfg['train_size']} training scenes, {cfg['epochs']} epochs of batch {cfg['batch_size']}. "
        f"Each backend ran alone in its own process. {_machine_line(r)}"
    )
    return head + "\n\n" + _md(header, rows)


def detect_ap() -> str:
    r = _detect_result()
    if r is None:
        return NOT_RUN
    runs = r["runs"]
    classes = list(next(iter(runs.values()))["per_class"])
    rows = [(c, *(f"{m['per_class'][c]:.3f}" for m in runs.values())) for c in classes]
    return _md(("class", *(f"AP@[.5:.95], {b}" for b in runs)), rows)


def detect_history() -> str:
    r = _detect_result()
    if r is None:
        return NOT_RUN
    m = r["runs"]["numba"]
    rows = [
        (
            h["epoch"],
            f"{h['lr']:.4f}",
            f"{h['train_loc_loss']:.3f}",
            f"{h['train_conf_loss']:.3f}",
            f"{h['map_50']:.3f}",
            f"{h['map_50_95']:.3f}",
        )
        for h in m["history"]
        if h["map_50"] is not None
    ]
    return _md(("epoch", "lr (end)", "box loss", "class loss", "mAP@0.5", "mAP@[.5:.95]"), rows)


TABLES = {
    "detect_heads": detect_heads,
    "detect_results": detect_results,
    "detect_ap": detect_ap,
    "detect_history": detect_history,
    "training_run": training_run,
    "loss_overlay": loss_overlay,
    "transfer_results": transfer_results,
    "transfer_findings": transfer_findings,
    "embed_results": embed_results,
    "embed_findings": embed_findings,
    "depthwise_road": depthwise_road,
    "kernel_results": kernel_results,
    "bench_gaps": bench_gaps,
    "headline": headline,
    "step_profile": step_profile,
    "v2_b1_gap": v2_b1_gap,
    "table3": table3,
    "v1_reduction": v1_reduction,
    "v1_multipliers": v1_multipliers,
    "v1_full_conv": v1_full_conv,
    "v1_shares": v1_shares,
    "v2_ablation": v2_ablation,
    "v2_multipliers": v2_multipliers,
    "v2_blocks": v2_blocks,
}


# --- figures ------------------------------------------------------------------------------


def fig_cost_grid(path):
    """Mult-adds against parameters over the alpha x rho grid, both architectures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch, widths, marker in [
        ("v1", (0.25, 0.5, 0.75, 1.0), "o"),
        ("v2", (0.35, 0.5, 0.75, 1.0, 1.4), "s"),
    ]:
        for w in widths:
            pts = [summary_dict(arch, w, r) for r in (128, 160, 192, 224)]
            ax.plot(
                [p["params"] / 1e6 for p in pts],
                [p["macs"] / 1e6 for p in pts],
                marker=marker,
                label=f"{arch.upper()} alpha={w}",
            )
    for r in (128, 160, 192, 224):  # name the resolutions once, on the widest column
        p = summary_dict("v2", 1.4, r)
        ax.annotate(
            f"{r} px",
            (p["params"] / 1e6, p["macs"] / 1e6),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    perf_figures._plain_log_ticks(ax.xaxis, (0.5, 1, 2, 3, 4, 6))
    perf_figures._plain_log_ticks(ax.yaxis, (20, 50, 100, 200, 500))
    ax.set_xlim(right=8)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("multiply-adds (M)")
    ax.set_title("alpha moves along x and y; rho (128..224 px) only along y")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_relu_collapse(path, seed=0):
    """V2 paper Figure 1: a 2-D spiral embedded in n dims by a random T, ReLU, and back
    with the pseudo-inverse of T. Low n loses the manifold; high n keeps it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, 600)
    spiral = np.stack([t * np.cos(t), t * np.sin(t)]) / (4 * np.pi)  # (2, P)
    dims = (2, 3, 5, 15, 30)
    fig, axes = plt.subplots(1, len(dims) + 1, figsize=(13, 2.4))
    axes[0].scatter(*spiral, c=t, s=2, cmap="viridis")
    axes[0].set_title("input")
    for ax, n in zip(axes[1:], dims):
        tmat = rng.standard_normal((n, 2))  # (n, 2)
        back = np.linalg.pinv(tmat) @ np.maximum(tmat @ spiral, 0)  # (2, P)
        ax.scatter(*back, c=t, s=2, cmap="viridis")
        ax.set_title(f"n = {n}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_default_boxes(path, resolution=128):
    """SSDLite's default boxes on a generated scene: left, the six boxes of one cell on each of
    the first three maps; right, the default boxes matched to the scene's objects (IoU >= 0.5,
    or an object's best box)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilenet.data.scenes import make_scenes
    from numpy_impl import boxes as Bx
    from numpy_impl.detector import feature_sizes, ssdlite_default_boxes

    scene = make_scenes(1, resolution, seed=3)
    img = scene.x[0].transpose(1, 2, 0)
    gt, labels = scene.boxes[0], scene.labels[0]
    defaults = ssdlite_default_boxes(resolution)
    sizes = [h for h, _ in feature_sizes(resolution)]
    fig, axes = plt.subplots(1, 4, figsize=(13, 4.0))
    r = resolution

    def rect(ax, b, **kw):
        ax.add_patch(
            plt.Rectangle((b[0] * r, b[1] * r), (b[2] - b[0]) * r, (b[3] - b[1]) * r, fill=False, **kw)
        )

    start = 0
    for k, f in enumerate(sizes[:3]):
        ax = axes[k]
        ax.imshow(img, alpha=0.5)
        for g in range(1, f):  # the map's cells
            ax.axhline(g * r / f, color="white", lw=0.6)
            ax.axvline(g * r / f, color="white", lw=0.6)
        cell = (f // 2) * f + f // 2
        for j, b in enumerate(defaults[start + cell * 6 : start + cell * 6 + 6]):
            rect(ax, b, ec=plt.get_cmap("tab10")(j), lw=1.5)
        ax.set_title(f"map {k}: {f}x{f} cells, stride {r // f}\n6 default boxes of one cell", fontsize=9)
        start += f * f * 6
    matched, _ = Bx.match(gt, labels, defaults)
    axes[3].imshow(img)
    for b in defaults[matched > 0]:
        rect(axes[3], b, ec="yellow", lw=0.8)
    for b in gt:
        rect(axes[3], b, ec="red", lw=2)
    axes[3].set_title(
        f"{int((matched > 0).sum())} of {len(defaults)} default boxes\nmatched to {len(gt)} objects (red)",
        fontsize=9,
    )
    for ax in axes:
        ax.set_xlim(0, r)
        ax.set_ylim(r, 0)
        ax.set_axis_off()
    from matplotlib.lines import Line2D

    shapes = ("square, scale s_k", "square, sqrt(s_k s_k+1)", "2:1 wide", "1:2 tall", "3:1 wide", "1:3 tall")
    key = [Line2D([], [], color=plt.get_cmap("tab10")(j), lw=1.5, label=n) for j, n in enumerate(shapes)]
    key += [
        Line2D([], [], color="yellow", lw=0.8, label="a matched default box"),
        Line2D([], [], color="red", lw=2, label="an object"),
    ]
    fig.legend(handles=key, loc="lower center", ncol=8, fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_glyph_samples(path, seed=0):
    """The glyph corpus: eight draws of each of a dozen pretraining and held-out classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilenet.data.glyphs import load_corpus

    corpus = load_corpus()
    rng = np.random.default_rng(seed)
    pre = rng.choice(corpus.pretrain_classes, 8, replace=False)
    held = rng.choice(corpus.heldout, 4, replace=False)
    fig, axes = plt.subplots(12, 8, figsize=(6.4, 10.2))
    for row, c in enumerate([*pre, *held]):
        idx = np.flatnonzero(corpus.labels == c)[:8]
        for col, i in enumerate(idx):
            ax = axes[row, col]
            ax.imshow(corpus.images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        kind = "held out" if c in held else "pretraining"
        axes[row, 0].set_title(f"{corpus.chars[c]} ({kind})", fontsize=7, loc="left", pad=2)
    fig.suptitle(f"The glyph corpus: {len(corpus.chars)} classes, random draws", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES_BUILDERS = {
    "glyph_samples.png": fig_glyph_samples,
    "cost_grid.png": fig_cost_grid,
    "relu_collapse.png": fig_relu_collapse,
    "detect_default_boxes.png": fig_default_boxes,
}


TABLES.update(perf_figures.TABLES)
FIGURES_BUILDERS.update(perf_figures.FIGURES)
TABLES.update(v3_figures.TABLES)
FIGURES_BUILDERS.update(v3_figures.FIGURES)
TABLES.update(quant_figures.TABLES)
FIGURES_BUILDERS.update(quant_figures.FIGURES)
TABLES.update(dist_figures.TABLES)
FIGURES_BUILDERS.update(dist_figures.FIGURES)
FIGURES_BUILDERS.update(drawings.FIGURES)
TABLES.update(families.TABLES)
FIGURES_BUILDERS.update(families.FIGURES)
FIGURES_BUILDERS.update(run_figures.FIGURES)


def render(text: str) -> str:
    """``text`` with every generated block replaced by a fresh rendering."""

    def sub(match):
        name = match.group(1)
        if name not in TABLES:
            raise KeyError(f"unknown generated block {name!r}; known: {sorted(TABLES)}")
        return f"<!-- generated:{name} -->\n{TABLES[name]()}\n<!-- /generated:{name} -->"

    text = re.sub(r"<!-- generated:(\w+) -->.*?<!-- /generated:\1 -->", sub, text, flags=re.S)
    return excerpts.render(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that the docs are up to date")
    args = p.parse_args(argv)
    stale = []
    extra = [DOCS.parent / "benchmarks" / "README.md", DOCS.parent / "README.md"]
    for md in sorted(DOCS.glob("*.md")) + extra:
        text = md.read_text()
        new = render(text)
        if new != text:
            stale.append(md.name)
            if not args.check:
                md.write_text(new)
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python docs/make_figures.py", file=sys.stderr)
        return 1 if stale else 0
    FIGURES.mkdir(exist_ok=True)
    for name, build in FIGURES_BUILDERS.items():
        build(FIGURES / name)
    print(f"updated {len(stale)} Markdown file(s) and {len(FIGURES_BUILDERS)} figures in {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
