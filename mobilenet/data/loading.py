"""``load_data``: a run's training and test sets by name (``digits``, ``shapes``, ``glyphs``) or
path (a CIFAR-10 binary folder, an image folder)."""

from __future__ import annotations

import os
from pathlib import Path

from .glyphs import load_glyphs
from .images import (
    Dataset,
    is_cifar_folder,
    load_cifar10,
    load_digits,
    load_image_folder,
    make_shapes,
    stratified_split,
)


def load_data(
    name, resolution: int = 32, seed: int = 0, test_fraction: float = 0.2
) -> tuple[Dataset, Dataset]:
    """``"digits"``, ``"shapes"``, ``"glyphs"`` (:mod:`mobilenet.data.glyphs`) or a path (a CIFAR-10
    binary folder, or an image folder with class subfolders, optionally split into ``train/`` and
    ``test/``) -> ``(train, test)``."""
    if name == "digits":
        full = load_digits(resolution)
    elif name == "shapes":
        full = make_shapes(3000, resolution, seed=1234)  # the images do not depend on the run's seed
    elif name == "glyphs":  # the generated pretraining corpus (its classes not held out)
        return load_glyphs(resolution, seed, test_fraction)
    elif not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"load_data: name must be 'digits', 'shapes' or a path, got {type(name).__name__}")
    elif is_cifar_folder(name):
        return load_cifar10(name, resolution)
    elif (Path(name) / "train").is_dir() and (Path(name) / "test").is_dir():
        train = load_image_folder(Path(name) / "train", resolution)
        test = load_image_folder(Path(name) / "test", resolution)
        if train.classes != test.classes:
            raise ValueError(
                f"load_data: train/ and test/ under {str(name)!r} must have the same class "
                f"folders, got {train.classes} and {test.classes}"
            )
        return train, test
    else:
        full = load_image_folder(name, resolution)
    tr, te = stratified_split(full.y, test_fraction, seed)
    return full.subset(tr), full.subset(te)
