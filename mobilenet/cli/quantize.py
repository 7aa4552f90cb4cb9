"""``mobilenet quantize``: a float classification checkpoint to an integer (int8) one."""

from __future__ import annotations

import json

from mobilenet.deploy.quantize import quantize_checkpoint
from numpy_impl.quant.observers import OBSERVERS

from .common import int_at_least


def add_quantize(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a float classification checkpoint (.npz)")
    p.add_argument(
        "--out", required=True, help="folder for checkpoint.npz (the integer model) and metrics.json"
    )
    p.add_argument(
        "--calibration", type=int_at_least(1), default=512, help="calibration images (default 512)"
    )
    p.add_argument("--observer", choices=tuple(OBSERVERS), default="minmax", help="how ranges are chosen")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per layer, not per channel")
    p.add_argument(
        "--bits", type=int, choices=range(2, 9), default=8, metavar="{2..8}", help="weights and activations"
    )
    p.add_argument(
        "--scheme",
        choices=("float", "fixed"),
        default="float",
        help="requantization: float multiplier (torch's x86) or int32 fixed point (TFLite)",
    )
    p.add_argument("--data", default=None, help="calibrate on this data's training split (same classes)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="which calibration images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args) -> int:
    m = quantize_checkpoint(
        args.checkpoint,
        args.out,
        calibration=args.calibration,
        observer=args.observer,
        per_channel=not args.per_tensor,
        bits=args.bits,
        scheme=args.scheme,
        data=args.data,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    q = m["quantization"]
    print(
        f"{m['calibration_images']} calibration images, {q['observer']} observer, "
        f"{'per-channel' if q['per_channel'] else 'per-tensor'} weights, {q['bits']} bits, "
        f"{q['scheme']} requantization"
    )
    print(
        f"  test accuracy: float {m['float_accuracy']:.4f}, int8 {m['int8_accuracy']:.4f} "
        f"({100 * (m['int8_accuracy'] - m['float_accuracy']):+.2f} points; predictions agree on "
        f"{100 * m['agreement']:.1f}% of {m['test_images']} images)"
    )
    print(f"  weights: float {m['float_bytes'] / 1e6:.2f} MB, int8 {m['int8_bytes'] / 1e6:.2f} MB")
    print(
        f"wrote {args.out}/checkpoint.npz and metrics.json; "
        f"next: mobilenet evaluate --checkpoint {args.out}/checkpoint.npz"
    )
    return 0


COMMANDS = {"quantize": add_quantize}
