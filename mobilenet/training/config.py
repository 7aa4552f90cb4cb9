"""What defines a training run (:class:`TrainConfig`) and the optimiser options it implies:
read by the trainer and by each backend's runner."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import mobilenet_arch as A
from mobilenet import backends as B
from numpy_impl.functional._checks import check_int, check_number


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
    # "softmax": cross-entropy on the classifier's logits. "arcface": the classifier's output is an
    # embedding of embed_dim values, trained with ArcFace's additive angular margin against one
    # learned centre per class (numpy_impl.functional.metric); numpy and numba backends
    loss: str = "softmax"
    embed_dim: int = 128
    arcface_scale: float = 16.0  # a small model's 100-odd classes: the paper's 64 (and 0.5) start too hard
    arcface_margin: float = 0.3
    init: str = ""  # a fresh run's backbone (features) starts from this checkpoint's weights
    # numpy and numba: every sum over a batch is taken in this many parts, added in part order
    # (numpy_impl.parts), so that a data-parallel run on any process count dividing it gives the
    # same bits. 1: the whole batch at once (the fused kernels' path, faster on one process)
    parts: int = 1

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
        for name, lo in (("epochs", 1), ("batch_size", 2), ("resolution", A.MIN_RESOLUTION)):
            check_int(fn, name, getattr(self, name), lo)  # batch_size >= 2: batch norm in training
        for name in ("max_shift", "train_limit", "seed", "checkpoint_every"):
            check_int(fn, name, getattr(self, name), 0)
        check_int(fn, "parts", self.parts, 1)
        if self.parts > self.batch_size:
            raise ValueError(
                f"{fn}: parts ({self.parts}) must be at most batch_size ({self.batch_size}): a part holds "
                "at least one image"
            )
        check_number(fn, "width_mult", self.width_mult, 1e-3, A.MAX_WIDTH_MULT)
        check_number(fn, "lr", self.lr, 1e-12, 1e3)
        check_number(fn, "dropout", self.dropout, 0.0, 0.999)
        check_number(fn, "label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_number(fn, "momentum", self.momentum, 0.0, 1.0)
        check_number(fn, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_number(fn, "warmup_epochs", self.warmup_epochs, 0.0, 1e6)
        for name in ("nesterov", "exempt_bn_dw") + (() if self.flip is None else ("flip",)):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{fn}: {name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.init, str):
            raise TypeError(f"{fn}: init must be a checkpoint path or '', got {type(self.init).__name__}")
        if self.loss not in ("softmax", "arcface"):
            raise ValueError(f"{fn}: loss must be 'softmax' or 'arcface', got {self.loss!r}")
        if self.loss == "arcface" and B.get(self.backend).ops is None:
            raise ValueError(f"{fn}: loss 'arcface' runs on the numpy and numba backends, not {self.backend}")
        check_int(fn, "embed_dim", self.embed_dim, 2)
        check_number(fn, "arcface_scale", self.arcface_scale, 1e-3, 1e4)
        check_number(fn, "arcface_margin", self.arcface_margin, 0.0, 1.5)
        if self.classes is not None:
            for c in self.classes:
                check_int(fn, "classes", c, 0)
            if len(set(self.classes)) != len(self.classes) or not self.classes:
                raise ValueError(f"{fn}: classes must be distinct class indices, got {self.classes}")
        if not isinstance(self.data, (str, os.PathLike)):
            raise TypeError(f"{fn}: data must be a name or a path, got {type(self.data).__name__}")
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


# ``mobilenet pretrain``'s defaults: MobileNetV2-0.5 at 32 px on the glyph corpus (numba: a few
# minutes per epoch on 2 cores at most)
PRETRAIN = TrainConfig(data="glyphs", width_mult=0.5, resolution=32, epochs=15, batch_size=64, lr=0.02)
# ``mobilenet pretrain --loss arcface``'s defaults, a second phase from PRETRAIN's checkpoint
# (``--init``): from random weights the margin keeps every class apart from the start and the run
# barely trains. Label smoothing and dropout off: both blur the margin the loss asks for.
ARCFACE = dataclasses.replace(
    PRETRAIN, loss="arcface", epochs=5, embed_dim=512, label_smoothing=0.0, dropout=0.0
)
