"""``mobilenet export``: a model as ONNX (dynamic batch), from a checkpoint or fresh weights."""

from __future__ import annotations

import mobilenet_arch as A
from mobilenet import checkpoint as ckpt
from mobilenet.deploy import qcheckpoint as quantized
from mobilenet.deploy.onnx_export import export_onnx
from mobilenet.deploy.onnx_qdq import export_qdq

from .common import int_at_least, resolution, width


def add_export(x) -> None:
    x.add_argument("--onnx", required=True, help="the file to write (.onnx)")
    x.add_argument("--checkpoint", default=None, help="a classification checkpoint (.npz or .pt)")
    x.add_argument("--arch", choices=tuple(A.ARCHS), default=None, help="without --checkpoint (default v2)")
    x.add_argument("--width-mult", type=width, default=1.0, help="without --checkpoint")
    x.add_argument("--num-classes", type=int_at_least(1), default=1000, help="without --checkpoint")
    resolution(x, None, help="default 224 (an integer checkpoint: its training resolution)")
    x.add_argument("--seed", type=int_at_least(0), default=0, help="of the fresh weights")
    x.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    if args.checkpoint is not None and args.arch is not None:
        raise ValueError("export: --arch and --width-mult come from the checkpoint; drop them")
    if args.checkpoint is not None and quantized.is_quantized(ckpt.load(args.checkpoint)[1]):
        r = export_qdq(args.onnx, args.checkpoint, resolution=args.resolution)
        print(
            f"wrote {r['onnx']} ({r['bytes'] / 1e6:.2f} MB, opset {r['opset']}, QDQ int8, dynamic batch): "
            f"{A.model_name(r['arch'])} width {float(r['width_mult']):g}, {r['num_classes']} classes, "
            f"{r['resolution']} px, integer checkpoint {args.checkpoint}\n"
            f"check it: mobilenet verify --onnx {r['onnx']}"
        )
        return 0
    r = export_onnx(
        args.onnx,
        checkpoint=args.checkpoint,
        arch=args.arch or "v2",
        width_mult=args.width_mult,
        num_classes=args.num_classes,
        resolution=224 if args.resolution is None else args.resolution,
        seed=args.seed,
    )
    src = f"checkpoint {args.checkpoint}" if args.checkpoint else f"fresh weights (seed {args.seed})"
    print(
        f"wrote {r['onnx']} ({r['bytes'] / 1e6:.1f} MB, opset {r['opset']}, dynamic batch): "
        f"{A.model_name(r['arch'])} width {float(r['width_mult']):g}, {r['num_classes']} classes, "
        f"{r['resolution']} px, {src}\ncheck it: mobilenet verify --onnx {r['onnx']}"
    )
    return 0


COMMANDS = {"export": add_export}
