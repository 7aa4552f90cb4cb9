"""The runner of the torch model (backend torch), with a ``torch.optim`` optimiser of the
same settings as the NumPy runner's."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

import torch_impl
from torch_impl.sync_bn import convert_sync_batchnorm

from . import distributed, numpy_runner
from .config import TrainConfig, optimizer_kwargs


def build_model(cfg: TrainConfig, num_classes: int):
    """The torch model with the NumPy model's seeded initial weights, so runs with the same
    seed start identical whatever the backend."""
    start = numpy_runner.build_model(cfg, num_classes)
    model = torch_impl.mobilenet(
        cfg.arch, width_mult=cfg.width_mult, num_classes=num_classes, dropout=cfg.dropout
    )
    model = model.to(torch.float64 if cfg.dtype == "float64" else torch.float32)
    model.load_state_dict(torch_impl.state_dict_to_torch(start.state_dict()))
    return model


class Runner:
    """The torch model with a ``torch.optim`` optimiser of the same settings."""

    def __init__(self, model, cfg: TrainConfig, num_classes=None):
        self.model, self.cfg = model, cfg  # (num_classes: the model's own; loss "arcface" is numpy-only)
        self.world, self.ddp = distributed.SINGLE, None
        self.make_optimizer()

    def distribute(self, world):
        """Train as one process of ``world``: ``DistributedDataParallel`` over this model (gradients
        averaged by gloo's all-reduce, rank 0's weights broadcast at the start), with synchronised
        batch norm (:mod:`torch_impl.sync_bn`)."""
        self.world = world
        if world.size > 1 and self.ddp is None:
            convert_sync_batchnorm(self.model)
            # rank 0's buffers at the start; then synchronised statistics keep them equal: no broadcasts
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, forward_sync_buffers=False)
        elif world.size > 1:
            numpy_runner.distribute_state(self, world)

    def make_optimizer(self):
        keep = set(self.model.trainable_names())
        decay, exempt = [], []
        for mname, m in self.model.named_modules():
            is_exempt = isinstance(m, torch.nn.BatchNorm2d) or (
                isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            )
            for pname, p in m.named_parameters(recurse=False):
                name = f"{mname}.{pname}" if mname else pname
                if name in keep:
                    (exempt if is_exempt and self.cfg.exempt_bn_dw else decay).append((name, p))
        groups = [{"params": [p for _, p in decay], "weight_decay": self.cfg.weight_decay}]
        if exempt:
            groups.append({"params": [p for _, p in exempt], "weight_decay": 0.0})
        cls = torch.optim.SGD if self.cfg.optimizer == "sgd" else torch.optim.RMSprop
        self.optimizer = cls(groups, **optimizer_kwargs(self.cfg))

    def load_backbone(self, state: dict):
        """Some of the model's tensors (e.g. every ``features.*``) from ``state`` (NumPy arrays)."""
        own = self.model.state_dict()
        bad = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
        if bad:
            raise ValueError(f"load_backbone: keys or shapes that do not match this model: {bad[:5]}")
        self.model.load_state_dict(torch_impl.state_dict_to_torch(state), strict=False)

    def set_lr(self, lr):
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def train_step(self, batch, seed) -> dict:
        """One step on ``batch = (x, y)``. In a job of several processes, ``batch`` is the global
        batch: this process trains on its rows (dropout masks are drawn per process, from the
        same seed), and the loss and count returned are the global batch's."""
        x, y = batch
        torch.manual_seed(seed)  # dropout masks of this step
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ddp is None:
            yt = torch.from_numpy(y)
            logits = self.model(torch.from_numpy(x))
            loss = TF.cross_entropy(logits, yt, label_smoothing=self.cfg.label_smoothing)
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.item(), "correct": int((logits.argmax(1) == yt).sum())}
        w, total = self.world, len(x)
        rows = slice(w.rank * total // w.size, (w.rank + 1) * total // w.size)
        yt = torch.from_numpy(y[rows])
        logits = self.ddp(torch.from_numpy(x[rows]))
        loss_sum = TF.cross_entropy(logits, yt, label_smoothing=self.cfg.label_smoothing, reduction="sum")
        (loss_sum * (w.size / total)).backward()  # DDP averages over processes: the global mean's gradient
        self.optimizer.step()
        local = np.array([loss_sum.item(), float((logits.argmax(1) == yt).sum())])
        loss, correct = w.all_sum(local)
        return {"loss": loss / total, "correct": int(correct)}

    def predict(self, x, batch_size=256):
        self.model.eval()
        with torch.no_grad():
            out = [
                self.model(torch.from_numpy(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
        self.model.train()
        return np.concatenate(out)

    def features(self, x, batch_size=256, every_stage=False):
        m = self.model
        m.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                h, pooled = torch.from_numpy(x[i : i + batch_size]), []
                for j, stage in enumerate(m.features):
                    h = stage(h)
                    if every_stage or j == len(m.features) - 1:
                        pooled.append(h.mean(dim=(2, 3)).numpy())  # (B, C_i)
                out.append(pooled)
        m.train()
        per_stage = [np.concatenate([o[j] for o in out]) for j in range(len(out[0]))]
        return per_stage if every_stage else per_stage[-1]

    def state_arrays(self) -> dict:
        return state_arrays(self.model, self.optimizer)

    def load_state_arrays(self, arrays: dict):
        load_state_arrays(self.model, self.optimizer, arrays)

    def rng_state(self) -> dict:
        return {}  # dropout is seeded per step (torch.manual_seed)

    def set_rng_state(self, state: dict) -> None:
        """Nothing to restore: see :meth:`rng_state`."""


def state_arrays(model, optimizer) -> dict:
    """A torch model's and its optimiser's tensors as NumPy arrays (``model/``, ``optim/NAME/BUF``)."""
    out = {f"model/{k}": v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    for name, p in model.named_parameters():
        for k, v in optimizer.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                out[f"optim/{name}/{k}"] = v.detach().cpu().numpy().copy()
    return out


def load_state_arrays(model, optimizer, arrays: dict):
    """The inverse of :func:`state_arrays`; a ValueError naming what does not fit."""
    state = {k[6:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch's report of missing keys or mismatched shapes
        last = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"load_state_arrays: the checkpoint does not fit this model ({last})") from None
    params = dict(model.named_parameters())
    optimizer.state.clear()
    for key, v in arrays.items():
        if key.startswith("optim/"):
            name, _, buf = key[6:].rpartition("/")
            if name not in params:
                raise ValueError(f"load_state_arrays: optimiser state for unknown parameter {name!r}")
            optimizer.state[params[name]][buf] = torch.from_numpy(np.array(v))
