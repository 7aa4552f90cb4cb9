"""ONNX export checked by onnxruntime.

``export_onnx`` writes the torch model (``torch_impl``) through ``torch.onnx`` with a dynamic
batch dimension, and records where its weights came from in the file's metadata, so that
``verify_onnx`` can rebuild the same network in the NumPy reference and compare onnxruntime's
output with it. The exporter folds each batch norm into its convolution, so the ONNX weights
are not the checkpoint's: the check is of the whole deployed graph against an independent
implementation, not of a copy against itself.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import mobilenet_arch as A
import torch_impl
from mobilenet import checkpoint as ckpt
from mobilenet.checkpoint import sha256
from mobilenet.summary import summary_dict

from .state_dicts import read_checkpoint, source_model

MAX_VERIFY_RESOLUTION = 1024  # bounds what a crafted file's metadata can make verify allocate
OPSET = 18  # onnxruntime 1.17+ runs it; torch's TorchScript exporter writes it
ONNX_TOL = 1e-4  # float32 onnxruntime against the float64 reference: rounding only
META_PREFIX = "mobilenet."


def export_onnx(
    out, checkpoint=None, arch="v2", width_mult=1.0, num_classes=1000, resolution=224, seed=0, state=None
) -> dict:
    """Write the model as ONNX (opset :data:`OPSET`, dynamic batch). The weights are the
    checkpoint's when one is given (its arch, width and classes), else ``state`` (a NumPy
    state_dict: `mobilenet bench`'s prepared weights, which verify cannot rebuild), else fresh
    ones from ``seed``."""
    out = ckpt.output_file(out, ".onnx", "export: --onnx")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < A.MIN_RESOLUTION:
        raise ValueError(f"export: resolution must be an int >= {A.MIN_RESOLUTION}, got {resolution!r}")
    meta = {"resolution": str(resolution)}
    if checkpoint is not None:
        state, cmeta = read_checkpoint(checkpoint)
        cfg = cmeta["config"]
        arch, width_mult, num_classes = cfg["arch"], float(cfg["width_mult"]), cmeta["num_classes"]
        path = Path(checkpoint).resolve()
        meta.update(
            weights="checkpoint",
            checkpoint=str(path),
            checkpoint_sha256=sha256(path),
            mean=",".join(f"{v:g}" for v in cmeta["mean"]),
            std=",".join(f"{v:g}" for v in cmeta["std"]),
        )
    else:
        if arch not in A.ARCHS:
            raise ValueError(f"export: arch must be one of {tuple(A.ARCHS)}, got {arch!r}")
        if state is None:
            state = source_model(arch, width_mult, num_classes, seed=seed).state_dict()
            meta.update(weights="seed", seed=str(seed))
        else:
            meta.update(weights="given")
    meta.update(arch=arch, width_mult=repr(float(width_mult)), num_classes=str(num_classes))
    model = torch_impl.mobilenet(arch, width_mult=width_mult, num_classes=num_classes).eval()
    model.load_state_dict(torch_impl.state_dict_to_torch(state))
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, resolution, resolution),),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    with ckpt.atomic_file(out, "wb") as f:
        f.write(data)
    return {"onnx": str(out), "bytes": len(data), "opset": OPSET, **meta}


def read_onnx_meta(path) -> dict:
    """The metadata :func:`export_onnx` wrote, checked: a file that is not an ONNX model of ours
    is a ValueError saying so."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verify: no ONNX file at {str(path)!r}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # truncated or not protobuf at all
        raise ValueError(f"verify: {str(path)!r} is not an ONNX model ({type(e).__name__})") from None
    meta = {p.key[len(META_PREFIX) :]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}
    if not {"arch", "width_mult", "num_classes", "resolution", "weights"} <= meta.keys():
        raise ValueError(
            f"verify: {str(path)!r} was not written by `mobilenet export` (no mobilenet.* metadata), "
            "so there is no reference to compare it with"
        )
    try:
        out = {
            "arch": meta["arch"],
            "width_mult": float(meta["width_mult"]),
            "num_classes": int(meta["num_classes"]),
            "resolution": int(meta["resolution"]),
            "weights": meta["weights"],
            "seed": int(meta.get("seed", "0")),
            "checkpoint": meta.get("checkpoint"),
            "checkpoint_sha256": meta.get("checkpoint_sha256"),
        }
    except ValueError:
        raise ValueError(f"verify: {str(path)!r} has malformed mobilenet.* metadata: {meta}") from None
    if out["weights"] == "given":
        raise ValueError(
            f"verify: {str(path)!r} holds weights a program gave (mobilenet bench's): no reference"
        )
    if out["arch"] not in A.ARCHS or out["weights"] not in ("seed", "checkpoint"):
        raise ValueError(f"verify: {str(path)!r} has malformed mobilenet.* metadata: {meta}")
    if not (0 < out["width_mult"] <= A.MAX_WIDTH_MULT and out["num_classes"] >= 1):
        raise ValueError(f"verify: {str(path)!r} has malformed mobilenet.* metadata: {meta}")
    if not A.MIN_RESOLUTION <= out["resolution"] <= MAX_VERIFY_RESOLUTION:
        raise ValueError(
            f"verify: {str(path)!r} was exported at {out['resolution']} px; verify runs "
            f"{A.MIN_RESOLUTION}-{MAX_VERIFY_RESOLUTION} px"
        )
    # the metadata must describe the graph it sits in before a model of that size is built: the
    # exporter folds batch norm into the convolutions, so the counts agree only roughly
    held = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    expected = summary_dict(out["arch"], out["width_mult"], A.MIN_RESOLUTION, out["num_classes"])["params"]
    if not 0.9 * expected <= held <= 1.1 * expected:
        raise ValueError(
            f"verify: {str(path)!r} holds {held:,} weights, but its metadata describes a model of "
            f"{expected:,} parameters: the file was altered"
        )
    return out


def verify_onnx(path, checkpoint=None, batch=3, seed=0, threads=None) -> dict:
    """onnxruntime on random input against the NumPy reference (float64) with the same weights:
    ``max|ort - ref| / max|ref|`` over the logits, ok when <= :data:`ONNX_TOL`. ``batch`` differs
    from the export's 1, so the dynamic batch dimension is exercised."""
    meta = read_onnx_meta(path)
    if meta["weights"] == "checkpoint":
        source = Path(checkpoint) if checkpoint is not None else Path(meta["checkpoint"])
        if not source.is_file():
            raise FileNotFoundError(
                f"verify: the checkpoint the model was exported from, {str(source)!r}, is gone: "
                "pass --checkpoint with its new path"
            )
        if sha256(source) != meta["checkpoint_sha256"]:
            raise ValueError(
                f"verify: {str(source)!r} is not the checkpoint {str(path)!r} was exported from "
                "(its SHA-256 differs)"
            )
        state, _ = read_checkpoint(source)
    elif checkpoint is not None:
        raise ValueError(
            f"verify: {str(path)!r} holds fresh weights (seed {meta['seed']}); drop --checkpoint"
        )
    else:
        state = None
    ref_model = source_model(
        meta["arch"], meta["width_mult"], meta["num_classes"], state, meta["seed"], np.float64
    )
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"verify: onnxruntime cannot load {str(path)!r}: {first}") from None
    r = meta["resolution"]
    x = np.random.default_rng(seed).standard_normal((batch, 3, r, r)).astype(np.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = ref_model.forward(x.astype(np.float64))
    if got.shape != ref.shape:
        raise ValueError(f"verify: onnxruntime returned shape {got.shape}, the reference {ref.shape}")
    err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), np.finfo(np.float64).tiny))
    same_top1 = float((got.argmax(1) == ref.argmax(1)).mean())
    return {
        **{k: meta[k] for k in ("arch", "width_mult", "num_classes", "resolution", "weights")},
        "onnx": str(path),
        "batch": batch,
        "rel_err": err,
        "top1_agreement": same_top1,
        "tolerance": ONNX_TOL,
        "onnxruntime": ort.__version__,
        "ok": bool(np.isfinite(err) and err <= ONNX_TOL),
    }
