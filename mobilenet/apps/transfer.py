"""Few-shot transfer learning on offline data.

``transfer``: from a model pretrained on the generated glyph corpus (``mobilenet pretrain``) to
scikit-learn's digits and to the corpus's held-out classes, from k labelled images per class,
four ways (from scratch, linear probe, fine-tuning the last blocks, fine-tuning everything at a
lower rate) with the same number of steps, over several seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet import backends as B
from mobilenet import data as D
from mobilenet.checkpoint import save_figure, write_text
from mobilenet.data import glyphs
from mobilenet.training.classify import Classification, load_trained, make_runner, run
from mobilenet.training.config import PRETRAIN, TrainConfig
from mobilenet.training.loop import Trainer

from .freeze import freeze, frozen_modules, replace_classifier

METHODS = {
    "scratch": "from scratch (random init)",
    "linear_probe": "linear probe (frozen backbone, BN in eval)",
    "finetune_last": "fine-tune the last blocks",
    "finetune_all": "fine-tune everything (lr / 10)",
}
TARGETS = {
    "digits": "scikit-learn's digits",
    "glyphs": "the held-out glyph classes",
}


def log(msg, quiet):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def pretrain(cfg: TrainConfig, out: Path, quiet=False) -> Path:
    """Train (or reuse, when ``out`` already holds this configuration's finished run) ``cfg``;
    returns its checkpoint."""
    ckpt = out / f"checkpoint{B.get(cfg.backend).checkpoint}"
    log(f"pretraining on {cfg.data} -> {ckpt}", quiet)
    run(cfg, out, resume=ckpt.exists(), progress=not quiet)
    return ckpt


def target_data(target: str, resolution: int) -> D.Dataset:
    """Every image of a transfer target: ``digits`` (all ten) or ``glyphs`` (the corpus's held-out
    classes, never seen in pretraining)."""
    if target == "digits":
        return D.load_digits(resolution)
    if target == "glyphs":
        corpus = glyphs.load_corpus(resolution=resolution)
        return corpus.dataset(corpus.heldout)
    raise ValueError(f"transfer: targets must be among {tuple(TARGETS)}, got {target!r}")


def _fit(cfg, runner, train, test, mean, std):
    task = Classification(cfg, train, test, mean=mean, std=std)
    return Trainer(task, runner, progress=False, eval_every=cfg.epochs).fit()


def _adapt(method, base, state, n_source, n_blocks, train, test, mean, std, seed, steps):
    """One adaptation: ``steps`` SGD steps of ``method`` from the pretrained ``state``."""
    n = len(train.classes)
    bs = min(16, max(2, len(train) // 3))
    epochs = max(1, math.ceil(steps / max(1, len(train) // bs)))
    cfg = dataclasses.replace(base, batch_size=bs, epochs=epochs, seed=seed, warmup_epochs=0.0)
    if method == "finetune_all":
        cfg = dataclasses.replace(cfg, lr=base.lr / 10)
    runner = make_runner(cfg, n if method == "scratch" else n_source)
    if method != "scratch":
        runner.model.load_state_dict(state)
        replace_classifier(runner.model, n, seed=seed)
        if method == "linear_probe":
            freeze(runner.model, "features")
        elif method == "finetune_last":
            freeze(runner.model, n_blocks - 5)  # the last five features entries train
        runner.make_optimizer()
    return _fit(cfg, runner, train, test, mean, std), cfg


def transfer(
    out,
    pretrained=None,
    targets=tuple(TARGETS),
    shots=(1, 5, 20),
    seeds=(0, 1, 2),
    steps=150,
    lr=0.02,
    backend="numba",
    quiet=False,
) -> dict:
    """Few-shot transfer from a glyph-pretrained checkpoint (trained first into ``out/pretrain``
    with :data:`PRETRAIN` when none is given) to each target, k labelled images per class, four
    methods with the same number of SGD steps, every seed; the test set is every other image of
    the target. Writes ``transfer.json``, ``transfer.md`` and ``transfer.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"transfer: targets must be among {tuple(TARGETS)}, got {t!r}")
    if pretrained is None:
        pretrained = pretrain(dataclasses.replace(PRETRAIN, backend=backend), out / "pretrain", quiet)
    src, meta = load_trained(pretrained, backend=backend)
    if meta["config"]["data"] != "glyphs" or meta["config"].get("classes"):
        raise ValueError(
            "transfer: the pretrained model must be trained on the whole glyph corpus "
            f"(mobilenet pretrain), got data {meta['config']['data']!r} "
            f"classes {meta['config'].get('classes')}"
        )
    base = dataclasses.replace(src.cfg, data="(target)", lr=lr, classes=None)
    state = {k[len("model/") :]: v for k, v in src.state_arrays().items() if k.startswith("model/")}
    n_blocks = len(frozen_modules(src.model, "features"))
    rows = []
    for target in targets:
        full = target_data(target, base.resolution)
        for k in shots:
            for seed in seeds:
                pick = D.few_shot(full.y, k, seed)
                train, test = full.subset(pick), full.subset(np.setdiff1d(np.arange(len(full)), pick))
                for method in METHODS:
                    t0 = time.perf_counter()
                    m, cfg = _adapt(
                        method,
                        base,
                        state,
                        meta["num_classes"],
                        n_blocks,
                        train,
                        test,
                        meta["mean"],
                        meta["std"],
                        seed,
                        steps,
                    )
                    rows.append(
                        {
                            "target": target,
                            "k": k,
                            "seed": seed,
                            "method": method,
                            "test_accuracy": m["test_accuracy"],
                            "test_images": len(test),
                            "train_images": len(train),
                            "classes": len(train.classes),
                            "steps": m["steps"],
                            "lr": cfg.lr,
                            "seconds": round(time.perf_counter() - t0, 1),
                        }
                    )
                    log(
                        f"  {target} k={k:<3} seed {seed} {METHODS[method]:<45} {m['test_accuracy']:.3f}",
                        quiet,
                    )
    report = {
        "model": f"{A.model_name(src.cfg.arch)}-{src.cfg.width_mult:g} {src.cfg.resolution}px "
        f"({backend} backend)",
        "source": f"the glyph corpus ({meta['num_classes']} classes)",
        "pretrained": str(pretrained),
        "source_test_accuracy": meta["history"][-1]["test_accuracy"] if meta.get("history") else None,
        "steps": steps,
        "lr": lr,
        "seeds": list(seeds),
        "rows": rows,
        "summary": summarize_transfer(rows),
    }
    write_text(out / "transfer.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "transfer.md", transfer_table(report))
    plot_transfer(report, out / "transfer.png")
    return report


def summarize_transfer(rows) -> list[dict]:
    """Mean and standard deviation over seeds of each (target, k, method)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["k"], r["method"]), []).append(r["test_accuracy"])
    return [
        {"target": t, "k": k, "method": m, "mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v)}
        for (t, k, m), v in groups.items()
    ]


def transfer_table(report: dict) -> str:
    summary = {(s["target"], s["k"], s["method"]): s for s in report["summary"]}
    lines = [
        f"{report['model']}: pretrained on {report['source']} "
        f"(test accuracy {report['source_test_accuracy']:.3f}); each adaptation {report['steps']} SGD steps, "
        f"mean ± standard deviation over {len(report['seeds'])} seeds (each seed draws its own k images).",
    ]
    for target in dict.fromkeys(s["target"] for s in report["summary"]):
        shots = sorted({s["k"] for s in report["summary"] if s["target"] == target})
        row0 = next(r for r in report["rows"] if r["target"] == target)
        lines += [
            "",
            f"**{TARGETS[target]}** ({row0['classes']} classes; the test set is every image not "
            "picked for training)",
            "",
            "| method | " + " | ".join(f"k = {k}" for k in shots) + " |",
            "|" + "---|" * (len(shots) + 1),
        ]
        for method, label in METHODS.items():
            cells = [
                f"{summary[(target, k, method)]['mean']:.3f} ± {summary[(target, k, method)]['std']:.3f}"
                for k in shots
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_transfer(report: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {(s["target"], s["k"], s["method"]): s for s in report["summary"]}
    targets = list(dict.fromkeys(s["target"] for s in report["summary"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 4.2), squeeze=False)
    width = 0.8 / len(METHODS)
    for ax, target in zip(axes[0], targets):
        shots = sorted({s["k"] for s in report["summary"] if s["target"] == target})
        for i, (method, label) in enumerate(METHODS.items()):
            xs = np.arange(len(shots)) + (i - (len(METHODS) - 1) / 2) * width
            vals = [summary[(target, k, method)]["mean"] for k in shots]
            errs = [summary[(target, k, method)]["std"] for k in shots]
            bars = ax.bar(xs, vals, width, yerr=errs, capsize=2, label=label)
            ax.bar_label(bars, [f"{v:.2f}" for v in vals], fontsize=6, padding=2)
        n = next(r["classes"] for r in report["rows"] if r["target"] == target)
        ax.axhline(1 / n, color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xticks=range(len(shots)), xticklabels=[f"k = {k} per class" for k in shots])
        ax.set(ylabel="test accuracy", ylim=(0, 1.08), title=f"{TARGETS[target]}")
    handles, labels = axes[0][0].get_legend_handles_labels()  # one key for every panel, below them
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels))
    fig.suptitle(f"Transfer from {report['source']}: {report['model']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path)
    plt.close(fig)
    return path
