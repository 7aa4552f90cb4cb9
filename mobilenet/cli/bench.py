"""``mobilenet bench``: latency and peak memory on each backend, each alone in its process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mobilenet_arch as A
from mobilenet.deploy import bench, qcheckpoint

from .common import config_from_args, int_at_least, positive_float, resolution, width


def _backends(text):
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in bench.BACKENDS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names among {','.join(bench.BACKENDS)} separated by commas, got {text!r}"
        )
    return names


CASE = bench.Case()  # the defaults of what is timed


def add_bench(bn) -> None:
    bn.add_argument("--arch", choices=tuple(A.ARCHS), default=CASE.arch)
    bn.add_argument("--width-mult", type=width, default=CASE.width_mult)
    resolution(bn, CASE.resolution)
    bn.add_argument("--batch", type=int_at_least(1), default=CASE.batch)
    bn.add_argument("--train", action="store_true", help="a training step (forward and backward)")
    bn.add_argument(
        "--backends",
        type=_backends,
        default=None,
        dest="backends_given",
        help=f"comma-separated, among {','.join(bench.BACKENDS)} (default numba,torch,onnxruntime)",
    )
    bn.add_argument("--rounds", type=int_at_least(1), default=2, help="alternating rounds (default 2)")
    bn.add_argument("--threads", type=int_at_least(1), default=2, help="on every backend (default 2)")
    bn.add_argument("--min-time", type=positive_float, default=0.5, help="seconds of timing per round")
    bn.add_argument(
        "--checkpoint",
        default=None,
        help="an integer checkpoint (mobilenet quantize's) to time: its model, resolution and integers "
        "(default backends then numba,numba-int8,torch-int8,onnxruntime-int8)",
    )
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=cmd_bench)


def _from_checkpoint(args) -> dict:
    """The case's fields an integer checkpoint fixes (its model, resolution, classes)."""
    runner, meta = qcheckpoint.load_quantized(args.checkpoint)  # refuses a float checkpoint, says why
    cfg = runner.cfg
    if args.backends_given is None:
        args.backends = ["numba", "numba-int8", "torch-int8", "onnxruntime-int8"]
    return {
        "arch": cfg.arch,
        "width_mult": cfg.width_mult,
        "resolution": cfg.resolution,
        "num_classes": meta["num_classes"],
        "checkpoint": str(Path(args.checkpoint).resolve()),
    }


def cmd_bench(args) -> int:
    args.backends = args.backends_given or ["numba", "torch", "onnxruntime"]
    fixed = _from_checkpoint(args) if args.checkpoint is not None else {}
    case = config_from_args(bench.Case, args, **fixed).validate()
    say = (lambda *a: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"timing {case.key} on {', '.join(args.backends)}: each alone in its process, {args.rounds} rounds")
    res = bench.bench([case], args.backends, args.rounds, args.threads, args.min_time, progress=say)
    print(json.dumps(res, indent=2) if args.json else bench.format_table(res))
    return 0 if res["results"] else 1


COMMANDS = {"bench": add_bench}
