"""``mobilenet train | evaluate | pretrain``: classification runs (softmax or ArcFace) and the
accuracy of their checkpoints. Every default is read from ``TrainConfig`` (``pretrain``: from
``PRETRAIN`` and ``ARCFACE``)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

import mobilenet_arch as A
from mobilenet import backends as B
from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from mobilenet.deploy import qcheckpoint as quantized
from mobilenet.training.classify import evaluate, load_trained, run
from mobilenet.training.config import ARCFACE, PRETRAIN, TrainConfig

from . import launch
from .common import (
    backend_option,
    config_from_args,
    int_at_least,
    int_list,
    positive_float,
    require_backend,
    resolution,
    run_options,
    width,
)

TRAIN = TrainConfig()


def _classes(text):
    return int_list("class indices", "0,1,2", 0)(text)


def model_options(p, defaults: TrainConfig) -> None:
    """--arch, --width-mult, --resolution and --backend, defaulting to ``defaults``."""
    p.add_argument("--arch", choices=tuple(A.ARCHS), default=defaults.arch)
    p.add_argument("--width-mult", type=width, default=defaults.width_mult)
    resolution(p, defaults.resolution)
    backend_option(p, defaults.backend)


def add_train(t) -> None:
    model_options(t, TRAIN)
    t.add_argument(
        "--data",
        default=TRAIN.data,
        help="digits, shapes, or a folder (class subfolders, or CIFAR-10 binary)",
    )
    t.add_argument(
        "--classes", type=_classes, default=TRAIN.classes, help="keep only these classes, e.g. 0,1,2"
    )
    t.add_argument("--dtype", choices=("float32", "float64"), default=TRAIN.dtype)
    t.add_argument("--epochs", type=int_at_least(1), default=TRAIN.epochs)
    t.add_argument("--batch-size", type=int_at_least(2), default=TRAIN.batch_size)
    t.add_argument("--optimizer", choices=("sgd", "rmsprop"), default=TRAIN.optimizer)
    t.add_argument("--lr", type=positive_float, default=TRAIN.lr, help="peak learning rate")
    t.add_argument("--weight-decay", type=float, default=TRAIN.weight_decay)
    t.add_argument("--label-smoothing", type=float, default=TRAIN.label_smoothing)
    t.add_argument("--dropout", type=float, default=TRAIN.dropout)
    t.add_argument(
        "--train-limit",
        type=int_at_least(0),
        default=TRAIN.train_limit,
        help="use only N training images (0: all)",
    )
    run_options(t)
    launch.add_options(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    cfg = config_from_args(TrainConfig, args, parts=launch.parts(args)).validate()
    code, m = launch.as_job(args, cfg, run)
    if m is None:  # a launcher, or a worker that is not rank 0
        return code
    print(
        f"test accuracy {m['test_accuracy']:.4f} after {m['epochs']} epochs "
        f"({m['seconds']:.0f} s of training, {m['images_per_second']:.0f} images/s); "
        f"wrote {args.out}/metrics.json, training_curves.png and the checkpoint"
    )
    return 0


def add_evaluate(e) -> None:
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None, help="default: the checkpoint's data (its test split)")
    e.add_argument("--backend", choices=B.NAMES, default=None)
    e.add_argument("--arch", choices=tuple(A.ARCHS), default=None, help="expected architecture (checked)")
    e.add_argument("--width-mult", type=width, default=None, help="expected width (checked)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)


def _load_any(args):
    """A float checkpoint's runner (on ``--backend``), or an integer one's (NumPy integers)."""
    if quantized.is_quantized(ckpt.load(args.checkpoint)[1]):
        if args.backend not in (None, "numpy"):
            raise ValueError(
                f"{args.checkpoint} is an integer checkpoint: it runs on NumPy's integer ops, "
                f"not --backend {args.backend}"
            )
        runner, meta = quantized.load_quantized(args.checkpoint)
        cfg = runner.cfg
        for name, want, got in (
            ("--arch", args.arch, cfg.arch),
            ("--width-mult", args.width_mult, cfg.width_mult),
        ):
            if want is not None and want != got:
                raise ValueError(
                    f"{args.checkpoint} holds {A.model_name(cfg.arch)} width {cfg.width_mult:g}, "
                    f"not {name} {want}"
                )
        return runner, meta, "int8 "
    require_backend(args.backend, f"--backend {args.backend}")
    runner, meta = load_trained(
        args.checkpoint, backend=args.backend, arch=args.arch, width_mult=args.width_mult
    )
    return runner, meta, ""


def cmd_evaluate(args) -> int:
    runner, meta, kind = _load_any(args)
    cfg = runner.cfg
    name = cfg.data if args.data is None else args.data
    test = D.load_data(name, cfg.resolution, seed=cfg.seed)[1]
    if args.data is None and cfg.classes is not None:
        test = test.select_classes(cfg.classes)
    if list(test.classes) != meta["classes"]:  # the same labels, or accuracy means nothing
        raise ValueError(
            f"--data has classes {list(test.classes)}, "
            f"the checkpoint's model was trained on {meta['classes']}"
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
        "quantized": bool(kind),
        "data": str(name),
        "images": len(test),
        "accuracy": ev["accuracy"],
        "loss": ev["loss"],
        "per_class_accuracy": per_class,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.checkpoint}: {kind}{A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px, "
        f"{len(test)} test images of {name}"
    )
    print(f"  accuracy {ev['accuracy']:.4f}   cross-entropy {ev['loss']:.4f}")
    print("  per class: " + "  ".join(f"{c} {a:.3f}" for c, a in per_class.items()))
    return 0


def add_pretrain(pt) -> None:
    model_options(pt, PRETRAIN)
    pt.add_argument(
        "--epochs",
        type=int_at_least(1),
        default=None,
        help=f"default {PRETRAIN.epochs} ({ARCFACE.epochs} with --loss arcface)",
    )
    pt.add_argument("--batch-size", type=int_at_least(2), default=PRETRAIN.batch_size)
    pt.add_argument("--lr", type=positive_float, default=PRETRAIN.lr, help="peak learning rate")
    pt.add_argument(
        "--train-limit", type=int_at_least(0), default=PRETRAIN.train_limit, help="use only N training images"
    )
    pt.add_argument(
        "--loss",
        choices=("softmax", "arcface"),
        default=PRETRAIN.loss,
        help="arcface: learn an embedding with an additive angular margin (numpy, numba), best "
        "started from a softmax pretraining with --init",
    )
    for name, kind in (("label_smoothing", float), ("dropout", float), ("embed_dim", int_at_least(2))):
        shown = f"default {getattr(PRETRAIN, name):g} ({getattr(ARCFACE, name):g} with --loss arcface)"
        pt.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=shown)
    pt.add_argument("--arcface-scale", type=positive_float, default=PRETRAIN.arcface_scale)
    pt.add_argument("--arcface-margin", type=float, default=PRETRAIN.arcface_margin, help="radians")
    pt.add_argument(
        "--init", default=PRETRAIN.init, help="start the backbone from this checkpoint (same arch and width)"
    )
    run_options(pt)
    launch.add_options(pt)
    pt.set_defaults(func=cmd_pretrain)


def pretrain_config(args: argparse.Namespace) -> TrainConfig:
    """``pretrain``'s configuration: the options given, the rest from the loss's defaults
    (:data:`~mobilenet.training.config.PRETRAIN` or :data:`~mobilenet.training.config.ARCFACE`)."""
    base = ARCFACE if args.loss == "arcface" else PRETRAIN
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})  # unset: the loss's


def cmd_pretrain(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    cfg = dataclasses.replace(pretrain_config(args), parts=launch.parts(args)).validate()
    code, m = launch.as_job(args, cfg, run)
    if m is None:  # a launcher, or a worker that is not rank 0
        return code
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


COMMANDS = {"train": add_train, "evaluate": add_evaluate, "pretrain": add_pretrain}
