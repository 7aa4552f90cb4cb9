"""The one registry of what a run can execute on: the CLI's choices, the trainer's runners,
checkpoint formats and the apps all read it.

``numpy`` and ``numba`` run the NumPy model (``numpy_impl``) on the ops backend of that name
(``numpy_impl.backend``: the reference ops or the kernels); ``torch`` runs the PyTorch model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    model: str  # the package whose MobileNet runs: "numpy_impl" or "torch_impl"
    ops: str | None  # the NumPy model's ops backend (numpy_impl.backend), None for torch
    checkpoint: str  # checkpoint file suffix: the models' own formats
    runner: str  # the module with this model's build_model(cfg, num_classes) and Runner


_ALL = (
    Backend("numpy", model="numpy_impl", ops="numpy", checkpoint=".npz", runner="mobilenet.numpy_runner"),
    Backend("numba", model="numpy_impl", ops="numba", checkpoint=".npz", runner="mobilenet.numpy_runner"),
    Backend("torch", model="torch_impl", ops=None, checkpoint=".pt", runner="mobilenet.torch_runner"),
)
BACKENDS = {b.name: b for b in _ALL}
NAMES = tuple(BACKENDS)
NUMPY_MODEL = tuple(n for n, b in BACKENDS.items() if b.model == "numpy_impl")  # numpy_impl's ops backends


def get(name: str, fn: str = "backend") -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {NAMES}, got {name!r}")
    return BACKENDS[name]


def compatible(a: str, b: str) -> bool:
    """Whether a checkpoint written on backend ``a`` loads on backend ``b`` (the same model)."""
    return get(a).model == get(b).model


def runner_module(name: str):
    """The runner module of backend ``name``, imported on first use: a numpy or numba run never
    imports torch (whose thread pool would share the two cores with Numba's)."""
    return importlib.import_module(get(name).runner)
