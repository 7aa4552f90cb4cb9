"""SSDLite on MobileNetV2 in NumPy (Sandler et al. 2018, section 6.2), forward and backward, on any
backend (``backend="numba"`` runs it on the kernels). The spec is ``mobilenet_arch.ssdlite_spec``;
the box machinery and the loss are ``numpy_impl.boxes`` and ``numpy_impl.detection``.

Six prediction layers (fewer with fewer extras): f0, the expansion output of features[14] (stride
16); f1, the last feature layer (stride 32); f2.., the extra layers (each halving the size). Each
map's heads give, per cell and default box, 4 regressions and ``num_classes`` logits; the outputs
are concatenated map by map, cell by cell (row-major), box by box: the order of
``numpy_impl.boxes.default_boxes``.
"""

from __future__ import annotations

import numpy as np

import mobilenet_arch as A

from .boxes import default_boxes
from .models import Model

HEAD_PREFIXES = ("extras.", "cls.", "reg.")
# The extras' and heads' convolutions start from N(0, 0.03) weights (biases 0), as torchvision's
# SSDLite: with the backbone's He init the first box regressions are ~10x their targets' scale.
HEAD_INIT_STD = 0.03


def _halve(n: int) -> int:
    return (n - 1) // 2 + 1  # a 3x3 stride-2 convolution with padding 1


def feature_sizes(height: int, width: int | None = None, extras: int = len(A.SSDLITE_EXTRAS)) -> list:
    """(H, W) of each prediction layer of SSDLite with ``extras`` extra layers for an input of
    ``height`` x ``width`` pixels (whatever the width multiplier and the classes)."""
    h, w = height, width or height
    for _ in range(4):  # the stem and three stride-2 stages before features[14]
        h, w = _halve(h), _halve(w)
    sizes = [(h, w)]
    for _ in range(extras + 1):
        h, w = _halve(h), _halve(w)
        sizes.append((h, w))
    return sizes


def ssdlite_default_boxes(resolution: int, extras: int = len(A.SSDLITE_EXTRAS)) -> np.ndarray:
    """The (D, 4) default boxes of SSDLite on a square ``resolution`` input, in its outputs' order."""
    return default_boxes([h for h, _ in feature_sizes(resolution, None, extras)])


class SSDLite(Model):
    """``forward(x)`` -> ``(loc (N, D, 4), conf (N, D, num_classes))``; ``backward(dloc, dconf)``
    fills ``grads`` and returns dx."""

    def __init__(self, spec: A.Seq, dtype=np.float32, backend: str = "numpy", seed=0):
        super().__init__(spec, "ssdlite", dtype, backend, seed)
        parts = dict(spec.children)
        reg = list(parts["reg"])[0][1].children[-1][1]
        self.anchors = reg.out_channels // 4
        self.num_classes = list(parts["cls"])[0][1].children[-1][1].out_channels // self.anchors
        self._maps = None
        for name, p in self.params.items():  # the new layers: torchvision's SSDLite init
            if name.startswith(HEAD_PREFIXES) and p.ndim == 4:
                p[...] = self.rng.normal(0.0, HEAD_INIT_STD, p.shape)

    def feature_sizes(self, height: int, width: int | None = None) -> list:
        """(H, W) of each prediction layer for an input of ``height`` x ``width`` pixels."""
        return feature_sizes(height, width, len(self._children["extras"]._children))

    def default_boxes(self, resolution: int) -> np.ndarray:
        """The (D, 4) default boxes of a square ``resolution`` input, in the outputs' order."""
        return ssdlite_default_boxes(resolution, len(self._children["extras"]._children))

    # --- running --------------------------------------------------------------------
    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"forward: x must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(f"forward: x must have the model's dtype {self.dtype}, got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < A.MIN_RESOLUTION:
            raise ValueError(
                f"forward: x must have shape (N, 3, H, W) with H, W >= {A.MIN_RESOLUTION}, got {x.shape}"
            )
        x = self.in_memory_format(x)
        c = self._children
        maps = [c["body1"](x)]
        maps.append(c["body2"](maps[0]))
        for extra in c["extras"]._children.values():
            maps.append(extra(maps[-1]))
        locs, confs = [], []
        for f, cls, reg in zip(maps, c["cls"]._children.values(), c["reg"]._children.values()):
            n, _, h, w = f.shape
            confs.append(cls(f).transpose(0, 2, 3, 1).reshape(n, h * w * self.anchors, self.num_classes))
            locs.append(reg(f).transpose(0, 2, 3, 1).reshape(n, h * w * self.anchors, 4))
        self._maps = [f.shape for f in maps]
        return np.concatenate(locs, axis=1), np.concatenate(confs, axis=1)

    def backward(self, dloc, dconf):
        """Gradients into every parameter's ``grads``; returns the input's gradient."""
        if self._maps is None:
            raise RuntimeError("backward: call forward first")
        n = self._maps[0][0]
        d = sum(h * w for _, _, h, w in self._maps) * self.anchors
        for name, a, last in (("dloc", dloc, 4), ("dconf", dconf, self.num_classes)):
            if not isinstance(a, np.ndarray) or a.dtype != self.dtype or a.shape != (n, d, last):
                got = f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"backward: {name} must be {self.dtype} of shape {(n, d, last)}, got {got}")
        c = self._children
        heads = zip(self._maps, c["cls"]._children.values(), c["reg"]._children.values())
        dmaps, start = [], 0
        for (_, _, h, w), cls, reg in heads:
            stop = start + h * w * self.anchors
            dc = dconf[:, start:stop].reshape(n, h, w, -1).transpose(0, 3, 1, 2)
            dl = dloc[:, start:stop].reshape(n, h, w, -1).transpose(0, 3, 1, 2)
            dmaps.append(cls.backward(dc) + reg.backward(dl))
            start = stop
        g = dmaps[-1]
        extras = list(c["extras"]._children.values())
        for j in reversed(range(len(extras))):
            g = extras[j].backward(g) + dmaps[j + 1]
        g = c["body2"].backward(g) + dmaps[0]
        return c["body1"].backward(g)


def ssdlite(width_mult=1.0, num_classes=7, dtype=np.float32, backend="numpy", seed=0, **spec_kwargs):
    """SSDLite with a MobileNetV2 backbone of width ``width_mult``; ``num_classes`` counts the
    background. ``spec_kwargs``: ``extras`` and ``anchors`` of ``mobilenet_arch.ssdlite_spec``."""
    return SSDLite(A.ssdlite_spec(width_mult, num_classes, **spec_kwargs), dtype, backend, seed)
