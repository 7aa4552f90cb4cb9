"""An integer model as a standard QDQ ONNX graph, and its check by onnxruntime.

QDQ ("quantize-dequantize") is how ONNX carries an int8 network: float operators (Conv, Gemm,
Add, Mul...) between ``DequantizeLinear`` and ``QuantizeLinear`` nodes holding the scales and
zero points. A runtime that knows the pattern (onnxruntime on x86: QLinearConv, QGemm,
QLinearAdd...) runs those operators on integers. The graph carries exactly our integers:

- input: ``QuantizeLinear`` then ``DequantizeLinear`` with the input's (scale, zero point);
- each convolution: its int8 weights with their per-channel scales (``DequantizeLinear`` on
  axis 0), its int32 bias with scales ``s_x * s_w``, the Conv, a ReLU where ours clamps at the
  zero point (ReLU6's top is the quantized range's end), then Q/DQ with the output's qparams;
- hard-swish and hard-sigmoid: the float operator between Q/DQ pairs (ours are tables of the same
  function); the residual add, squeeze-and-excite's product and the pooling likewise;
- output: the logits dequantized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mobilenet import checkpoint as ckpt
from mobilenet.checkpoint import sha256
from numpy_impl.quant.layers import HARDSIGMOID_OUT, QBlock, QConv, QPool, QSqueezeExcite

from .qcheckpoint import load_quantized

OPSET = 18


class _Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def qdq(self, x, name, qp):
        """x through QuantizeLinear and DequantizeLinear with ``qp`` (uint8)."""
        s = self.init(f"{name}.scale", np.float32(qp.scale))
        z = self.init(f"{name}.zero_point", np.uint8(qp.zero_point))
        q = self.node("QuantizeLinear", [x, s, z], f"{name}.q")
        return self.node("DequantizeLinear", [q, s, z], f"{name}.dq")

    def pool(self, x, name, qp):
        """Global average pooling that rounds as ours (and torch's): ``round(mean(q))`` of the
        integers, ties to even. Pooling the dequantized values would round ``mean(q) - z``
        instead, another integer on a tie when z is odd; so the integers are pooled, with a unit
        scale around the pool, and given back their (scale, zero point) after it."""
        s = self.init(f"{name}.scale", np.float32(qp.scale))
        z = self.init(f"{name}.zero_point", np.uint8(qp.zero_point))
        one, zero = self.init(f"{name}.unit", np.float32(1.0)), self.init(f"{name}.unit_zero", np.uint8(0))
        q = self.node("QuantizeLinear", [x, s, z], f"{name}.in_q")
        ints = self.node("DequantizeLinear", [q, one, zero], f"{name}.ints")
        mean = self.node("GlobalAveragePool", [ints], f"{name}.mean")
        q = self.node("QuantizeLinear", [mean, one, zero], f"{name}.q")  # round(mean(q)): ties to even
        return self.node("DequantizeLinear", [q, s, z], f"{name}.dq")

    def conv(self, x, layer: QConv):
        k = layer.w_q.shape[0]
        w = self.node(
            "DequantizeLinear",
            [
                self.init(f"{layer.name}.weight_q", layer.w_q),
                self.init(f"{layer.name}.weight_scale", layer.w_scale),
                self.init(f"{layer.name}.weight_zero_point", np.zeros(k, np.int8)),
            ],
            f"{layer.name}.weight",
            axis=0,
        )
        b = self.node(
            "DequantizeLinear",
            [
                self.init(f"{layer.name}.bias_q", layer.b_q),
                self.init(
                    f"{layer.name}.bias_scale",
                    (np.float32(layer.qin.scale) * layer.w_scale).astype(np.float32),
                ),
                self.init(f"{layer.name}.bias_zero_point", np.zeros(k, np.int32)),
            ],
            f"{layer.name}.bias",
            axis=0,
        )
        if layer.linear:
            y = self.node("Gemm", [x, w, b], f"{layer.name}.out", transB=1)
        else:
            p = layer.padding
            y = self.node(
                "Conv",
                [x, w, b],
                f"{layer.name}.out",
                strides=[layer.stride] * 2,
                pads=[p] * 4,
                group=layer.groups,
            )
        if layer.act in ("relu", "relu6"):
            y = self.node("Relu", [y], f"{layer.name}.relu")
        y = self.qdq(y, layer.name, layer.qout)
        if layer.act == "hardswish":
            y = self.qdq(self.node("HardSwish", [y], f"{layer.act_name}.out"), layer.act_name, layer.qact)
        return y

    def layer(self, x, layer):
        if isinstance(layer, QConv):
            return self.conv(x, layer)
        if isinstance(layer, QPool):
            return self.node("Flatten", [self.pool(x, layer.name, layer.qin)], f"{layer.name}.flat", axis=1)
        if isinstance(layer, QBlock):
            y = x
            for child in layer.body:
                y = self.layer(y, child)
            if not layer.residual:
                return y
            return self.qdq(self.node("Add", [x, y], f"{layer.name}.add"), layer.name, layer.qout)
        if isinstance(layer, QSqueezeExcite):
            s = self.pool(x, f"{layer.name}.pool", layer.qin)
            s = self.conv(self.conv(s, layer.fc1), layer.fc2)
            gate = self.node("HardSigmoid", [s], f"{layer.name}.gate", alpha=1 / 6, beta=0.5)
            gate = self.qdq(gate, f"{layer.name}.gate", HARDSIGMOID_OUT)
            return self.qdq(self.node("Mul", [x, gate], f"{layer.name}.mul"), layer.name, layer.qout)
        raise TypeError(f"qdq_model: no ONNX form for {type(layer).__name__}")


def qdq_model(qmodel, resolution: int, metadata: dict | None = None) -> onnx.ModelProto:
    """The QDQ graph of a frozen ``numpy_impl.quant.QuantizedMobileNet`` (dynamic batch)."""
    g = _Graph()
    y = g.qdq("input", "input", qmodel.qin)
    for layer in qmodel.layers:
        y = g.layer(y, layer)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="logits"))
    num_classes = qmodel.layers[-1].w_q.shape[0]
    graph = helper.make_graph(
        g.nodes,
        "mobilenet_int8_qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, resolution, resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        g.inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mobilenet"
    )
    proto.ir_version = 8  # onnxruntime 1.17+ reads it
    for k, v in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto)
    return proto


META = "mobilenet."
KIND = "int8-qdq"  # the value of mobilenet.kind in a file this module writes
ONE_UNIT = 1.0  # verify's tolerance, in the logits' quantized units (see verify_qdq)


def export_qdq(out, checkpoint, resolution=None) -> dict:
    """Write the integer checkpoint ``checkpoint`` as a QDQ ONNX file ``out`` (dynamic batch)."""
    out = ckpt.output_file(out, ".onnx", "export: --onnx")
    runner, meta = load_quantized(checkpoint)
    cfg = runner.cfg
    resolution = cfg.resolution if resolution is None else int(resolution)
    path = Path(checkpoint).resolve()
    info = {
        "kind": KIND,
        "checkpoint": str(path),
        "checkpoint_sha256": sha256(path),
        "arch": cfg.arch,
        "width_mult": repr(float(cfg.width_mult)),
        "num_classes": str(meta["num_classes"]),
        "resolution": str(resolution),
    }
    proto = qdq_model(runner.qmodel, resolution, {META + k: v for k, v in info.items()})
    data = proto.SerializeToString()
    with ckpt.atomic_file(out, "wb") as f:
        f.write(data)
    return {"onnx": str(out), "bytes": len(data), "opset": OPSET, **info}


def is_qdq(path) -> bool:
    """Whether ``path`` is an ONNX file this module wrote (a float export is not)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX: the float reader says so
        return False
    return any(p.key == META + "kind" and p.value == KIND for p in proto.metadata_props)


def verify_qdq(path, checkpoint=None, batch=3, seed=0, threads=None) -> dict:
    """onnxruntime on the QDQ file against our integer model from its checkpoint, on random
    images: the largest difference of the logits in their quantized units, ok when at most one.

    One unit, not zero: onnxruntime runs the convolutions, the adds and the pooling on the same
    integers with the same rounding (ties to even) and agrees exactly in our tests, but computes
    hard-swish, hard-sigmoid and the squeeze-and-excite product in float32 where we use tables
    and an integer product: a value within float32 rounding of a tie may land one unit away."""
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key[len(META) :]: p.value for p in proto.metadata_props if p.key.startswith(META)}
    source = Path(checkpoint) if checkpoint is not None else Path(meta.get("checkpoint", ""))
    if not source.is_file():
        raise FileNotFoundError(
            f"verify: the integer checkpoint {str(path)!r} was exported from, {str(source)!r}, is gone: "
            "pass --checkpoint with its new path"
        )
    if sha256(source) != meta.get("checkpoint_sha256"):
        raise ValueError(f"verify: {str(source)!r} is not the checkpoint {str(path)!r} was exported from")
    runner, _ = load_quantized(source)
    r = int(meta["resolution"])
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((batch, 3, r, r)).astype(np.float32)
    got = sess.run(None, {"input": x})[0]
    ref = runner.qmodel.forward(x)
    units = float(np.abs(got - ref).max() / runner.qmodel.qout.scale)
    return {
        "arch": meta["arch"],
        "width_mult": float(meta["width_mult"]),
        "resolution": r,
        "onnx": str(path),
        "kind": KIND,
        "batch": batch,
        "max_units": units,
        "equal_fraction": float(np.mean(np.abs(got - ref) < 0.5 * runner.qmodel.qout.scale)),
        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "tolerance_units": ONE_UNIT,
        "onnxruntime": ort.__version__,
        "ok": bool(units <= ONE_UNIT + 1e-3),
    }
