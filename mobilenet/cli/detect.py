"""``mobilenet detect train | evaluate | predict | scenes``: SSDLite. Training defaults are read
from ``DetectConfig``."""

from __future__ import annotations

import argparse
import json
import sys

from mobilenet.checkpoint import exclusive
from mobilenet.data import scenes as S
from mobilenet.detection import predict as P
from mobilenet.detection.config import SCENE_SEEDS, DetectConfig
from mobilenet.detection.train import evaluate, load_split, load_trained, run

from . import launch
from .common import (
    add_debug,
    backend_option,
    config_from_args,
    int_at_least,
    positive_float,
    require_backend,
    resolution,
    run_options,
    width,
)

DETECT = DetectConfig()


def _score(text):
    v = positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def add_detect(d) -> list:
    """The group's sub-commands; returns their parsers (the registry gives each ``--debug``)."""
    dsub = d.add_subparsers(dest="detect_command", required=True)
    t = dsub.add_parser("train", help="train SSDLite (numpy, numba or torch) with checkpoints and metrics")
    t.add_argument("--width-mult", type=width, default=DETECT.width_mult)
    resolution(t, DETECT.resolution)
    t.add_argument(
        "--data", default=DETECT.data, help="scenes (generated), or a COCO-format annotations JSON"
    )
    t.add_argument(
        "--images", default=DETECT.images, help="the COCO file's image folder (default: beside it)"
    )
    t.add_argument(
        "--train-size", type=int_at_least(2), default=DETECT.train_size, help="generated training scenes"
    )
    t.add_argument(
        "--test-size",
        type=int_at_least(1),
        default=DETECT.test_size,
        help="held-out images (generated, or held out of a COCO file, at most a fifth)",
    )
    backend_option(t, DETECT.backend)
    t.add_argument("--dtype", choices=("float32", "float64"), default=DETECT.dtype)
    t.add_argument("--epochs", type=int_at_least(1), default=DETECT.epochs)
    t.add_argument("--batch-size", type=int_at_least(2), default=DETECT.batch_size)
    t.add_argument("--lr", type=positive_float, default=DETECT.lr, help="peak learning rate")
    t.add_argument("--weight-decay", type=float, default=DETECT.weight_decay)
    t.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    run_options(t)
    launch.add_options(t)
    t.set_defaults(func=cmd_train)

    e = dsub.add_parser("evaluate", help="mAP of a detector checkpoint (pycocotools)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None, help="default: the checkpoint's held-out images; or a COCO JSON")
    e.add_argument("--images", default=None, help="the COCO file's image folder")
    backend_option(e, None)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    pr = dsub.add_parser("predict", help="detect objects in an image and draw them")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--image", required=True)
    pr.add_argument("--out", required=True, help="the annotated image (PNG)")
    pr.add_argument("--min-score", type=_score, default=0.5, help="draw detections of at least this score")
    backend_option(pr, None)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    sc = dsub.add_parser("scenes", help="write generated scenes as a COCO-format set (PNG images + JSON)")
    sc.add_argument("--count", type=int_at_least(1), default=100)
    resolution(sc, DETECT.resolution)
    sc.add_argument("--seed", type=int_at_least(0), default=0)
    sc.add_argument("--out", required=True, help="folder for annotations.json and images/")
    sc.set_defaults(func=cmd_scenes)
    for p in (t, e, pr, sc):
        add_debug(p)
    return [t, e, pr, sc]


def cmd_train(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    cfg = config_from_args(
        DetectConfig, args, augment=not args.no_augment, parts=launch.parts(args)
    ).validate()
    code, m = launch.as_job(args, cfg, run)
    if m is None:  # a launcher, or a worker that is not rank 0
        return code
    print(
        f"mAP@0.5 {m['map_50']:.4f}, mAP@[.5:.95] {m['map_50_95']:.4f} on {m['test_images']} held-out "
        f"images after {m['epochs']} epochs ({m['seconds']:.0f} s); "
        f"wrote {args.out}/metrics.json, detection_curves.png and the checkpoint"
    )
    return 0


def _held_out(args, cfg):
    """The held-out images ``evaluate`` scores: the checkpoint's, or ``--data`` (a COCO file, all
    of it)."""
    if args.data is None:
        return load_split(cfg)[1]
    if args.data == "scenes":
        return S.make_scenes(cfg.test_size, cfg.resolution, seed=SCENE_SEEDS[1])
    data = S.load_coco(args.data, args.images, cfg.resolution, on_error="skip")
    if data.skipped:
        print(
            f"skipped {len(data.skipped)} images or annotations (first: {data.skipped[0]})", file=sys.stderr
        )
    return data


def cmd_evaluate(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    runner, meta = load_trained(args.checkpoint, backend=args.backend)
    cfg = runner.cfg
    test = _held_out(args, cfg)
    if len(test) == 0:
        raise ValueError(f"--data {args.data!r} holds no usable images")
    if list(test.classes) != meta["classes"]:
        raise ValueError(
            f"--data has classes {list(test.classes)}, "
            f"the checkpoint's detector was trained on {meta['classes']}"
        )
    ev = evaluate(runner, test, meta["mean"], meta["std"])
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data or cfg.data),
        "images": len(test),
        **{k: ev[k] for k in ("map_50", "map_50_95", "per_class")},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.checkpoint}: SSDLite-MobileNetV2-{cfg.width_mult:g} {cfg.resolution}px, "
        f"{len(test)} held-out images"
    )
    print(f"  mAP@0.5 {ev['map_50']:.4f}   mAP@[.5:.95] {ev['map_50_95']:.4f}")
    print("  AP@[.5:.95] per class: " + "  ".join(f"{c} {a:.3f}" for c, a in ev["per_class"].items()))
    return 0


def cmd_predict(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    runner, meta = load_trained(args.checkpoint, backend=args.backend)
    x, rgb = P.read_image(args.image, runner.cfg.resolution)
    found = P.detect_images(runner, meta, x[None])[0]
    P.draw(rgb, found, meta["classes"], args.out, args.min_score)
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
        return 0
    for d in kept:
        print(f"  {d['class']:<10} {d['score']:.3f}  box (x1, y1, x2, y2) {d['box']}")
    print(f"{len(kept)} objects with score >= {args.min_score:g}; wrote {args.out}")
    return 0


def cmd_scenes(args) -> int:
    with exclusive(args.out):
        path = S.write_coco(args.out, S.make_scenes(args.count, args.resolution, seed=args.seed))
    print(f"wrote {args.count} scenes: {path} and {args.out}/images/")
    return 0


COMMANDS = {"detect": add_detect}
