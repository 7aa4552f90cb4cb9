"""torchvision-format weights in and out, and the checked reading of a classification checkpoint.

``convert`` moves a MobileNetV2 ``state_dict`` in torchvision's format (what
``torch.save(model.state_dict(), path)`` writes) to one of our checkpoints and back. Every key
and shape is checked; width and number of classes are read from the shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import mobilenet_arch as A
import numpy_impl
from mobilenet import checkpoint as ckpt
from mobilenet.checkpoint import sha256  # noqa: F401  (where the exporters read it)
from mobilenet.training.config import TrainConfig
from mobilenet.training.meta import PARTIAL_KEYS, check_training_meta, config_from_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's preprocessing of its ImageNet weights
IMAGENET_STD = (0.229, 0.224, 0.225)
PUBLISHED_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.4, 1.3, 0.25)  # tried first when a width is inferred


def _model_arrays(arrays: dict) -> dict:
    return {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}


def read_checkpoint(path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a classification checkpoint (trained, or written by :func:`convert`)."""
    arrays, meta = ckpt.load(path)
    meta = check_training_meta("read_checkpoint", path, meta)
    cfg = config_from_dict(meta["config"])
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


def source_model(arch, width_mult, num_classes, state=None, seed=0, dtype=np.float32):
    m = numpy_impl.mobilenet(
        arch, width_mult=width_mult, num_classes=num_classes, seed=seed, dtype=np.dtype(dtype)
    )
    if state is not None:
        m.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    return m.eval()


def _load_pth(path: Path) -> dict:
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
        cfg = TrainConfig(arch=arch, width_mult=width_mult, resolution=224, data="imagenet", backend="numpy")
        meta = {
            "config": cfg.to_dict(),
            "num_classes": num_classes,
            "classes": [str(i) for i in range(num_classes)],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "epoch": 0,
            "step": 0,
            "partial": {k: 0 for k in PARTIAL_KEYS},
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
