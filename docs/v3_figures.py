"""The MobileNetV3 chapter's tables and figures.

Read by ``docs/make_figures.py`` (which owns the generated blocks and the figure list).
Costs come from ``mobilenet.summary`` walking the same specs the models are built from; the
training run from ``docs/results/v3.json`` (``python docs/make_training_results.py --only
v3``); published accuracies and mult-adds are the papers'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from perf_figures import _md  # beside this file, as make_figures imports both

import mobilenet_arch as A
from mobilenet.summary import summarize, totals

RESULTS = Path(__file__).resolve().parent / "results"

# ImageNet top-1 (%) and mult-adds (M) as the papers print them: V2 paper Table 4, V3 paper
# Table 3 (float models, 224 px)
PUBLISHED = {"v2": (72.0, 300), "v3-large": (75.2, 219), "v3-small": (67.4, 56)}


def _elements(shape) -> int:
    return int(np.prod(shape))


def accounting(arch: str, resolution: int = 224) -> dict:
    """Mult-adds of ``arch`` split the ways a reader may count them: convolutions and linear
    layers (what ``mobilenet summary`` and the V1/V2 papers count), the squeeze-and-excite
    1x1s inside that, the SE channel scaling (one multiply per element it scales) and the
    hard-swish multiplies (one per element: ``x * relu6(x + 3) / 6``)."""
    rows = summarize(A.build_spec(arch), resolution)
    se_fc = sum(r.macs for r in rows if r.name.endswith((".fc1", ".fc2")))
    scaled, prev = 0, None
    for r in rows:
        if r.name.endswith(".fc1"):
            scaled += _elements(prev)
        elif not r.name.endswith(".fc2"):
            prev = r.output_shape
    hswish = sum(_elements(r.output_shape) for r in rows if r.type == "HardSwish")
    t = totals(rows)
    return {"params": t["params"], "macs": t["macs"], "se_fc": se_fc, "se_scale": scaled, "hswish": hswish}


def v3_costs() -> str:
    """V2 against the two V3 models: parameters, mult-adds, what the paper prints."""
    rows = []
    for arch in ("v2", "v3-large", "v3-small"):
        a = accounting(arch)
        top1, macs = PUBLISHED[arch]
        extra = a["macs"] + a["se_scale"] + a["hswish"]
        rows.append(
            (
                A.model_name(arch),
                f"{a['params']:,}",
                f"{a['macs'] / 1e6:.1f} M",
                f"{a['se_fc'] / 1e6:.2f} M" if a["se_fc"] else "-",
                f"{extra / 1e6:.1f} M",
                f"{macs} M",
                f"{top1}",
            )
        )
    table = _md(
        (
            "model (width 1, 224 px)",
            "parameters",
            "mult-adds (convs + linear)",
            "of which SE 1x1s",
            "+ SE scaling + h-swish multiplies",
            "paper's mult-adds",
            "paper's top-1 %",
        ),
        rows,
    )
    return (
        table
        + "\n\nParameters and mult-adds from `mobilenet summary` on the specs the models are built from."
    )


def v3_last_stage() -> str:
    """The efficient last stage (V3 paper section 5.1): pool the 7x7 map first, so the layer
    to 1280 (1024) channels acts on one vector, against V2's order (that layer as a 1x1 conv
    on the 7x7 map, then the pool)."""
    rows = []
    for arch in ("v3-large", "v3-small"):
        spec = A.build_spec(arch)
        n = len(dict(spec.children)["features"].children)
        by_name = {r.name: r for r in summarize(spec, 224)}
        c, h, w = by_name[f"features.{n - 1}.0"].output_shape  # the last 1x1 conv, before the pool
        hidden = by_name["classifier.0"]
        after = hidden.macs
        rows.append(
            (
                A.model_name(arch),
                f"{c} -> {hidden.output_shape[0]}",
                f"{h}x{w}",
                f"{h * w * after / 1e6:.1f} M",
                f"{after / 1e6:.2f} M",
            )
        )
    header = (
        "model",
        "layer",
        "map before the pool",
        "as a 1x1 conv before the pool (V2's order)",
        "after the pool (V3)",
    )
    return _md(header, rows)


def _v3_result():
    path = RESULTS / "v3.json"
    return json.loads(path.read_text()) if path.exists() else None


def v3_training() -> str:
    r = _v3_result()
    if r is None:
        return "(not run yet: `python docs/make_training_results.py --only v3`)"
    hist = r["history"]
    rows = [
        (h["epoch"], f"{h['lr']:.4f}", f"{h['train_accuracy']:.3f}", f"{h['test_accuracy']:.3f}")
        for h in hist
    ]
    m = r["machine"]
    v2 = RESULTS / "train.json"
    v2_line = ""
    if v2.exists():
        t = json.loads(v2.read_text())
        v2_line = f" The MobileNetV2-0.5 run of chapter 5, same data and schedule: {t['test_accuracy']:.3f}."
    low = [h["epoch"] for h in hist if h["test_accuracy"] < 0.2]  # 10 classes: chance is 0.1
    chance = max(low) if low else 0
    return (
        _md(("epoch", "lr (end)", "train accuracy", "test accuracy (eval mode)"), rows)
        + f"\n\nFinal test accuracy {r['test_accuracy']:.3f} after {r['epochs']} epochs "
        f"({r['seconds']:.0f} s of training); the test accuracy stays at chance through epoch {chance}."
        f"{v2_line} "
        f"`{r['command']}`. Measured on {m['cpus']} cores, {m['threads']} Numba threads; Python "
        f"{m['python']}, NumPy {m['numpy']}, Numba {m['numba']}, torch {m['torch']}."
    )


PERF = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "perf.json"
BACKENDS = ("numba", "torch", "onnxruntime")


def v3_latency() -> str:
    """V2 and both V3 models on three runtimes, from ``make bench`` (``python -m benchmarks.perf
    --tasks v3``), each side alone in its process: batch-1 inference at 224 px, and a training
    step (forward, backward, SGD update) of batch 16 at 128 px."""
    res = json.loads(PERF.read_text()).get("v3") if PERF.exists() else None
    if res is None:
        return "(not run yet: `python -m benchmarks.perf --tasks v3`)"
    rows = []
    for case in res["cases"]:
        arch, train = case.split()[0], case.endswith("train")
        macs = totals(summarize(A.build_spec(arch), 128 if train else 224))["macs"]
        ms = {b: res["results"].get(b, {}).get(case, {}).get("ms") for b in BACKENDS}
        cells = [f"{ms[b]:.2f}" if ms[b] else "-" for b in BACKENDS]
        ratio = f"{ms['numba'] / ms['torch']:.2f}x" if ms["numba"] and ms["torch"] else "-"
        what = "training step, b16, 128 px" if train else "inference, b1, 224 px"
        rows.append((A.model_name(arch), what, f"{macs / 1e6:.0f} M", *cells, ratio))
    m = res["machine"]
    v = res["versions"]
    header = (
        "model (width 1)",
        "case",
        "mult-adds per image",
        *(f"{b} ms" for b in BACKENDS),
        "numba / torch",
    )

    def written(arch):  # elements the convolutions write at 224 px: each one pass a runtime may add
        return sum(_elements(r.output_shape) for r in summarize(A.build_spec(arch), 224) if "Conv" in r.type)

    inf = {arch: f"{arch} 1 224px b1 infer" for arch in ("v2", "v3-large")}
    gains = {
        b: res["results"][b][inf["v2"]]["ms"] / res["results"][b][inf["v3-large"]]["ms"]
        for b in BACKENDS
        if all(k in res["results"].get(b, {}) for k in inf.values())
    }
    macs = {a: totals(summarize(A.build_spec(a), 224))["macs"] for a in inf}
    most = max(gains, key=gains.get)
    gain_line = (
        f"\n\nFrom MobileNetV2 to V3-Large at batch 1: {macs['v2'] / macs['v3-large']:.2f}x fewer mult-adds"
        " and"
        f" {written('v2') / written('v3-large'):.2f}x fewer elements written by convolutions"
        f" ({written('v2') / 1e6:.1f} M against {written('v3-large') / 1e6:.1f} M); the time falls "
        + ", ".join(f"{b} {g:.2f}x" for b, g in gains.items())
        + f". {most} gains the most."
    )
    return (
        _md(header, rows)
        + gain_line
        + f"\n\nMedians of the best of {res['rounds']} rounds, each backend alone in its process, "
        f"{res['threads']} threads on every side; {m['cpu']} ({m['simd']}, {m['cores']} cores); "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ". onnxruntime runs inference only."
    )


TABLES = {
    "v3_costs": v3_costs,
    "v3_last_stage": v3_last_stage,
    "v3_training": v3_training,
    "v3_latency": v3_latency,
}


def fig_hard_activations(path):
    """Hard-swish against swish and hard-sigmoid against sigmoid, with their derivatives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from numpy_impl import functional as F

    x = np.linspace(-6, 6, 1201)
    one = np.ones_like(x)
    sig = 1 / (1 + np.exp(-x))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    pairs = [
        ("sigmoid", sig, sig * (1 - sig), "hard-sigmoid", F.hardsigmoid(x), F.hardsigmoid_backward(one, x)),
        (
            "swish",
            x * sig,
            sig + x * sig * (1 - sig),
            "hard-swish",
            F.hardswish(x),
            F.hardswish_backward(one, x),
        ),
    ]
    for ax, (name, f, df, hname, h, dh) in zip(axes, pairs):
        ax.plot(x, f, color="tab:blue", label=name)
        ax.plot(x, h, color="tab:red", label=hname)
        ax.plot(x, df, color="tab:blue", ls=":", label=f"{name}'")
        ax.plot(x, dh, color="tab:red", ls=":", label=f"{hname}' (our backward)")
        ax.axvline(-3, color="grey", lw=0.6)
        ax.axvline(3, color="grey", lw=0.6)
        ax.set(
            xlabel="x", title=f"{hname} = {'relu6(x + 3) / 6' if 'sigmoid' in name else 'x relu6(x + 3) / 6'}"
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


FIGURES = {"v3_hard_activations.png": fig_hard_activations}
