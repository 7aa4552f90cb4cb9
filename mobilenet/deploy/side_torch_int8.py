"""`mobilenet bench`'s torch-int8 side: torch's converted eager int8 model (engine x86) carrying
the prepared integer model's scales, zero points and integers, alone in its process."""

from __future__ import annotations

import torch

from torch_impl.quantized import converted_like

from .cases import Case, inputs
from .prepared import float_state, int8_model


def setup(threads: int) -> list:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return [torch]


def timed(case: Case, folder, threads: int):
    model = converted_like(int8_model(case, folder), float_state(case, folder), engine="x86")
    x = torch.from_numpy(inputs(case)[0])

    def run():
        with torch.no_grad():
            model(x)

    return run
