"""Whole integer MobileNets: ``quantize(model, calibration_batches)`` turns a trained float
MobileNet (V1, V2, V3, any width) into a :class:`QuantizedMobileNet`.

Post-training quantization in four steps:

1. **Fold** each batch norm into the convolution before it (eval statistics)::

       w'[k] = w[k] * g[k] / sqrt(var[k] + eps)
       b'[k] = beta[k] + (b[k] - mean[k]) * g[k] / sqrt(var[k] + eps)

2. **Calibrate**: run the folded float network on the calibration images; an observer per
   quantized tensor records its values (:mod:`numpy_impl.quant.observers`).
3. **Freeze**: each tensor's (scale, zero point) from its observer, in network order; int8
   weights per output channel, int32 biases in the accumulator's scale (:mod:`.layers`).
4. **Run** on integers: ``forward`` quantizes the float image once, runs every layer on
   integers (:mod:`.ops`) and dequantizes the logits.
"""

from __future__ import annotations

import numpy as np

import mobilenet_arch as A

from ..backend import get_quant_backend
from . import affine, ops
from .layers import QBlock, QConv, QPool, QSqueezeExcite, QuantConfig
from .observers import OBSERVERS


def fold_batch_norm(w, b, bn_weight, bn_bias, mean, var, eps):
    """The convolution ``(w', b')`` equal to ``bn(conv(x, w, b))`` in eval mode (float64 math,
    float32 result). w : (K, ...), b and the batch norm's arrays : (K,)."""
    inv = np.asarray(bn_weight, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)  # (K,)
    w = np.asarray(w, np.float64) * inv.reshape(-1, *([1] * (np.ndim(w) - 1)))
    b = np.asarray(bn_bias, np.float64) + (np.asarray(b, np.float64) - mean) * inv
    return w.astype(np.float32), b.astype(np.float32)


def _conv(path, spec: A.Conv, sd, bn=None, act=None, cfg=None):
    w = sd[path + ".weight"]
    b = sd.get(path + ".bias", np.zeros(spec.out_channels, np.float32))
    if bn is not None:
        bn_path, bn_spec = bn
        p = {k: sd[f"{bn_path}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
        w, b = fold_batch_norm(w, b, p["weight"], p["bias"], p["running_mean"], p["running_var"], bn_spec.eps)
    return QConv(path, w, b, spec.stride, spec.padding, spec.groups, act, cfg=cfg)


def compile_layers(spec: A.Seq, sd: dict, cfg: QuantConfig, prefix="") -> list:
    """The integer layers of a spec tree, batch norms folded and activations fused; ``sd`` is
    the float model's state_dict (torch names)."""
    children, layers, i = list(spec), [], 0
    while i < len(children):
        name, child = children[i]
        path, i = prefix + name, i + 1
        nxt = children[i][1] if i < len(children) else None
        if isinstance(child, (A.Conv, A.Linear)):
            bn = None
            if isinstance(nxt, A.BatchNorm):
                bn, i = (prefix + children[i][0], nxt), i + 1
                nxt = children[i][1] if i < len(children) else None
            act = act_name = None
            if isinstance(nxt, A.Act):
                act, act_name, i = nxt.kind, prefix + children[i][0], i + 1
            if isinstance(child, A.Linear):
                w, b = sd[path + ".weight"], sd[path + ".bias"]
                layers.append(QConv(path, w, b, act=act, linear=True, cfg=cfg))
            else:
                layers.append(_conv(path, child, sd, bn, act, cfg))
            layers[-1].act_name = act_name  # the activation's own module (torch's Hardswish)
        elif isinstance(child, A.Seq):
            layers += compile_layers(child, sd, cfg, path + ".")
        elif isinstance(child, A.Block):
            body = compile_layers(child.conv, sd, cfg, f"{path}.{child.body}.")
            layers.append(QBlock(path, body, child.residual, cfg))
        elif isinstance(child, A.SqueezeExcite):
            fc1 = _conv(path + ".fc1", child.fc1, sd, act="relu", cfg=cfg)
            layers.append(QSqueezeExcite(path, fc1, _conv(path + ".fc2", child.fc2, sd, cfg=cfg), cfg))
        elif isinstance(child, A.Pool):
            layers.append(QPool(path))
        elif not isinstance(child, A.Dropout):  # dropout: the identity at inference
            raise ValueError(f"compile_layers: {path} ({type(child).__name__}) has no integer form here")
    return layers


class QuantizedMobileNet:
    """An integer MobileNet: ``forward(x)`` takes float32 images (N, 3, H, W) and returns float32
    logits (N, num_classes), with integer arithmetic only between the input's quantization and
    the logits' dequantization."""

    def __init__(self, spec: A.Seq, arch: str, sd: dict, cfg: QuantConfig, backend="numpy"):
        self.spec, self.arch, self.cfg = spec, arch, cfg
        self.layers = compile_layers(spec, sd, cfg)
        self.input_observer = OBSERVERS[cfg.observer]()
        self.qin = self.qout = None
        self.set_backend(backend)

    def set_backend(self, backend: str):
        """Run the integer layers on ``backend``'s ops ("numpy": :mod:`numpy_impl.quant.ops`,
        "numba": ``kernels.qops``, bit for bit the same results)."""
        self.backend, self.Q = backend, get_quant_backend(backend)
        for _, layer in self.named_layers():
            layer.Q = self.Q
            if isinstance(layer, QConv) and self.qout is not None:
                layer.prepare()
        for _, layer in self.named_layers():  # blocks after their layers
            if isinstance(layer, QBlock) and self.qout is not None:
                layer.prepare()
        return self

    def named_layers(self):
        def walk(layers):
            for layer in layers:
                yield layer.name, layer
                yield from walk(layer.children())

        yield from walk(self.layers)

    # --- post-training quantization -------------------------------------------------
    def calibrate(self, x):
        """One calibration batch through the folded float network."""
        x = _images("calibrate", x)
        self.input_observer.update(x)
        for layer in self.layers:
            x = layer.calibrate(x)
        return x

    def freeze(self):
        q = self.qin = self.cfg.out_qparams(self.input_observer)
        for layer in self.layers:
            q = layer.freeze(q, self.cfg)
        self.qout = q
        return self

    # --- inference --------------------------------------------------------------------
    def quantize_input(self, x):
        return self.Q.quantize_input(_images("forward", x), self.qin)

    def forward_int(self, q):
        for layer in self.layers:
            q = layer.forward(q)
        return q

    def forward(self, x):
        if self.qout is None:
            raise RuntimeError("forward: calibrate and freeze first (numpy_impl.quant.quantize does both)")
        q = self.forward_int(self.quantize_input(x))
        return affine.dequantize(q, self.qout.scale, self.qout.zero_point)

    __call__ = forward

    def intermediates(self, x) -> dict:
        """Every layer's integer output (and its QParams) for ``x``, by layer name."""
        outputs = {"input": (self.quantize_input(x), self.qin)}
        for _, layer in self.named_layers():
            layer.outputs = outputs
        try:
            self.forward_int(outputs["input"][0])
        finally:
            for _, layer in self.named_layers():
                layer.outputs = None
        return outputs

    # --- the integer state, by name ----------------------------------------------------
    def state_dict(self) -> dict:
        """Every integer and scale: ``"<layer>.<array>"`` (``features.3.conv.0.0.weight_q``...)."""
        out = {"input.scale": np.float32(self.qin.scale), "input.zero_point": np.int32(self.qin.zero_point)}
        for layer in self.layers:
            for name, arrays in layer.state().items():
                out.update({f"{name}.{k}": v for k, v in arrays.items()})
        return out

    def state_keys(self) -> list:
        """The keys :meth:`state_dict` gives, known before any calibration (for checking a file)."""
        keys = ["input.scale", "input.zero_point"]
        for name, layer in self.named_layers():
            keys += [f"{name}.{k}" for k in layer.state_names()]
        return keys

    def load_state_dict(self, sd: dict):
        """The inverse of :meth:`state_dict` (the checkpoint's integers; checked by the caller)."""
        states = {}
        for key, v in sd.items():
            layer, _, array = key.rpartition(".")
            states.setdefault(layer, {})[array] = np.asarray(v)
        qmin, qmax = self.cfg.activation_range
        q = self.qin = ops.QParams(
            float(states["input"]["scale"]), int(states["input"]["zero_point"]), qmin, qmax
        )
        for layer in self.layers:
            q = layer.load(states, q, self.cfg)
        self.qout = q
        return self


def _images(fn, x):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{fn}: x must be a float32 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < A.MIN_RESOLUTION:
        raise ValueError(
            f"{fn}: x must have shape (N, 3, H, W) with H, W >= {A.MIN_RESOLUTION}, got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{fn}: x holds NaN or inf")
    return x


def quantize(
    model,
    calibration_batches,
    observer="minmax",
    per_channel=True,
    bits=8,
    reduce_range=False,
    scheme="float",
    backend="numpy",
) -> QuantizedMobileNet:
    """Post-training quantization of a float ``model`` (a ``numpy_impl`` MobileNet, any backend)
    on ``calibration_batches`` (float32 arrays (N, 3, H, W), at least one)."""
    cfg = QuantConfig(observer, per_channel, bits, reduce_range, scheme)
    sd = model.state_dict()
    bad = [k for k, v in sd.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"quantize: the float model holds NaN or inf in {bad[:3]}; it cannot be quantized")
    qmodel = QuantizedMobileNet(model.spec, model.arch, sd, cfg, backend)
    n = 0
    for x in calibration_batches:
        qmodel.calibrate(x)
        n += 1
    if n == 0:
        raise ValueError("quantize: calibration_batches is empty; give at least one batch of images")
    return qmodel.freeze()
