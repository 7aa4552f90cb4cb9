"""numpy_impl.boxes: IoU, matching and NMS against brute-force loops; default boxes against SSD's
definition and torchvision's counts; the encoding against its inverse."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import boxes as Bx


def random_boxes(rng, n, min_size=0.02):
    """``n`` boxes inside the unit square, some of them overlapping heavily, some degenerate."""
    xy = rng.uniform(0, 0.9, (n, 2))
    wh = rng.uniform(min_size, 0.6, (n, 2))
    b = np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1)
    if n > 3:
        b[1] = b[0] + rng.uniform(-0.01, 0.01, 4)  # a near-duplicate
        b[1, 2:] = np.maximum(b[1, 2:], b[1, :2])
        b[2, 2:] = b[2, :2]  # an empty box (zero area)
    return b


def iou_loops(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


@given(na=st.integers(0, 7), nb=st.integers(0, 7), seed=st.integers(0, 2**16))
def test_iou_matches_the_loops(na, nb, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, na), random_boxes(rng, nb)
    np.testing.assert_allclose(Bx.box_iou(a, b), iou_loops(a, b), rtol=1e-12, atol=1e-15)


def test_default_boxes_follow_ssds_definition():
    sizes = (20, 10, 5, 3, 2, 1)  # SSDLite320's feature maps
    d = Bx.default_boxes(sizes, clip=False)
    assert d.shape == (3234, 4)  # torchvision's ssdlite320_mobilenet_v3_large has 3234 anchors
    scales = [0.2 + 0.75 * k / 5 for k in range(6)] + [1.0]
    start = 0
    for k, f in enumerate(sizes):
        block = d[start : start + 6 * f * f].reshape(f, f, 6, 4)
        start += 6 * f * f
        w, h = block[..., 2] - block[..., 0], block[..., 3] - block[..., 1]
        cx, cy = (block[..., 0] + block[..., 2]) / 2, (block[..., 1] + block[..., 3]) / 2
        np.testing.assert_allclose(cx, ((np.arange(f) + 0.5) / f)[None, :, None].repeat(f, 0).repeat(6, 2))
        np.testing.assert_allclose(cy, ((np.arange(f) + 0.5) / f)[:, None, None].repeat(f, 1).repeat(6, 2))
        s, s1 = scales[k], scales[k + 1]
        np.testing.assert_allclose(
            w[0, 0], [s, np.sqrt(s * s1), s * np.sqrt(2), s / np.sqrt(2), s * np.sqrt(3), s / np.sqrt(3)]
        )
        np.testing.assert_allclose(
            w * h, np.broadcast_to([s * s, s * s1, s * s, s * s, s * s, s * s], w.shape)
        )
    clipped = Bx.default_boxes(sizes)
    assert clipped.min() == 0.0 and clipped.max() == 1.0 and np.all(clipped[:, 2:] >= clipped[:, :2])


@given(n=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_encode_and_decode_are_inverse(n, seed):
    rng = np.random.default_rng(seed)
    gt, defaults = random_boxes(rng, n, 0.05), random_boxes(rng, n, 0.05)
    gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 0.05)  # positive sizes: log(g_w / d_w) is finite
    defaults[:, 2:] = np.maximum(defaults[:, 2:], defaults[:, :2] + 0.05)
    np.testing.assert_allclose(Bx.decode(Bx.encode(gt, defaults), defaults), gt, atol=1e-12)


def test_decode_clamps_wild_sizes():
    d = np.array([[0.4, 0.4, 0.6, 0.6]])
    out = Bx.decode(np.array([[0.0, 0.0, 1e6, -1e6]]), d)
    assert np.all(np.isfinite(out)) and out[0, 2] - out[0, 0] == pytest.approx(0.2 * 1000 / 16)


def match_loops(gt, labels, defaults, threshold):
    iou = iou_loops(gt, defaults)
    out_l, out_b = np.zeros(len(defaults), np.int64), defaults.copy()
    owner = {}
    for j in range(len(defaults)):
        if len(gt) and iou[:, j].max() >= threshold:
            owner[j] = int(np.argmax(iou[:, j]))
    for i in range(len(gt)):  # every object keeps its best default box (a later object wins a tie)
        owner[int(np.argmax(iou[i]))] = i
    for j, i in owner.items():
        out_l[j], out_b[j] = labels[i], gt[i]
    return out_l, out_b


@given(g=st.integers(0, 6), seed=st.integers(0, 2**16), threshold=st.sampled_from([0.3, 0.5]))
def test_matching_matches_the_loops(g, seed, threshold):
    rng = np.random.default_rng(seed)
    defaults = Bx.default_boxes((4, 2, 1))
    gt = random_boxes(rng, g, 0.1)
    gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 0.1)
    labels = rng.integers(1, 5, g)
    got = Bx.match(gt, labels, defaults, threshold)
    want = match_loops(gt, labels, defaults, threshold)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert set(np.unique(got[0])) <= {0, *labels.tolist()} and (g == 0 or np.any(got[0] > 0))


def nms_loops(boxes, scores, thr):
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou_loops(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


@given(n=st.integers(0, 25), seed=st.integers(0, 2**16), thr=st.sampled_from([0.3, 0.5, 0.7]))
def test_nms_matches_the_loops(n, seed, thr):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n)
    scores = rng.uniform(0, 1, n).round(2)  # ties: the lower index first
    assert Bx.nms(boxes, scores, thr).tolist() == nms_loops(boxes, scores, thr)
    classes = rng.integers(0, 3, n)
    want = []
    for c in range(3):
        idx = np.flatnonzero(classes == c)
        want += idx[nms_loops(boxes[idx], scores[idx], thr)].tolist()
    got = Bx.batched_nms(boxes, scores, classes, thr)
    assert sorted(got.tolist()) == sorted(want) and np.all(np.diff(scores[got]) <= 0)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: Bx.box_iou(np.zeros((2, 3)), np.zeros((1, 4))), ValueError, r"a must have shape \(B, 4\)"),
        (lambda: Bx.box_iou(np.array([[0.5, 0, 0.2, 1]]), np.zeros((1, 4))), ValueError, "x2 >= x1"),
        (lambda: Bx.box_iou(np.array([[0, 0, np.nan, 1]]), np.zeros((1, 4))), ValueError, "must be finite"),
        (lambda: Bx.box_iou([[0, 0, 1, 1]], np.zeros((1, 4))), TypeError, "a must be a numpy.ndarray"),
        (
            lambda: Bx.match(np.zeros((1, 4)), np.array([0]), np.zeros((2, 4))),
            ValueError,
            "gt_labels must be >= 1",
        ),
        (lambda: Bx.nms(np.zeros((2, 4)), np.zeros(3)), ValueError, r"scores must have shape \(2,\)"),
        (lambda: Bx.default_boxes((4, 0)), ValueError, "feature_sizes must be ints >= 1"),
    ],
)
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
