"""The figures of runs: training curves, transfer, embeddings, detection, the kernel benchmarks.

Each is drawn again from its results file (``docs/results/*.json``, written by
``docs/make_training_results.py``; ``benchmarks/results/bench.json``, written by ``make bench``)
with the library's own plotting function where the CLI draws the same figure for a user's run.
Read by ``docs/make_figures.py``, which owns the figure list.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from perf_figures import _plain_log_ticks, _pyplot  # beside this file

import mobilenet_arch as A

DOCS = Path(__file__).resolve().parent
TRAINING = DOCS / "results"
BENCH = DOCS.parent / "benchmarks" / "results" / "bench.json"


def _result(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _digits_curves(name: str):
    def build(path):
        from mobilenet.training.classify import plot_curves

        r = _result(TRAINING / f"{name}.json")
        if r is None:
            return
        c = r["config"]
        model = f"{A.model_name(c['arch'])}-{c['width_mult']:g}"
        title = f"{model} {c['resolution']}px on {c['data']} ({c['backend']})"
        plot_curves(r["history"], path, title)

    return build


def fig_transfer(path):
    from mobilenet.apps.transfer import plot_transfer

    r = _result(TRAINING / "transfer.json")
    if r is not None:
        plot_transfer(r, path)


def fig_embed(path):
    from mobilenet.apps.embed import plot_embed_glyphs

    r = _result(TRAINING / "embed.json")
    if r is not None:
        plot_embed_glyphs(r, path)


def fig_detect_curves(path):
    from mobilenet.detection.train import plot_curves

    r = _result(TRAINING / "detect.json")
    if r is None:
        return
    run = r["runs"]["numba"]
    c = run["config"]
    title = f"SSDLite-MobileNetV2-{c['width_mult']:g} {c['resolution']}px on {c['data']} ({c['backend']})"
    plot_curves(run["history"], path, title)


def fig_detect_predictions(path):
    """The trained detector's detections on the first held-out scenes (generated again from their
    seed), as ``mobilenet detect predict`` draws them, with the ground truth dashed."""
    from mobilenet.data.scenes import make_scenes
    from mobilenet.detection.predict import draw

    r = _result(TRAINING / "detect.json")
    p = (r or {}).get("predictions")
    if p is None:
        return
    scenes = make_scenes(p["scenes"], p["resolution"], seed=p["scene_seed"])
    plt = _pyplot()
    fig, axes = plt.subplots(2, (p["scenes"] + 1) // 2, figsize=(12, 6.2))
    for i, ax in enumerate(axes.ravel()):
        rgb = (scenes.x[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        f = p["found"][i]
        found = (np.array(f["boxes"]).reshape(-1, 4), np.array(f["scores"]), np.array(f["labels"]))
        draw(rgb, found, p["classes"], None, min_score=0.5, truth=scenes.boxes[i], ax=ax)
    fig.suptitle("held-out scenes: detections of score >= 0.5 (ground truth dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_loss_overlay(path):
    """The NumPy model's training loss beside torch's, step by step, and how far apart they are."""
    r = _result(TRAINING / "overlay.json")
    if r is None:
        return
    plt = _pyplot()
    a, b = np.array(r["losses"]["numba"]), np.array(r["losses"]["torch"])
    a64, b64 = (np.array(r["float64_warm"]["losses"][k]) for k in ("numpy", "torch"))
    acc = r["test_accuracy"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax.plot(b, lw=2.5, alpha=0.5, label=f"torch (test accuracy {acc['torch']:.3f})")
    ax.plot(a, lw=1, label=f"NumPy model, numba backend ({acc['numba']:.3f})")
    ax.set(xlabel="step", ylabel="training loss", title="float32 from torchvision's init, same batches")
    ax.legend(fontsize=8, loc="upper right")
    bx.semilogy(np.maximum(np.abs(a - b) / b, 1e-17), label="float32 from init (MobileNetV2-0.5)")
    bx.semilogy(np.maximum(np.abs(a64 - b64) / b64, 1e-17), label="float64 after 200 warm-up steps (V2-0.35)")
    bx.set(xlabel="step", ylabel="|loss NumPy - loss torch| / loss", title="how far apart, step by step")
    bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    for x in (ax, bx):
        x.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def fig_bench_depthwise(path):
    """Each MobileNetV2 depthwise layer's speed-up over torch's faster layout, four panels."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    res = _result(BENCH)
    if not res or not res.get("depthwise"):
        return
    plt = _pyplot()
    rows = res["depthwise"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.4), sharey=True)
    for ax, (b, d) in zip(axes.flat, [(1, "fwd"), (1, "bwd"), (8, "fwd"), (8, "bwd")]):
        sel = [r for r in rows if r["batch"] == b and r["dir"] == d]
        sp = [r["speedup"] for r in sel]
        ax.bar(range(len(sel)), sp, color=["tab:green" if x >= 1 else "tab:red" for x in sp])
        ax.axhline(1.0, color="k", lw=1)
        ax.axhline(1.5, color="k", lw=1, ls="--")
        ax.set_xticks(range(len(sel)), [f"C{r['C']}\n{r['H']}² s{r['stride']}" for r in sel], fontsize=7)
        what = "forward" if d == "fwd" else "backward (dx + dw)"
        ax.set_title(f"batch {b}, {what}: geo-mean {_geomean(sp):.2f}x", fontsize=10)
        ax.set_ylabel("speed-up over torch's faster layout")
    key = [
        Patch(color="tab:green", label="faster than torch"),
        Patch(color="tab:red", label="slower than torch"),
        Line2D([], [], color="k", lw=1, label="1x: as fast as torch"),
        Line2D([], [], color="k", lw=1, ls="--", label="1.5x: the geo-mean goal"),
    ]
    fig.legend(handles=key, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(
        "Depthwise 3x3 on every MobileNetV2 layer: Numba kernels vs torch (each alone in its process)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


SIDES = {"numba": "tab:blue", "torch_nchw": "tab:orange", "torch_cl": "tab:red", "onnxruntime": "tab:gray"}


def fig_bench_models(path):
    """Whole-model times, every side, one panel per case."""
    res = _result(BENCH)
    s = (res or {}).get("summary", {})
    cases = [(t, c) for t in ("model", "train") for c in s.get(t, {}).get("numba", {})]
    if not cases:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 3.8), squeeze=False)
    for ax, (t, c) in zip(axes[0], cases):
        have = [k for k in SIDES if c in s[t].get(k, {})]
        vals = [s[t][k][c]["us"] / 1e3 for k in have]
        bars = ax.bar(range(len(have)), vals, color=[SIDES[k] for k in have])
        ax.bar_label(bars, [f"{v:.1f}" for v in vals], fontsize=7)
        ax.set_xticks(range(len(have)), [k.replace("_", "\n") for k in have], fontsize=8)
        ax.set_title(f"MobileNetV2-1.0 {c}", fontsize=10)
        ax.set_ylabel("ms (lower is better)")
        ax.set_ylim(0, max(vals) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_bench_versions(path):
    """The road: each depthwise version's speed-up over torch at three layers."""
    res = _result(BENCH)
    s = (res or {}).get("summary", {})
    road, dw = s.get("versions", {}).get("numba"), s.get("depthwise", {})
    if not road or "torch_cl" not in dw:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, d in zip(axes, ("fwd", "bwd")):
        names = sorted(
            {k.rsplit(" ", 4)[0] for k in road if k.startswith(d)}, key=lambda v: int(v.split("v")[-1])
        )
        for c, h, st in [(32, 112, 1), (144, 56, 1), (576, 14, 2)]:
            sh = f"b1 C{c} {h}x{h} s{st}"
            torch_best = min(dw[k][f"{d} {sh}"]["us"] for k in ("torch_nchw", "torch_cl"))
            ax.plot(
                range(len(names)), [torch_best / road[f"{v} {sh}"]["us"] for v in names], "o-", label=sh[3:]
            )
        ax.set_xticks(range(len(names)), [n.split(" ")[-1] for n in names])
        ax.axhline(1.0, color="k", lw=1)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        ax.set_xlabel("version")
        ax.set_ylabel("speed-up over torch (log)")
        ax.set_title(f"the road, {'forward' if d == 'fwd' else 'backward'}", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3, which="major")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES = {
    "digits_training.png": _digits_curves("train"),
    "v3_digits_training.png": _digits_curves("v3"),
    "transfer.png": fig_transfer,
    "embed.png": fig_embed,
    "detect_curves.png": fig_detect_curves,
    "detect_predictions.png": fig_detect_predictions,
    "loss_overlay.png": fig_loss_overlay,
    "bench_depthwise.png": fig_bench_depthwise,
    "bench_models.png": fig_bench_models,
    "bench_versions.png": fig_bench_versions,
}
