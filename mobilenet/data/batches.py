"""Augmentation, normalisation and the batch order: seeded functions, so that a run can be
replayed (and resumed) exactly."""

from __future__ import annotations

import numpy as np

from numpy_impl.functional._checks import check_int

from .images import check_images


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shift each image by up to ``max_shift`` px in each direction, zero-filled (a padded random crop)."""
    check_images("random_shift", x)
    if check_int("random_shift", "max_shift", max_shift, 0) == 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))  # (N, C, H + 2s, W + 2s)
    oy, ox = rng.integers(0, 2 * s + 1, (2, n))
    return np.stack([padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])


def random_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror a random half of the images left-right."""
    check_images("random_flip", x)
    flip = rng.random(len(x)) < 0.5
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


def augment(x: np.ndarray, rng: np.random.Generator, max_shift: int, flip: bool) -> np.ndarray:
    x = random_shift(x, rng, max_shift)
    return random_flip(x, rng) if flip else x


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over (N, H, W), for :func:`normalize`."""
    if len(check_images("channel_stats", x)) == 0:
        raise ValueError("channel_stats: x holds no images")
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-8


def normalize(x: np.ndarray, mean, std, dtype=np.float32) -> np.ndarray:
    """``(x - mean) / std`` per channel, in ``dtype``, NCHW."""
    c = check_images("normalize", x).shape[1]
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(f"normalize: mean and std must have shape ({c},), got {mean.shape} and {std.shape}")
    if not np.all(std > 0):
        raise ValueError(f"normalize: std must be > 0, got {std.tolist()}")
    mean, std = mean[:, None, None], std[:, None, None]
    return ((x - mean) / std).astype(dtype)


def batch_indices(n: int, batch_size: int, seed, epoch: int, shuffle: bool = True, drop_last: bool = True):
    """The batches of one epoch as index arrays: a permutation drawn from ``(seed, epoch)``, so
    any epoch can be regenerated without replaying the ones before it."""
    n, batch_size = (
        check_int("batch_indices", "n", n, 0),
        check_int("batch_indices", "batch_size", batch_size, 1),
    )
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
