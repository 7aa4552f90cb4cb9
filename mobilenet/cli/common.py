"""What every command shares: argument types, the ``--debug`` flag, and the translation of an
error into one line and an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os

import mobilenet_arch as A
from mobilenet import backends as B
from mobilenet.checkpoint import FolderInUse
from mobilenet.extras import MissingExtra, require


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def width(text):
    v = positive_float(text)
    if v > A.MAX_WIDTH_MULT:
        raise argparse.ArgumentTypeError(f"must be <= {A.MAX_WIDTH_MULT:g}, got {text}")
    return v


def int_at_least(lo):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def int_list(what: str, example: str, lo: int, distinct: bool = False):
    """A comma-separated list of ints >= ``lo`` (``what`` and ``example`` for the message)."""

    def parse(text):
        try:
            v = tuple(int(c) for c in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like {example}, got {text!r}") from None
        if not v or any(c < lo for c in v) or (distinct and len(set(v)) != len(v)):
            rule = f"{'distinct ' if distinct else ''}integers >= {lo}"
            raise argparse.ArgumentTypeError(f"{what} must be {rule}, got {text!r}")
        return v

    return parse


def resolution(p, default, help=None):
    p.add_argument("--resolution", type=int_at_least(A.MIN_RESOLUTION), default=default, help=help)


def backend_option(p, default="numba", choices=B.NAMES, help=None):
    p.add_argument("--backend", choices=choices, default=default, help=help)


def run_options(p, what="folder for the checkpoint, metrics.json and the plot"):
    """The options every training command shares: seed, checkpoints, --out, --resume, progress."""
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument(
        "--checkpoint-every", type=int_at_least(0), default=0, help="also checkpoint every N steps"
    )
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(cls, args, **fixed):
    """``cls(**...)``: every field of the dataclass ``cls`` that ``args`` has, and ``fixed``."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **fixed})


def require_backend(name: str | None, what: str) -> None:
    """The extra a backend's library comes from (torch's), when it is missing."""
    if name is not None:
        require(B.get(name).extra, what)


def add_debug(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")


# errors that come from what the user asked for (a path, a setting): exit code 2, as argparse's
USAGE_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)


def explain(e: BaseException) -> tuple[int, str]:
    """``(exit code, message)`` for an error that ended a command: 2 for a usage error, 1 for a
    runtime one (a full disk, a read-only folder, a diverged run, a missing extra, a bug), with
    what to do."""
    where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
    if isinstance(e, USAGE_ERRORS):
        if isinstance(e, OSError) and e.strerror:  # raised by the OS on a path the user gave
            return 2, f"{e.strerror.lower()}{where}: check the path"
        return 2, str(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return 1, f"no space left on the device{where}: free some space or choose another --out"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return 1, f"read-only file system{where}: choose a writable --out"
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
        return 1, f"permission denied{where}: choose a folder you can write to"
    if isinstance(e, OSError):
        return 1, f"{e.strerror or e}{where}"
    if isinstance(e, (FloatingPointError, FolderInUse, MissingExtra)):
        return 1, str(e)
    if isinstance(e, MemoryError):
        return 1, "out of memory: lower --batch-size, --resolution or --width-mult"
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return 1, (
        f"internal error ({type(e).__name__}: {first}); rerun with --debug for the traceback, "
        "and please report it"
    )


def check_environment() -> None:
    """Settings read from the environment, checked before a library reads them its own way
    (Numba would ignore a bad NUMBA_NUM_THREADS with a warning, or fail with no name)."""
    text = os.environ.get("NUMBA_NUM_THREADS")
    if text is not None and not (text.strip().isdigit() and int(text) >= 1):
        raise ValueError(
            f"the environment variable NUMBA_NUM_THREADS must be a whole number >= 1, got {text!r}; "
            "unset it to use every core"
        )
