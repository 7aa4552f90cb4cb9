"""The timer and the machine record every benchmark side uses: plain Python, no torch,
so that a process timing the kernels never loads a second thread pool.

Each side of a comparison runs in its own process (``benchmarks/run.py``); this module
is what those processes share, so that all of them measure the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

from mobilenet.deploy.timing import cpu, measure, versions  # noqa: F401  (the benchmarks' shared timer)

RESULTS = Path(__file__).resolve().parent / "results"


def v2_depthwise_shapes(resolution: int = 224, width_mult: float = 1.0) -> list[tuple]:
    """(C, H, W, stride) of every distinct depthwise conv of MobileNetV2, in network order."""
    import mobilenet_arch as A
    from mobilenet.summary import layer_rows

    shapes = []
    shape = (3, resolution, resolution)
    for _, leaf in A.walk(A.v2_spec(width_mult=width_mult)):
        if isinstance(leaf, A.Conv) and leaf.groups > 1:
            shapes.append((shape[0], shape[1], shape[2], leaf.stride))
        shape = layer_rows(leaf, shape)[-1].output_shape
    return list(dict.fromkeys(shapes))


def depthwise_bytes(n, c, h, w, stride, direction) -> int:
    """Bytes a depthwise 3x3 layer must move at least (float32): each tensor read or written once."""
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x, o = n * c * h * w, n * c * ho * wo
    return 4 * ((x + o) if direction == "fwd" else (2 * x + o))  # bwd: read dout and x, write dx


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
