"""mobilenet.deploy.onnx_qdq: our integer model as a QDQ ONNX graph, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from mobilenet.deploy.onnx_qdq import qdq_model
from numpy_impl import models
from numpy_impl.quant import model as qm


@pytest.mark.parametrize("arch", ["v1", "v2", "v3-small", "v3-large"])
def test_onnxruntime_runs_our_integers(arch):
    """onnxruntime's integer kernels (QLinearConv, QLinearAdd...) on our scales and zero points
    give our logits exactly (the tolerance of ``verify``, one unit, is not needed here)."""
    rng = np.random.default_rng(11)
    m = models.mobilenet(arch, width_mult=0.35, num_classes=10)
    xs = [rng.normal(0, 1, (6, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    q = qm.quantize(m.reestimate_batch_norm(xs).eval(), xs)
    proto = qdq_model(q, 32)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.normal(0, 1, (3, 3, 32, 32)).astype(np.float32)  # batch 3: the dynamic batch dimension
    np.testing.assert_array_equal(sess.run(None, {"input": x})[0], q.forward(x))
