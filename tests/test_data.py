"""Offline datasets, users' own data (written here as small files), augmentation, batches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mobilenet import data as D


@pytest.mark.parametrize("n_in, n_out", [(8, 32), (8, 13), (5, 5), (12, 7)])
def test_resize_matches_torch_bilinear(n_in, n_out):
    x = np.random.default_rng(0).random((2, 3, n_in, n_in))
    want = F.interpolate(torch.tensor(x), size=(n_out, n_out), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(D.resize(x, n_out), want.numpy(), rtol=1e-5, atol=1e-6)  # float32 output


def test_digits_resized_and_split_stratified():
    ds = D.load_digits(16)
    assert ds.x.shape == (1797, 3, 16, 16) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert 0 <= ds.x.min() and ds.x.max() <= 1 and np.array_equal(ds.x[:, 0], ds.x[:, 2])
    train, test = D.stratified_split(ds.y, 0.2, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == 1797
    counts_all, counts_test = np.bincount(ds.y), np.bincount(ds.y[test], minlength=10)
    np.testing.assert_array_less(np.abs(counts_test - 0.2 * counts_all), 0.51)  # each class in proportion
    assert np.array_equal(D.stratified_split(ds.y, 0.2, seed=0)[1], test)
    assert not np.array_equal(D.stratified_split(ds.y, 0.2, seed=1)[1], test)


def test_shapes_are_seeded_and_balanced():
    a, b = D.make_shapes(60, 24, seed=5), D.make_shapes(60, 24, seed=5)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(D.make_shapes(60, 24, seed=6).x, a.x)
    assert a.x.shape == (60, 3, 24, 24) and np.bincount(a.y).tolist() == [10] * 6
    assert a.flips_preserve_label and a.classes == D.SHAPES


def test_few_shot_and_select_classes():
    ds = D.load_digits(8)
    sub = ds.select_classes([5, 6, 7, 8, 9])
    assert sub.classes == ("5", "6", "7", "8", "9") and set(np.unique(sub.y)) == set(range(5))
    assert np.array_equal(sub.x, ds.x[ds.y >= 5])
    idx = D.few_shot(sub.y, 4, seed=0)
    assert np.bincount(sub.y[idx]).tolist() == [4] * 5
    with pytest.raises(ValueError, match="fewer than k = 1000"):
        D.few_shot(sub.y, 1000)
    with pytest.raises(ValueError, match=r"keep must be class indices in \[0, 10\), got \[10\]"):
        ds.select_classes([10])


def _write_folder(root, sizes=((5, 7), (9, 4))):
    rng = np.random.default_rng(0)
    pixels = {}
    for name, (h, w) in zip(["cat", "dog"], sizes):
        (root / name).mkdir(parents=True)
        for i in range(3):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            suffix = ".png" if i < 2 else ".jpg"
            Image.fromarray(img).save(root / name / f"{i}{suffix}")
            pixels[(name, i)] = img
    return pixels


def test_image_folder_reads_classes_and_pixels(tmp_path):
    pixels = _write_folder(tmp_path)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    ds = D.load_image_folder(tmp_path, resolution=9)
    assert ds.classes == ("cat", "dog") and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    # the 9x4 PNG resized to 9x9 by Pillow, compared with Pillow's own resize of the same pixels
    want = np.asarray(
        Image.fromarray(pixels[("dog", 0)]).resize((9, 9), Image.Resampling.BILINEAR), np.float32
    )
    np.testing.assert_allclose(ds.x[3], want.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_image_folder_corrupt_file_raises_or_skips(tmp_path):
    _write_folder(tmp_path)
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        D.load_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        ds = D.load_image_folder(tmp_path, on_error="skip")
    assert len(ds) == 6 and ds.skipped == [str(bad)]


def test_image_folder_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="one subfolder per class, found none"):
        D.load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        D.load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        D.load_image_folder(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="resolution must be an int >= 8"):
        D.load_image_folder(tmp_path, resolution=4)


def test_load_data_train_test_folders(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "test")
    train, test = D.load_data(tmp_path, resolution=8)
    assert len(train) == len(test) == 6 and train.classes == test.classes
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(ValueError, match="same class folders"):
        D.load_data(tmp_path, resolution=8)


def _cifar_records(labels, rng):
    rec = np.zeros((len(labels), D.CIFAR_RECORD), np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = rng.integers(0, 256, (len(labels), D.CIFAR_RECORD - 1))
    return rec


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    train_recs = [_cifar_records([0, 3, 9], rng), _cifar_records([1, 2], rng)]
    for i, r in enumerate(train_recs, 1):
        r.tofile(tmp_path / f"data_batch_{i}.bin")
    _cifar_records([7], rng).tofile(tmp_path / "test_batch.bin")
    train, test = D.load_data(tmp_path)
    assert train.y.tolist() == [0, 3, 9, 1, 2] and test.y.tolist() == [7]
    # channel planes R, G, B of 32x32 each, row-major
    np.testing.assert_array_equal(train.x[1], train_recs[0][1, 1:].reshape(3, 32, 32) / np.float32(255))
    assert train.classes[3] == "cat" and train.flips_preserve_label


def test_cifar10_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch"):
        D.load_cifar10(tmp_path)
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * D.CIFAR_RECORD)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary file: its size 100"):
        D.load_cifar10(tmp_path)
    _cifar_records([12], np.random.default_rng(0)).tofile(tmp_path / "data_batch_1.bin")
    with pytest.raises(ValueError, match="label 12"):
        D.load_cifar10(tmp_path)


def test_dataset_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got min 0 max 2"):
        D.Dataset(np.zeros((3, 3, 8, 8), np.float32), np.array([0, 1, 2]), ("a", "b"))
    with pytest.raises(TypeError, match="name must be 'digits', 'shapes' or a path"):
        D.load_data(3)


def test_random_shift_is_a_padded_crop():
    rng = np.random.default_rng(0)
    x = rng.random((50, 3, 6, 6)).astype(np.float32)
    y = D.random_shift(x, np.random.default_rng(1), 2)
    assert y.shape == x.shape
    for a, b in zip(x, y):  # each output is the input moved by some (dy, dx) in [-2, 2]^2, zeros filled
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                p = np.pad(a, ((0, 0), (2, 2), (2, 2)))[:, 2 + dy : 8 + dy, 2 + dx : 8 + dx]
                found |= np.array_equal(p, b)
        assert found
    assert D.random_shift(x, rng, 0) is x


def test_flip_mirrors_about_half_and_batches_are_seeded():
    x = np.random.default_rng(0).random((400, 3, 4, 4))
    y = D.random_flip(x, np.random.default_rng(2))
    flipped = np.array([np.array_equal(b, a[:, :, ::-1]) for a, b in zip(x, y)])
    kept = np.array([np.array_equal(b, a) for a, b in zip(x, y)])
    assert np.all(flipped ^ kept) and 150 < flipped.sum() < 250
    b0 = D.batch_indices(10, 4, seed=0, epoch=3)
    assert [len(b) for b in b0] == [4, 4] and len(set(np.concatenate(b0))) == 8
    assert all(np.array_equal(p, q) for p, q in zip(b0, D.batch_indices(10, 4, seed=0, epoch=3)))
    assert not np.array_equal(np.concatenate(b0), np.concatenate(D.batch_indices(10, 4, seed=0, epoch=4)))
    assert [len(b) for b in D.batch_indices(10, 4, 0, 0, shuffle=False, drop_last=False)] == [4, 4, 2]


def test_normalize_uses_channel_stats():
    x = np.random.default_rng(0).random((20, 3, 5, 5)) * np.array([1, 2, 3])[:, None, None]
    m, s = D.channel_stats(x)
    z = D.normalize(x, m, s)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: D.resize(np.zeros((3, 8, 8)), 16),
            ValueError,
            r"x must be a numpy array of shape \(N, C, H, W\)",
        ),
        (lambda: D.resize(np.zeros((1, 3, 8, 8)), 0), ValueError, "size must be >= 1"),
        (lambda: D.stratified_split(np.zeros((4, 2), int)), ValueError, "1-D array of integer labels"),
        (lambda: D.stratified_split(np.zeros(4), 0.2), ValueError, "integer labels"),
        (lambda: D.stratified_split(np.zeros(4, int), 1.5), ValueError, "test_fraction"),
        (lambda: D.few_shot(np.zeros(4, int), 0), ValueError, "k must be >= 1"),
        (
            lambda: D.random_shift(np.zeros((1, 3, 8, 8)), np.random.default_rng(0), -1),
            ValueError,
            "max_shift",
        ),
        (
            lambda: D.random_shift(np.zeros((1, 3, 8, 8)), np.random.default_rng(0), 1.5),
            TypeError,
            "max_shift",
        ),
        (lambda: D.random_flip([1, 2], np.random.default_rng(0)), ValueError, "got list"),
        (lambda: D.channel_stats(np.zeros((0, 3, 8, 8))), ValueError, "no images"),
        (lambda: D.normalize(np.zeros((1, 3, 2, 2)), [0, 0], [1, 1]), ValueError, r"shape \(3,\)"),
        (lambda: D.normalize(np.zeros((1, 3, 2, 2)), [0, 0, 0], [1, 0, 1]), ValueError, "std must be > 0"),
        (lambda: D.batch_indices(10, 0, 0, 0), ValueError, "batch_size must be >= 1"),
        (lambda: D.batch_indices(10.0, 2, 0, 0), TypeError, "n must be an int"),
        (lambda: D.make_shapes(0), ValueError, "n must be an int >= 1"),
        (lambda: D.make_shapes(6, noise=2), ValueError, "noise"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
