"""From-scratch NumPy MobileNet V1, V2 and V3: every op forward and backward, and the models."""

from . import functional
from .backend import get_backend
from .models import MobileNet, mobilenet, mobilenet_v1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small

__all__ = [
    "MobileNet",
    "mobilenet",
    "functional",
    "get_backend",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]
