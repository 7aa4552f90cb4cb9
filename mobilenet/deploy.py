"""Deployment: ONNX export checked by onnxruntime, and torchvision-format weights in and out.

``export_onnx`` writes the torch model (``torch_impl``) through ``torch.onnx`` with a dynamic
batch dimension, and records where its weights came from in the file's metadata, so that
``verify_onnx`` can rebuild the same network in the NumPy reference and compare onnxruntime's
output with it. The exporter folds each batch norm into its convolution, so the ONNX weights
are not the checkpoint's: the check is of the whole deployed graph against an independent
implementation, not of a copy against itself.

``convert`` moves a MobileNetV2 ``state_dict`` in torchvision's format (what
``torch.save(model.state_dict(), path)`` writes) to one of our checkpoints and back. Every key
and shape is checked; width and number of classes are read from the shapes.

torch, onnx and onnxruntime are imported by the functions that need them, so importing this
module costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import warnings
from pathlib import Path

import numpy as np

import mobilenet_arch as A
import numpy_impl

from . import checkpoint as ckpt
from .summary import summary_dict

MAX_VERIFY_RESOLUTION = 1024  # bounds what a crafted file's metadata can make verify allocate
OPSET = 18  # onnxruntime 1.17+ runs it; torch's TorchScript exporter writes it
ONNX_TOL = 1e-4  # float32 onnxruntime against the float64 reference: rounding only
META_PREFIX = "mobilenet."
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's preprocessing of its ImageNet weights
IMAGENET_STD = (0.229, 0.224, 0.225)
PUBLISHED_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.4, 1.3, 0.25)  # tried first when a width is inferred


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_arrays(arrays: dict) -> dict:
    return {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}


def read_checkpoint(path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a classification checkpoint (trained, or written by :func:`convert`)."""
    train = importlib.import_module("mobilenet.train")
    arrays, meta = ckpt.load(path)
    meta = train.check_training_meta("read_checkpoint", path, meta)
    cfg = train.config_from_dict(meta["config"])
    state = _model_arrays(arrays)
    expected = numpy_impl.mobilenet(cfg.arch, width_mult=cfg.width_mult, num_classes=meta["num_classes"])
    check_state_dict("read_checkpoint", path, state, expected.state_dict())
    return state, meta


def check_state_dict(fn: str, path, got: dict, expected: dict) -> None:
    """Strict loading: the same keys and shapes, or a ValueError naming the ones that differ."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(np.shape(got[k]))} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in got and tuple(np.shape(got[k])) != tuple(expected[k].shape)
    ]
    problems = []
    for what, names in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            problems.append(f"{what}: {', '.join(names[:5])}{more}")
    if problems:
        raise ValueError(f"{fn}: {str(path)!r} does not match the model: " + "; ".join(problems))


def _source_model(arch, width_mult, num_classes, state=None, seed=0, dtype=np.float32):
    m = numpy_impl.mobilenet(
        arch, width_mult=width_mult, num_classes=num_classes, seed=seed, dtype=np.dtype(dtype)
    )
    if state is not None:
        m.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    return m.eval()


def export_onnx(
    out, checkpoint=None, arch="v2", width_mult=1.0, num_classes=1000, resolution=224, seed=0
) -> dict:
    """Write the model as ONNX (opset :data:`OPSET`, dynamic batch). The weights are the
    checkpoint's when one is given (its arch, width and classes), else fresh ones from ``seed``."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"export: --onnx must end in .onnx, got {str(out)!r}")
    if out.is_dir():
        raise IsADirectoryError(f"export: --onnx {str(out)!r} is a folder; give a file name ending in .onnx")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"export: the folder of --onnx, {str(out.parent)!r}, does not exist")
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
            checkpoint_sha256=_sha256(path),
            mean=",".join(f"{v:g}" for v in cmeta["mean"]),
            std=",".join(f"{v:g}" for v in cmeta["std"]),
        )
    else:
        if arch not in A.ARCHS:
            raise ValueError(f"export: arch must be one of {tuple(A.ARCHS)}, got {arch!r}")
        state = _source_model(arch, width_mult, num_classes, seed=seed).state_dict()
        meta.update(weights="seed", seed=str(seed))
    meta.update(arch=arch, width_mult=repr(float(width_mult)), num_classes=str(num_classes))
    torch = importlib.import_module("torch")
    onnx = importlib.import_module("onnx")
    torch_impl = importlib.import_module("torch_impl")
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
    onnx = importlib.import_module("onnx")
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
        if _sha256(source) != meta["checkpoint_sha256"]:
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
    ref_model = _source_model(
        meta["arch"], meta["width_mult"], meta["num_classes"], state, meta["seed"], np.float64
    )
    ort = importlib.import_module("onnxruntime")
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


# --- torchvision-format state dicts -----------------------------------------------------


def _load_pth(path: Path) -> dict:
    torch = importlib.import_module("torch")
    if not path.is_file():
        raise FileNotFoundError(f"convert: no file at {str(path)!r}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"convert: {str(path)!r} is not a state_dict file: {ckpt.reason(e)}") from None
    if isinstance(d, dict) and len(d) == 1 and isinstance(next(iter(d.values())), dict):
        d = next(iter(d.values()))  # {"state_dict": {...}} or {"model": {...}}, as training scripts save
    if not isinstance(d, dict) or not d:
        raise ValueError(
            f"convert: {str(path)!r} holds a {type(d).__name__}, not a state_dict (a dict of tensors)"
        )
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ValueError(f"convert: {str(path)!r}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if not (v.is_floating_point() or k.endswith("num_batches_tracked")):
            raise ValueError(f"convert: {str(path)!r}: tensor {k!r} has dtype {v.dtype}")
        out[k.removeprefix("module.")] = v.detach().cpu().numpy()  # DataParallel's prefix
    return out


def infer_shape(arch: str, state: dict, path, width_mult=None) -> tuple[float, int]:
    """``(width_mult, num_classes)`` that make every shape of ``state`` match, or a ValueError."""
    spec = A.build_spec(arch)
    head = [name for name, leaf in A.walk(spec) if isinstance(leaf, A.Linear)][-1] + ".weight"
    stem = next(leaf for _, leaf in A.walk(spec) if isinstance(leaf, A.Conv)).out_channels  # at width 1
    if head not in state or np.ndim(state[head]) != 2 or "features.0.0.weight" not in state:
        raise ValueError(
            f"convert: {str(path)!r} is not a {A.model_name(arch)} state_dict "
            f"(no {head} or features.0.0.weight)"
        )
    num_classes = int(state[head].shape[0])
    first = int(state["features.0.0.weight"].shape[0])
    candidates = [width_mult] if width_mult is not None else [*PUBLISHED_WIDTHS, first / stem]
    last = None
    for w in candidates:
        expected = numpy_impl.mobilenet(arch, width_mult=w, num_classes=num_classes).state_dict()
        try:
            check_state_dict("convert", path, state, expected)
            return float(w), num_classes
        except ValueError as e:
            last = e
    if width_mult is None:
        raise ValueError(f"{last} (no width in {candidates} fits; pass --width-mult)")
    raise last


def convert(src, out, arch="v2", width_mult=None) -> dict:
    """torchvision-format ``.pth`` -> our ``.npz`` checkpoint, or our checkpoint -> ``.pth``,
    chosen by the suffix of ``out``."""
    src, out = Path(src), Path(out)
    if arch not in A.ARCHS:
        raise ValueError(f"convert: arch must be one of {tuple(A.ARCHS)}, got {arch!r}")
    if out.suffix not in (".npz", ".pth"):
        raise ValueError(
            f"convert: --out must end in .npz (to a checkpoint) or .pth (to a torchvision state_dict), "
            f"got {str(out)!r}"
        )
    if out.resolve() == src.resolve():
        raise ValueError("convert: --out must not be the file being converted")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"convert: the folder of --out, {str(out.parent)!r}, does not exist")
    if out.suffix == ".npz":
        state = _load_pth(src)
        width_mult, num_classes = infer_shape(arch, state, src, width_mult)
        train = importlib.import_module("mobilenet.train")
        config = importlib.import_module("mobilenet.config")
        cfg = config.TrainConfig(
            arch=arch, width_mult=width_mult, resolution=224, data="imagenet", backend="numpy"
        )
        meta = {
            "config": cfg.to_dict(),
            "num_classes": num_classes,
            "classes": [str(i) for i in range(num_classes)],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "epoch": 0,
            "step": 0,
            "partial": {k: 0 for k in train.PARTIAL_KEYS},
            "history": [],
            "seconds": 0.0,
            "converted_from": str(src),
        }
        ckpt.save(out, {f"model/{k}": v for k, v in state.items()}, meta)
        return {
            "from": str(src),
            "to": str(out),
            "arch": arch,
            "width_mult": width_mult,
            "num_classes": num_classes,
        }
    state, meta = read_checkpoint(src)
    torch = importlib.import_module("torch")
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in state.items()}
    with ckpt.atomic_file(out, "wb") as f:
        torch.save(tensors, f)
    return {
        "from": str(src),
        "to": str(out),
        "arch": meta["config"]["arch"],
        "width_mult": meta["config"]["width_mult"],
        "num_classes": meta["num_classes"],
    }
