"""Checkpoints that survive a kill at any moment and load without pickle.

A checkpoint is a flat dict of arrays (``model/<name>``, ``optim/<param>/<buffer>``) plus a
JSON ``meta`` (configuration, epoch, step, history, RNG state). ``.npz`` is read with
``allow_pickle=False``; ``.pt`` (the torch backend) holds only tensors and a string, so it
loads with ``torch.load(weights_only=True)``.

Writes are atomic: a temporary file in the same folder, flushed and fsync'ed, then
``os.replace``d over the old checkpoint (and the folder fsync'ed), so a reader sees either
the old file or the new one, never half of one. A run holds its folder with :func:`exclusive`
(an ``flock`` on ``.lock``), so two runs never write into one folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

META_KEY = "__meta__"
LOCK_NAME = ".lock"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read, restored: files get the modes open() would give them


@contextlib.contextmanager
def atomic_file(path: Path, mode: str):
    """A file to write ``path`` through: a temporary file in the same folder, flushed, given the
    mode open() would give it (not mkstemp's 0600) and fsync'ed, then renamed over ``path`` and
    the folder fsync'ed. Removed instead if the writing fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself reaches the disk
    finally:
        os.close(dir_fd)


def save(path, arrays: dict, meta: dict) -> Path:
    path = Path(path)
    if path.suffix not in (".npz", ".pt"):
        raise ValueError(f"checkpoint.save: path must end in .npz or .pt, got {str(path)!r}")
    if META_KEY in arrays:
        raise ValueError(f"checkpoint.save: {META_KEY!r} is reserved")
    text = json.dumps(meta)
    with atomic_file(path, "wb") as f:
        if path.suffix == ".npz":
            np.savez(f, **{META_KEY: np.array(text)}, **arrays)
        else:
            import torch

            tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items()}
            torch.save({META_KEY: text, **tensors}, f)
    return path


def output_file(path, suffix: str, what: str) -> Path:
    """``path`` as a Path to write a file to: it ends in ``suffix``, is not a folder, and its folder
    exists (``what`` names the option in the error: ``"export: --onnx"``)."""
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"{what} must end in {suffix}, got {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; give a file name ending in {suffix}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what}: its folder, {str(path.parent)!r}, does not exist")
    return path


def sha256(path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (what an export records of its source)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text(path, text: str) -> Path:
    """``path.write_text(text)``, atomically as :func:`save`: a kill leaves the old file or the new."""
    path = Path(path)
    with atomic_file(path, "w") as f:
        f.write(text)
    return path


def save_figure(fig, path, dpi: int = 110) -> Path:
    """``fig.savefig(path)`` as a PNG, atomically as :func:`save`."""
    path = Path(path)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path


def reason(e: Exception) -> str:
    """Why a file would not load, in a line: the first line of the error only (torch's unpickling
    errors go on to advise ``weights_only=False``, which must never be followed here)."""
    if isinstance(e, pickle.UnpicklingError) or "pickle" in str(e).lower():  # numpy's advice too
        return "it holds Python objects besides tensors, which are never loaded (loading them could run code)"
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class _NotOurs(Exception):
    """What makes a file that did load not one of our checkpoints."""


def _read(path: Path) -> dict:
    """The file's entries as numpy arrays (the description still under ``META_KEY``)."""
    if path.suffix == ".pt":
        import torch

        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict):
            raise _NotOurs(f"it holds an object of type {type(d).__name__}, not a checkpoint's dict")
        out = {META_KEY: d.pop(META_KEY, None)}
        for k, v in d.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise _NotOurs(f"entry {k!r} is of type {type(v).__name__}, not a tensor")
            if v.dtype not in (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool):
                raise _NotOurs(f"tensor {k!r} has dtype {v.dtype}; convert it with .float()")
            out[k] = v.numpy()
        return out
    z = np.load(path, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise _NotOurs("it is a single .npy array, not an .npz archive")
    with z:
        return {k: z[k] for k in z.files}


def load(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` from a checkpoint written by :func:`save`. Anything else (another
    program's file, a truncated or crafted one) is a ValueError that says what it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint.load: no checkpoint at {str(path)!r}")
    try:
        arrays = _read(path)
        text = arrays.pop(META_KEY, None)
        if isinstance(text, np.ndarray) and text.shape == () and text.dtype.kind == "U":
            text = str(text)
        if not isinstance(text, str):
            raise _NotOurs(f"it has no {META_KEY!r} entry holding its JSON description")
        bad = next((k for k, v in arrays.items() if v.dtype.kind not in "fiub"), None)
        if bad is not None:
            raise _NotOurs(f"array {bad!r} has dtype {arrays[bad].dtype}, not numbers")
        try:
            meta = json.loads(text)
        except ValueError as e:
            raise _NotOurs(f"its description is not JSON ({reason(e)})") from None
        if not isinstance(meta, dict):
            raise _NotOurs(f"its description is of type {type(meta).__name__}, not a JSON object")
    except _NotOurs as e:
        raise ValueError(f"checkpoint.load: {str(path)!r} is not a checkpoint of this project: {e}") from None
    except Exception as e:  # a truncated or crafted file may make the readers raise anything
        raise ValueError(
            f"checkpoint.load: {str(path)!r} is not a checkpoint of this project: {reason(e)}"
        ) from None
    return arrays, meta


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def exclusive(folder, option: str = "--out"):
    """Hold ``folder`` (created when missing) for the life of a run: an exclusive lock that a
    second run into the same folder is refused at once by, naming the holder's PID. Once the lock
    is ours, temporary files left by a save that was killed are removed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{option} {str(folder)!r} is a file, not a folder: choose another {option}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise NotADirectoryError(
            f"{option} {str(folder)!r}: a part of the path is a file, not a folder; choose another {option}"
        ) from None
    if fcntl is None:
        yield folder
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(
                f"{option} {str(folder)!r} is in use by another mobilenet run (PID {holder}): "
                f"wait for it to finish, or choose another {option}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for stale in folder.glob(".*.tmp"):  # save()'s and write_text()'s, of a killed run
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        os.close(fd)  # and with it the lock
