"""mobilenet.detection.coco: mAP by pycocotools on predictions whose answer is known."""

import numpy as np
import pytest

from mobilenet.data import scenes as S
from mobilenet.detection.coco import coco_map


def _truth():
    boxes = [np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]), np.array([[0.2, 0.3, 0.6, 0.7]])]
    labels = [np.array([1, 2]), np.array([2])]
    return S.Detections(np.zeros((2, 3, 64, 64), np.float32), boxes, labels, ("ball", "cup"))


def test_map_of_perfect_and_of_wrong_predictions():
    truth = _truth()
    perfect = [(b, np.linspace(0.9, 0.8, len(b)), lab) for b, lab in zip(truth.boxes, truth.labels)]
    m = coco_map(truth, perfect)
    assert m["map_50"] == pytest.approx(1.0) and m["map_50_95"] == pytest.approx(1.0)
    assert m["per_class"] == {"ball": pytest.approx(1.0), "cup": pytest.approx(1.0)}
    swapped = [(b, s, 3 - lab) for b, s, lab in perfect]  # every box with the other class
    assert coco_map(truth, swapped)["map_50"] == 0.0
    nothing = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2
    assert coco_map(truth, nothing) == {
        "map_50_95": 0.0,
        "map_50": 0.0,
        "per_class": {"ball": 0.0, "cup": 0.0},
    }


def test_map_counts_a_box_of_iou_0_6_at_0_5_but_not_at_0_75():
    truth = S.Detections(
        np.zeros((1, 3, 100, 100), np.float32), [np.array([[0.0, 0.0, 0.5, 0.5]])], [np.array([1])], ("a",)
    )
    # the same size shifted by 0.125 in x: intersection 0.375 * 0.5, union 0.625 * 0.5, IoU 0.6
    pred = [(np.array([[0.125, 0.0, 0.625, 0.5]]), np.array([0.9]), np.array([1]))]
    m = coco_map(truth, pred)
    assert m["map_50"] == pytest.approx(1.0)
    # AP over the 10 thresholds .50:.05:.95: the box matches at .50 and .55 and .60 only
    assert m["map_50_95"] == pytest.approx(0.3, abs=0.011)


def test_map_refuses_mismatched_predictions():
    with pytest.raises(ValueError, match=r"one \(boxes, scores, labels\) per image \(2\), got 1"):
        coco_map(_truth(), [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))])
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        coco_map(_truth(), [(np.zeros((1, 4)), np.ones(1), np.array([3]))] * 2)
