"""The ``mobilenet`` command line: summary, verify, train, evaluate, transfer, embed, detect, bench,
export, convert."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import os
import sys

import numpy as np

import mobilenet_arch as A

from . import backends as B
from . import data as D
from .apps import (
    ARCFACE,
    PRETRAIN,
    TARGETS,
    embed,
    embed_glyphs,
    embed_glyphs_table,
    embed_table,
    transfer,
    transfer_table,
)
from .checkpoint import FolderInUse, exclusive
from .checkpoint import load as load_checkpoint
from .summary import format_table, ssdlite_summary, summary_dict
from .train import TrainConfig, evaluate, load_trained, run

TRAIN_DEFAULTS = TrainConfig()


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _width(text):
    v = _positive_float(text)
    if v > A.MAX_WIDTH_MULT:
        raise argparse.ArgumentTypeError(f"must be <= {A.MAX_WIDTH_MULT:g}, got {text}")
    return v


def _int_at_least(lo):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def cmd_summary(args) -> int:
    if args.arch == "ssdlite":  # num_classes counts the background, as torchvision's detectors
        d = ssdlite_summary(args.width_mult, args.resolution, args.num_classes)
    else:
        d = summary_dict(args.arch, args.width_mult, args.resolution, args.num_classes)
    print(json.dumps(d, indent=2) if args.json else format_table(d))
    return 0


def _format_verify(r: dict) -> str:
    lines = [
        f"{A.model_name(r['arch'])} width_mult={r['width_mult']:g} {r['dtype']} backend={r['backend']} "
        f"batch={r['batch']} resolution={r['resolution']} (training mode, vs torch float64)"
    ]
    for q, label in [
        ("logits", "logits"),
        ("input_grad", "input gradient"),
        ("param_grad", f"parameter gradients (worst: {r['param_grad_worst']})"),
        ("buffers", f"running statistics (worst: {r['buffers_worst']})"),
    ]:
        extra = f"  torch float32: {r['torch_float32'][q]:.2e}" if "torch_float32" in r else ""
        mark = "ok" if r[q] <= r["tolerance"][q] else "FAIL"
        lines.append(f"  {label:<62} {r[q]:9.2e} <= {r['tolerance'][q]:.1e} {mark}{extra}")
    return "\n".join(lines)


def _deploy():
    # torch, onnx and onnxruntime: imported by the commands that need them only
    return importlib.import_module("mobilenet.deploy")


def cmd_verify_onnx(args) -> int:
    r = _deploy().verify_onnx(args.onnx, checkpoint=args.checkpoint, seed=args.seed)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        mark = "ok" if r["ok"] else "FAIL"
        print(
            f"{r['onnx']}: {A.model_name(r['arch'])} width_mult={r['width_mult']:g} "
            f"{r['num_classes']} classes, {r['weights']} weights; onnxruntime {r['onnxruntime']} float32 "
            f"vs the NumPy reference (float64), batch {r['batch']} at {r['resolution']} px\n"
            f"  logits relative error {r['rel_err']:9.2e} <= {r['tolerance']:.0e} {mark}   "
            f"top-1 agreement {r['top1_agreement']:.0%}"
        )
    print("verify: within tolerance" if r["ok"] else "verify: FAILED", file=sys.stderr)
    return 0 if r["ok"] else 1


def cmd_export(args) -> int:
    if args.checkpoint is not None and args.arch is not None:
        raise ValueError("export: --arch and --width-mult come from the checkpoint; drop them")
    r = _deploy().export_onnx(
        args.onnx,
        checkpoint=args.checkpoint,
        arch=args.arch or "v2",
        width_mult=args.width_mult,
        num_classes=args.num_classes,
        resolution=args.resolution,
        seed=args.seed,
    )
    src = f"checkpoint {args.checkpoint}" if args.checkpoint else f"fresh weights (seed {args.seed})"
    print(
        f"wrote {r['onnx']} ({r['bytes'] / 1e6:.1f} MB, opset {r['opset']}, dynamic batch): "
        f"{A.model_name(r['arch'])} width {float(r['width_mult']):g}, {r['num_classes']} classes, "
        f"{r['resolution']} px, {src}\ncheck it: mobilenet verify --onnx {r['onnx']}"
    )
    return 0


def cmd_convert(args) -> int:
    r = _deploy().convert(args.weights, args.out, arch=args.arch, width_mult=args.width_mult)
    print(
        f"wrote {r['to']}: {A.model_name(r['arch'])} width {r['width_mult']:g}, "
        f"{r['num_classes']} classes (from {r['from']})"
    )
    return 0


def _backends(text):
    names = [b.strip() for b in text.split(",") if b.strip()]
    bench = importlib.import_module("mobilenet.bench")
    bad = [b for b in names if b not in bench.BACKENDS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names among {','.join(bench.BACKENDS)} separated by commas, got {text!r}"
        )
    return names


def cmd_bench(args) -> int:
    bench = importlib.import_module("mobilenet.bench")
    case = bench.Case(args.arch, args.width_mult, args.resolution, args.batch, args.train).validate()
    say = (lambda *a: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"timing {case.key} on {', '.join(args.backends)}: each alone in its process, {args.rounds} rounds")
    res = bench.bench([case], args.backends, args.rounds, args.threads, args.min_time, progress=say)
    print(json.dumps(res, indent=2) if args.json else bench.format_table(res))
    return 0 if res["results"] else 1


def cmd_verify(args) -> int:
    if args.onnx is not None:
        return cmd_verify_onnx(args)
    if args.checkpoint is not None:
        raise ValueError("verify: --checkpoint goes with --onnx (the checkpoint the ONNX file came from)")
    # verify compares with torch: imported on this command only, so the others never load torch
    compare = importlib.import_module("mobilenet.verify").compare
    archs = tuple(A.ARCHS) if args.arch == "all" else (args.arch,)
    results = []
    for arch in archs:
        r = compare(
            arch,
            args.width_mult,
            args.dtype,
            args.resolution,
            args.batch_size,
            args.seed,
            backend=args.backend,
        )
        results.append(r)
        if not args.json:
            print(_format_verify(r))
    ok = all(r["ok"] for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "results": results}, indent=2))
    else:
        print("verify: all within tolerance" if ok else "verify: FAILED", file=sys.stderr)
    return 0 if ok else 1


# errors that come from what the user asked for (a path, a setting): exit code 2, as argparse's
USAGE_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)


def explain(e: BaseException) -> tuple[int, str]:
    """``(exit code, message)`` for an error that ended a command: 2 for a usage error, 1 for a
    runtime one (a full disk, a read-only folder, a diverged run, a bug), with what to do."""
    where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
    if isinstance(e, USAGE_ERRORS):
        if isinstance(e, OSError) and e.strerror:  # raised by the OS on a path the user gave
            return 2, f"{e.strerror.lower()}{where}: check the path"
        return 2, str(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return 1, f"no space left on the device{where}: free some space or choose another --out"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return 1, f"read-only file system{where}: choose a writable --out"
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
        return 1, f"permission denied{where}: choose a folder you can write to"
    if isinstance(e, OSError):
        return 1, f"{e.strerror or e}{where}"
    if isinstance(e, (FloatingPointError, FolderInUse)):
        return 1, str(e)
    if isinstance(e, MemoryError):
        return 1, "out of memory: lower --batch-size, --resolution or --width-mult"
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return 1, (
        f"internal error ({type(e).__name__}: {first}); rerun with --debug for the traceback, "
        "and please report it"
    )


def _classes(text):
    try:
        v = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices like 0,1,2, got {text!r}") from None
    if any(c < 0 for c in v):
        raise argparse.ArgumentTypeError(f"class indices must be >= 0, got {text!r}")
    return v


def cmd_train(args) -> int:
    cfg = TrainConfig(
        arch=args.arch,
        width_mult=args.width_mult,
        resolution=args.resolution,
        data=args.data,
        classes=args.classes,
        backend=args.backend,
        dtype=args.dtype,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        train_limit=args.train_limit,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    m = run(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(
        f"test accuracy {m['test_accuracy']:.4f} after {m['epochs']} epochs "
        f"({m['seconds']:.0f} s of training, {m['images_per_second']:.0f} images/s); "
        f"wrote {args.out}/metrics.json, training_curves.png and the checkpoint"
    )
    return 0


def cmd_evaluate(args) -> int:
    runner, meta = load_trained(
        args.checkpoint, backend=args.backend, arch=args.arch, width_mult=args.width_mult
    )
    cfg = runner.cfg
    name = cfg.data if args.data is None else args.data
    test = D.load_data(name, cfg.resolution, seed=cfg.seed)[1]
    if args.data is None and cfg.classes is not None:
        test = test.select_classes(cfg.classes)
    if list(test.classes) != meta["classes"]:  # the same labels, or accuracy means nothing
        raise ValueError(
            f"--data has classes {list(test.classes)}, the checkpoint's model was trained on "
            f"{meta['classes']}"
        )
    ev = evaluate(runner, test, meta["mean"], meta["std"])
    pred = ev["predictions"]
    per_class = {
        str(c): float(np.mean(pred[test.y == i] == i))
        for i, c in enumerate(test.classes)
        if np.any(test.y == i)
    }
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(name),
        "images": len(test),
        "accuracy": ev["accuracy"],
        "loss": ev["loss"],
        "per_class_accuracy": per_class,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.checkpoint}: {A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px, "
            f"{len(test)} test images of {name}"
        )
        print(f"  accuracy {ev['accuracy']:.4f}   cross-entropy {ev['loss']:.4f}")
        print("  per class: " + "  ".join(f"{c} {a:.3f}" for c, a in per_class.items()))
    return 0


def _shots(text):
    try:
        v = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected images per class like 5,20, got {text!r}") from None
    if not v or any(c < 1 for c in v):
        raise argparse.ArgumentTypeError(f"images per class must be >= 1, got {text!r}")
    return v


def _seeds(text):
    try:
        v = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {text!r}") from None
    if not v or any(c < 0 for c in v) or len(set(v)) != len(v):
        raise argparse.ArgumentTypeError(f"seeds must be distinct integers >= 0, got {text!r}")
    return v


def cmd_transfer(args) -> int:
    with exclusive(args.out):  # one run per folder (its pretraining subfolder is locked too)
        report = _transfer(args)
    print(transfer_table(report))
    print(f"wrote {args.out}/transfer.json, transfer.md and transfer.png")
    return 0


def _transfer(args) -> dict:
    return transfer(
        args.out,
        pretrained=args.pretrained,
        targets=args.targets,
        shots=args.shots,
        seeds=args.seeds,
        steps=args.steps,
        lr=args.lr,
        backend=args.backend,
        quiet=args.no_progress,
    )


def _targets(text):
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names or any(t not in TARGETS for t in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {','.join(TARGETS)}, got {text!r}")
    return names


def pretrain_config(args) -> TrainConfig:
    """``pretrain``'s configuration: the options given, the rest from the loss's defaults
    (:data:`~mobilenet.apps.PRETRAIN` or :data:`~mobilenet.apps.ARCFACE`)."""
    base = ARCFACE if args.loss == "arcface" else PRETRAIN
    given = {k: getattr(args, k) for k in ("epochs", "embed_dim", "label_smoothing", "dropout")}
    return dataclasses.replace(
        base,
        arch=args.arch,
        width_mult=args.width_mult,
        resolution=args.resolution,
        backend=args.backend,
        batch_size=args.batch_size,
        lr=args.lr,
        train_limit=args.train_limit,
        seed=args.seed,
        arcface_scale=args.arcface_scale,
        arcface_margin=args.arcface_margin,
        init=args.init,
        **{k: v for k, v in given.items() if v is not None},  # unset: the loss's defaults
    )


def cmd_pretrain(args) -> int:
    cfg = pretrain_config(args)
    m = run(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    ckpt = f"{args.out}/checkpoint{B.get(args.backend).checkpoint}"
    print(
        f"test accuracy {m['test_accuracy']:.4f} on {len(m['classes'])} glyph classes after "
        f"{m['epochs']} epochs ({m['seconds']:.0f} s of training); wrote {ckpt}, metrics.json and "
        f"training_curves.png"
    )
    if cfg.loss == "arcface":
        classifier = f" --classifier {cfg.init}" if cfg.init else ""
        print(f"next: mobilenet embed --checkpoint {ckpt}{classifier} --out DIR")
    else:
        print(
            f"next: mobilenet transfer --pretrained {ckpt} --out DIR, or a metric embedding: "
            f"mobilenet pretrain --loss arcface --init {ckpt} --out DIR"
        )
    return 0


def ckpt_data(path) -> str:
    """The data a classification checkpoint was trained on (errors come from load_trained later)."""
    try:
        return str(load_checkpoint(path)[1].get("config", {}).get("data"))
    except (ValueError, FileNotFoundError, AttributeError):
        return ""


def cmd_embed(args) -> int:
    with exclusive(args.out):
        if ckpt_data(args.checkpoint) == "glyphs":  # the held-out glyph classes
            summary = embed_glyphs(
                args.checkpoint,
                args.out,
                args.classifier,
                args.enrol,
                args.seed,
                args.no_progress,
                args.draws,
            )
            table = embed_glyphs_table(summary)
        else:  # a digits-subset model: the unseen digits
            if args.classifier is not None:
                raise ValueError("embed: --classifier goes with a glyph-pretrained --checkpoint")
            summary = embed(
                args.checkpoint, args.out, args.backend, args.enrol, args.seed, quiet=args.no_progress
            )
            table = embed_table(summary)
    if args.json:
        summary = {**summary, "results": {k: {**v, "roc": None} for k, v in summary["results"].items()}}
    print(json.dumps(summary, indent=2) if args.json else table)
    if not args.json:
        print(f"wrote {args.out}/embed.json, embed.md and embed.png")
    return 0


def _detect():
    return importlib.import_module("mobilenet.detect_train")


def cmd_detect_train(args) -> int:
    dt = _detect()
    cfg = dt.DetectConfig(
        width_mult=args.width_mult,
        resolution=args.resolution,
        data=args.data,
        images=args.images,
        train_size=args.train_size,
        test_size=args.test_size,
        backend=args.backend,
        dtype=args.dtype,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=not args.no_augment,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    m = dt.run(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(
        f"mAP@0.5 {m['map_50']:.4f}, mAP@[.5:.95] {m['map_50_95']:.4f} on {m['test_images']} held-out "
        f"images after {m['epochs']} epochs ({m['seconds']:.0f} s); "
        f"wrote {args.out}/metrics.json, detection_curves.png and the checkpoint"
    )
    return 0


def _detect_data(dt, args, cfg):
    """The held-out images ``evaluate`` scores: the checkpoint's, or ``--data`` (a COCO file, all
    of it)."""
    if args.data is None:
        return dt.load_split(cfg)[1]
    if args.data == "scenes":
        return dt.S.make_scenes(cfg.test_size, cfg.resolution, seed=dt.SCENE_SEEDS[1])
    data = dt.S.load_coco(args.data, args.images, cfg.resolution, on_error="skip")
    if data.skipped:
        print(
            f"skipped {len(data.skipped)} images or annotations (first: {data.skipped[0]})", file=sys.stderr
        )
    return data


def cmd_detect_evaluate(args) -> int:
    dt = _detect()
    runner, meta = dt.load_trained(args.checkpoint, backend=args.backend)
    cfg = runner.cfg
    test = _detect_data(dt, args, cfg)
    if len(test) == 0:
        raise ValueError(f"--data {args.data!r} holds no usable images")
    if list(test.classes) != meta["classes"]:
        raise ValueError(
            f"--data has classes {list(test.classes)}, "
            f"the checkpoint's detector was trained on {meta['classes']}"
        )
    ev = dt.evaluate(runner, test, meta["mean"], meta["std"])
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data or cfg.data),
        "images": len(test),
        **{k: ev[k] for k in ("map_50", "map_50_95", "per_class")},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.checkpoint}: SSDLite-MobileNetV2-{cfg.width_mult:g} {cfg.resolution}px, "
            f"{len(test)} held-out images"
        )
        print(f"  mAP@0.5 {ev['map_50']:.4f}   mAP@[.5:.95] {ev['map_50_95']:.4f}")
        print("  AP@[.5:.95] per class: " + "  ".join(f"{c} {a:.3f}" for c, a in ev["per_class"].items()))
    return 0


def cmd_detect_predict(args) -> int:
    dt = _detect()
    runner, meta = dt.load_trained(args.checkpoint, backend=args.backend)
    x, rgb = dt.read_image(args.image, runner.cfg.resolution)
    found = dt.detect_images(runner, meta, x[None])[0]
    dt.draw(rgb, found, meta["classes"], args.out, args.min_score)
    kept = [
        {
            "class": meta["classes"][int(lab) - 1],
            "score": round(float(s), 4),
            "box": [round(float(v), 4) for v in b],
        }
        for b, s, lab in zip(*found)
        if s >= args.min_score
    ]
    if args.json:
        print(json.dumps({"image": str(args.image), "detections": kept}, indent=2))
    else:
        for d in kept:
            print(f"  {d['class']:<10} {d['score']:.3f}  box (x1, y1, x2, y2) {d['box']}")
        print(f"{len(kept)} objects with score >= {args.min_score:g}; wrote {args.out}")
    return 0


def cmd_detect_scenes(args) -> int:
    dt = _detect()
    with exclusive(args.out):
        path = dt.S.write_coco(args.out, dt.S.make_scenes(args.count, args.resolution, seed=args.seed))
    print(f"wrote {args.count} scenes: {path} and {args.out}/images/")
    return 0


def _score(text):
    v = _positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def add_detect_parser(sub):
    dt_defaults = importlib.import_module("mobilenet.detect_train").DetectConfig()
    d = sub.add_parser("detect", help="object detection with SSDLite: train, evaluate, predict")
    dsub = d.add_subparsers(dest="detect_command", required=True)
    t = dsub.add_parser("train", help="train SSDLite (numpy, numba or torch) with checkpoints and metrics")
    t.add_argument("--width-mult", type=_width, default=dt_defaults.width_mult)
    t.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=dt_defaults.resolution)
    t.add_argument("--data", default="scenes", help="scenes (generated), or a COCO-format annotations JSON")
    t.add_argument("--images", default=None, help="the COCO file's image folder (default: beside it)")
    t.add_argument(
        "--train-size",
        type=_int_at_least(2),
        default=dt_defaults.train_size,
        help="generated training scenes",
    )
    t.add_argument(
        "--test-size",
        type=_int_at_least(1),
        default=dt_defaults.test_size,
        help="held-out images (generated, or held out of a COCO file, at most a fifth)",
    )
    t.add_argument("--backend", choices=B.NAMES, default="numba")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--epochs", type=_int_at_least(1), default=dt_defaults.epochs)
    t.add_argument("--batch-size", type=_int_at_least(2), default=dt_defaults.batch_size)
    t.add_argument("--lr", type=_positive_float, default=dt_defaults.lr, help="peak learning rate")
    t.add_argument("--weight-decay", type=float, default=dt_defaults.weight_decay)
    t.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    t.add_argument("--seed", type=_int_at_least(0), default=0)
    t.add_argument(
        "--checkpoint-every", type=_int_at_least(0), default=0, help="also checkpoint every N steps"
    )
    t.add_argument("--out", required=True, help="folder for the checkpoint, metrics.json and the plot")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_detect_train)

    e = dsub.add_parser("evaluate", help="mAP of a detector checkpoint (pycocotools)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None, help="default: the checkpoint's held-out images; or a COCO JSON")
    e.add_argument("--images", default=None, help="the COCO file's image folder")
    e.add_argument("--backend", choices=B.NAMES, default=None)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_detect_evaluate)

    pr = dsub.add_parser("predict", help="detect objects in an image and draw them")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--image", required=True)
    pr.add_argument("--out", required=True, help="the annotated image (PNG)")
    pr.add_argument("--min-score", type=_score, default=0.5, help="draw detections of at least this score")
    pr.add_argument("--backend", choices=B.NAMES, default=None)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_detect_predict)

    sc = dsub.add_parser("scenes", help="write generated scenes as a COCO-format set (PNG images + JSON)")
    sc.add_argument("--count", type=_int_at_least(1), default=100)
    sc.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=dt_defaults.resolution)
    sc.add_argument("--seed", type=_int_at_least(0), default=0)
    sc.add_argument("--out", required=True, help="folder for annotations.json and images/")
    sc.set_defaults(func=cmd_detect_scenes)
    return [t, e, pr, sc]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilenet", description="MobileNet V1/V2 from scratch.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="layer table, parameters and multiply-adds")
    s.add_argument(
        "--arch", choices=(*A.ARCHS, "ssdlite"), default="v2", help="ssdlite: the detector (V2 backbone)"
    )
    s.add_argument("--width-mult", type=_width, default=1.0, help="alpha (default 1.0)")
    s.add_argument(
        "--resolution",
        type=_int_at_least(A.MIN_RESOLUTION),
        default=224,
        help="input side in px (default 224)",
    )
    s.add_argument(
        "--num-classes", type=_int_at_least(1), default=1000, help="ssdlite: counting the background (>= 2)"
    )
    s.add_argument("--json", action="store_true", help="print JSON (params, macs, layers)")
    s.set_defaults(func=cmd_summary)

    v = sub.add_parser("verify", help="NumPy model vs torch model: one training step, relative errors")
    v.add_argument("--arch", choices=(*A.ARCHS, "all"), default="all")
    v.add_argument("--width-mult", type=_width, default=1.0)
    v.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    v.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=96)
    v.add_argument("--batch-size", type=_int_at_least(2), default=4, help=">= 2: training-mode BN")
    v.add_argument("--seed", type=_int_at_least(0), default=0)
    v.add_argument("--backend", choices=B.NUMPY_MODEL, default="numpy", help="ops of the NumPy model")
    v.add_argument("--json", action="store_true")
    v.add_argument("--onnx", default=None, help="instead: check an exported ONNX file with onnxruntime")
    v.add_argument("--checkpoint", default=None, help="with --onnx: where its checkpoint is now, if moved")
    v.set_defaults(func=cmd_verify)

    bn = sub.add_parser("bench", help="latency on each backend (each alone in its process), peak memory")
    bn.add_argument("--arch", choices=tuple(A.ARCHS), default="v2")
    bn.add_argument("--width-mult", type=_width, default=1.0)
    bn.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=224)
    bn.add_argument("--batch", type=_int_at_least(1), default=1)
    bn.add_argument("--train", action="store_true", help="a training step (forward and backward)")
    bn.add_argument("--backends", type=_backends, default="numba,torch,onnxruntime", help="comma-separated")
    bn.add_argument("--rounds", type=_int_at_least(1), default=2, help="alternating rounds (default 2)")
    bn.add_argument("--threads", type=_int_at_least(1), default=2, help="on every backend (default 2)")
    bn.add_argument("--min-time", type=_positive_float, default=0.5, help="seconds of timing per round")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=cmd_bench)

    x = sub.add_parser("export", help="write a model as ONNX (dynamic batch), from a checkpoint or fresh")
    x.add_argument("--onnx", required=True, help="the file to write (.onnx)")
    x.add_argument("--checkpoint", default=None, help="a classification checkpoint (.npz or .pt)")
    x.add_argument("--arch", choices=tuple(A.ARCHS), default=None, help="without --checkpoint (default v2)")
    x.add_argument("--width-mult", type=_width, default=1.0, help="without --checkpoint")
    x.add_argument("--num-classes", type=_int_at_least(1), default=1000, help="without --checkpoint")
    x.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=224)
    x.add_argument("--seed", type=_int_at_least(0), default=0, help="of the fresh weights")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser(
        "convert", help="torchvision-format state_dict (.pth) to a checkpoint (.npz), or back (by --out)"
    )
    c.add_argument("weights", help="a .pth state_dict (torch.save(model.state_dict())), or a checkpoint")
    c.add_argument("--arch", choices=tuple(A.ARCHS), default="v2")
    c.add_argument("--width-mult", type=_width, default=None, help="default: inferred from the shapes")
    c.add_argument("--out", required=True, help="checkpoint.npz, or weights.pth")
    c.set_defaults(func=cmd_convert)

    t = sub.add_parser(
        "train", help="train a model (numpy, numba or torch) with checkpoints and a metrics file"
    )
    t.add_argument("--arch", choices=tuple(A.ARCHS), default="v2")
    t.add_argument("--width-mult", type=_width, default=0.5)
    t.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=32)
    t.add_argument(
        "--data", default="digits", help="digits, shapes, or a folder (class subfolders, or CIFAR-10 binary)"
    )
    t.add_argument("--classes", type=_classes, default=None, help="keep only these classes, e.g. 0,1,2,3,4")
    t.add_argument("--backend", choices=B.NAMES, default="numba")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--epochs", type=_int_at_least(1), default=15)
    t.add_argument("--batch-size", type=_int_at_least(2), default=32)
    t.add_argument("--optimizer", choices=("sgd", "rmsprop"), default="sgd")
    t.add_argument("--lr", type=_positive_float, default=TRAIN_DEFAULTS.lr, help="peak learning rate")
    t.add_argument("--weight-decay", type=float, default=TRAIN_DEFAULTS.weight_decay)
    t.add_argument("--label-smoothing", type=float, default=TRAIN_DEFAULTS.label_smoothing)
    t.add_argument("--dropout", type=float, default=TRAIN_DEFAULTS.dropout)
    t.add_argument(
        "--train-limit", type=_int_at_least(0), default=0, help="use only N training images (0: all)"
    )
    t.add_argument("--seed", type=_int_at_least(0), default=0)
    t.add_argument(
        "--checkpoint-every", type=_int_at_least(0), default=0, help="also checkpoint every N steps"
    )
    t.add_argument("--out", required=True, help="folder for the checkpoint, metrics.json and the plot")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None, help="default: the checkpoint's data (its test split)")
    e.add_argument("--backend", choices=B.NAMES, default=None)
    e.add_argument("--arch", choices=tuple(A.ARCHS), default=None, help="expected architecture (checked)")
    e.add_argument("--width-mult", type=_width, default=None, help="expected width (checked)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    pt = sub.add_parser(
        "pretrain", help="pretrain on the generated glyph corpus (the source of transfer and embeddings)"
    )
    pt.add_argument("--arch", choices=tuple(A.ARCHS), default=PRETRAIN.arch)
    pt.add_argument("--width-mult", type=_width, default=PRETRAIN.width_mult)
    pt.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=PRETRAIN.resolution)
    pt.add_argument("--backend", choices=B.NAMES, default=PRETRAIN.backend)
    pt.add_argument(
        "--epochs",
        type=_int_at_least(1),
        default=None,
        help=f"default {PRETRAIN.epochs} ({ARCFACE.epochs} with --loss arcface)",
    )
    pt.add_argument("--batch-size", type=_int_at_least(2), default=PRETRAIN.batch_size)
    pt.add_argument("--lr", type=_positive_float, default=PRETRAIN.lr, help="peak learning rate")
    pt.add_argument(
        "--train-limit", type=_int_at_least(0), default=0, help="use only N training images (0: all)"
    )
    pt.add_argument("--seed", type=_int_at_least(0), default=0)
    pt.add_argument(
        "--loss",
        choices=("softmax", "arcface"),
        default="softmax",
        help="arcface: learn an embedding with an additive angular margin (numpy, numba), best "
        "started from a softmax pretraining with --init",
    )
    pt.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help=f"default {PRETRAIN.label_smoothing:g} ({ARCFACE.label_smoothing:g} with --loss arcface)",
    )
    pt.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"default {PRETRAIN.dropout:g} ({ARCFACE.dropout:g} with --loss arcface)",
    )
    pt.add_argument(
        "--embed-dim",
        type=_int_at_least(2),
        default=None,
        help=f"arcface: the embedding's size (default {ARCFACE.embed_dim})",
    )
    pt.add_argument("--arcface-scale", type=_positive_float, default=PRETRAIN.arcface_scale)
    pt.add_argument("--arcface-margin", type=float, default=PRETRAIN.arcface_margin, help="radians")
    pt.add_argument(
        "--init", default="", help="start the backbone from this checkpoint (same arch and width)"
    )
    pt.add_argument("--out", required=True, help="folder for the checkpoint, metrics.json and the plot")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)

    tr = sub.add_parser(
        "transfer",
        help="few-shot transfer from a glyph-pretrained model to digits and held-out glyphs, four ways",
    )
    tr.add_argument(
        "--pretrained",
        default=None,
        help="a `mobilenet pretrain` checkpoint (default: pretrain one in OUT/pretrain)",
    )
    tr.add_argument("--targets", type=_targets, default=tuple(TARGETS), help="digits,glyphs (default both)")
    tr.add_argument(
        "--shots", type=_shots, default=(1, 5, 20), help="labelled images per class (default 1,5,20)"
    )
    tr.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="seeds to average over (default 0,1,2)")
    tr.add_argument("--steps", type=_int_at_least(1), default=150, help="SGD steps of each adaptation")
    tr.add_argument(
        "--lr", type=_positive_float, default=0.02, help="peak learning rate (fine-tuning all: a tenth)"
    )
    tr.add_argument("--backend", choices=B.NAMES, default="numba")
    tr.add_argument("--out", required=True)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=cmd_transfer)

    em = sub.add_parser("embed", help="embeddings of unseen classes: identification and verification")
    em.add_argument(
        "--checkpoint",
        required=True,
        help="a model trained on some digits (embeds the others) or a `pretrain` model (the held-out glyphs)",
    )
    em.add_argument("--backend", choices=B.NAMES, default=None)
    em.add_argument(
        "--classifier",
        default=None,
        help="with a glyph checkpoint: a softmax `pretrain` checkpoint to compare",
    )
    em.add_argument("--enrol", type=_int_at_least(1), default=5, help="gallery images per class (default 5)")
    em.add_argument("--seed", type=_int_at_least(0), default=0)
    em.add_argument(
        "--draws",
        type=_int_at_least(1),
        default=5,
        help="glyph checkpoints: average over this many draws of the gallery and pairs (default 5)",
    )
    em.add_argument("--out", required=True)
    em.add_argument("--json", action="store_true")
    em.add_argument("--no-progress", action="store_true")
    em.set_defaults(func=cmd_embed)
    nested = add_detect_parser(sub)
    for command in [*(c for name, c in sub.choices.items() if name != "detect"), *nested]:
        command.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return p


def _check_environment() -> None:
    """Settings read from the environment, checked before a library reads them its own way
    (Numba would ignore a bad NUMBA_NUM_THREADS with a warning, or fail with no name)."""
    text = os.environ.get("NUMBA_NUM_THREADS")
    if text is not None and not (text.strip().isdigit() and int(text) >= 1):
        raise ValueError(
            f"the environment variable NUMBA_NUM_THREADS must be a whole number >= 1, got {text!r}; "
            "unset it to use every core"
        )


def _name(args) -> str:
    sub = getattr(args, "detect_command", None)
    return args.command if sub is None else f"{args.command} {sub}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_environment()
        return args.func(args)
    except KeyboardInterrupt:
        print(f"mobilenet {_name(args)}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        code, message = explain(e)
        print(f"mobilenet {_name(args)}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
