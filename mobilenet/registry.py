"""The modules that run a backend or a bench side, imported by name on first use: one of the
application's two places that load modules on demand (the other is the command registry,
:mod:`mobilenet.cli`).

A numpy or numba run never imports torch (whose thread pool would share the two cores with
Numba's), and a bench process imports the library it times and no other. Nothing that these
modules import imports this one, so loading by name makes no import cycle (a test checks the
graph with these names as edges).
"""

from __future__ import annotations

import importlib

from . import backends as B

RUNNERS = {  # (model, task) -> the module with that model's Runner for that kind of run
    ("numpy_impl", "classify"): "mobilenet.training.numpy_runner",
    ("torch_impl", "classify"): "mobilenet.training.torch_runner",
    ("numpy_impl", "detect"): "mobilenet.detection.numpy_runner",
    ("torch_impl", "detect"): "mobilenet.detection.torch_runner",
}
SIDES = {  # bench side -> the module that times it (its keys are backends.BENCH_SIDES')
    "numba": "mobilenet.deploy.side_numba",
    "numpy": "mobilenet.deploy.side_numpy",
    "torch": "mobilenet.deploy.side_torch",
    "onnxruntime": "mobilenet.deploy.side_onnxruntime",
    "numba-int8": "mobilenet.deploy.side_numba_int8",
    "torch-int8": "mobilenet.deploy.side_torch_int8",
    "onnxruntime-int8": "mobilenet.deploy.side_onnxruntime_int8",
}
ONNX_EXPORTER = "mobilenet.deploy.onnx_export"  # torch, onnx and onnxruntime: its commands only
ONNX_QDQ = "mobilenet.deploy.onnx_qdq"  # an integer model as QDQ ONNX: onnx and onnxruntime


def runner_module(name: str, task: str = "classify"):
    """The runner module of backend ``name`` for ``task`` (one of ``backends.TASKS``)."""
    if task not in B.TASKS:
        raise ValueError(f"runner_module: task must be one of {B.TASKS}, got {task!r}")
    return importlib.import_module(RUNNERS[(B.get(name).model, task)])


def bench_side(name: str):
    """The module that times side ``name`` of `mobilenet bench`."""
    if name not in SIDES:
        raise ValueError(f"bench: backends must be among {tuple(SIDES)}, got {name!r}")
    return importlib.import_module(SIDES[name])


def onnx_exporter():
    """ONNX export and its check by onnxruntime (``mobilenet export``, ``verify --onnx``, bench's
    export process)."""
    return importlib.import_module(ONNX_EXPORTER)


def onnx_qdq():
    """QDQ export of integer checkpoints and its check by onnxruntime (no torch)."""
    return importlib.import_module(ONNX_QDQ)
