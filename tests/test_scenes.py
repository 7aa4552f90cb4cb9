"""mobilenet.data.scenes: generated scenes, COCO files (round trip and hostile ones), box-consistent
augmentation."""

import json

import numpy as np
import pytest
from PIL import Image

from mobilenet.data import scenes as S


@pytest.fixture(scope="module")
def scenes():
    return S.make_scenes(24, 64, seed=5)


def test_scenes_are_seeded_and_well_formed(scenes):
    again = S.make_scenes(3, 64, seed=5)
    np.testing.assert_array_equal(again.x, scenes.x[:3])  # scene i depends on (seed, i) only
    assert not np.array_equal(S.make_scenes(1, 64, seed=6).x[0], scenes.x[0])
    counts = [len(b) for b in scenes.boxes]
    assert min(counts) >= 1 and max(counts) <= 6
    for b, label in zip(scenes.boxes, scenes.labels):
        assert np.all((b >= 0) & (b <= 1)) and np.all(b[:, 2:] > b[:, :2])
        assert np.all((label >= 1) & (label <= len(S.CLASSES)))
    assert set(np.concatenate(scenes.labels)) == set(range(1, len(S.CLASSES) + 1))
    assert scenes.x.dtype == np.float32 and 0 <= scenes.x.min() and scenes.x.max() <= 1


def test_each_box_is_tight_around_its_object():
    rng = np.random.default_rng(0)
    mask = S._mask("square", 64, 30.0, 20.0, 16.0, 0.0, {})  # axis-aligned: x 22..38, y 12..28
    np.testing.assert_allclose(S._tight_box(mask, 64) * 64, [22, 12, 38, 28], atol=1)
    img, boxes, labels = S.make_scene(rng, 64)
    assert len(boxes) == len(labels) >= 1


def test_coco_round_trip(scenes, tmp_path):
    S.write_coco(tmp_path, scenes)
    back = S.load_coco(tmp_path / "annotations.json", resolution=64)
    assert back.classes == S.CLASSES and len(back) == len(scenes)
    np.testing.assert_allclose(back.x, scenes.x, atol=0.5 / 255 + 1e-6)  # 8-bit PNG rounding
    for a, b, la, lb in zip(back.boxes, scenes.boxes, back.labels, scenes.labels):
        np.testing.assert_allclose(a, b, atol=1e-12)
        np.testing.assert_array_equal(la, lb)


def _coco(tmp_path, annotations, images=None, categories=None):
    (tmp_path / "images").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(tmp_path / "images" / name)
    doc = {
        "images": images
        if images is not None
        else [
            {"id": 1, "file_name": "a.png", "width": 50, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 50, "height": 40},
        ],
        "annotations": annotations,
        "categories": categories
        if categories is not None
        else [{"id": 7, "name": "ball"}, {"id": 3, "name": "cup"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    return tmp_path / "annotations.json"


def _ann(i, image_id=1, cat=7, bbox=(5, 4, 10, 8)):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": list(bbox)}


def test_a_users_coco_file_is_read_with_its_own_categories(tmp_path):
    path = _coco(tmp_path, [_ann(1), _ann(2, cat=3, bbox=(0, 0, 50, 40))])
    d = S.load_coco(path, resolution=32)
    assert d.classes == ("cup", "ball")  # labels 1..K in the order of the category ids
    np.testing.assert_allclose(d.boxes[0], [[0.1, 0.1, 0.3, 0.3], [0, 0, 1, 1]])
    np.testing.assert_array_equal(d.labels[0], [2, 1])
    assert d.boxes[1].shape == (0, 4) and d.labels[1].shape == (0,)  # an image without objects: kept


@pytest.mark.parametrize(
    "annotation, says",
    [
        (_ann(5, bbox=(45, 4, 10, 8)), "annotation 5 of .*a.png.*lies outside its 50x40 image"),
        (_ann(6, bbox=(5, 4, 0, 8)), "annotation 6 of .*zero or negative width"),
        (_ann(7, bbox=(5, 4, float("nan"), 8)), "annotation 7 of .*must be 4 finite numbers"),
        (_ann(8, bbox=(5, 4, 8)), "annotation 8 of .*must be 4 finite numbers"),
        (_ann(9, cat=99), "annotation 9: unknown category_id 99"),
        (_ann(10, image_id=42), "annotations of image_id 42: no image in the file has that id"),
    ],
)
def test_bad_annotations_are_named_or_skipped_and_counted(tmp_path, annotation, says):
    path = _coco(tmp_path, [_ann(1), annotation])
    with pytest.raises(ValueError, match=says):
        S.load_coco(path, resolution=32)
    with pytest.warns(UserWarning, match="skipping"):
        d = S.load_coco(path, resolution=32, on_error="skip")
    assert len(d.skipped) == 1 and len(d) == 2 and len(d.boxes[0]) == 1


def test_corrupt_and_missing_images_are_named_or_skipped(tmp_path):
    path = _coco(tmp_path, [_ann(1), _ann(2, image_id=2)])
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"image '.*b\.png'"):
        S.load_coco(path, resolution=32)
    with pytest.warns(UserWarning):
        d = S.load_coco(path, resolution=32, on_error="skip")
    assert len(d) == 1 and len(d.skipped) == 1
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"image '.*b\.png'.*No such file"):
        S.load_coco(path, resolution=32)


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "is not a JSON file"),
        ('{"images": []}', "must be a JSON object with lists images, annotations and categories"),
        ('{"images": [], "annotations": [], "categories": []}', "has no categories"),
        ('{"images": [], "annotations": [], "categories": [{"id": "x"}]}', "every category needs an int id"),
    ],
)
def test_files_that_are_not_coco_are_refused(tmp_path, text, says):
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(ValueError, match=says):
        S.load_coco(tmp_path / "a.json")


def _square_image(r, box):
    x = np.zeros((3, r, r), np.float32)
    x0, y0, x1, y1 = (np.array(box) * r).round().astype(int)
    x[:, y0:y1, x0:x1] = 1.0
    return x


def _extent(x, r):
    on = x[0] > 0.5
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / r


def test_flip_moves_the_boxes_with_the_pixels():
    box = np.array([[0.125, 0.25, 0.5, 0.625]])
    x = _square_image(64, box[0])
    fx, fb = S.flip(x, box)
    np.testing.assert_allclose(_extent(fx, 64), fb[0])
    np.testing.assert_array_equal(S.flip(fx, fb)[0], x)


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_moves_the_boxes_with_the_pixels(seed):
    r = 96
    box = np.array([[0.375, 0.3125, 0.625, 0.6875]])  # central: its centre stays in most crops
    x = _square_image(r, box[0])
    cx, cb, cl = S.random_crop(x, box, np.array([4]), np.random.default_rng(seed))
    assert cx.shape == x.shape and cx.dtype == np.float32
    if len(cb):
        np.testing.assert_allclose(_extent(cx, r), cb[0], atol=2 / r)  # bilinear edges: a pixel or two
        assert cl.tolist() == [4]
