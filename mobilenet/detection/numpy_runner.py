"""The runner of the NumPy detector (backends numpy and numba), with a ``numpy_impl.optim`` SGD."""

from __future__ import annotations

import numpy as np

from mobilenet.training import numpy_runner
from numpy_impl import detection as Dt
from numpy_impl import optim

from .config import DetectConfig, build_numpy


class Runner:
    """The NumPy detector (backends numpy and numba) with a ``numpy_impl.optim`` SGD."""

    def __init__(self, cfg: DetectConfig, num_classes: int):
        self.cfg, self.model = cfg, build_numpy(cfg, num_classes)
        groups = optim.decay_groups(self.model, cfg.weight_decay)
        self.optimizer = optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )

    def set_lr(self, lr):
        self.optimizer.set_lr(lr)

    def train_step(self, batch, seed) -> dict:
        """One SGD step on ``batch = (x, loc_target, labels)`` (the detector has no dropout:
        ``seed`` is unused): the loss and its two terms, per positive."""
        x, loc_target, labels = batch
        m = self.model
        m.train()
        loc, conf = m.forward(x)
        loss, cache = Dt.ssd_loss(loc, conf, loc_target.astype(m.dtype), labels, self.cfg.neg_pos_ratio)
        dloc, dconf = Dt.ssd_loss_backward(1.0, cache)
        m.backward(dloc, dconf)
        self.optimizer.step(m.grads)
        return {"loss": loss, "loc_loss": cache["loc_loss"], "conf_loss": cache["conf_loss"]}

    def predict(self, x, batch_size=64):
        """``(loc, conf)`` in eval mode, float64."""
        self.model.eval()
        outs = [self.model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        self.model.train()
        return (np.concatenate([o[k] for o in outs]).astype(np.float64) for k in (0, 1))

    def state_arrays(self) -> dict:
        return numpy_runner.state_arrays(self.model, self.optimizer)

    def load_state_arrays(self, arrays: dict):
        numpy_runner.load_state_arrays(self.model, self.optimizer, arrays)

    def rng_state(self) -> dict:
        return {}  # no dropout: nothing random in a step

    def set_rng_state(self, state: dict) -> None:
        """Nothing to restore: see :meth:`rng_state`."""
