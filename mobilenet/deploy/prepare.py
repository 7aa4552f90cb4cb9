"""`mobilenet bench`'s prepare process: the models every side will time, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilenet.training.classify import load_trained
from numpy_impl.quant.model import quantize

from .cases import Case, calibration_images
from .prepared import model, save_int8
from .qcheckpoint import load_quantized


def prepare(cases: list[Case], folder, int8: bool) -> None:
    """Write each case's float weights (and integer model) into ``folder``: from its integer
    checkpoint when it has one (the float weights those integers came from, when that checkpoint
    is still there), else fresh weights with re-estimated batch-norm statistics."""
    for case in {c.stem: c for c in cases}.values():
        if case.checkpoint is not None:
            _from_checkpoint(case, Path(folder))
            continue
        m = model(case)
        x = calibration_images(case)
        m.reestimate_batch_norm([x]).eval()
        np.savez(Path(folder) / case.weights_name(), **m.state_dict())
        if int8:
            save_int8(quantize(m, [x]), Path(folder) / case.int8_name())


def _from_checkpoint(case: Case, folder: Path) -> None:
    runner, meta = load_quantized(case.checkpoint)
    source = Path(meta.get("source", ""))
    if source.is_file():  # the float model the integers came from
        float_model = load_trained(source, backend="numpy")[0].model
    else:
        float_model = model(case)
        float_model.reestimate_batch_norm([calibration_images(case)])
    np.savez(folder / case.weights_name(), **float_model.state_dict())
    save_int8(runner.qmodel, folder / case.int8_name())
