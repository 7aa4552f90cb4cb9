"""ArcFace's additive angular margin in torch: the oracle of ``numpy_impl.functional.metric``
(autograd gives its backward)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def arcface_logits(x, weight, target, scale=30.0, margin=0.5):
    """``s * cos(theta + m)`` at the target class and ``s * cos(theta)`` elsewhere; where
    ``theta + m`` would pass pi, ``cos(theta) - m sin(m)``."""
    cos = (F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T).clamp(-1.0, 1.0)
    c = cos.gather(1, target[:, None]).squeeze(1)
    sin = torch.sqrt((1.0 - c * c).clamp_min(0.0))
    phi = torch.where(
        c > math.cos(math.pi - margin),
        c * math.cos(margin) - sin * math.sin(margin),
        c - margin * math.sin(margin),
    )
    onehot = F.one_hot(target, weight.shape[0]).to(cos.dtype)
    return scale * (onehot * phi[:, None] + (1.0 - onehot) * cos)
