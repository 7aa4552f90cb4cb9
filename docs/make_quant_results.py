"""The runs behind the quantization chapter (about 30 minutes on 2 cores).

    python docs/make_quant_results.py               # train the float models, then quantize them
    python docs/make_quant_results.py --work DIR    # reuse the float runs already in DIR

Float models (``mobilenet train ... --backend numba --epochs 15 --seed 0``, 32 px digits):
MobileNetV2-0.5, MobileNetV1-0.5 and MobileNetV3-Small-1.0, and the glyph pretraining
(``mobilenet pretrain``: MobileNetV2, 166 classes). Each is quantized after training
(``mobilenet quantize``'s code, 512 calibration images of its training split) in every
setting of :data:`SETTINGS`, and its float ONNX export by onnxruntime's own ``quantize_static``
(QDQ, per-channel, S8S8) on the same images. For MobileNetV2 on digits the per-layer
signal-to-quantization-noise ratios, the depthwise weights' ranges and one calibration
histogram are kept for the figures. Everything goes to ``docs/results/quant.json``; the
chapter's tables and figures are rendered by ``docs/make_figures.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilenet import cli
from mobilenet import data as D
from mobilenet.training.classify import load_split, load_trained
from mobilenet.training.meta import config_from_dict
from numpy_impl.quant import affine
from numpy_impl.quant.layers import QBlock, QConv
from numpy_impl.quant.model import quantize
from numpy_impl.quant.observers import HistogramObserver, MinMaxObserver

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"
CALIBRATION = 512
SEED = 0

# (label, observer, per-channel weights, bits)
SETTINGS = [
    ("min/max, per channel, 8 bits", "minmax", True, 8),
    ("moving average, per channel, 8 bits", "moving-average", True, 8),
    ("histogram, per channel, 8 bits", "histogram", True, 8),
    ("min/max, per tensor, 8 bits", "minmax", False, 8),
    ("histogram, per tensor, 8 bits", "histogram", False, 8),
    ("min/max, per channel, 6 bits", "minmax", True, 6),
    ("histogram, per channel, 6 bits", "histogram", True, 6),
    ("min/max, per channel, 4 bits", "minmax", True, 4),
    ("histogram, per channel, 4 bits", "histogram", True, 4),
]

MODELS = {  # name -> the float run's command line (its --out appended)
    "v2-digits": ["train", "--arch", "v2", "--width-mult", "0.5"],
    "v1-digits": ["train", "--arch", "v1", "--width-mult", "0.5"],
    "v3-small-digits": ["train", "--arch", "v3-small", "--width-mult", "1"],
    "v2-glyphs": ["pretrain", "--backend", "numba", "--no-progress"],
}
DIGITS = ["--resolution", "32", "--data", "digits", "--backend", "numba", "--epochs", "15", "--seed", "0"]


def float_run(work: Path, name: str) -> Path:
    out = work / name
    ckpt = out / "checkpoint.npz"
    if not ckpt.is_file():
        args = MODELS[name] + (DIGITS + ["--no-progress"] if MODELS[name][0] == "train" else [])
        assert cli.main([*args, "--out", str(out)]) == 0
    return ckpt


def splits(meta):
    train, test = load_split(config_from_dict(meta["config"]))
    norm = lambda x: D.normalize(x, meta["mean"], meta["std"], np.float32)  # noqa: E731
    idx = np.sort(np.random.default_rng(SEED).permutation(len(train))[:CALIBRATION])
    return norm(train.x[idx]), norm(test.x), test.y


def accuracy(model, x, y) -> float:
    return float(
        np.mean(np.concatenate([model(x[i : i + 256]) for i in range(0, len(x), 256)]).argmax(1) == y)
    )


def ort_static(ckpt: Path, calib: np.ndarray, x_test, y_test, work: Path) -> dict:
    """onnxruntime's own post-training quantization of our float ONNX export. (Its libraries,
    and torch for the export, load here, when the float models are already trained.)"""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mobilenet.deploy.onnx_export import export_onnx

    f32 = work / f"{ckpt.parent.name}.onnx"
    export_onnx(f32, checkpoint=ckpt, resolution=calib.shape[-1])
    pre = work / f"{ckpt.parent.name}.pre.onnx"
    quant_pre_process(str(f32), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i : i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.batches, None)

    q8 = work / f"{ckpt.parent.name}.int8.onnx"
    t0 = time.perf_counter()
    quantize_static(
        str(pre),
        str(q8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    seconds = time.perf_counter() - t0
    sess = ort.InferenceSession(str(q8), providers=["CPUExecutionProvider"])
    acc = accuracy(lambda x: sess.run(None, {"input": x})[0], x_test, y_test)
    return {
        "accuracy": acc,
        "seconds": seconds,
        "bytes": q8.stat().st_size,
        "float_bytes": f32.stat().st_size,
    }


def layer_sqnr(q, x) -> list:
    """Per layer, 10 log10(|float|^2 / |int8 - float|^2) of its output: the float network and
    the integer one each run on their own outputs, so the noise accumulates as in deployment."""
    ints = q.intermediates(x)
    rows, y = [], x

    def walk(layers, y):
        for layer in layers:
            if isinstance(layer, QBlock):
                z = walk(layer.body, y)
                if layer.residual:
                    z = y + z
                    rows.append((layer.name, "add", z))
                y = z
            else:
                y = layer.calibrate(y)
                rows.append((layer.name, type(layer).__name__, y))
        return y

    walk(q.layers, y)
    out = []
    for name, _, f in rows:
        if name not in ints:
            continue
        qv, qp = ints[name]
        d = affine.dequantize(qv, qp.scale, qp.zero_point).reshape(f.shape)
        noise = float(((d - f) ** 2).sum())
        out.append({"layer": name, "sqnr_db": float(10 * np.log10((f**2).sum() / max(noise, 1e-30)))})
    return out


def depthwise_ranges(model) -> list:
    """For each depthwise layer of a float model, its output channels' max |w| after folding."""
    q = quantize(model, [np.zeros((1, 3, 32, 32), np.float32)])
    return [
        {"layer": layer.name, "channel_max": np.abs(layer.w).reshape(layer.w.shape[0], -1).max(1).tolist()}
        for _, layer in q.named_layers()
        if isinstance(layer, QConv) and layer.groups > 1
    ]


def histogram_example(model, calib, name="features.2.conv.0.0") -> dict:
    """One activation's calibration histogram with the ranges min/max and the histogram observer
    choose: by default the second block's expansion (ReLU6 output, a long tail)."""
    q = quantize(model, [calib[:64]])
    layer = dict(q.named_layers())[name]
    seen = []
    calibrate = layer.calibrate
    layer.calibrate = lambda x: seen.append(calibrate(x)) or seen[-1]
    q.calibrate(calib)
    values = seen[-1].ravel()
    mm, hist = MinMaxObserver().update(values), HistogramObserver().update(values)
    counts, edges = np.histogram(values, bins=120)
    return {
        "layer": name,
        "counts": counts.tolist(),
        "edges": edges.tolist(),
        "minmax": list(mm.range()),
        "histogram": {str(b): list(hist.clipping_range(0, 2**b - 1)) for b in (8, 6, 4)},
    }


def study(name: str, ckpt: Path, work: Path) -> dict:
    runner, meta = load_trained(ckpt, backend="numba")
    model = runner.model.eval()
    calib, x_test, y_test = splits(meta)
    float_acc = accuracy(model.forward, x_test, y_test)
    batches = [calib[i : i + 64] for i in range(0, len(calib), 64)]
    rows = []
    for label, observer, per_channel, bits in SETTINGS:
        t0 = time.perf_counter()
        q = quantize(model, batches, observer=observer, per_channel=per_channel, bits=bits, backend="numba")
        rows.append(
            {
                "setting": label,
                "observer": observer,
                "per_channel": per_channel,
                "bits": bits,
                "accuracy": accuracy(q.forward, x_test, y_test),
                "seconds": time.perf_counter() - t0,
            }
        )
    fixed = quantize(model, batches, scheme="fixed")
    out = {
        "command": "mobilenet "
        + " ".join(MODELS[name])
        + (" " + " ".join(DIGITS) if MODELS[name][0] == "train" else ""),
        "classes": meta["num_classes"],
        "test_images": len(y_test),
        "calibration_images": len(calib),
        "float_accuracy": float_acc,
        "settings": rows,
        "fixed_point_accuracy": accuracy(fixed.forward, x_test, y_test),
        "onnxruntime_static": ort_static(ckpt, calib, x_test, y_test, work),
        "config": meta["config"],
    }
    if name == "v2-digits":
        q = quantize(model, batches)
        out["sqnr"] = layer_sqnr(q, x_test[:256])
        out["depthwise_ranges"] = depthwise_ranges(model)
        out["histogram"] = histogram_example(model, calib)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="folder for the float runs (default: a temporary one)")
    p.add_argument("--only", nargs="*", choices=tuple(MODELS), default=None)
    a = p.parse_args(argv)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mobilenet-quant-"))
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "quant.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in a.only or MODELS:
        t0 = time.perf_counter()
        ckpt = float_run(work, name)
        results[name] = study(name, ckpt, work)
        results[name]["minutes"] = (time.perf_counter() - t0) / 60
        path.write_text(json.dumps(results, indent=1))
        print(
            f"{name}: float {results[name]['float_accuracy']:.4f}, "
            f"int8 {results[name]['settings'][0]['accuracy']:.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
