"""The generated glyph corpus: its classes, its drawing, its cache."""

import os

import numpy as np
import pytest

from mobilenet.data import glyphs as G
from mobilenet.data import load_data


@pytest.fixture(scope="module")
def classes():
    return G.build_classes()


def test_classes_leave_out_digits_and_near_copies(classes):
    chars = set(classes.chars)
    assert len(chars) >= 150 and not any(c.isdigit() for c in chars)
    assert "A" in chars and "\u0391" not in chars  # Greek Alpha draws as Latin A
    assert ("o" in chars) + ("O" in chars) == 1  # the same shape once scaled to its box
    assert "\u0417" not in chars  # Cyrillic Ze draws as a 3, and digits are a transfer target
    assert {"\u03b1", "\u0416", "\u2211"} <= chars  # alpha, Zhe, n-ary sum: three alphabets and symbols


def test_draw_is_seeded_and_in_range(classes):
    master = classes.masters[0][0]
    a = G.draw(master, np.random.default_rng(5), 32)
    b = G.draw(master, np.random.default_rng(5), 32)
    c = G.draw(master, np.random.default_rng(6), 32)
    assert a.shape == (32, 32) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.max() - np.median(a) > 0.3  # the glyph's ink stands above its ground


def test_corpus_is_cached_split_by_class_and_regenerated_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    corpus = G.load_corpus(per_class=3, resolution=16)
    files = list(tmp_path.glob("glyphs-*.npz"))
    assert len(files) == 1
    n = len(corpus.chars)
    assert corpus.images.shape == (3 * n, 16, 16) and np.bincount(corpus.labels).tolist() == [3] * n
    held, pre = set(corpus.heldout), set(corpus.pretrain_classes)
    assert not held & pre and len(held | pre) == n and abs(len(held) - 0.2 * n) <= 1
    monkeypatch.setattr(G, "generate", lambda *a: pytest.fail("the cache was not used"))
    again = G.load_corpus(per_class=3, resolution=16)
    assert np.array_equal(again.images, corpus.images) and again.heldout == corpus.heldout
    files[0].write_bytes(files[0].read_bytes()[:200])  # truncated
    monkeypatch.undo()
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    assert np.array_equal(G.load_corpus(per_class=3, resolution=16).images, corpus.images)


def test_an_unwritable_cache_costs_only_the_generation(tmp_path, monkeypatch):
    cache = tmp_path / "ro"
    cache.mkdir()
    os.chmod(cache, 0o500)
    monkeypatch.setenv("MOBILENET_CACHE", str(cache))
    said = []
    try:
        corpus = G.load_corpus(per_class=2, resolution=16, progress=said.append)
    finally:
        os.chmod(cache, 0o700)
    assert len(corpus.images) == 2 * len(corpus.chars)
    if os.geteuid() != 0:  # root writes anyway
        assert any("could not cache" in s for s in said)


def test_glyphs_dataset_holds_only_pretraining_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    corpus = G.load_corpus(per_class=5, resolution=16)
    monkeypatch.setattr(G, "load_corpus", lambda per_class, resolution: corpus)
    train, test = load_data("glyphs", 16, seed=3)
    names = {f"U+{ord(corpus.chars[c]):04X} {corpus.chars[c]}" for c in corpus.heldout}
    assert train.classes == test.classes and not names & set(train.classes)
    assert len(train.classes) == len(corpus.pretrain_classes) and len(train) + len(test) == 5 * len(
        train.classes
    )
    assert (
        train.x.shape[1:] == (3, 16, 16)
        and train.x.dtype == np.float32
        and 0 <= train.x.min() <= train.x.max() <= 1
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_class": 1}, "per_class"),
        ({"resolution": 4}, "resolution"),
        ({"heldout_fraction": 1.0}, "heldout"),
    ],
)
def test_load_corpus_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        G.load_corpus(**kwargs)
