"""What a run can execute on: the CLI's choices, the trainer, checkpoint formats and the apps all
read this table. The modules that run each backend are loaded by :mod:`mobilenet.registry`.

``numpy`` and ``numba`` run the NumPy model (``numpy_impl``) on the ops backend of that name
(``numpy_impl.backend``: the reference ops or the kernels); ``torch`` runs the PyTorch model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    model: str  # the package whose MobileNet runs: "numpy_impl" or "torch_impl"
    ops: str | None  # the NumPy model's ops backend (numpy_impl.backend), None for torch
    checkpoint: str  # checkpoint file suffix: the models' own formats
    extra: str | None  # the extra of setup.cfg its library comes from (mobilenet.extras)


_ALL = (
    Backend("numpy", model="numpy_impl", ops="numpy", checkpoint=".npz", extra=None),
    Backend("numba", model="numpy_impl", ops="numba", checkpoint=".npz", extra=None),
    Backend("torch", model="torch_impl", ops=None, checkpoint=".pt", extra="torch"),
)
BACKENDS = {b.name: b for b in _ALL}
NAMES = tuple(BACKENDS)
NUMPY_MODEL = tuple(n for n, b in BACKENDS.items() if b.model == "numpy_impl")  # numpy_impl's ops backends
TASKS = ("classify", "detect")  # the kinds of run: each has a runner per model

# `mobilenet bench`'s sides, each timed alone in its process: the extra its library comes from
BENCH_SIDES = {
    "numba": None,
    "numpy": None,
    "torch": "torch",
    "onnxruntime": "onnx",
    "numba-int8": None,  # the integer model (mobilenet quantize's) on the int8 kernels
    "torch-int8": "torch",  # torch's converted eager int8 model with the same integers
    "onnxruntime-int8": "onnx",  # our QDQ export of the same integer model
}


def get(name: str, fn: str = "backend") -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {NAMES}, got {name!r}")
    return BACKENDS[name]


def compatible(a: str, b: str) -> bool:
    """Whether a checkpoint written on backend ``a`` loads on backend ``b`` (the same model)."""
    return get(a).model == get(b).model
