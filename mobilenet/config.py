"""What defines a training run (:class:`TrainConfig`) and the optimiser options it implies:
read by the trainer and by each backend's runner."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mobilenet_arch as A

from . import backends as B


@dataclass
class TrainConfig:
    """Everything that defines a run (a resumed run must have the same)."""

    arch: str = "v2"
    width_mult: float = 0.5
    resolution: int = 32
    data: str = "digits"
    classes: tuple | None = None  # keep only these class indices (e.g. digits 0-4), relabelled
    backend: str = "numba"
    dtype: str = "float32"
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "sgd"  # "sgd" or "rmsprop"
    lr: float = 0.01  # at 0.05 and above the first epochs diverge (docs/05-training.md)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    exempt_bn_dw: bool = True  # no weight decay on BN and depthwise weights (V1 paper, 3.2)
    schedule: str = "cosine"  # "cosine" (with warm-up), "step", "exponential", "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    dropout: float = 0.2
    max_shift: int = 2  # augmentation: random shift in px (0: none)
    flip: bool | None = None  # None: flip when the dataset's labels allow it
    train_limit: int = 0  # use only the first N training images (quick runs); 0: all
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch only)

    def validate(self):
        fn = "TrainConfig"
        if self.arch not in A.ARCHS:
            raise ValueError(f"{fn}: arch must be one of {tuple(A.ARCHS)}, got {self.arch!r}")
        B.get(self.backend, fn)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"{fn}: dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"{fn}: optimizer must be 'sgd' or 'rmsprop', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "exponential", "constant"):
            raise ValueError(
                f"{fn}: schedule must be cosine, step, exponential or constant, got {self.schedule!r}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{fn}: {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"{fn}: batch_size must be >= 2 (batch norm in training), got {self.batch_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{fn}: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_smoothing <= 1:
            raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {self.label_smoothing}")
        if self.lr <= 0 or self.width_mult <= 0:
            raise ValueError(f"{fn}: lr and width_mult must be > 0, got {self.lr} and {self.width_mult}")
        if self.resolution < 32:
            raise ValueError(f"{fn}: resolution must be >= 32, got {self.resolution}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = None if self.classes is None else list(self.classes)
        d["data"] = str(self.data)
        return d


def optimizer_kwargs(cfg: TrainConfig) -> dict:
    if cfg.optimizer == "sgd":
        return {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0}
    return {
        "lr": cfg.lr,
        "alpha": 0.9,
        "eps": 1.0,
        "momentum": cfg.momentum,
    }  # V2 paper: decay and momentum 0.9
