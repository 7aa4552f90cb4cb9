"""One side of a benchmark, alone in its process: ``python -m benchmarks.worker SIDE TASK``.

Sides:
  numba        the kernels (``numpy_impl`` with ``backend="numba"``); torch is never imported
  torch_nchw   torch eager, NCHW tensors
  torch_cl     torch eager, channels_last tensors and modules
  onnxruntime  the torch model exported to ONNX by a separate process, run by onnxruntime's CPU provider
  numba+torch  both libraries in one process, kernels imported first
  torch+numba  both libraries in one process, torch imported first

Tasks: depthwise (every MobileNetV2 depthwise layer, forward and backward), versions
(each numbered depthwise version, numba only), model (MobileNetV2-1.0 224 px
inference), train (a batch-16 128 px training step), mixed (both models' inference,
for the two-library sides), roofline (copy bandwidth and GEMM peak, numpy only).

Prints one JSON object on its last line: ``{case: timing}`` with the timing of
``benchmarks.timing.measure``. ``benchmarks/run.py`` starts these processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

import numpy as np

from .timing import measure, v2_depthwise_shapes, versions

SIDES = ("numba", "torch_nchw", "torch_cl", "onnxruntime", "numba+torch", "torch+numba")
TASKS = ("depthwise", "versions", "model", "train", "mixed", "roofline")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _cl(a):
    """The same values with channels-last (NHWC) memory."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _dw_inputs(n, c, h, w, s):
    rng = _rng()
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
    dout = rng.standard_normal((n, c, (h - 1) // s + 1, (w - 1) // s + 1), dtype=np.float32)
    return x, wt, dout


def _threads(side, threads):
    if "numba" in side:
        import numba

        numba.set_num_threads(threads)
    if "torch" in side:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)


# --- numba side -------------------------------------------------------------------------


def numba_depthwise(batches, min_time, version=None):
    from kernels import depthwise as K

    out = {}
    for b in batches:
        for c, h, w, s in v2_depthwise_shapes():
            x, wt, dout = _dw_inputs(b, c, h, w, s)
            x, dout = _cl(x), _cl(dout)
            key = f"b{b} C{c} {h}x{w} s{s}"
            fwd = functools.partial(K.depthwise_conv2d, x, wt, s, 1, version=version)
            bwd = functools.partial(K.depthwise_conv2d_backward, dout, x, wt, s, 1, version=version)
            out[f"fwd {key}"], out[f"bwd {key}"] = measure(fwd, min_time), measure(bwd, min_time)
    return out


def numba_versions(min_time):
    from kernels import depthwise as K
    from kernels import depthwise_versions as V

    out = {}
    for c, h, w, s in v2_depthwise_shapes():
        x, wt, dout = _dw_inputs(1, c, h, w, s)
        key = f"b1 C{c} {h}x{w} s{s}"
        for v in V.FORWARD:
            xi = _cl(x) if v in V.NHWC_FORWARD else x
            fwd = functools.partial(K.depthwise_conv2d, xi, wt, s, 1, version=v)
            out[f"fwd v{v} {key}"] = measure(fwd, min_time)
        for v in V.BACKWARD:
            xi, di = (_cl(x), _cl(dout)) if v in V.NHWC_BACKWARD else (x, dout)
            bwd = functools.partial(K.depthwise_conv2d_backward, di, xi, wt, s, 1, version=v)
            out[f"bwd v{v} {key}"] = measure(bwd, min_time)
    return out


def numba_model(batches, min_time):
    import numpy_impl

    m = numpy_impl.mobilenet_v2(backend="numba").eval()
    out = {}
    for b in batches:
        x = _rng().standard_normal((b, 3, 224, 224), dtype=np.float32)
        out[f"infer b{b} 224"] = measure(functools.partial(m.forward, x), min_time)
    return out


def numba_train(min_time):
    import numpy_impl

    m = numpy_impl.mobilenet_v2(backend="numba")
    x = _rng().standard_normal((16, 3, 128, 128), dtype=np.float32)
    d = _rng(1).standard_normal((16, 1000), dtype=np.float32)

    def step():
        m.forward(x)
        m.backward(d, input_grad=False)  # as torch: no gradient for the data

    return {"train b16 128": measure(step, min_time, block_time=0)}


def roofline(threads, min_time):
    """This machine's copy bandwidth (numpy, one thread: memcpy) and float32 GEMM rate."""
    from threadpoolctl import threadpool_limits

    a = _rng().standard_normal(16 << 20, dtype=np.float32)  # 64 MiB: far past the caches
    b = np.empty_like(a)
    t = measure(lambda: np.copyto(b, a), min_time)
    out = {"copy 64MiB": {**t, "GBps": 2 * a.nbytes / t["median_us"] / 1e3}}
    m = _rng().standard_normal((1024, 1024), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        t = measure(lambda: m @ m, min_time)
    out["sgemm 1024"] = {**t, "GFLOPs": 2 * 1024**3 / t["median_us"] / 1e3}
    return out


# --- torch side -------------------------------------------------------------------------


def torch_depthwise(batches, min_time, cl):
    import torch
    import torch.nn.functional as F

    fmt = torch.channels_last if cl else torch.contiguous_format
    out = {}
    for b in batches:
        for c, h, w, s in v2_depthwise_shapes():
            x, wt, dout = (torch.from_numpy(a) for a in _dw_inputs(b, c, h, w, s))
            x, dout = x.contiguous(memory_format=fmt), dout.contiguous(memory_format=fmt)
            key = f"b{b} C{c} {h}x{w} s{s}"
            fwd = functools.partial(F.conv2d, x, wt, None, s, 1, 1, c)
            bwd = functools.partial(
                torch.ops.aten.convolution_backward,
                dout,
                x,
                wt,
                None,
                [s, s],
                [1, 1],
                [1, 1],
                False,
                [0, 0],
                c,
                [True, True, False],
            )
            out[f"fwd {key}"], out[f"bwd {key}"] = measure(fwd, min_time), measure(bwd, min_time)
    return out


def _torch_v2(cl, train=False):
    import torch

    import torch_impl

    t = torch_impl.mobilenet_v2().train(train)
    return t.to(memory_format=torch.channels_last) if cl else t


def torch_model(batches, min_time, cl):
    import torch

    t = _torch_v2(cl)
    fmt = torch.channels_last if cl else torch.contiguous_format
    out = {}
    for b in batches:
        x = torch.from_numpy(_rng().standard_normal((b, 3, 224, 224), dtype=np.float32)).contiguous(
            memory_format=fmt
        )

        def run(x=x):
            with torch.no_grad():
                t(x)

        out[f"infer b{b} 224"] = measure(run, min_time)
    return out


def torch_train(min_time, cl):
    import torch

    t = _torch_v2(cl, train=True)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.from_numpy(_rng().standard_normal((16, 3, 128, 128), dtype=np.float32)).contiguous(
        memory_format=fmt
    )
    d = torch.from_numpy(_rng(1).standard_normal((16, 1000), dtype=np.float32))

    def step():
        t.zero_grad(set_to_none=True)
        t(x).backward(d)

    return {"train b16 128": measure(step, min_time, block_time=0)}


def ort_model(batches, min_time, threads):
    """The torch model exported to ONNX by a process of its own (``mobilenet.deploy.bench``), so that
    this process, the timed one, never loads torch beside onnxruntime."""
    import subprocess
    import tempfile

    import onnxruntime as ort

    from mobilenet.deploy import bench

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    case = bench.Case("v2", 1.0, 224)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = json.dumps([dataclasses.asdict(case)])
        for step, *flags in (["prepare"], ["export", "--float"]):  # the weights, then ONNX from them
            cmd = [sys.executable, "-m", "mobilenet.deploy.bench", step, "--dir", tmp, "--cases", cases]
            subprocess.run(cmd + flags, check=True, capture_output=True)
        sess = ort.InferenceSession(
            os.path.join(tmp, case.onnx_name()), opts, providers=["CPUExecutionProvider"]
        )
    name = sess.get_inputs()[0].name
    for b in batches:
        x = _rng().standard_normal((b, 3, 224, 224), dtype=np.float32)
        out[f"infer b{b} 224"] = measure(functools.partial(sess.run, None, {name: x}), min_time)
    return out


def mixed(side, min_time):
    """Both libraries loaded in the order the side names; each model's inference timed."""
    if side == "numba+torch":
        import kernels  # noqa: F401, I001  (the order is the point)
        import torch
    else:
        import torch

        import kernels  # noqa: F401
    import numpy_impl

    m = numpy_impl.mobilenet_v2(backend="numba").eval()
    t = _torch_v2(True)
    x = _rng().standard_normal((1, 3, 224, 224), dtype=np.float32)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def run_torch():
        with torch.no_grad():
            t(xt)

    out = {}
    for _ in range(2):  # alternate inside the process too: each follows the other
        out["numba infer b1 224"] = measure(lambda: m.forward(x), min_time)
        out["torch_cl infer b1 224"] = measure(run_torch, min_time)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("side", choices=SIDES)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    a = p.parse_args(argv)
    if a.side.startswith("torch+"):
        import torch  # noqa: F401  (import order is what this side measures)
    _threads(a.side, a.threads)
    cl = a.side == "torch_cl"
    if a.task == "mixed":
        res = mixed(a.side, a.min_time)
    elif a.side == "numba":
        res = {
            "depthwise": lambda: numba_depthwise(a.batch, a.min_time),
            "versions": lambda: numba_versions(a.min_time),
            "model": lambda: numba_model(a.batch, a.min_time),
            "train": lambda: numba_train(a.min_time),
            "roofline": lambda: roofline(a.threads, a.min_time),
        }[a.task]()
    elif a.side.startswith("torch_"):
        res = {
            "depthwise": lambda: torch_depthwise(a.batch, a.min_time, cl),
            "model": lambda: torch_model(a.batch, a.min_time, cl),
            "train": lambda: torch_train(a.min_time, cl),
        }[a.task]()
    elif a.side == "onnxruntime" and a.task == "model":
        res = ort_model(a.batch, a.min_time, a.threads)
    else:
        p.error(f"side {a.side!r} has no task {a.task!r}")
    mods = [sys.modules[m] for m in ("numba", "torch", "onnxruntime") if m in sys.modules]
    print(json.dumps({"side": a.side, "task": a.task, "versions": versions(*mods), "results": res}))


if __name__ == "__main__":
    main()
