"""The box machinery of SSD (Liu et al. 2016) as SSDLite uses it (Sandler et al. 2018, section 6.2),
in NumPy: default boxes, IoU, the centre-size encoding, matching and non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` in image-relative coordinates (0..1), rows of a (B, 4) array;
``x2 > x1`` and ``y2 > y1`` for a real box. The conventions are torchvision's SSD:

- default boxes (``DefaultBoxGenerator``): on the k-th of m feature maps, scale
  ``s_k = s_min + (s_max - s_min) k / (m - 1)`` (``s_m = 1``); per cell, a square of side ``s_k``,
  a square of side ``sqrt(s_k s_{k+1})``, and for each aspect ratio ``a`` a box
  ``s_k sqrt(a) x s_k / sqrt(a)`` and its transpose; centres at the cells' centres; clipped to
  the image.
- encoding (``BoxCoder`` with weights (10, 10, 5, 5), i.e. variances 0.1 and 0.2)::

      t_x = (g_cx - d_cx) / (0.1 d_w)      t_w = log(g_w / d_w) / 0.2      (the same for y, h)

- matching (``SSDMatcher``): each default box takes the ground truth it overlaps most when that
  IoU is >= 0.5 (else it is background), and each ground truth takes its best default box
  whatever the IoU, so that every object has at least one.
"""

from __future__ import annotations

import numbers

import numpy as np

from .functional._checks import check_number

VARIANCES = (0.1, 0.2)  # centre, size: torchvision's BoxCoder weights (10, 10, 5, 5) inverted
_MAX_LOG = float(np.log(1000.0 / 16))  # torchvision's clamp of t_w, t_h before exp (no overflow)


def check_boxes(fn: str, name: str, boxes, allow_empty: bool = True) -> np.ndarray:
    """A float (B, 4) array of finite boxes with x2 >= x1 and y2 >= y1."""
    if not isinstance(boxes, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(boxes).__name__}")
    if boxes.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} must be a float array, got dtype {boxes.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{fn}: {name} must have shape (B, 4), got {boxes.shape}")
    if not allow_empty and len(boxes) == 0:
        raise ValueError(f"{fn}: {name} must hold at least one box")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{fn}: {name} must be finite, got {boxes[~np.isfinite(boxes).all(1)][0]}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(f"{fn}: {name} must have x2 >= x1 and y2 >= y1, got {boxes[row]} (row {row})")
    return boxes


def area(boxes: np.ndarray) -> np.ndarray:
    """(B,) areas of (B, 4) boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) intersection over union of every box of ``a`` (A, 4) with every box of ``b`` (B, 4);
    0 where both boxes are empty."""
    a = check_boxes("box_iou", "a", a)
    b = check_boxes("box_iou", "b", b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (A, B, 2) top-left of the intersection
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def default_boxes(
    feature_sizes, aspect_ratios=None, s_min: float = 0.2, s_max: float = 0.95, clip: bool = True
) -> np.ndarray:
    """The (D, 4) default boxes of the feature maps of ``feature_sizes`` (f_k cells a side),
    map by map, cell by cell in row-major order, then box by box: the order of the heads' outputs.
    ``aspect_ratios``: per map, the ratios besides 1 (default (2, 3) on every map, SSDLite's)."""
    fn = "default_boxes"
    sizes = list(feature_sizes)
    if not sizes or not all(isinstance(f, numbers.Integral) and f >= 1 for f in sizes):
        raise ValueError(f"{fn}: feature_sizes must be ints >= 1, got {feature_sizes}")
    ratios = [(2, 3)] * len(sizes) if aspect_ratios is None else [tuple(r) for r in aspect_ratios]
    if len(ratios) != len(sizes) or not all(isinstance(a, numbers.Real) and a > 0 for r in ratios for a in r):
        raise ValueError(f"{fn}: aspect_ratios must give positive ratios for each of the {len(sizes)} maps")
    s_min = check_number(fn, "s_min", s_min, 0.0, 1.0)
    s_max = check_number(fn, "s_max", s_max, s_min, 1.0)
    m = len(sizes)
    scales = [s_min + (s_max - s_min) * k / (m - 1) if m > 1 else s_min for k in range(m)] + [1.0]
    out = []
    for k, f in enumerate(sizes):
        s, s_next = scales[k], scales[k + 1]
        wh = [(s, s), (np.sqrt(s * s_next),) * 2]
        for a in ratios[k]:
            r = np.sqrt(a)
            wh += [(s * r, s / r), (s / r, s * r)]
        wh = np.array(wh)  # (P, 2) widths and heights of one cell's boxes
        c = (np.arange(f) + 0.5) / f
        cy, cx = np.meshgrid(c, c, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1)  # (f*f, 2), row-major
        ctr = np.repeat(centres, len(wh), axis=0)
        size = np.tile(wh, (f * f, 1))
        out.append(np.concatenate([ctr - size / 2, ctr + size / 2], axis=1))
    boxes = np.concatenate(out)
    return np.clip(boxes, 0.0, 1.0) if clip else boxes


def _centre_size(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(gt: np.ndarray, defaults: np.ndarray) -> np.ndarray:
    """(D, 4) regression targets ``(t_x, t_y, t_w, t_h)`` of ground-truth boxes ``gt`` (D, 4)
    against their default boxes (D, 4)."""
    gx, gy, gw, gh = _centre_size(gt)
    dx, dy, dw, dh = _centre_size(defaults)
    vc, vs = VARIANCES
    return np.stack(
        [(gx - dx) / (vc * dw), (gy - dy) / (vc * dh), np.log(gw / dw) / vs, np.log(gh / dh) / vs], axis=1
    )


def decode(t: np.ndarray, defaults: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode`: boxes (D, 4) from regressions ``t`` (D, 4); sizes clamped
    as torchvision's, so that a wild regression cannot overflow."""
    dx, dy, dw, dh = _centre_size(defaults)
    vc, vs = VARIANCES
    cx, cy = dx + t[:, 0] * vc * dw, dy + t[:, 1] * vc * dh
    w = dw * np.exp(np.minimum(t[:, 2] * vs, _MAX_LOG))
    h = dh * np.exp(np.minimum(t[:, 3] * vs, _MAX_LOG))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def match(gt_boxes: np.ndarray, gt_labels: np.ndarray, defaults: np.ndarray, threshold: float = 0.5):
    """Targets of one image: ``(labels (D,), boxes (D, 4))``, label 0 the background (its box is
    the default box itself, so its regression target is 0), object labels 1..K from ``gt_labels``."""
    fn = "match"
    gt_boxes = check_boxes(fn, "gt_boxes", gt_boxes)
    gt_labels = np.asarray(gt_labels)
    if gt_labels.shape != (len(gt_boxes),) or (len(gt_labels) and gt_labels.dtype.kind not in "iu"):
        raise ValueError(f"{fn}: gt_labels must be {len(gt_boxes)} integer labels, got {gt_labels!r}")
    if len(gt_labels) and gt_labels.min() < 1:
        raise ValueError(f"{fn}: gt_labels must be >= 1 (0 is the background), got {gt_labels.min()}")
    threshold = check_number(fn, "threshold", threshold, 0.0, 1.0)
    labels = np.zeros(len(defaults), np.int64)
    boxes = defaults.copy()
    if len(gt_boxes) == 0:
        return labels, boxes
    iou = box_iou(gt_boxes, defaults)  # (G, D)
    best_gt = iou.argmax(axis=0)  # each default box's best ground truth
    best_iou = iou.max(axis=0)
    best_default = iou.argmax(axis=1)  # each ground truth's best default box
    best_gt[best_default] = np.arange(len(gt_boxes))  # the later object wins a shared best box
    best_iou[best_default] = 1.0
    pos = best_iou >= threshold
    labels[pos] = gt_labels[best_gt[pos]]
    boxes[pos] = gt_boxes[best_gt[pos]]
    return labels, boxes


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first: a box is
    dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold``."""
    fn = "nms"
    boxes = check_boxes(fn, "boxes", boxes)
    scores = np.asarray(scores)
    if scores.shape != (len(boxes),):
        raise ValueError(f"{fn}: scores must have shape ({len(boxes)},), got {scores.shape}")
    iou_threshold = check_number(fn, "iou_threshold", iou_threshold, 0.0, 1.0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold: float = 0.5) -> np.ndarray:
    """:func:`nms` within each class (boxes of different classes never suppress each other);
    the kept indices in order of decreasing score."""
    classes = np.asarray(classes)
    if classes.shape != (len(boxes),):
        raise ValueError(f"batched_nms: classes must have shape ({len(boxes)},), got {classes.shape}")
    keep = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        keep.append(idx[nms(boxes[idx], np.asarray(scores)[idx], iou_threshold)])
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return keep[np.argsort(-np.asarray(scores)[keep], kind="stable")]
