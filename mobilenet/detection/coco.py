"""Detection metrics by pycocotools, the field's standard: mAP@[.5:.95], mAP@0.5 and per-class AP."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from mobilenet.data.scenes import Detections


def _check_predictions(truth: Detections, predictions) -> list:
    if not isinstance(predictions, (list, tuple)) or len(predictions) != len(truth):
        got = len(predictions) if isinstance(predictions, (list, tuple)) else type(predictions).__name__
        raise ValueError(
            f"coco_map: predictions must be one (boxes, scores, labels) per image ({len(truth)}), got {got}"
        )
    out = []
    for i, p in enumerate(predictions):
        if not (isinstance(p, (tuple, list)) and len(p) == 3):
            raise ValueError(f"coco_map: prediction {i} must be (boxes, scores, labels)")
        boxes, scores, labels = (np.asarray(a) for a in p)
        n = len(scores)
        if boxes.shape != (n, 4) or labels.shape != (n,) or scores.shape != (n,):
            raise ValueError(
                f"coco_map: prediction {i}: boxes (k, 4), scores (k,) and labels (k,) must agree, "
                f"got {boxes.shape}, {scores.shape}, {labels.shape}"
            )
        if n and (labels.min() < 1 or labels.max() > len(truth.classes)):
            raise ValueError(f"coco_map: prediction {i}: labels must be in 1..{len(truth.classes)}")
        out.append((boxes, scores, labels))
    return out


def coco_map(truth: Detections, predictions) -> dict:
    """``{"map_50_95", "map_50", "per_class": {name: AP@[.5:.95]}}`` of ``predictions`` (one
    ``(boxes (k, 4) relative xyxy, scores (k,), labels (k,) in 1..K)`` per image of ``truth``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    predictions = _check_predictions(truth, predictions)
    r = float(truth.x.shape[2])

    def xywh(b):
        return [float(b[0] * r), float(b[1] * r), float((b[2] - b[0]) * r), float((b[3] - b[1]) * r)]

    images = [{"id": i + 1, "width": r, "height": r} for i in range(len(truth))]
    anns = []
    for i, (bs, ls) in enumerate(zip(truth.boxes, truth.labels)):
        for b, lab in zip(bs, ls):
            area = float((b[2] - b[0]) * (b[3] - b[1]) * r * r)
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab), "bbox": xywh(b)}
            anns.append({**ann, "area": area, "iscrowd": 0})
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(truth.classes)]
    dets = []
    for i, (bs, ss, ls) in enumerate(predictions):
        for b, sc, lab in zip(bs, ss, ls):
            dets.append({"image_id": i + 1, "category_id": int(lab), "bbox": xywh(b), "score": float(sc)})
    if not anns or not dets:  # pycocotools cannot load an empty result; nothing found scores 0
        return {"map_50_95": 0.0, "map_50": 0.0, "per_class": dict.fromkeys(truth.classes, 0.0)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (IoU thresholds, recalls, classes, areas, max dets)
    per_class = {}
    for k, name in enumerate(truth.classes):
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if np.any(p > -1) else 0.0
    return {
        "map_50_95": float(max(ev.stats[0], 0.0)),
        "map_50": float(max(ev.stats[1], 0.0)),
        "per_class": per_class,
    }
