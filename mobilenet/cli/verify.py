"""``mobilenet verify``: the NumPy model against torch (one training step, relative errors), or an
exported ONNX file against the NumPy reference (``--onnx``)."""

from __future__ import annotations

import json
import sys

import mobilenet_arch as A
from mobilenet import backends as B
from mobilenet import registry
from mobilenet.extras import require
from mobilenet.verify import compare

from .common import int_at_least, resolution, width


def add_verify(v) -> None:
    v.add_argument("--arch", choices=(*A.ARCHS, "all"), default="all")
    v.add_argument("--width-mult", type=width, default=1.0)
    v.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    resolution(v, 96)
    v.add_argument("--batch-size", type=int_at_least(2), default=4, help=">= 2: training-mode BN")
    v.add_argument("--seed", type=int_at_least(0), default=0)
    v.add_argument("--backend", choices=B.NUMPY_MODEL, default="numpy", help="ops of the NumPy model")
    v.add_argument("--json", action="store_true")
    v.add_argument("--onnx", default=None, help="instead: check an exported ONNX file with onnxruntime")
    v.add_argument("--checkpoint", default=None, help="with --onnx: where its checkpoint is now, if moved")
    v.set_defaults(func=cmd_verify)


def _format(r: dict) -> str:
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


def cmd_verify(args) -> int:
    if args.onnx is not None:
        return cmd_verify_onnx(args)
    if args.checkpoint is not None:
        raise ValueError("verify: --checkpoint goes with --onnx (the checkpoint the ONNX file came from)")
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
            print(_format(r))
    ok = all(r["ok"] for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "results": results}, indent=2))
    else:
        print("verify: all within tolerance" if ok else "verify: FAILED", file=sys.stderr)
    return 0 if ok else 1


def cmd_verify_onnx(args) -> int:
    require("onnx", "verify --onnx")
    qdq = registry.onnx_qdq()
    if qdq.is_qdq(args.onnx):
        return _verify_qdq(qdq, args)
    r = registry.onnx_exporter().verify_onnx(args.onnx, checkpoint=args.checkpoint, seed=args.seed)
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


def _verify_qdq(qdq, args) -> int:
    r = qdq.verify_qdq(args.onnx, checkpoint=args.checkpoint, seed=args.seed)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        mark = "ok" if r["ok"] else "FAIL"
        print(
            f"{r['onnx']}: int8 {A.model_name(r['arch'])} width_mult={r['width_mult']:g} (QDQ); onnxruntime "
            f"{r['onnxruntime']} vs our integer model, batch {r['batch']} at {r['resolution']} px\n"
            f"  logits differ by at most {r['max_units']:g} quantized units "
            f"<= {r['tolerance_units']:g} {mark}   "
            f"equal on {r['equal_fraction']:.1%}   top-1 agreement {r['top1_agreement']:.0%}"
        )
    print("verify: within tolerance" if r["ok"] else "verify: FAILED", file=sys.stderr)
    return 0 if r["ok"] else 1


COMMANDS = {"verify": add_verify}
