"""Cached kernels built from other sources are dropped.

Numba checks a cached kernel against its own file only (that file's modification time and
size). Code it compiles in from another file of this package is not checked: an intrinsic of
``_vnni.py``, ``qgemm.requant`` inside the depthwise kernels, batch norm's activation inside
the fused block. Change only that file (a ``git pull`` can) and the old machine code keeps
being loaded, silently. So on import the package hashes its own sources and, where they differ
from the sources its cached kernels were built from, deletes every cached kernel of the package
(Numba then compiles them again, once).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core.caching import FunctionCache

HERE = Path(__file__).resolve().parent
MARKER = "kernels-sources.sha256"  # beside the cached kernels: the digest they were built from


def sources_digest(folder: Path = HERE) -> str:
    """sha256 over the names and contents of the package's Python files."""
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _in_this_folder():
    """(A function of this folder: Numba says where it would cache it, which is where it caches
    every kernel of the package.)"""


def cache_folder() -> Path:
    """Where Numba caches this package's kernels (``__pycache__``, or under ``NUMBA_CACHE_DIR``)."""
    return Path(FunctionCache(_in_this_folder).cache_path)


def refresh(folder: Path, digest: str) -> bool:
    """Delete the cached kernels (``*.nbi``, ``*.nbc``) in ``folder`` unless its marker says they
    were built from sources with ``digest``; then write the marker. Returns whether it deleted.
    A folder it cannot write is left as it is (Numba cannot cache there either)."""
    marker = folder / MARKER
    try:
        if marker.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        for f in list(folder.glob("*.nbi")) + list(folder.glob("*.nbc")):
            f.unlink(missing_ok=True)
        tmp = folder / f"{MARKER}.{os.getpid()}.tmp"
        tmp.write_text(digest)
        os.replace(tmp, marker)  # atomic: a concurrent import reads the old marker or the new one
    except OSError:
        return False
    return True


STALE_DROPPED = refresh(cache_folder(), sources_digest())  # on import, before any kernel loads
