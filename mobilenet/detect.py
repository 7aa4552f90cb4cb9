"""Detection with SSDLite: batches of matched targets, predictions from the heads' outputs.

A training batch is images (augmented: a horizontal flip and a random crop, each half the time)
with, per default box, its matched class (0 the background) and its encoded box
(``numpy_impl.boxes.match`` and ``encode``). A prediction turns the heads' outputs back into
boxes: softmax scores per class, decoded boxes, a score threshold, per-class non-maximum
suppression, the ``top_k`` best (SSD's evaluation settings, as torchvision's SSDLite uses them).
"""

from __future__ import annotations

import numpy as np

from numpy_impl import boxes as Bx

from .scenes import Detections, flip, random_crop


def targets(defaults: np.ndarray, boxes: list, labels: list, threshold: float = 0.5):
    """``(loc_target (N, D, 4), labels (N, D))`` of N images' ground truth on the default boxes."""
    locs, classes = [], []
    for b, lab in zip(boxes, labels):
        matched_labels, matched = Bx.match(b, lab, defaults, threshold)
        classes.append(matched_labels)
        locs.append(Bx.encode(matched, defaults))
    return np.stack(locs), np.stack(classes)


def batch(data: Detections, idx, rng: np.random.Generator, augment: bool = True):
    """``(x (B, 3, R, R), boxes, labels)`` of the images ``idx``, augmented when ``augment``."""
    xs, bs, ls = [], [], []
    for i in idx:
        x, b, lab = data.x[i], data.boxes[i], data.labels[i]
        if augment and rng.uniform() < 0.5:
            x, b, lab = random_crop(x, b, lab, rng)
        if augment and rng.uniform() < 0.5:
            x, b = flip(x, b)
        xs.append(x)
        bs.append(b)
        ls.append(lab)
    return np.stack(xs), bs, ls


def softmax(conf: np.ndarray) -> np.ndarray:
    e = np.exp(conf - conf.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def postprocess(loc, conf, defaults, score_threshold=0.01, iou_threshold=0.45, top_k=100) -> list:
    """One ``(boxes (k, 4), scores (k,), labels (k,) in 1..K)`` per image from the heads' outputs
    ``loc (N, D, 4)`` and ``conf (N, D, K + 1)``; boxes clipped to the image."""
    out = []
    probs = softmax(np.asarray(conf, np.float64))
    for n in range(len(loc)):
        boxes = np.clip(Bx.decode(np.asarray(loc[n], np.float64), defaults), 0.0, 1.0)
        scores = probs[n, :, 1:]  # (D, K) the object classes
        d, k = np.nonzero(scores > score_threshold)
        s = scores[d, k]
        if len(s) > 20 * top_k:  # NMS on the best candidates only, as torchvision's SSD
            best = np.argpartition(-s, 20 * top_k)[: 20 * top_k]
            d, k, s = d[best], k[best], s[best]
        b = boxes[d]
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s, k = b[valid], s[valid], k[valid]
        keep = Bx.batched_nms(b, s, k, iou_threshold)[:top_k]
        out.append((b[keep], s[keep], k[keep].astype(np.int64) + 1))
    return out
