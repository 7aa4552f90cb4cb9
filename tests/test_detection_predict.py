"""mobilenet.detection (predict, and the batches of train): targets of a batch, and predictions decoded back from the heads' outputs."""

import numpy as np

from mobilenet.data import scenes as S
from mobilenet.detection import predict as Dt
from mobilenet.detection import train as DT
from numpy_impl import boxes as Bx


def test_perfect_heads_give_back_the_ground_truth():
    defaults = Bx.default_boxes((4, 2, 1))
    gt = [np.array([[0.1, 0.1, 0.5, 0.6], [0.55, 0.5, 0.95, 0.9]]), np.zeros((0, 4))]
    labels = [np.array([2, 1]), np.zeros(0, np.int64)]
    loc_t, lab = DT.targets(defaults, gt, labels)
    assert loc_t.shape == (2, len(defaults), 4) and lab.shape == (2, len(defaults))
    assert np.all(lab[1] == 0) and set(np.unique(lab[0])) == {0, 1, 2}
    conf = np.where(np.arange(3)[None, None, :] == lab[..., None], 10.0, -10.0)  # certain heads
    preds = Dt.postprocess(loc_t, conf, defaults, iou_threshold=0.45)
    boxes, scores, classes = preds[0]
    order = np.argsort(classes)
    np.testing.assert_allclose(boxes[order], gt[0][[1, 0]], atol=1e-12)  # NMS keeps one per object
    assert classes[order].tolist() == [1, 2] and np.all(scores > 0.99)
    assert len(preds[1][0]) == 0


def test_batches_keep_boxes_in_the_image_and_are_seeded():
    data = S.make_scenes(6, 64, seed=1)
    a = DT.batch(data, [0, 3, 5], np.random.default_rng(7))
    b = DT.batch(data, [0, 3, 5], np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (3, 3, 64, 64)
    for boxes, labels in zip(a[1], a[2]):
        assert len(boxes) == len(labels) and np.all((boxes >= 0) & (boxes <= 1))
    same = DT.batch(data, [2], np.random.default_rng(0), augment=False)
    np.testing.assert_array_equal(same[0][0], data.x[2])
