"""``mobilenet transfer | embed``: few-shot transfer from the glyph corpus, and embeddings of
classes a model never saw."""

from __future__ import annotations

import argparse
import json

from mobilenet.apps.embed import embed, embed_glyphs, embed_glyphs_table, embed_table
from mobilenet.apps.transfer import TARGETS, transfer, transfer_table
from mobilenet.checkpoint import exclusive
from mobilenet.checkpoint import load as load_checkpoint

from .common import backend_option, int_at_least, int_list, positive_float, require_backend


def _targets(text):
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names or any(t not in TARGETS for t in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {','.join(TARGETS)}, got {text!r}")
    return names


def add_transfer(tr) -> None:
    tr.add_argument(
        "--pretrained",
        default=None,
        help="a `mobilenet pretrain` checkpoint (default: pretrain one in OUT/pretrain)",
    )
    tr.add_argument("--targets", type=_targets, default=tuple(TARGETS), help="digits,glyphs (default both)")
    tr.add_argument(
        "--shots",
        type=int_list("images per class", "5,20", 1),
        default=(1, 5, 20),
        help="labelled images per class (default 1,5,20)",
    )
    tr.add_argument(
        "--seeds",
        type=int_list("seeds", "0,1,2", 0, distinct=True),
        default=(0, 1, 2),
        help="seeds to average over (default 0,1,2)",
    )
    tr.add_argument("--steps", type=int_at_least(1), default=150, help="SGD steps of each adaptation")
    tr.add_argument(
        "--lr", type=positive_float, default=0.02, help="peak learning rate (fine-tuning all: a tenth)"
    )
    backend_option(tr)
    tr.add_argument("--out", required=True)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=cmd_transfer)


def cmd_transfer(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    with exclusive(args.out):  # one run per folder (its pretraining subfolder is locked too)
        report = transfer(
            args.out,
            pretrained=args.pretrained,
            targets=args.targets,
            shots=args.shots,
            seeds=args.seeds,
            steps=args.steps,
            lr=args.lr,
            backend=args.backend,
            quiet=args.no_progress,
        )
    print(transfer_table(report))
    print(f"wrote {args.out}/transfer.json, transfer.md and transfer.png")
    return 0


def add_embed(em) -> None:
    em.add_argument(
        "--checkpoint",
        required=True,
        help="a model trained on some digits (embeds the others) or a `pretrain` model (the held-out glyphs)",
    )
    backend_option(em, None)
    em.add_argument(
        "--classifier",
        default=None,
        help="with a glyph checkpoint: a softmax `pretrain` checkpoint to compare",
    )
    em.add_argument("--enrol", type=int_at_least(1), default=5, help="gallery images per class (default 5)")
    em.add_argument("--seed", type=int_at_least(0), default=0)
    em.add_argument(
        "--draws",
        type=int_at_least(1),
        default=5,
        help="glyph checkpoints: average over this many draws of the gallery and pairs (default 5)",
    )
    em.add_argument("--out", required=True)
    em.add_argument("--json", action="store_true")
    em.add_argument("--no-progress", action="store_true")
    em.set_defaults(func=cmd_embed)


def ckpt_data(path) -> str:
    """The data a classification checkpoint was trained on (errors come from load_trained later)."""
    try:
        return str(load_checkpoint(path)[1].get("config", {}).get("data"))
    except (ValueError, FileNotFoundError, AttributeError):
        return ""


def cmd_embed(args) -> int:
    require_backend(args.backend, f"--backend {args.backend}")
    with exclusive(args.out):
        if ckpt_data(args.checkpoint) == "glyphs":  # the held-out glyph classes
            summary = embed_glyphs(
                args.checkpoint,
                args.out,
                args.classifier,
                args.enrol,
                args.seed,
                args.no_progress,
                args.draws,
            )
            table = embed_glyphs_table(summary)
        else:  # a digits-subset model: the unseen digits
            if args.classifier is not None:
                raise ValueError("embed: --classifier goes with a glyph-pretrained --checkpoint")
            summary = embed(
                args.checkpoint, args.out, args.backend, args.enrol, args.seed, quiet=args.no_progress
            )
            table = embed_table(summary)
    if args.json:
        summary = {**summary, "results": {k: {**v, "roc": None} for k, v in summary["results"].items()}}
        print(json.dumps(summary, indent=2))
    else:
        print(table)
        print(f"wrote {args.out}/embed.json, embed.md and embed.png")
    return 0


COMMANDS = {"transfer": add_transfer, "embed": add_embed}
