"""``mobilenet summary``: the layer table, parameters and multiply-adds of a model or the detector."""

from __future__ import annotations

import json

import mobilenet_arch as A
from mobilenet.summary import format_table, ssdlite_summary, summary_dict

from .common import int_at_least, resolution, width


def add_summary(s) -> None:
    s.add_argument(
        "--arch", choices=(*A.ARCHS, "ssdlite"), default="v2", help="ssdlite: the detector (V2 backbone)"
    )
    s.add_argument("--width-mult", type=width, default=1.0, help="alpha (default 1.0)")
    resolution(s, 224, "input side in px (default 224)")
    s.add_argument(
        "--num-classes", type=int_at_least(1), default=1000, help="ssdlite: counting the background (>= 2)"
    )
    s.add_argument("--json", action="store_true", help="print JSON (params, macs, layers)")
    s.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    if args.arch == "ssdlite":  # num_classes counts the background, as torchvision's detectors
        d = ssdlite_summary(args.width_mult, args.resolution, args.num_classes)
    else:
        d = summary_dict(args.arch, args.width_mult, args.resolution, args.num_classes)
    print(json.dumps(d, indent=2) if args.json else format_table(d))
    return 0


COMMANDS = {"summary": add_summary}
