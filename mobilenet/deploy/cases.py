"""What `mobilenet bench` times: a :class:`Case` and its input, the same in every side's process."""

from __future__ import annotations

import dataclasses

import numpy as np

import mobilenet_arch as A


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed configuration."""

    arch: str = "v2"
    width_mult: float = 1.0
    resolution: int = 224
    batch: int = 1
    train: bool = False
    num_classes: int = 1000
    checkpoint: str | None = None  # an integer checkpoint to time (``mobilenet quantize``'s)

    def validate(self):
        if self.arch not in A.ARCHS:
            raise ValueError(f"bench: arch must be one of {tuple(A.ARCHS)}, got {self.arch!r}")
        if not 0 < self.width_mult <= A.MAX_WIDTH_MULT:
            raise ValueError(f"bench: width_mult must be in (0, {A.MAX_WIDTH_MULT:g}], got {self.width_mult}")
        if self.resolution < A.MIN_RESOLUTION:
            raise ValueError(f"bench: resolution must be >= {A.MIN_RESOLUTION}, got {self.resolution}")
        if self.checkpoint is not None and self.train:
            raise ValueError("bench: an integer checkpoint runs inference only; drop --train")
        if self.batch < (2 if self.train else 1):
            why = " for a training step (batch norm in training mode)" if self.train else ""
            raise ValueError(f"bench: batch must be >= {2 if self.train else 1}{why}, got {self.batch}")
        return self

    @property
    def key(self) -> str:
        what = "train" if self.train else "infer"
        return f"{self.arch} {self.width_mult:g} {self.resolution}px b{self.batch} {what}"

    @property
    def stem(self) -> str:
        return f"{self.arch}_{self.width_mult:g}_{self.resolution}_{self.num_classes}"

    def onnx_name(self) -> str:
        return f"{self.stem}.onnx"

    def weights_name(self) -> str:
        """The float weights every side loads (batch-norm statistics of real activations)."""
        return f"{self.stem}.npz"

    def int8_name(self) -> str:
        """The integer model every int8 side runs (its scales, zero points and integers)."""
        return f"{self.stem}_int8.npz"

    def qdq_name(self) -> str:
        return f"{self.stem}_int8.onnx"


CALIBRATION = 4  # images that set the batch-norm statistics and the int8 ranges


def calibration_images(case: Case) -> np.ndarray:
    """Seeded random images, other than :func:`inputs`' (the timed ones)."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((CALIBRATION, 3, case.resolution, case.resolution), dtype=np.float32)


def inputs(case: Case):
    """A random input batch and a random upstream gradient of the logits (seeded)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.batch, 3, case.resolution, case.resolution), dtype=np.float32)
    return x, rng.standard_normal((case.batch, case.num_classes), dtype=np.float32)
