"""What a checkpoint says about its run, checked before anything reads it: a crafted or foreign
file gives a ValueError naming the field, never a KeyError or a wrong model."""

from __future__ import annotations

import dataclasses
import math
import os

from .config import TrainConfig

FORMAT = "mobilenet-from-scratch/checkpoint/1"  # a classification checkpoint
QUANTIZED_FORMAT = "mobilenet-from-scratch/quantized/1"  # an integer model (mobilenet quantize)
PARTIAL_KEYS = ("loss", "correct", "seen", "seconds")  # the running sums of an epoch in progress
NAMED_DATA = ("digits", "shapes", "glyphs", "scenes")  # generated or shipped: never a path


def describe_data(f: dict) -> str:
    return f"{f.get('train_images')} training and {f.get('test_images')} test images of {f.get('classes')}"


def same_data(a, b) -> bool:
    """Whether two ``data`` settings name the same thing (``g2``, ``./g2`` and its absolute path do)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str) or set(NAMED_DATA) & {a, b}:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def is_number(v, lo=-math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= lo


def check_progress(where: str, meta: dict, partial_keys) -> None:
    """The fields every run's checkpoint shares (normalisation, position, running sums, history),
    each a ValueError naming the field when it is not what the trainer wrote."""
    for key, lo, what in (("mean", -math.inf, ""), ("std", 1e-12, " > 0")):
        v = meta.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(is_number(a, lo) for a in v)):
            raise ValueError(f"{where}: {key} must be 3 finite numbers{what}, got {v!r}")
    for key in ("epoch", "step"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{where}: {key} must be an int >= 0, got {v!r}")
    partial = meta.get("partial")
    if not (isinstance(partial, dict) and all(is_number(partial.get(k), 0) for k in partial_keys)):
        raise ValueError(f"{where}: partial must hold {', '.join(partial_keys)}, got {partial!r}")
    if not isinstance(meta.get("history"), list) or not is_number(meta.get("seconds"), 0):
        raise ValueError(f"{where}: history must be a list and seconds a number >= 0")


def check_training_meta(fn: str, path, meta: dict) -> dict:
    """A training checkpoint's description, checked before anything reads it: a crafted or
    foreign file gives a ValueError naming the field, never a KeyError or a wrong model."""
    where = f"{fn}: {str(path)!r}"
    if meta.get("format") == QUANTIZED_FORMAT:
        raise ValueError(
            f"{where} is an integer (int8) model made by mobilenet quantize, not a training checkpoint: "
            f"it can be evaluated, not trained; give the float checkpoint it came from"
        )
    if not isinstance(meta.get("config"), dict) or "num_classes" not in meta:
        raise ValueError(f"{where} is not a training checkpoint (no config in its meta)")
    n = meta["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: num_classes must be an int >= 1, got {n!r}")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and len(classes) == n and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{where}: classes must be {n} class names, got {classes!r}")
    check_progress(where, meta, PARTIAL_KEYS)
    return meta


def config_from_dict(d: dict) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint's meta."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config_from_dict: unknown settings {unknown}")
    d = dict(d)
    if d.get("classes") is not None:
        if not isinstance(d["classes"], list):
            raise ValueError(f"config_from_dict: classes must be a list, got {d['classes']!r}")
        d["classes"] = tuple(d["classes"])
    return TrainConfig(**d).validate()
