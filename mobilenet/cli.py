"""The ``mobilenet`` command line: ``mobilenet summary`` and ``mobilenet verify``."""

from __future__ import annotations

import argparse
import json
import sys

from . import arch as A


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
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
    from .summary import format_table, summary_dict

    d = summary_dict(args.arch, args.width_mult, args.resolution, args.num_classes)
    print(json.dumps(d, indent=2) if args.json else format_table(d))
    return 0


def _format_verify(r: dict) -> str:
    lines = [
        f"MobileNet{r['arch'].upper()} width_mult={r['width_mult']:g} {r['dtype']} backend={r['backend']} "
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
    from .verify import compare

    archs = ("v1", "v2") if args.arch == "all" else (args.arch,)
    results = []
    for arch in archs:
        r = compare(arch, args.width_mult, args.dtype, args.resolution, args.batch_size, args.seed,
                    backend=args.backend)  # fmt: skip
        results.append(r)
        if not args.json:
            print(_format_verify(r))
    ok = all(r["ok"] for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "results": results}, indent=2))
    else:
        print("verify: all within tolerance" if ok else "verify: FAILED", file=sys.stderr)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilenet", description="MobileNet V1/V2 from scratch.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="layer table, parameters and multiply-adds")
    s.add_argument("--arch", choices=("v1", "v2"), default="v2")
    s.add_argument("--width-mult", type=_positive_float, default=1.0, help="alpha (default 1.0)")
    s.add_argument(
        "--resolution",
        type=_int_at_least(A.MIN_RESOLUTION),
        default=224,
        help="input side in px (default 224)",
    )
    s.add_argument("--num-classes", type=_int_at_least(1), default=1000)
    s.add_argument("--json", action="store_true", help="print JSON (params, macs, layers)")
    s.set_defaults(func=cmd_summary)

    v = sub.add_parser("verify", help="NumPy model vs torch model: one training step, relative errors")
    v.add_argument("--arch", choices=("v1", "v2", "all"), default="all")
    v.add_argument("--width-mult", type=_positive_float, default=1.0)
    v.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    v.add_argument("--resolution", type=_int_at_least(A.MIN_RESOLUTION), default=96)
    v.add_argument("--batch-size", type=_int_at_least(2), default=4, help=">= 2: training-mode BN")
    v.add_argument("--seed", type=_int_at_least(0), default=0)
    v.add_argument("--backend", choices=("numpy", "numba"), default="numpy", help="ops of the NumPy model")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
