"""Integer checkpoints (written by ``mobilenet quantize``): reading one back into a runnable model.

An integer checkpoint is an ``.npz`` like every other (no pickle): ``qmodel/<layer>.<array>``
(int8 weights, int32 biases, float32 scales, int32 zero points) and a meta with its own format,
the float run's configuration, classes and normalisation, and the quantization settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import mobilenet_arch as A
from mobilenet import checkpoint as ckpt
from mobilenet.training.meta import QUANTIZED_FORMAT as FORMAT
from mobilenet.training.meta import config_from_dict
from mobilenet.training.numpy_runner import build_model
from numpy_impl.quant.layers import QuantConfig
from numpy_impl.quant.model import QuantizedMobileNet

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
    placeholder = build_model(cfg, meta["num_classes"])  # the spec and the float shapes
    qmodel = QuantizedMobileNet(placeholder.spec, cfg.arch, placeholder.state_dict(), qcfg)
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
