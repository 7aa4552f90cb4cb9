"""`mobilenet bench`'s torch side: ``torch_impl`` eager, channels_last (torch's faster layout
here), alone in its process."""

from __future__ import annotations

import torch

import torch_impl

from .cases import Case, inputs
from .prepared import float_state


def setup(threads: int) -> list:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return [torch]


def timed(case: Case, folder, threads: int):
    m = torch_impl.mobilenet(case.arch, width_mult=case.width_mult, num_classes=case.num_classes)
    m.load_state_dict(torch_impl.state_dict_to_torch(float_state(case, folder)))
    m.train(case.train)
    m = m.to(memory_format=torch.channels_last)
    x, d = (torch.from_numpy(a) for a in inputs(case))
    x = x.contiguous(memory_format=torch.channels_last)
    if not case.train:

        def run():
            with torch.no_grad():
                m(x)

        return run

    def step():
        m.zero_grad(set_to_none=True)
        m(x).backward(d)

    return step
