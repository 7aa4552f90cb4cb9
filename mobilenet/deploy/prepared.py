"""The models `mobilenet bench` times, made once in a process of their own and read by every side.

A freshly initialised MobileNet's activations shrink layer by layer to nothing (its batch-norm
statistics are 0 and 1): its logits are ~1e-8 and some runtimes then meet denormal numbers.
So every side times the same weights whose batch-norm statistics are re-estimated on
:func:`cases.calibration_images`, and every int8 side the same integer model quantized from
them on the same images (per-channel weights, min/max ranges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import numpy_impl
from numpy_impl.quant.layers import QuantConfig
from numpy_impl.quant.model import QuantizedMobileNet, quantize

from .cases import Case, calibration_images


def prepare(cases: list[Case], folder, int8: bool) -> None:
    """Write each case's float weights (and integer model) into ``folder``."""
    for case in {c.stem: c for c in cases}.values():
        m = numpy_impl.mobilenet(case.arch, width_mult=case.width_mult)
        x = calibration_images(case)
        m.reestimate_batch_norm([x]).eval()
        np.savez(Path(folder) / case.weights_name(), **m.state_dict())
        if int8:
            np.savez(Path(folder) / case.int8_name(), **quantize(m, [x]).state_dict())


def float_state(case: Case, folder) -> dict:
    with np.load(Path(folder) / case.weights_name(), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def int8_model(case: Case, folder, backend="numpy") -> QuantizedMobileNet:
    """The prepared integer model on ``backend`` ("numpy" or "numba")."""
    m = numpy_impl.mobilenet(case.arch, width_mult=case.width_mult)
    q = QuantizedMobileNet(m.spec, case.arch, {}, m.state_dict(), QuantConfig(), backend)
    with np.load(Path(folder) / case.int8_name(), allow_pickle=False) as z:
        return q.load_state_dict({k: z[k] for k in z.files})
