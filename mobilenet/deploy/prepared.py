"""The models `mobilenet bench` times, made once in a process of their own
(:mod:`mobilenet.deploy.prepare`) and read here by every side.

A freshly initialised MobileNet's activations shrink layer by layer to nothing (its batch-norm
statistics are 0 and 1): its logits are ~1e-8 and some runtimes then meet denormal numbers.
So every side times the same weights whose batch-norm statistics are re-estimated on
:func:`cases.calibration_images`, and every int8 side the same integer model quantized from
them on the same images (per-channel weights, min/max ranges).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import numpy_impl
from numpy_impl.quant.layers import QuantConfig
from numpy_impl.quant.model import QuantizedMobileNet

from .cases import Case


def model(case: Case):
    return numpy_impl.mobilenet(case.arch, width_mult=case.width_mult, num_classes=case.num_classes)


def save_int8(q, path: Path) -> None:
    np.savez(path, **q.state_dict())
    path.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(q.cfg)))


def float_state(case: Case, folder) -> dict:
    with np.load(Path(folder) / case.weights_name(), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def int8_model(case: Case, folder, backend="numpy") -> QuantizedMobileNet:
    """The prepared integer model on ``backend`` ("numpy" or "numba")."""
    m = model(case)
    path = Path(folder) / case.int8_name()
    cfg = QuantConfig(**json.loads(path.with_suffix(".json").read_text()))
    q = QuantizedMobileNet(m.spec, case.arch, m.state_dict(), cfg, backend)
    with np.load(path, allow_pickle=False) as z:
        return q.load_state_dict({k: z[k] for k in z.files})
