"""``mobilenet convert``: a torchvision-format ``state_dict`` (.pth) to a checkpoint (.npz), or back."""

from __future__ import annotations

import mobilenet_arch as A
from mobilenet.deploy.state_dicts import convert

from .common import width


def add_convert(c) -> None:
    c.add_argument("weights", help="a .pth state_dict (torch.save(model.state_dict())), or a checkpoint")
    c.add_argument("--arch", choices=tuple(A.ARCHS), default="v2")
    c.add_argument("--width-mult", type=width, default=None, help="default: inferred from the shapes")
    c.add_argument("--out", required=True, help="checkpoint.npz, or weights.pth")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    r = convert(args.weights, args.out, arch=args.arch, width_mult=args.width_mult)
    print(
        f"wrote {r['to']}: {A.model_name(r['arch'])} width {r['width_mult']:g}, "
        f"{r['num_classes']} classes (from {r['from']})"
    )
    return 0


COMMANDS = {"convert": add_convert}
