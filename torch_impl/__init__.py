"""MobileNet V1, V2 and V3 in PyTorch: the oracle the NumPy reference and the kernels are checked against."""

from .models import (
    MobileNet,
    mobilenet,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3_large,
    mobilenet_v3_small,
    state_dict_to_numpy,
    state_dict_to_torch,
)

__all__ = [
    "MobileNet",
    "mobilenet",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "state_dict_to_numpy",
    "state_dict_to_torch",
]
