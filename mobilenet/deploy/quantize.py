"""``mobilenet quantize``: post-training quantization of a classification checkpoint into an
integer checkpoint, and the loading and evaluation of one.

The checkpoint it writes is read by :mod:`mobilenet.deploy.qcheckpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from mobilenet.training.classify import evaluate, load_trained
from mobilenet.training.meta import check_training_meta, config_from_dict
from numpy_impl.quant.layers import QuantConfig
from numpy_impl.quant.model import quantize

from .qcheckpoint import FORMAT, PREFIX, QuantizedRunner, is_quantized


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
