"""The ``mobilenet`` command line, and its command registry.

One module per command or group of commands, each with its parsers beside its handlers
(``summary``, ``verify``, ``train`` with ``evaluate`` and ``pretrain``, ``apps`` with ``transfer``
and ``embed``, ``detect``, ``export``, ``convert``, ``bench``); :mod:`~mobilenet.cli.common` holds
what they share. :data:`COMMANDS` is one of the application's two places that load modules on
demand (the other is :mod:`mobilenet.backends`): a command's module is imported only when that
command runs, after the extras it needs (setup.cfg's, :mod:`mobilenet.extras`) are found
installed. So ``mobilenet --help`` and ``mobilenet summary`` never import torch, onnxruntime or
numba, and a missing extra is named, with the ``pip install`` that brings it, before any work.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from mobilenet.extras import MissingExtra, require

from .common import add_debug, check_environment, explain


@dataclass(frozen=True)
class Command:
    module: str  # holds COMMANDS: {name: add_arguments(parser)}
    help: str
    extras: tuple = ()  # setup.cfg extras every use of the command needs


COMMANDS = {
    "summary": Command("mobilenet.cli.summary", "layer table, parameters and multiply-adds"),
    "verify": Command(
        "mobilenet.cli.verify", "NumPy model vs torch model: one training step, relative errors", ("torch",)
    ),
    "bench": Command(
        "mobilenet.cli.bench", "latency on each backend (each alone in its process), peak memory"
    ),
    "export": Command(
        "mobilenet.cli.export", "write a model as ONNX (dynamic batch), from a checkpoint or fresh", ("onnx",)
    ),
    "convert": Command(
        "mobilenet.cli.convert",
        "torchvision-format state_dict (.pth) to a checkpoint (.npz), or back (by --out)",
        ("torch",),
    ),
    "train": Command(
        "mobilenet.cli.train",
        "train a model (numpy, numba or torch) with checkpoints and a metrics file",
        ("train",),
    ),
    "evaluate": Command("mobilenet.cli.train", "test accuracy of a checkpoint (float or int8)", ("train",)),
    "quantize": Command(
        "mobilenet.cli.quantize", "post-training int8 quantization of a classification checkpoint", ("train",)
    ),
    "pretrain": Command(
        "mobilenet.cli.train",
        "pretrain on the generated glyph corpus (the source of transfer and embeddings)",
        ("train",),
    ),
    "transfer": Command(
        "mobilenet.cli.apps",
        "few-shot transfer from a glyph-pretrained model to digits and held-out glyphs, four ways",
        ("train",),
    ),
    "embed": Command(
        "mobilenet.cli.apps", "embeddings of unseen classes: identification and verification", ("train",)
    ),
    "detect": Command(
        "mobilenet.cli.detect", "object detection with SSDLite: train, evaluate, predict", ("detect",)
    ),
}


def load(name: str):
    """The module of command ``name``, imported once its extras are found installed."""
    for extra in COMMANDS[name].extras:
        require(extra, f"mobilenet {name}")
    return importlib.import_module(COMMANDS[name].module)


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The parser; the arguments of ``commands`` (default: all) are added, the others' are not
    loaded (their modules are imported only to run them)."""
    p = argparse.ArgumentParser(prog="mobilenet", description="MobileNet V1, V2 and V3 from scratch.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        parser = sub.add_parser(name, help=c.help, description=c.help)
        if commands is None or name in commands:
            leaves = load(name).COMMANDS[name](parser)  # a group returns its sub-commands' parsers
            if leaves is None:
                add_debug(parser)
    return p


def _name(args) -> str:
    sub = getattr(args, "detect_command", None)
    return args.command if sub is None else f"{args.command} {sub}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        parser = build_parser(() if name is None else (name,))
    except MissingExtra as e:
        print(f"mobilenet {name}: error: {e}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    args.argv = argv  # a data-parallel launcher starts its workers with the same command
    try:
        check_environment()
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
