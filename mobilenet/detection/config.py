"""What defines a detection run (:class:`DetectConfig`), and the seeded detector every backend
starts from."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

import mobilenet_arch as A
from mobilenet import backends as B
from numpy_impl.detector import SSDLite, ssdlite, ssdlite_default_boxes
from numpy_impl.functional._checks import check_int, check_number

FORMAT = "mobilenet-from-scratch/detector/1"
SCENE_SEEDS = (1, 2)  # training and held-out scenes: fixed, whatever the run's --seed


@dataclass
class DetectConfig:
    """Everything that defines a detection run (a resumed run must have the same)."""

    width_mult: float = 0.5
    resolution: int = 128
    data: str = "scenes"  # "scenes" (generated) or a COCO-format annotations JSON
    images: str | None = None  # the COCO file's image folder (default: beside the JSON)
    train_size: int = 3000  # generated training scenes (a COCO file: all but the held-out images)
    test_size: int = 500  # held-out images: generated scenes, or images held out of a COCO file
    backend: str = "numba"
    dtype: str = "float32"
    epochs: int = 24
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5  # the V2 paper's
    warmup_epochs: float = 1.0
    augment: bool = True  # random crops and horizontal flips
    neg_pos_ratio: int = 3  # hard negatives per positive (SSD's 3:1)
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: after each epoch only)
    parts: int = 1  # numpy, numba: a batch's sums in this many parts (mobilenet.training.config.TrainConfig)

    def validate(self):
        fn = "DetectConfig"
        B.get(self.backend, fn)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"{fn}: dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name, lo in (("epochs", 1), ("batch_size", 2), ("resolution", A.MIN_RESOLUTION)):
            check_int(fn, name, getattr(self, name), lo)  # batch_size >= 2: batch norm in training
        for name, lo in (("train_size", 2), ("test_size", 1), ("neg_pos_ratio", 0), ("seed", 0)):
            check_int(fn, name, getattr(self, name), lo)
        check_int(fn, "checkpoint_every", self.checkpoint_every, 0)
        check_int(fn, "parts", self.parts, 1)
        if self.parts > self.batch_size:
            raise ValueError(f"{fn}: parts ({self.parts}) must be at most batch_size ({self.batch_size})")
        check_number(fn, "width_mult", self.width_mult, 1e-3, A.MAX_WIDTH_MULT)
        check_number(fn, "lr", self.lr, 1e-12, 1e3)
        check_number(fn, "momentum", self.momentum, 0.0, 1.0)
        check_number(fn, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_number(fn, "warmup_epochs", self.warmup_epochs, 0.0, 1e6)
        for name in ("nesterov", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{fn}: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("data", "images"):
            v = getattr(self, name)
            if not (isinstance(v, (str, os.PathLike)) or (name == "images" and v is None)):
                raise TypeError(f"{fn}: {name} must be a path, got {type(v).__name__}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = str(self.data)
        d["images"] = None if self.images is None else str(self.images)
        return d


def config_from_dict(d: dict) -> DetectConfig:
    names = {f.name for f in dataclasses.fields(DetectConfig)}
    if not isinstance(d, dict) or set(d) - names:
        unknown = sorted(set(d) - names) if isinstance(d, dict) else d
        raise ValueError(f"config_from_dict: not a detection configuration (unknown settings {unknown})")
    return DetectConfig(**d).validate()


def build_numpy(cfg: DetectConfig, num_classes: int) -> SSDLite:
    """The seeded NumPy detector: every backend starts from these weights. ``num_classes`` counts
    the object classes (the background is added)."""
    ops = B.get(cfg.backend).ops or "numpy"
    return ssdlite(cfg.width_mult, num_classes + 1, np.dtype(cfg.dtype), ops, cfg.seed)


def default_boxes(cfg: DetectConfig) -> np.ndarray:
    return ssdlite_default_boxes(cfg.resolution)
