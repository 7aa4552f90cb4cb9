"""`mobilenet bench`'s numpy side: the NumPy model on the reference ops, alone in its process."""

from __future__ import annotations

import numpy_impl

from .cases import Case, inputs
from .prepared import float_state


def setup(threads: int) -> list:
    """The reference ops run on numpy's BLAS, whose threads the environment fixes; the modules
    whose versions the report names."""
    return []


def model_step(case: Case, ops: str, folder):
    """The timed call: eval inference, or a forward and backward (no optimiser step), with the
    prepared weights in ``folder``."""
    m = numpy_impl.mobilenet(case.arch, width_mult=case.width_mult, num_classes=case.num_classes, backend=ops)
    m.load_state_dict(float_state(case, folder))
    x, d = inputs(case)
    if not case.train:
        m.eval()
        return lambda: m.forward(x)

    def step():
        m.forward(x)
        m.backward(d, input_grad=False)

    return step


def timed(case: Case, folder, threads: int):
    return model_step(case, "numpy", folder)
