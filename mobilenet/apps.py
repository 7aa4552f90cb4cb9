"""Applications on real offline data: few-shot transfer learning and embeddings.

``transfer``: pretrain on digits 0-4, adapt to digits 5-9 from k labelled images per class,
four ways (from scratch, linear probe, fine-tuning the last blocks, fine-tuning everything
at a lower rate), scored on every 5-9 image not used for training.

``embed``: the face-recognition pattern on unseen classes. The 0-4 model's penultimate
features, L2-normalised, are an embedding; digits 5-9 (never seen in training) are
*identified* by their nearest enrolled neighbour and *verified* (same digit or not) by
thresholding the cosine similarity of a pair.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import backends as B
from . import data as D
from .checkpoint import save_figure, write_text
from .train import TrainConfig, Trainer, load_trained, make_runner, run
from .transfer import freeze, frozen_modules, replace_classifier

SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
METHODS = {
    "scratch": "from scratch (random init)",
    "linear_probe": "linear probe (frozen backbone, BN in eval)",
    "finetune_last": "fine-tune the last blocks",
    "finetune_all": "fine-tune everything (lr / 10)",
}


def _log(msg, quiet):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def pretrain(cfg: TrainConfig, out: Path, quiet=False) -> Path:
    """Train (or reuse, when ``out`` already holds this configuration's finished run) the
    source model on classes ``SOURCE``; returns its checkpoint."""
    ckpt = out / f"checkpoint{B.get(cfg.backend).checkpoint}"
    _log(f"pretraining on digits {SOURCE[0]}-{SOURCE[-1]} -> {ckpt}", quiet)
    run(cfg, out, resume=ckpt.exists(), progress=not quiet)
    return ckpt


def _target_split(cfg: TrainConfig, k: int, seed: int):
    """k images per class of ``TARGET`` from the training split; the test set is every other
    target image (both splits), so the score rests on ~880 images rather than ~180."""
    full = D.load_digits(cfg.resolution).select_classes(TARGET)
    pick = D.few_shot(full.y, k, seed)
    rest = np.setdiff1d(np.arange(len(full)), pick)
    return full.subset(pick), full.subset(rest)


def _fit(cfg, runner, train, test, mean, std):
    trainer = Trainer(cfg, runner, train, test, mean=mean, std=std, progress=False, eval_every=cfg.epochs)
    return trainer.fit()


def transfer(
    out,
    arch="v2",
    width_mult=0.5,
    resolution=32,
    backend="numba",
    shots=(5, 20),
    pretrain_epochs=15,
    steps=150,
    lr=0.02,
    seed=0,
    pretrained=None,
    quiet=False,
) -> dict:
    """Run the comparison; writes ``transfer.json``, ``transfer.md`` and ``transfer.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(
        arch=arch, width_mult=width_mult, resolution=resolution, backend=backend, lr=lr, seed=seed
    )
    base.validate()
    if pretrained is None:
        pre_cfg = dataclasses.replace(base, classes=SOURCE, epochs=pretrain_epochs)
        pretrained = pretrain(pre_cfg, out / "pretrain", quiet)
    src_runner, meta = load_trained(pretrained, backend=backend, arch=arch, width_mult=width_mult)
    if tuple(meta["config"].get("classes") or ()) != SOURCE or meta["config"]["data"] != "digits":
        got = f"{meta['config']['data']} classes {meta['config'].get('classes')}"
        raise ValueError(f"transfer: the pretrained model must be trained on digits {SOURCE}, got {got}")
    if meta["config"]["resolution"] != resolution:
        raise ValueError(
            f"transfer: the pretrained model is for {meta['config']['resolution']} px, asked {resolution}"
        )
    mean, std = meta["mean"], meta["std"]
    state = src_runner.state_arrays()
    n_blocks = len(frozen_modules(src_runner.model, "features"))
    rows = []
    for k in shots:
        train, test = _target_split(base, k, seed)
        bs = min(16, max(2, len(train) // 3))
        steps_per_epoch = len(train) // bs
        epochs = max(1, math.ceil(steps / steps_per_epoch))
        for method in METHODS:
            cfg = dataclasses.replace(base, batch_size=bs, epochs=epochs, classes=TARGET, warmup_epochs=0.0)
            if method == "finetune_all":
                cfg = dataclasses.replace(cfg, lr=lr / 10)
            t0 = time.perf_counter()
            runner = make_runner(cfg, len(TARGET))
            if method != "scratch":
                runner.load_state_arrays({k_: v for k_, v in state.items() if k_.startswith("model/")})
                replace_classifier(runner.model, len(TARGET), seed=seed)
                if method == "linear_probe":
                    freeze(runner.model, "features")
                elif method == "finetune_last":
                    freeze(runner.model, n_blocks - 5)  # the last five features entries train
                runner.make_optimizer()
            m = _fit(cfg, runner, train, test, mean, std)
            row = {
                "k": k,
                "method": method,
                "test_accuracy": m["test_accuracy"],
                "test_images": len(test),
                "train_images": len(train),
                "steps": m["steps"],
                "lr": cfg.lr,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            _log(f"  k={k:<3} {METHODS[method]:<45} test accuracy {row['test_accuracy']:.3f}", quiet)
    report = {
        "model": f"MobileNet{arch.upper()}-{width_mult:g} {resolution}px ({backend} backend)",
        "source": f"digits {SOURCE[0]}-{SOURCE[-1]}",
        "target": f"digits {TARGET[0]}-{TARGET[-1]}",
        "pretrained": str(pretrained),
        "source_test_accuracy": meta["history"][-1]["test_accuracy"] if meta.get("history") else None,
        "seed": seed,
        "rows": rows,
    }
    write_text(out / "transfer.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "transfer.md", transfer_table(report))
    plot_transfer(report, out / "transfer.png")
    return report


def transfer_table(report: dict) -> str:
    shots = sorted({r["k"] for r in report["rows"]})
    acc = {(r["method"], r["k"]): r["test_accuracy"] for r in report["rows"]}
    n_test = {r["k"]: r["test_images"] for r in report["rows"]}
    head = "| method | " + " | ".join(f"k = {k} ({n_test[k]} test images)" for k in shots) + " |"
    lines = [
        f"{report['model']}: pretrained on {report['source']} "
        f"(test accuracy {report['source_test_accuracy']:.3f}), adapted to {report['target']} "
        f"with k labelled images per class.",
        "",
        head,
        "|" + "---|" * (len(shots) + 1),
    ]
    for method, label in METHODS.items():
        lines.append(f"| {label} | " + " | ".join(f"{acc[(method, k)]:.3f}" for k in shots) + " |")
    return "\n".join(lines) + "\n"


def plot_transfer(report: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = sorted({r["k"] for r in report["rows"]})
    acc = {(r["method"], r["k"]): r["test_accuracy"] for r in report["rows"]}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(METHODS)
    for i, (method, label) in enumerate(METHODS.items()):
        xs = np.arange(len(shots)) + (i - (len(METHODS) - 1) / 2) * width
        vals = [acc[(method, k)] for k in shots]
        bars = ax.bar(xs, vals, width, label=label)
        ax.bar_label(bars, [f"{v:.2f}" for v in vals], fontsize=7)
    ax.axhline(1 / len(TARGET), color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xticks=range(len(shots)), xticklabels=[f"k = {k} per class" for k in shots])
    ax.set(
        ylabel="test accuracy",
        ylim=(0, 1.05),
        title=f"{report['source']} -> {report['target']}: {report['model']}",
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


# --- embeddings -----------------------------------------------------------------------------


def l2_normalize(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, thresholds descending; a pair is "same" when score >= t."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order].astype(bool)
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tpr = np.r_[0.0, tp[last] / max(y.sum(), 1)]
    fpr = np.r_[0.0, fp[last] / max((~y).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(fpr, tpr) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _pairs(labels):
    i, j = np.triu_indices(len(labels), 1)
    return i, j, labels[i] == labels[j]


def embedding_report(emb: np.ndarray, y: np.ndarray, enrol: int = 5, seed: int = 0) -> dict:
    """Identification and verification on L2-normalised embeddings ``emb`` with labels ``y``.

    Identification: ``enrol`` images per class form the gallery, every other image is a
    probe, labelled by its most similar gallery image (cosine). Verification: the images are
    split in two halves; the threshold that maximises TPR - FPR (Youden's J; most pairs are
    "different", so plain accuracy would reward saying "different" always) on the first
    half's pairs is applied to the second half's pairs, so it is not tuned on the pairs it
    is measured on. Balanced accuracy is (TPR + TNR) / 2.
    """
    rng = np.random.default_rng(seed)
    gallery = D.few_shot(y, enrol, seed)
    probes = np.setdiff1d(np.arange(len(y)), gallery)
    sim = emb[probes] @ emb[gallery].T
    top1 = float(np.mean(y[gallery][sim.argmax(1)] == y[probes]))
    perm = rng.permutation(len(y))
    halves = perm[: len(y) // 2], perm[len(y) // 2 :]
    out = {"identification_top1": top1, "gallery_per_class": enrol, "probes": len(probes)}
    scored = []
    for h in halves:
        i, j, same = _pairs(y[h])
        scored.append(((emb[h] @ emb[h].T)[i, j], same))  # cosine similarities of all pairs
    (s_cal, y_cal), (s_test, y_test) = scored
    fpr, tpr, thr = roc(s_cal, y_cal)
    t = float(thr[1:][np.argmax((tpr - fpr)[1:])])
    pred = s_test >= t
    fpr_t, tpr_t, _ = roc(s_test, y_test)
    out.update(
        {
            "threshold": t,
            "balanced_accuracy": float((np.mean(pred[y_test]) + np.mean(~pred[~y_test])) / 2),
            "true_positive_rate": float(np.mean(pred[y_test])),
            "false_positive_rate": float(np.mean(pred[~y_test])),
            "auc": auc(fpr_t, tpr_t),
            "test_pairs": int(len(y_test)),
            "roc": {"fpr": fpr_t.tolist(), "tpr": tpr_t.tolist()},
            "scores_same": s_test[y_test],
            "scores_different": s_test[~y_test],
        }
    )
    return out


def embed(checkpoint, out, backend=None, enrol=5, seed=0, quiet=False) -> dict:
    """Embeddings of the classes a checkpoint never saw; writes ``embed.json``, ``embed.md``
    and ``embed.png`` in ``out``. Baselines: raw pixels and a randomly initialised network."""
    out = Path(out)
    runner, meta = load_trained(checkpoint, backend=backend)
    cfg = runner.cfg
    seen = cfg.classes
    if cfg.data != "digits" or seen is None or len(seen) == 10:
        raise ValueError(
            "embed: the checkpoint must be trained on a subset of the digits classes "
            f"(e.g. mobilenet train --classes 0,1,2,3,4), got data {cfg.data!r} classes {seen}"
        )
    unseen = tuple(c for c in range(10) if c not in seen)
    ds = D.load_digits(cfg.resolution).select_classes(unseen)
    x = D.normalize(ds.x, meta["mean"], meta["std"], np.dtype(cfg.dtype))
    _log(f"embedding {len(ds)} images of the unseen digits {unseen}", quiet)
    random_runner = make_runner(dataclasses.replace(cfg, seed=cfg.seed + 1), meta["num_classes"])
    stages = runner.features(x, every_stage=True)  # pooled output of each feature stage
    random_stages = random_runner.features(x, every_stage=True)
    pixels = (x - x.mean(0)).reshape(len(x), -1)
    reports = {
        name: embedding_report(l2_normalize(f.astype(np.float64)), ds.y, enrol, seed)
        for name, f in [
            ("trained network", stages[-1]),
            ("random network", random_stages[-1]),
            ("raw pixels", pixels),
        ]
    }
    # the same measurement at every depth: where do features stop being about strokes in general?
    by_stage = []
    for i, (f, fr) in enumerate(zip(stages, random_stages)):
        r = embedding_report(l2_normalize(f.astype(np.float64)), ds.y, enrol, seed)
        rr = embedding_report(l2_normalize(fr.astype(np.float64)), ds.y, enrol, seed)
        by_stage.append(
            {
                "stage": i,
                "channels": int(f.shape[1]),
                "top1": r["identification_top1"],
                "auc": r["auc"],
                "random_top1": rr["identification_top1"],
                "random_auc": rr["auc"],
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    plot_embed(reports, by_stage, out / "embed.png", f"unseen digits {unseen[0]}-{unseen[-1]}")
    summary = {
        "checkpoint": str(checkpoint),
        "model": f"MobileNet{cfg.arch.upper()}-{cfg.width_mult:g} {cfg.resolution}px",
        "trained_on": list(seen),
        "unseen_classes": list(unseen),
        "images": len(ds),
        "results": {
            n: {k: v for k, v in r.items() if not k.startswith("scores") and k != "roc"}
            for n, r in reports.items()
        },
        "by_stage": by_stage,
    }
    write_text(out / "embed.json", json.dumps(summary, indent=2) + "\n")
    write_text(out / "embed.md", embed_table(summary))
    return summary


def embed_table(summary: dict) -> str:
    lines = [
        f"{summary['model']} trained on digits {summary['trained_on']}; embeddings of the "
        f"{summary['images']} images of the unseen digits {summary['unseen_classes']}.",
        "",
        "| embedding | top-1 identification | verification balanced accuracy | TPR | FPR | AUC | threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["results"].items():
        lines.append(
            f"| {name} | {r['identification_top1']:.3f} | {r['balanced_accuracy']:.3f} | "
            f"{r['true_positive_rate']:.3f} | {r['false_positive_rate']:.3f} | {r['auc']:.3f} | "
            f"{r['threshold']:.3f} |"
        )
    if summary.get("by_stage"):
        lines += [
            "",
            "The same measurement after each feature stage (pooled, L2-normalised):",
            "",
            "| stage | channels | top-1 trained | top-1 random | AUC trained | AUC random |",
            "|---|---|---|---|---|---|",
        ]
        for b in summary["by_stage"]:
            lines.append(
                f"| {b['stage']} | {b['channels']} | {b['top1']:.3f} | {b['random_top1']:.3f} | "
                f"{b['auc']:.3f} | {b['random_auc']:.3f} |"
            )
    r = next(iter(summary["results"].values()))
    lines += [
        "",
        f"Identification: {r['gallery_per_class']} enrolled images per class, {r['probes']} probes, "
        "nearest neighbour by cosine similarity. Verification: the threshold (max TPR - FPR) is chosen on "
        f"the pairs of one half of the images and measured on the {r['test_pairs']} pairs of the other half.",
    ]
    return "\n".join(lines) + "\n"


def plot_embed(reports: dict, by_stage: list, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, r in reports.items():
        a.plot(r["roc"]["fpr"], r["roc"]["tpr"], label=f"{name} (AUC {r['auc']:.3f})")
    a.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    a.set(xlabel="false positive rate", ylabel="true positive rate", title=f"verification ROC, {title}")
    a.legend(fontsize=8)
    r = reports["trained network"]
    lowest = min(r["scores_same"].min(), r["scores_different"].min())
    bins = np.linspace(min(0.0, lowest), 1, 81)  # ReLU6 features: cosines are >= 0
    b.hist(r["scores_different"], bins, alpha=0.6, density=True, label="different digit")
    b.hist(r["scores_same"], bins, alpha=0.6, density=True, label="same digit")
    b.axvline(r["threshold"], color="k", lw=1, label=f"threshold {r['threshold']:.2f}")
    b.set(xlabel="cosine similarity", ylabel="density", title="trained network: pair similarities")
    b.legend(fontsize=8)
    st = [s["stage"] for s in by_stage]
    c.plot(st, [s["top1"] for s in by_stage], "o-", label="top-1, trained")
    c.plot(st, [s["random_top1"] for s in by_stage], "o--", label="top-1, random")
    c.plot(st, [s["auc"] for s in by_stage], "s-", label="AUC, trained")
    c.plot(st, [s["random_auc"] for s in by_stage], "s--", label="AUC, random")
    c.axhline(
        reports["raw pixels"]["identification_top1"], color="grey", lw=0.8, ls=":", label="top-1, raw pixels"
    )
    c.set(xlabel="feature stage (pooled)", ylabel="score", title="embedding depth", ylim=(0, 1))
    c.grid(alpha=0.3)
    c.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
