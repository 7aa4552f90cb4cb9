"""A pretraining corpus that ships offline: characters drawn from the fonts matplotlib installs.

Hundreds of character classes (Latin, Greek and Cyrillic letters, Latin-1 letters, math and
other symbols; never the digits 0-9, which are a transfer target) in the DejaVu Sans, Serif and
Mono faces and STIX General, each image a fresh random draw: face, rotation, shear, scale,
aspect, position, stroke width (thicker or thinner), blur, ink and background levels, a
background gradient and noise, the way Omniglot varies its characters by hand. Light ink on a
dark ground, as scikit-learn's digits.

Classes that look alike once scaled to their bounding box (Latin ``o`` and ``O``, Latin ``A``
and Greek Alpha, ``l`` and ``I`` in some faces) would make labels a coin toss; each candidate is
compared with every kept class on its average rendering over the faces, and a near copy is
dropped. The kept classes are split, by a seeded permutation, into pretraining classes and
held-out classes (never seen in pretraining: the transfer and embedding targets).

The corpus is generated once per setting (seed, images per class, resolution) and cached as
an ``.npz`` of uint8 images (``MOBILENET_CACHE`` or ``~/.cache/mobilenet``), written atomically;
a cached file that does not match its setting, or does not load, is generated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilenet import checkpoint as ckpt
from numpy_impl.functional._checks import check_int, check_number

from .images import Dataset, stratified_split

VERSION = 2  # bump when the drawing changes: the cache name carries it
FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBol.ttf",
)
SYMBOLS = "#$%&@?!*+=<>~^{}[]()/\\|§¶©®±÷×∞√∑∏∫≈≠≤≥∂∇∈∩∪⊂⊕⊗←→↑↓↔⇒⇔♠♣♥♦★✓€£¥¢‰†‡µΩ℮∀∃¬∧∨⊥∠△□◇○●"
RENDER_SIZE = 56  # font size of the master glyphs, in px
CANVAS = 64  # the distorted glyph is drawn at twice the output size, then averaged down
SIMILAR = 0.92  # correlation of two classes' mean renderings above which the later one is dropped
MIN_FACES = 6  # a class needs a real glyph (not the missing-glyph box) in at least this many faces


def candidate_characters() -> list[str]:
    """Letters of the Latin (incl. Latin-1), Greek and Cyrillic alphabets, then the symbols."""
    ranges = [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x391, 0x3A9), (0x3B1, 0x3C9), (0x410, 0x44F)]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    chars = [c for c in chars if unicodedata.category(c).startswith("L")] + list(SYMBOLS)
    return [c for c in dict.fromkeys(chars) if not c.isdigit()]


def _fonts(size=RENDER_SIZE):
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [ImageFont.truetype(str(folder / name), size) for name in FACES]


def _mask(font, ch) -> np.ndarray:
    m = font.getmask(ch, mode="L")
    return np.asarray(m, dtype=np.uint8).reshape(m.size[1], m.size[0])


def _square(a: np.ndarray) -> np.ndarray:
    """The glyph cropped to its ink and centred on a square."""
    rows, cols = np.nonzero(a > 16)
    if len(rows) == 0:
        return np.zeros((8, 8), np.uint8)
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    (h, w), s = a.shape, max(a.shape) + 2
    top, left = (s - h) // 2, (s - w) // 2
    out = np.zeros((s, s), np.uint8)
    out[top : top + h, left : left + w] = a
    return out


def _thumb(a: np.ndarray, n=16) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(_square(a)).resize((n, n), Image.BILINEAR), np.float32)


def _normalised(t: np.ndarray) -> np.ndarray:
    t = t.ravel()
    return (t - t.mean()) / (t.std() + 1e-6)


@dataclass
class Glyphs:
    """The classes and their master glyphs, one per (class, face) that has the character."""

    chars: list  # class index -> character
    masters: list  # class index -> list of uint8 arrays (one per face with the glyph)


def build_classes(fonts=None) -> Glyphs:
    """Every candidate character with a real glyph in enough faces, near copies removed."""
    fonts = fonts or _fonts()
    missing = [_mask(f, "\ue000") for f in fonts]  # a private-use code point: the .notdef box
    chars, masters, thumbs = [], [], []
    # the digits are a transfer target: a letter drawn like one (Cyrillic Ze and 3) is left out too
    digits = [_normalised(np.mean([_thumb(_mask(f, d)) for f in fonts], axis=0)) for d in "0123456789"]
    for ch in candidate_characters():
        mine = []
        for f, miss in zip(fonts, missing):
            a = _mask(f, ch)
            if a.size and a.max() > 0 and not (a.shape == miss.shape and (a == miss).all()):
                mine.append(a)
        if len(mine) < MIN_FACES:
            continue
        t = _normalised(np.mean([_thumb(a) for a in mine], axis=0))
        if float(np.max(np.stack(digits + thumbs) @ t)) / t.size > SIMILAR:
            continue
        chars.append(ch)
        masters.append([_square(a) for a in mine])
        thumbs.append(t)
    return Glyphs(chars, masters)


def draw(master: np.ndarray, rng: np.random.Generator, resolution: int) -> np.ndarray:
    """One distorted rendering of a master glyph: (resolution, resolution) float32 in [0, 1]."""
    from PIL import Image, ImageFilter

    s = master.shape[0]
    angle = rng.uniform(-0.25, 0.25)  # radians, about +-14 degrees
    shear = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.6, 0.95) * CANVAS / s
    aspect = np.exp(rng.uniform(-0.15, 0.15))
    c, si = np.cos(angle), np.sin(angle)
    fwd = np.array([[c, -si], [si, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1 / aspect])
    inv = np.linalg.inv(fwd * scale)
    centre = CANVAS / 2 + rng.uniform(-0.08, 0.08, 2) * CANVAS
    off = np.array([s / 2, s / 2]) - inv @ centre
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    img = Image.fromarray(master).transform((CANVAS, CANVAS), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    stroke = rng.random()
    if stroke < 0.25:
        img = img.filter(ImageFilter.MaxFilter(3))  # thicker strokes
    elif stroke < 0.4:
        img = img.filter(ImageFilter.MinFilter(3))  # thinner
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    ink = np.asarray(img.resize((resolution, resolution), Image.BOX), np.float32) / 255.0
    yy, xx = np.mgrid[0:resolution, 0:resolution] / max(resolution - 1, 1)
    g = rng.uniform(-1, 1, 2)
    ground = rng.uniform(0.0, 0.25) + rng.uniform(0.0, 0.15) * (g[0] * yy + g[1] * xx)
    level = rng.uniform(0.6, 1.0)
    x = ground + (level - ground) * ink + rng.normal(0.0, rng.uniform(0.0, 0.08), ink.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def generate(glyphs: Glyphs, per_class: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class: (N, R, R) uint8, (N,) int64 labels."""
    rng = np.random.default_rng(seed)
    n = len(glyphs.chars) * per_class
    x = np.empty((n, resolution, resolution), np.uint8)
    y = np.repeat(np.arange(len(glyphs.chars)), per_class)
    for i, label in enumerate(y):
        masters = glyphs.masters[label]
        x[i] = np.round(draw(masters[rng.integers(len(masters))], rng, resolution) * 255)
    return x, y


@dataclass
class Corpus:
    """The generated images and which classes are held out."""

    images: np.ndarray  # (N, R, R) uint8
    labels: np.ndarray  # (N,) int64, indices into chars
    chars: tuple
    heldout: tuple  # class indices never used in pretraining

    @property
    def pretrain_classes(self) -> tuple:
        return tuple(i for i in range(len(self.chars)) if i not in set(self.heldout))

    def dataset(self, classes) -> Dataset:
        """The images of ``classes`` (indices), relabelled 0..len-1, as 3-channel float32."""
        classes = list(classes)
        relabel = np.full(len(self.chars), -1)
        relabel[classes] = np.arange(len(classes))
        mask = relabel[self.labels] >= 0
        x = np.repeat(self.images[mask][:, None].astype(np.float32) / 255.0, 3, axis=1)
        names = tuple(f"U+{ord(self.chars[c]):04X} {self.chars[c]}" for c in classes)
        return Dataset(x, relabel[self.labels[mask]].astype(np.int64), names)


def cache_dir() -> Path:
    return Path(os.environ.get("MOBILENET_CACHE") or Path.home() / ".cache" / "mobilenet")


def _setting(per_class, resolution, seed, heldout_fraction) -> dict:
    return {
        "version": VERSION,
        "per_class": per_class,
        "resolution": resolution,
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "faces": list(FACES),
        "candidates": hashlib.sha256("".join(candidate_characters()).encode()).hexdigest()[:16],
    }


def _read_cache(path: Path, setting: dict):
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("setting") != setting:
                return None
            images, labels = z["images"], z["labels"]
        n, r = len(meta["chars"]), setting["resolution"]
        ok = (
            images.dtype == np.uint8
            and images.shape == (n * setting["per_class"], r, r)
            and labels.dtype == np.int64
            and labels.shape == (len(images),)
            and (labels.min(initial=0) >= 0 and labels.max(initial=0) < n)
        )
        return Corpus(images, labels, tuple(meta["chars"]), tuple(meta["heldout"])) if ok else None
    except Exception:  # truncated, crafted or another program's file: generate again
        return None


def load_corpus(
    per_class: int = 100, resolution: int = 32, seed: int = 0, heldout_fraction=0.2, progress=None
):
    """The corpus for this setting, from the cache or generated (a few seconds per 10,000 images)."""
    check_int("load_corpus", "per_class", per_class, 2)
    check_int("load_corpus", "resolution", resolution, 8)
    check_int("load_corpus", "seed", seed, 0)
    check_number("load_corpus", "heldout_fraction", heldout_fraction, 0.01, 0.99)
    setting = _setting(per_class, resolution, seed, heldout_fraction)
    key = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"glyphs-v{VERSION}-{per_class}x{resolution}px-seed{seed}-{key}.npz"
    if path.is_file():
        corpus = _read_cache(path, setting)
        if corpus is not None:
            return corpus
    if progress:
        progress(f"generating the glyph corpus ({per_class} images per class, {resolution} px) into {path}")
    glyphs = build_classes()
    images, labels = generate(glyphs, per_class, resolution, seed)
    order = np.random.default_rng(seed + 1).permutation(len(glyphs.chars))
    heldout = tuple(sorted(int(i) for i in order[: max(1, round(heldout_fraction * len(order)))]))
    corpus = Corpus(images, labels, tuple(glyphs.chars), heldout)
    meta = {"setting": setting, "chars": list(glyphs.chars), "heldout": list(heldout)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with ckpt.atomic_file(path, "wb") as f:
            np.savez(f, images=images, labels=labels, meta=np.array(json.dumps(meta)))
    except OSError as e:  # a read-only or full cache only costs the next run the generation
        if progress:
            progress(f"could not cache the corpus ({e.strerror or e}); it will be generated again next time")
    return corpus


def load_glyphs(resolution: int = 32, seed: int = 0, test_fraction: float = 0.2, per_class: int = 100):
    """The pretraining classes as ``(train, test)``: a stratified split of their images."""
    corpus = load_corpus(per_class, resolution)
    full = corpus.dataset(corpus.pretrain_classes)
    tr, te = stratified_split(full.y, test_fraction, seed)
    return full.subset(tr), full.subset(te)
