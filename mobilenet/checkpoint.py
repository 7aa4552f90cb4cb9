"""Checkpoints that survive a kill at any moment and load without pickle.

A checkpoint is a flat dict of arrays (``model/<name>``, ``optim/<param>/<buffer>``) plus a
JSON ``meta`` (configuration, epoch, step, history, RNG state). ``.npz`` is read with
``allow_pickle=False``; ``.pt`` (the torch backend) holds only tensors and a string, so it
loads with ``torch.load(weights_only=True)``.

Writes are atomic: a temporary file in the same folder, flushed and fsync'ed, then
``os.replace``d over the old checkpoint (and the folder fsync'ed), so a reader sees either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

META_KEY = "__meta__"


def save(path, arrays: dict, meta: dict) -> Path:
    path = Path(path)
    if path.suffix not in (".npz", ".pt"):
        raise ValueError(f"checkpoint.save: path must end in .npz or .pt, got {str(path)!r}")
    if META_KEY in arrays:
        raise ValueError(f"checkpoint.save: {META_KEY!r} is reserved")
    text = json.dumps(meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if path.suffix == ".npz":
                np.savez(f, **{META_KEY: np.array(text)}, **arrays)
            else:
                import torch

                torch.save(
                    {
                        META_KEY: text,
                        **{k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items()},
                    },
                    f,
                )
            f.flush()
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
    return path


def load(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` from a checkpoint written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint.load: no checkpoint at {str(path)!r}")
    try:
        if path.suffix == ".pt":
            import torch

            d = torch.load(path, map_location="cpu", weights_only=True)
            text = d.pop(META_KEY)
            arrays = {k: v.numpy() for k, v in d.items()}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            text = str(arrays.pop(META_KEY))
        meta = json.loads(text)
    except (KeyError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as e:
        raise ValueError(f"checkpoint.load: {str(path)!r} is not a checkpoint of this project: {e}") from None
    return arrays, meta
