"""`mobilenet bench`'s onnxruntime side: the ONNX file the export process wrote, alone in its
process (which never loads torch)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from .cases import Case, inputs


def setup(threads: int) -> list:
    return [ort]


def timed(case: Case, folder: str, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(
        str(Path(folder) / case.onnx_name()), opts, providers=["CPUExecutionProvider"]
    )
    x, _ = inputs(case)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})
