"""``mobilenet quantize``: post-training quantization of a classification checkpoint into an
integer checkpoint, and the loading and evaluation of one.

An integer checkpoint is an ``.npz`` like every other (no pickle): ``qmodel/<layer>.<array>``
(int8 weights, int32 biases, float32 scales, int32 zero points) and a meta with its own format,
the float run's configuration, classes and normalisation, and the quantization settings.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from mobilenet.training.classify import evaluate, load_trained, make_runner
from mobilenet.training.meta import QUANTIZED_FORMAT as FORMAT
from mobilenet.training.meta import check_training_meta, config_from_dict
from numpy_impl.quant.layers import QuantConfig
from numpy_impl.quant.model import QuantizedMobileNet, quantize

PREFIX = "qmodel/"


class QuantizedRunner:
    """What :func:`mobilenet.training.classify.evaluate` needs of a model: ``cfg`` and ``predict``."""

    def __init__(self, qmodel: QuantizedMobileNet, cfg):
        self.qmodel, self.cfg = qmodel, cfg

    def predict(self, x, batch_size=256):
        x = np.asarray(x, np.float32)
        return np.concatenate(
            [self.qmodel.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )


def is_quantized(meta: dict) -> bool:
    return meta.get("format") == FORMAT


def calibration_images(train: D.Dataset, n: int, seed: int) -> np.ndarray:
    """``n`` training images (all of them if fewer), drawn without replacement by ``seed``."""
    idx = np.random.default_rng(seed).permutation(len(train))[:n]
    return train.x[np.sort(idx)]


def quantize_checkpoint(
    path,
    out,
    calibration=512,
    observer="minmax",
    per_channel=True,
    bits=8,
    scheme="float",
    data=None,
    seed=0,
    batch_size=64,
) -> dict:
    """Quantize the float checkpoint ``path`` on ``calibration`` images of its training split (or
    of the folder ``data``, which must hold the same classes); write ``out/checkpoint.npz`` and
    ``out/metrics.json`` (float and int8 test accuracy, sizes); return the metrics."""
    arrays, meta = ckpt.load(path)
    if is_quantized(meta):
        raise ValueError(
            f"quantize: {str(path)!r} is already an integer checkpoint; give the float one it came from"
        )
    meta = check_training_meta("quantize", path, meta)
    cfg = config_from_dict(meta["config"])
    if cfg.loss != "softmax":
        raise ValueError(f"quantize: {str(path)!r} is an ArcFace embedding; only classifiers are quantized")
    qcfg = QuantConfig(observer, per_channel, bits, False, scheme)  # checks every setting first
    runner, _ = load_trained(path, backend="numpy")
    train, test = D.load_data(cfg.data, cfg.resolution, seed=cfg.seed)
    if cfg.classes is not None:
        train, test = train.select_classes(cfg.classes), test.select_classes(cfg.classes)
    source = train
    if data is not None:
        source = D.load_data(data, cfg.resolution, seed=cfg.seed)[0]
        if list(source.classes) != meta["classes"]:
            raise ValueError(
                f"--data has classes {list(source.classes)}, the checkpoint's model was trained on "
                f"{meta['classes']}: calibrate on images of the same task"
            )
    x = D.normalize(calibration_images(source, calibration, seed), meta["mean"], meta["std"], np.float32)
    model = runner.model.eval()
    start = time.perf_counter()
    qmodel = quantize(
        model, [x[i : i + batch_size] for i in range(0, len(x), batch_size)], **dataclasses.asdict(qcfg)
    )
    seconds = time.perf_counter() - start
    float_ev = evaluate(runner, test, meta["mean"], meta["std"])
    int_ev = evaluate(QuantizedRunner(qmodel, cfg), test, meta["mean"], meta["std"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    qmeta = {
        "format": FORMAT,
        "source": str(path),
        "config": meta["config"],
        "classes": meta["classes"],
        "num_classes": meta["num_classes"],
        "mean": meta["mean"],
        "std": meta["std"],
        "quantization": {**dataclasses.asdict(qcfg), "calibration_images": len(x), "seed": seed},
    }
    with ckpt.exclusive(out):
        saved = ckpt.save(
            out / "checkpoint.npz", {PREFIX + k: v for k, v in qmodel.state_dict().items()}, qmeta
        )
        metrics = {
            "float_accuracy": float_ev["accuracy"],
            "int8_accuracy": int_ev["accuracy"],
            "agreement": float(np.mean(float_ev["predictions"] == int_ev["predictions"])),
            "test_images": len(test),
            "calibration_images": len(x),
            "calibration_seconds": seconds,
            "float_bytes": int(sum(a.nbytes for k, a in arrays.items() if k.startswith("model/"))),
            "int8_bytes": int(sum(np.asarray(v).nbytes for v in qmodel.state_dict().values())),
            "file_bytes": saved.stat().st_size,
            "quantization": qmeta["quantization"],
            "arch": cfg.arch,
            "width_mult": cfg.width_mult,
            "resolution": cfg.resolution,
        }
        ckpt.write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def load_quantized(path) -> tuple[QuantizedRunner, dict]:
    """An integer checkpoint's model, ready to run: ``(runner, meta)``; anything else refused."""
    arrays, meta = ckpt.load(path)
    if not is_quantized(meta):
        raise ValueError(
            f"{str(path)!r} is a float checkpoint, not an integer one; make one with "
            f"mobilenet quantize --checkpoint {path} --out DIR"
        )
    q = meta.get("quantization")
    if not isinstance(q, dict):
        raise ValueError(f"{str(path)!r}: its meta has no quantization settings")
    try:
        cfg = config_from_dict(meta["config"])
        qcfg = QuantConfig(q["observer"], q["per_channel"], q["bits"], q["reduce_range"], q["scheme"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{str(path)!r}: its meta is incomplete ({e})") from None
    cfg = dataclasses.replace(cfg, backend="numpy")
    placeholder = make_runner(cfg, meta["num_classes"]).model  # the spec and the float shapes
    qmodel = QuantizedMobileNet(placeholder.spec, cfg.arch, {}, placeholder.state_dict(), qcfg)
    state = {k[len(PREFIX) :]: v for k, v in arrays.items() if k.startswith(PREFIX)}
    expected = set(qmodel.state_keys())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"{str(path)!r} does not hold a {A.model_name(cfg.arch)} width {cfg.width_mult:g}'s integers: "
            f"missing {missing[:3]}, unexpected {extra[:3]}"
        )
    qmodel.load_state_dict(state)
    return QuantizedRunner(qmodel, cfg), meta
