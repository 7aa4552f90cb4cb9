"""Data that needs no network, and the seeded functions that turn it into batches.

- :mod:`~mobilenet.data.images`: :class:`Dataset`, scikit-learn's digits, generated shapes,
  image folders, CIFAR-10 binaries, stratified and few-shot splits;
- :mod:`~mobilenet.data.glyphs`: the generated corpus of characters (pretraining, held-out classes);
- :mod:`~mobilenet.data.scenes`: generated detection scenes and COCO-format files;
- :mod:`~mobilenet.data.loading`: ``load_data``, a run's sets by name or path;
- :mod:`~mobilenet.data.batches`: augmentation, normalisation, the batch order.

The names below are the ones a training run uses, gathered here for ``from mobilenet import
data as D``; the modules of this package import each other, never this one.
"""

from .batches import augment, batch_indices, channel_stats, normalize, random_flip, random_shift
from .images import (
    CIFAR_CLASSES,
    CIFAR_RECORD,
    SHAPES,
    Dataset,
    few_shot,
    is_cifar_folder,
    load_cifar10,
    load_digits,
    load_image_folder,
    make_shapes,
    read_image,
    resize,
    stratified_split,
)
from .loading import load_data

__all__ = [
    "CIFAR_CLASSES",
    "CIFAR_RECORD",
    "SHAPES",
    "Dataset",
    "augment",
    "batch_indices",
    "channel_stats",
    "few_shot",
    "is_cifar_folder",
    "load_cifar10",
    "load_data",
    "load_digits",
    "load_image_folder",
    "make_shapes",
    "normalize",
    "random_flip",
    "random_shift",
    "read_image",
    "resize",
    "stratified_split",
]
