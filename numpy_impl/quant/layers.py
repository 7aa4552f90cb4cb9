"""The layers of an integer MobileNet, each in three phases:

1. ``calibrate(x)``: the float forward with batch norm folded in (``x`` float32), feeding the
   observers of the layer's outputs; returns the float output for the next layer.
2. ``freeze(qin, cfg)``: from the input's :class:`QParams` and the observers, the output's
   qparams, the int8 weights, int32 biases and requantizers; returns the output's QParams.
3. ``forward(q)``: integers in, integers out (:mod:`numpy_impl.quant.ops`).

``state()`` and ``load(states, qin, cfg)`` give and take every integer and scale a frozen layer
holds (the checkpoint); ``outputs``, when set, collects each output of a forward by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from . import affine, ops
from .observers import OBSERVERS

HARDSIGMOID_OUT = ops.QParams(1 / 256, 0)  # torch's fixed output qparams of quantized hard-sigmoid
ACTIVATIONS = (None, "relu", "relu6", "hardswish")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize: the observer, per-channel or per-tensor weights, bits (weights and
    activations), 7-bit activations (torch x86's ``reduce_range``) and the requantization scheme."""

    observer: str = "minmax"
    per_channel: bool = True
    bits: int = 8
    reduce_range: bool = False
    scheme: str = "float"

    def __post_init__(self):
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {tuple(OBSERVERS)}, got {self.observer!r}")
        if self.scheme not in ops.SCHEMES:
            raise ValueError(f"scheme must be one of {ops.SCHEMES}, got {self.scheme!r}")
        affine.check_bits("QuantConfig", self.bits)

    @property
    def activation_range(self):
        return affine.activation_range("uint8", self.bits, self.reduce_range)

    def out_qparams(self, observer) -> ops.QParams:
        qmin, qmax = self.activation_range
        return ops.QParams(*observer.qparams(qmin, qmax), qmin, qmax)


def _qp_state(prefix, qp: ops.QParams) -> dict:
    return {f"{prefix}scale": np.float32(qp.scale), f"{prefix}zero_point": np.int32(qp.zero_point)}


def _qp_from(state, prefix, cfg: QuantConfig) -> ops.QParams:
    """The QParams saved under ``prefix`` (QParams refuses a scale <= 0 or a zero point outside)."""
    qmin, qmax = cfg.activation_range
    scale, zp = np.asarray(state[f"{prefix}scale"]), np.asarray(state[f"{prefix}zero_point"])
    if scale.shape != () or zp.shape != () or scale.dtype.kind != "f" or zp.dtype.kind not in "iu":
        raise ValueError(f"{prefix}scale and {prefix}zero_point must be a float and an int")
    return ops.QParams(float(scale), int(zp), qmin, qmax)


class Layer:
    """``freeze`` computes a layer's integer state from its observers and ``load`` sets a saved
    one: both end in the same ``_set``, so a loaded model is the frozen one."""

    name = ""
    outputs: dict | None = None  # name -> (integers, QParams) of the last forward, when set
    Q = ops  # the integer ops (a backend of numpy_impl.backend.QUANT_BACKENDS), set by the model

    def record(self, q, qp, name=None):
        if self.outputs is not None:
            self.outputs[name or self.name] = (q, qp)
        return q

    def children(self) -> list:
        return []

    def state_names(self) -> tuple:
        """The names of this layer's own arrays in :meth:`state`."""
        return ()

    def state(self) -> dict:
        """{layer name: {array name: array}} of this layer and the layers inside it."""
        own = self._own_state()
        out = {self.name: own} if own else {}
        for child in self.children():
            out.update(child.state())
        return out

    def _own_state(self) -> dict:
        return {}


class QConv(Layer):
    """Convolution (or linear, ``linear=True``) with its batch norm folded in, and its activation:
    ReLU/ReLU6 as the clamp of the output range, hard-swish as a 256-entry table after it."""

    def __init__(self, name, w, b, stride=1, padding=0, groups=1, act=None, linear=False, cfg=None):
        if act not in ACTIVATIONS:
            raise ValueError(f"{name}: act must be one of {ACTIVATIONS}, got {act!r}")
        self.name, self.w, self.b = name, np.asarray(w, np.float32), np.asarray(b, np.float32)
        self.stride, self.padding, self.groups, self.act, self.linear = stride, padding, groups, act, linear
        self.act_name = None  # the activation's module name in the float model
        self.obs = OBSERVERS[cfg.observer]()  # the output (before hard-swish)
        self.obs_act = OBSERVERS[cfg.observer]() if act == "hardswish" else None

    def calibrate(self, x):
        if self.linear:
            y = F.linear(x, self.w, self.b)
        else:
            y = F.conv2d(x, self.w, self.b, stride=self.stride, padding=self.padding, groups=self.groups)
        if self.act == "relu":
            y = F.relu(y)
        elif self.act == "relu6":
            y = F.relu6(y)
        self.obs.update(y)
        if self.act == "hardswish":
            y = F.hardswish(y)
            self.obs_act.update(y)
        return y

    def freeze(self, qin: ops.QParams, cfg: QuantConfig) -> ops.QParams:
        """``w_q = round(w / s_w)`` per output channel, ``b_q = round(b / (s_x s_w))`` (int32)."""
        w_scale = affine.weight_scales(self.w, cfg.bits, cfg.per_channel)
        lo, hi = affine.weight_range(cfg.bits)
        w_q = affine.quantize(self.w, w_scale, np.zeros(len(w_scale), np.int64), lo, hi, axis=0)
        acc_scale = (np.float32(qin.scale) * w_scale).astype(np.float64)  # s_x * s_w in float32
        b_q = np.clip(np.rint(self.b / acc_scale), -(2**31), 2**31 - 1)
        state = {"weight_q": w_q.astype(np.int8), "weight_scale": w_scale, "bias_q": b_q.astype(np.int32)}
        state.update(_qp_state("out_", cfg.out_qparams(self.obs)))
        if self.act == "hardswish":
            state.update(_qp_state("act_", cfg.out_qparams(self.obs_act)))
        return self._set(state, qin, cfg)

    def state_names(self):
        own = ("weight_q", "weight_scale", "bias_q", "out_scale", "out_zero_point")
        return own + (("act_scale", "act_zero_point") if self.act == "hardswish" else ())

    def load(self, states, qin, cfg):
        """A saved state, checked (a crafted file gives a ValueError, never a wrong model)."""
        state = states[self.name]
        k = self.w.shape[0]
        lo, hi = affine.weight_range(cfg.bits)
        checks = {
            "weight_q": (np.int8, self.w.shape),
            "weight_scale": (np.float32, (k,)),
            "bias_q": (np.int32, (k,)),
        }
        for key, (dtype, shape) in checks.items():
            a = state[key]
            if a.dtype != dtype or a.shape != shape:
                raise ValueError(
                    f"{self.name}.{key} must be {np.dtype(dtype)} of shape {shape}, got {a.dtype} {a.shape}"
                )
        if state["weight_q"].min(initial=0) < lo or state["weight_q"].max(initial=0) > hi:
            raise ValueError(f"{self.name}.weight_q must hold values in [{lo}, {hi}] ({cfg.bits} bits)")
        s = state["weight_scale"]
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError(f"{self.name}.weight_scale must be finite and > 0")
        return self._set(state, qin, cfg)

    def _set(self, state, qin, cfg):
        self.saved, self.qin, self.cfg = state, qin, cfg
        self.w_q, self.w_scale, self.b_q = state["weight_q"], state["weight_scale"], state["bias_q"]
        self.qout = _qp_from(state, "out_", cfg)
        relu = self.act in ("relu", "relu6")  # ReLU6: the calibrated range ends at 6 or before
        self.requant = ops.Requant.make(qin.scale, self.w_scale, self.qout, cfg.scheme, relu=relu)
        self.prepare()
        if self.act != "hardswish":
            return self.qout
        self.qact = _qp_from(state, "act_", cfg)
        self.table = ops.lookup_table(ops.hardswish_float, self.qout, self.qact)
        return self.qact

    def _own_state(self):
        return self.saved

    def prepare(self):
        """The backend's prepared convolution (kernels pack their weights here, once)."""
        self.conv = self.Q.make_conv(
            self.w_q,
            self.b_q,
            self.qin.zero_point,
            self.requant,
            self.stride,
            self.padding,
            self.groups,
            self.linear,
        )

    def forward_conv(self, q):
        """The convolution (or linear) and its requantization: the output before any table."""
        return self.conv(q)

    def forward(self, q):
        y = self.record(self.forward_conv(q), self.qout)
        if self.act != "hardswish":
            return y
        return self.record(self.Q.lookup(y, self.table, self.qout), self.qact, self.act_name)


class QPool(Layer):
    """Global average pooling, (N, C, H, W) -> (N, C), keeping the input's qparams."""

    def __init__(self, name):
        self.name = name

    def calibrate(self, x):
        return F.global_avg_pool2d(x)

    def freeze(self, qin, cfg):
        self.qin = qin
        return qin

    def load(self, states, qin, cfg):
        return self.freeze(qin, cfg)

    def forward(self, q):
        return self.record(self.Q.global_avg_pool2d(q), self.qin)


class QBlock(Layer):
    """An inverted residual: the body's layers, then (when it keeps its shape) the residual add,
    both inputs requantized to the sum's qparams (torch's ``FloatFunctional.add``)."""

    fused = None  # the backend's prepared block (:meth:`prepare`)

    def __init__(self, name, body: list, residual: bool, cfg):
        self.name, self.body, self.residual = name, body, residual
        self.obs = OBSERVERS[cfg.observer]() if residual else None

    def children(self):
        return self.body

    def calibrate(self, x):
        y = x
        for layer in self.body:
            y = layer.calibrate(y)
        if self.residual:
            y = x + y
            self.obs.update(y)
        return y

    def freeze(self, qin, cfg):
        q = qin
        for layer in self.body:
            q = layer.freeze(q, cfg)
        return self._set(_qp_state("out_", cfg.out_qparams(self.obs)) if self.residual else {}, qin, q, cfg)

    def state_names(self):
        return ("out_scale", "out_zero_point") if self.residual else ()

    def load(self, states, qin, cfg):
        q = qin
        for layer in self.body:
            q = layer.load(states, q, cfg)
        return self._set(states.get(self.name, {}), qin, q, cfg)

    def _set(self, state, qin, qbody, cfg):
        self.saved, self.qin, self.qbody, self.cfg = state, qin, qbody, cfg
        self.qout = _qp_from(state, "out_", cfg) if self.residual else qbody
        self.prepare()
        return self.qout

    def prepare(self):
        """The backend's fused block where it has one (``make_block``) and the body is plain
        convolutions; otherwise None, and the layers run one by one."""
        self.fused = None
        make = getattr(self.Q, "make_block", None)
        if make is None or not all(isinstance(layer, QConv) for layer in self.body):
            return
        tables = [(layer.table, layer.qout) if layer.act == "hardswish" else None for layer in self.body]
        add = (self.qin, self.qbody, self.qout) if self.residual else None
        self.fused = make([layer.conv for layer in self.body], tables, add)

    def _own_state(self):
        return self.saved

    def forward(self, q):
        if self.fused is not None and self.outputs is None:  # (recording needs every layer's output)
            return self.fused(q)
        y = q
        for layer in self.body:
            y = layer.forward(y)
        if not self.residual:
            return y
        return self.record(self.Q.add(q, self.qin, y, self.qbody, self.qout, self.cfg.scheme), self.qout)


class QSqueezeExcite(Layer):
    """``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``: the pool keeps x's qparams, fc1 and fc2 are
    :class:`QConv`, hard-sigmoid a table onto torch's fixed (1/256, 0), the product a ``mul``."""

    def __init__(self, name, fc1: QConv, fc2: QConv, cfg):
        self.name, self.fc1, self.fc2 = name, fc1, fc2
        self.obs = OBSERVERS[cfg.observer]()

    def children(self):
        return [self.fc1, self.fc2]

    def calibrate(self, x):
        s = self.fc2.calibrate(self.fc1.calibrate(x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)))
        y = x * F.hardsigmoid(s)
        self.obs.update(y)
        return y

    def freeze(self, qin, cfg):
        self.fc2.freeze(self.fc1.freeze(qin, cfg), cfg)
        return self._set(_qp_state("out_", cfg.out_qparams(self.obs)), qin, cfg)

    def state_names(self):
        return ("out_scale", "out_zero_point")

    def load(self, states, qin, cfg):
        self.fc2.load(states, self.fc1.load(states, qin, cfg), cfg)
        return self._set(states[self.name], qin, cfg)

    def _set(self, state, qin, cfg):
        self.saved, self.qin, self.cfg = state, qin, cfg
        self.table = ops.lookup_table(ops.hardsigmoid_float, self.fc2.qout, HARDSIGMOID_OUT)
        self.qout = _qp_from(state, "out_", cfg)
        return self.qout

    def _own_state(self):
        return self.saved

    def forward(self, q):
        pooled = self.Q.global_avg_pool2d(q)[:, :, None, None]  # (N, C, 1, 1), q's qparams
        s = self.fc2.forward(self.fc1.forward(pooled))
        gate = self.Q.lookup(s, self.table, self.fc2.qout)
        y = self.Q.mul(q, self.qin, gate, HARDSIGMOID_OUT, self.qout, self.cfg.scheme)
        return self.record(y, self.qout)
