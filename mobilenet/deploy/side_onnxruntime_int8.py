"""`mobilenet bench`'s onnxruntime-int8 side: the prepared integer model as our QDQ ONNX file
(onnxruntime's QLinear kernels), alone in its process."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from .cases import Case, inputs


def setup(threads: int) -> list:
    return [ort]


def timed(case: Case, folder: str, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(Path(folder) / case.qdq_name()), opts, providers=["CPUExecutionProvider"])
    x, _ = inputs(case)
    return lambda: sess.run(None, {"input": x})
