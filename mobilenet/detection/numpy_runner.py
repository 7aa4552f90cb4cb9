"""The runner of the NumPy detector (backends numpy and numba), with a ``numpy_impl.optim`` SGD."""

from __future__ import annotations

import numpy as np

from mobilenet.training import distributed, numpy_runner
from numpy_impl import detection as Dt
from numpy_impl import optim
from numpy_impl.nn import by_part

from .config import DetectConfig, build_numpy


class Runner:
    """The NumPy detector (backends numpy and numba) with a ``numpy_impl.optim`` SGD."""

    def __init__(self, cfg: DetectConfig, num_classes: int):
        self.cfg, self.model = cfg, build_numpy(cfg, num_classes)
        groups = optim.decay_groups(self.model, cfg.weight_decay)
        self.optimizer = optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
        self.world = distributed.SINGLE

    def distribute(self, world):
        """Train as one process of ``world``: on its rows of each batch, from rank 0's state."""
        self.world = world
        numpy_runner.distribute_state(self, world)

    def set_lr(self, lr):
        self.optimizer.set_lr(lr)

    def train_step(self, batch, seed) -> dict:
        """One SGD step on ``batch = (x, loc_target, labels)`` (the detector has no dropout:
        ``seed`` is unused): the loss and its two terms, per positive."""
        x, loc_target, labels = batch
        m = self.model
        m.train()
        parts = numpy_runner.parts_of(self.cfg, self.world, len(x))
        m.set_parts(parts)
        if parts is not None:
            return self._parted_step(parts, x, loc_target, labels)
        loc, conf = m.forward(x)
        loss, cache = Dt.ssd_loss(loc, conf, loc_target.astype(m.dtype), labels, self.cfg.neg_pos_ratio)
        dloc, dconf = Dt.ssd_loss_backward(1.0, cache)
        m.backward(dloc, dconf)
        self.optimizer.step(m.grads)
        return {"loss": loss, "loc_loss": cache["loc_loss"], "conf_loss": cache["conf_loss"]}

    def _parted_step(self, parts, x, loc_target, labels) -> dict:
        m = self.model
        norm = max(1, int((labels > 0).sum()))  # the global batch's positives: every process has its labels
        x, loc_target, labels = parts.local(x), parts.local(loc_target), parts.local(labels)
        loc, conf = m.forward(x)

        def part_loss(lc, cf, lt, lb):  # -> dloc, dconf (rows), [loc_loss, conf_loss]
            _, cache = Dt.ssd_loss(lc, cf, lt.astype(m.dtype), lb, self.cfg.neg_pos_ratio, norm=norm)
            terms = np.array([cache["loc_loss"], cache["conf_loss"]])
            return (*Dt.ssd_loss_backward(1.0, cache), terms)

        dloc, dconf, terms = by_part(
            parts, part_loss, loc, conf, loc_target, labels, rows=(True, True, False)
        )
        m.backward(dloc, dconf)
        self.optimizer.step(parts.total_grads(m.grads))
        loc_loss, conf_loss = parts.total(terms)
        return {
            "loss": float(loc_loss + conf_loss),
            "loc_loss": float(loc_loss),
            "conf_loss": float(conf_loss),
        }

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
