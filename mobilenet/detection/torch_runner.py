"""The torch runner of detection: ``torch_impl``'s SSDLite with the NumPy
detector's seeded initial weights and a ``torch.optim.SGD`` of the same settings."""

from __future__ import annotations

import numpy as np
import torch

import torch_impl
from mobilenet.training import torch_runner
from torch_impl.detector import ssd_loss, ssdlite

from .config import DetectConfig, build_numpy


class Runner:
    def __init__(self, cfg: DetectConfig, num_classes: int):
        self.cfg = cfg
        start = build_numpy(cfg, num_classes)
        model = ssdlite(cfg.width_mult, num_classes + 1)
        model = model.to(torch.float64 if cfg.dtype == "float64" else torch.float32)
        model.load_state_dict(torch_impl.state_dict_to_torch(start.state_dict()))
        self.model = model
        decay, exempt = [], []  # as numpy_impl.optim.decay_groups: no decay on BN and depthwise
        for m in model.modules():
            no = isinstance(m, torch.nn.BatchNorm2d) or (
                isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            )
            (exempt if no else decay).extend(m.parameters(recurse=False))
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": exempt, "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )

    def distribute(self, world):
        """One process only: the torch detector has no data-parallel step."""
        if world.size > 1:
            raise ValueError(
                "detect train --backend torch runs in one process; --nproc and torchrun train the "
                "detector on the numpy and numba backends"
            )

    def set_lr(self, lr):
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def train_step(self, batch, seed) -> dict:
        x, loc_target, labels = batch
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loc, conf = self.model(torch.from_numpy(x))
        target = torch.from_numpy(loc_target.astype(x.dtype))
        loc_loss, conf_loss = ssd_loss(loc, conf, target, torch.from_numpy(labels), self.cfg.neg_pos_ratio)
        loss = loc_loss + conf_loss
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "loc_loss": loc_loss.item(), "conf_loss": conf_loss.item()}

    def predict(self, x, batch_size=64):
        self.model.eval()
        with torch.no_grad():
            outs = [self.model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        self.model.train()
        return (np.concatenate([o[k].numpy() for o in outs]).astype(np.float64) for k in (0, 1))

    def state_arrays(self) -> dict:
        return torch_runner.state_arrays(self.model, self.optimizer)

    def load_state_arrays(self, arrays: dict):
        torch_runner.load_state_arrays(self.model, self.optimizer, arrays)

    def rng_state(self) -> dict:
        return {}

    def set_rng_state(self, state: dict) -> None:
        """Nothing to restore: a step draws nothing at random."""
