"""Embeddings on offline data: the face-recognition pattern on classes a model never saw.

``embed``: a model trained on digits 0-4; its penultimate features, L2-normalised, are an
embedding; digits 5-9 are *identified* by their nearest enrolled neighbour and *verified* (same
digit or not) by thresholding the cosine similarity of a pair. ``embed_glyphs``: the same on the
glyph corpus's held-out classes, a metric embedding (ArcFace) against the plain classifier's
features.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet import data as D
from mobilenet.checkpoint import save_figure, write_text
from mobilenet.data import glyphs
from mobilenet.training.classify import load_trained, make_runner
from numpy_impl.functional._checks import check_int

from .transfer import log

SOURCE = (0, 1, 2, 3, 4)  # the digits an embedding model is trained on (``embed``)


def embed_glyphs(checkpoint, out, classifier=None, enrol=5, seed=0, quiet=False, draws=5) -> dict:
    """Embeddings of the glyph corpus's held-out classes (never seen in pretraining): a metric
    embedding (a ``loss="arcface"`` checkpoint) against the plain classifier's penultimate features
    (``classifier``, a softmax ``mobilenet pretrain`` checkpoint), a randomly initialised network and
    the raw pixels; identification top-1 from ``enrol`` images per class, verification AUC and the
    true accept rate at a false accept rate of 1e-2, each the mean (and standard deviation) over
    ``draws`` draws of the gallery and of the halves (seeds ``seed``, ``seed + 1``, ...). Writes
    ``embed.json``, ``embed.md`` and ``embed.png`` (the ROC of the first draw)."""
    draws = check_int("embed", "draws", draws, 1)
    out = Path(out)
    runner, meta = load_trained(checkpoint)
    cfg = runner.cfg
    if cfg.data != "glyphs":
        raise ValueError(f"embed: the checkpoint must be trained on the glyph corpus, got data {cfg.data!r}")
    corpus = glyphs.load_corpus(resolution=cfg.resolution)
    held = corpus.dataset(corpus.heldout)
    x = D.normalize(held.x, meta["mean"], meta["std"], np.dtype(cfg.dtype))
    log(f"embedding {len(held)} images of {len(held.classes)} held-out glyph classes", quiet)
    feats = {}
    if cfg.loss == "arcface":
        feats["metric embedding (ArcFace)"] = runner.embed(x)
        # the layer under the embedding: the projection to it is fitted to the pretraining classes
        feats["ArcFace network's pooled features"] = runner.features(x)
    else:
        feats["classifier features"] = runner.features(x)
    if classifier is not None:
        c_runner, c_meta = load_trained(classifier)
        if c_runner.cfg.data != "glyphs" or c_runner.cfg.loss != "softmax":
            raise ValueError("embed: --classifier must be a softmax checkpoint trained on the glyph corpus")
        xc = D.normalize(held.x, c_meta["mean"], c_meta["std"], np.dtype(c_runner.cfg.dtype))
        feats["classifier features"] = c_runner.features(xc)
    plain = dataclasses.replace(cfg, loss="softmax", seed=cfg.seed + 1)
    feats["random network"] = make_runner(plain, meta["num_classes"]).features(x)
    feats["raw pixels"] = (x - x.mean(0)).reshape(len(x), -1)
    results = {}
    for name, f in feats.items():
        e = l2_normalize(f.astype(np.float64))
        reps = [embedding_report(e, held.y, enrol, seed + d) for d in range(draws)]
        r = {k: v for k, v in reps[0].items() if not k.startswith("scores") and k != "roc"}
        for key in SPREAD:
            vals = [rep[key] for rep in reps]
            r.update({key: float(np.mean(vals)), f"{key}_std": float(np.std(vals)), f"{key}_draws": vals})
        r["draws"] = draws
        r["roc"] = roc_on_grid(np.asarray(reps[0]["roc"]["fpr"]), np.asarray(reps[0]["roc"]["tpr"]))
        results[name] = r
    summary = {
        "checkpoint": str(checkpoint),
        "classifier": None if classifier is None else str(classifier),
        "model": f"{A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px",
        "held_out_classes": len(held.classes),
        "images": len(held),
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "embed.json", json.dumps(summary, indent=2) + "\n")
    write_text(out / "embed.md", embed_glyphs_table(summary))
    plot_embed_glyphs(summary, out / "embed.png")
    return summary


SPREAD = ("identification_top1", "auc", "tar_at_far_1e-2")  # averaged over draws of the gallery


def plot_embed_glyphs(summary: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6))
    names = list(summary["results"])
    for name in names:
        r = summary["results"][name]
        fpr, tpr = np.asarray(r["roc"]["fpr"]), np.asarray(r["roc"]["tpr"])
        a.plot(np.maximum(fpr, 1e-5), tpr, label=f"{name} (AUC {r['auc']:.3f})")
    a.axvline(1e-2, color="grey", lw=0.8, ls=":")
    a.set(xscale="log", xlim=(1e-4, 1), xlabel="false accept rate (log)", ylabel="true accept rate")
    a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.001, not 10^-3
    a.set_title("verification on held-out glyph classes", fontsize=9)
    a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2)  # below, off the curves
    top1 = [summary["results"][n]["identification_top1"] for n in names]
    err = [summary["results"][n].get("identification_top1_std", 0.0) for n in names]
    bars = b.barh(range(len(names)), top1, xerr=err, capsize=3)
    b.bar_label(bars, [f"{v:.3f}" for v in top1], fontsize=7, padding=8)  # clear of the error bar
    b.set(yticks=range(len(names)), yticklabels=names, xlim=(0, 1.1), xlabel="identification top-1")
    b.set_title("identification from a small gallery", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def embed_glyphs_table(summary: dict) -> str:
    lines = [
        f"{summary['model']}: embeddings of the {summary['images']} images of {summary['held_out_classes']} "
        "glyph classes never seen in pretraining.",
        "",
        "| embedding | identification top-1 | verification AUC | TAR at FAR = 1e-2 |",
        "|---|---|---|---|",
    ]
    for name, r in summary["results"].items():
        cells = [f"{r[k]:.3f} ± {r.get(k + '_std', 0.0):.3f}" for k in SPREAD]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    r = next(iter(summary["results"].values()))
    lines += [
        "",
        f"Mean ± standard deviation over {r.get('draws', 1)} draws. Identification: "
        f"{r['gallery_per_class']} enrolled images per class (drawn anew each time), {r['probes']} "
        f"probes, nearest neighbour by cosine. Verification: the {r['test_pairs']} pairs of a random "
        "half of the images, scored by cosine.",
    ]
    return "\n".join(lines) + "\n"


# --- embeddings -----------------------------------------------------------------------------


def l2_normalize(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, thresholds descending; a pair is "same" when score >= t."""
    scores, same = np.asarray(scores), np.asarray(same, bool)
    if scores.ndim != 1 or same.shape != scores.shape:
        raise ValueError(
            f"roc: scores and same must be 1-D of one length, got {scores.shape} and {same.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("roc: scores must be finite, got NaN or inf")
    # Millions of pairs: sort the two classes apart and merge (the few positives go into the
    # sorted negatives), not an argsort of them all, which took most of an embed run.
    pos, neg = np.sort(scores[same]), np.sort(scores[~same])
    at = np.searchsorted(neg, pos, side="right")
    s = np.insert(neg, at, pos)[::-1]  # descending; ties grouped, in any order
    where_pos = (len(s) - 1 - (at + np.arange(len(pos))))[::-1]  # the positives' indices in s, ascending
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp = np.searchsorted(where_pos, last, side="right")  # positives at or above each threshold
    fp = last + 1 - tp
    tpr = np.r_[0.0, tp / max(len(pos), 1)]
    fpr = np.r_[0.0, fp / max(len(neg), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(fpr, tpr) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def roc_on_grid(fpr, tpr, n: int = 200) -> dict:
    """The ROC at ``n`` false accept rates, log-spaced from 1e-5 to 1 (millions of pairs give
    millions of points): the best true accept rate at each."""
    grid = np.logspace(-5, 0, n)
    idx = np.searchsorted(fpr, grid, side="right") - 1  # fpr and tpr never decrease
    return {"fpr": grid.tolist(), "tpr": np.where(idx >= 0, tpr[np.maximum(idx, 0)], 0.0).tolist()}


def tar_at_far(fpr, tpr, far: float) -> float:
    """The true accept rate at the threshold whose false accept rate is at most ``far``."""
    ok = fpr <= far
    return float(tpr[ok].max()) if ok.any() else 0.0


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
            "tar_at_far_1e-2": tar_at_far(fpr_t, tpr_t, 1e-2),
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
    log(f"embedding {len(ds)} images of the unseen digits {unseen}", quiet)
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
        "model": f"{A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px",
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
