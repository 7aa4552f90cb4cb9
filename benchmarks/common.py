"""Timing harness shared by the benchmarks: torch's Timer with a fixed thread count on
both sides, medians, and a record of the machine and versions."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numba
import numpy as np
import torch
from torch.utils.benchmark import Timer

from mobilenet import arch as A
from mobilenet.summary import layer_rows

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    numba.set_num_threads(n)


def median_us(stmt: str, globals_: dict, threads: int, min_run_time: float = 0.3, rounds: int = 3) -> float:
    """Median time of ``stmt`` in microseconds (torch.utils.benchmark, ``num_threads`` fixed).

    The median of ``rounds`` separate medians: on a shared machine a burst of load
    from elsewhere lands in one round, not in the answer.
    """
    t = Timer(stmt, globals=globals_, num_threads=threads)
    meds = sorted(t.blocked_autorange(min_run_time=min_run_time / rounds).median for _ in range(rounds))
    return meds[len(meds) // 2] * 1e6


def machine(threads: int) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "threads": threads,
    }


def v2_depthwise_shapes(resolution: int = 224, width_mult: float = 1.0) -> list[tuple]:
    """(C, H, W, stride) of every depthwise conv of MobileNetV2, from the spec."""
    shapes = []
    shape = (3, resolution, resolution)
    for _, leaf in A.walk(A.v2_spec(width_mult=width_mult)):
        if isinstance(leaf, A.Conv) and leaf.groups > 1:
            shapes.append((shape[0], shape[1], shape[2], leaf.stride))
        shape = layer_rows(leaf, shape)[-1].output_shape
    return shapes


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def write(name: str, header: dict, rows: list[dict], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**header, "rows": rows}, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(f"wrote {RESULTS / name}.json and .md")
