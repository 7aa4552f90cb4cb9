"""Data for detection: generated scenes, COCO-format files, box-consistent augmentation.

A scene is a textured, noisy background with 1-6 objects of :data:`CLASSES` (four shapes and two
digit glyphs drawn with the DejaVu font that matplotlib ships), each of random size, position,
rotation and colour; later objects may hide part of earlier ones (never more than
:data:`MAX_HIDDEN` of one). Everything is a function of the seed, and nothing is downloaded.

Boxes are ``(x1, y1, x2, y2)`` relative to the image (0..1); a :class:`Detections` set holds
images resized to a square ``resolution`` (as SSD resizes) with their boxes and labels 1..K
(0 is the background). COCO files use pixel ``[x, y, width, height]`` boxes, as COCO does;
:func:`load_coco` reads any COCO-format detection set the same way, so a user's data works too.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilenet.checkpoint import write_text
from numpy_impl.functional._checks import check_int, check_number

from .images import interp_matrix, read_image

CLASSES = ("circle", "square", "triangle", "cross", "3", "7")
MAX_HIDDEN = 0.4  # the largest share of an object that later objects may cover
SIZES = (0.18, 0.45)  # an object's side, as a share of the image's


@dataclass
class Detections:
    x: np.ndarray  # (N, 3, R, R) float32 in [0, 1]
    boxes: list  # N arrays (k_i, 4) float64, relative (x1, y1, x2, y2)
    labels: list  # N arrays (k_i,) int64 in 1..K
    classes: tuple  # the K class names; label i is classes[i - 1]
    skipped: list = field(default_factory=list)  # what a loader left out (on_error="skip"), with why

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.shape[1] != 3 or self.x.shape[2] != self.x.shape[3]:
            raise ValueError(f"Detections: x must have shape (N, 3, R, R), got {self.x.shape}")
        if not len(self.boxes) == len(self.labels) == len(self.x):
            raise ValueError(
                f"Detections: {len(self.x)} images need as many box and label arrays, "
                f"got {len(self.boxes)} and {len(self.labels)}"
            )

    def __len__(self):
        return len(self.x)

    def subset(self, idx) -> Detections:
        idx = np.asarray(idx, dtype=np.int64)
        pick = [int(i) for i in idx]
        return Detections(
            self.x[idx], [self.boxes[i] for i in pick], [self.labels[i] for i in pick], self.classes
        )


# --- generated scenes ----------------------------------------------------------------------------


def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), size)


def _background(rng, r: int) -> np.ndarray:
    """(r, r, 3) in [0, 1]: a colour gradient, blotches of low-frequency noise and pixel noise."""
    base = rng.uniform(0, 1, 3)
    gx, gy = np.meshgrid(np.linspace(-1, 1, r), np.linspace(-1, 1, r))
    tilt = rng.uniform(-0.25, 0.25, (2, 3))
    img = base + gx[..., None] * tilt[0] + gy[..., None] * tilt[1]
    grid = rng.uniform(-0.3, 0.3, (5, 5, 3))
    m = interp_matrix(5, r)
    img += np.einsum("ai,ijc,bj->abc", m, grid, m)  # smooth blotches
    img += rng.normal(0, 0.06, (r, r, 3))
    return np.clip(img, 0, 1)


def _mask(kind: str, r: int, cx: float, cy: float, side: float, angle: float, font_cache: dict):
    """An (r, r) bool mask of one object, centre (cx, cy) and side in pixels."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (r, r), 0)
    draw = ImageDraw.Draw(canvas)
    h = side / 2
    if kind == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif kind in ("square", "triangle", "cross"):
        if kind == "square":
            pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
        elif kind == "triangle":
            pts = [(0, -h), (h, h * 0.9), (-h, h * 0.9)]
        else:
            t = h / 3
            arm = [(-t, -h), (t, -h), (t, -t)]  # one arm; the cross is it turned by 0, 90, 180, 270 deg
            pts = [
                (x * c - y * s, x * s + y * c) for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1)) for x, y in arm
            ]
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts], fill=255)
    else:  # a digit glyph
        size = max(8, int(side * 1.25))
        font = font_cache.setdefault(size, _font(size))
        draw.text((cx, cy), kind, font=font, fill=255, anchor="mm")
    return np.asarray(canvas) > 127


def _tight_box(mask: np.ndarray, r: int):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], float) / r


def make_scene(rng: np.random.Generator, resolution: int, font_cache=None):
    """One scene: ``(image (3, R, R) float32, boxes (k, 4), labels (k,))``."""
    r = resolution
    font_cache = {} if font_cache is None else font_cache
    img = _background(rng, r)
    owner = np.full((r, r), -1)  # which object each pixel shows
    full_area, boxes, labels = [], [], []
    for _ in range(int(rng.integers(1, 7))):
        for _attempt in range(20):
            kind = int(rng.integers(len(CLASSES)))
            side = rng.uniform(*SIZES) * r
            cx, cy = rng.uniform(side / 2, r - side / 2, 2)
            mask = _mask(CLASSES[kind], r, cx, cy, side, rng.uniform(0, 2 * math.pi), font_cache)
            if mask.sum() < 16:
                continue
            left = [np.sum((owner == j) & ~mask) for j in range(len(full_area))]  # visible afterwards
            if all(v >= (1 - MAX_HIDDEN) * a for v, a in zip(left, full_area)):
                break
        else:
            continue
        local = img[mask].mean(0)
        colour = rng.uniform(0, 1, 3)
        while np.abs(colour - local).sum() < 0.9:  # visible against what it covers
            colour = rng.uniform(0, 1, 3)
        img[mask] = np.clip(colour + rng.normal(0, 0.04, (mask.sum(), 3)), 0, 1)
        owner[mask] = len(full_area)
        full_area.append(mask.sum())
        boxes.append(_tight_box(mask, r))
        labels.append(kind + 1)
    return (
        img.transpose(2, 0, 1).astype(np.float32),
        np.array(boxes).reshape(-1, 4),
        np.array(labels, np.int64),
    )


def make_scenes(n: int, resolution: int = 128, seed: int = 0) -> Detections:
    """``n`` generated scenes; scene i depends only on (seed, i)."""
    n = check_int("make_scenes", "n", n, 1)
    resolution = check_int("make_scenes", "resolution", resolution, 32)
    check_int("make_scenes", "seed", seed, 0)
    font_cache = {}
    parts = [make_scene(np.random.default_rng([seed, i]), resolution, font_cache) for i in range(n)]
    return Detections(np.stack([p[0] for p in parts]), [p[1] for p in parts], [p[2] for p in parts], CLASSES)


# --- COCO files ------------------------------------------------------------------------------------


def write_coco(out, data: Detections, images_dir: str = "images") -> Path:
    """PNG images under ``out/images_dir`` and ``out/annotations.json`` (COCO detection format,
    boxes in pixels); returns the annotations' path."""
    from PIL import Image

    out = Path(out)
    (out / images_dir).mkdir(parents=True, exist_ok=True)
    r = data.x.shape[2]
    images, annotations = [], []
    for i in range(len(data)):
        name = f"{i:06d}.png"
        pixels = np.round(data.x[i].transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / images_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": r, "height": r})
        for b, label in zip(data.boxes[i] * r, data.labels[i]):
            x, y, w, h = float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(data.classes)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    return write_text(out / "annotations.json", json.dumps(doc) + "\n")


class _Refused(ValueError):
    """An image or annotation that cannot be used, with why."""


def _read_coco(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"load_coco: {str(path)!r} is not a JSON file: {e}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise ValueError(
            f"load_coco: {str(path)!r} must be a JSON object with lists images, annotations and categories"
        )
    return doc


def _checked_box(a: dict, width: int, height: int) -> np.ndarray:
    """A COCO annotation's box, relative (x1, y1, x2, y2), or _Refused with why."""
    b = a.get("bbox")
    if not (
        isinstance(b, list)
        and len(b) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in b)
    ):
        raise _Refused(f"bbox must be 4 finite numbers [x, y, width, height], got {b!r}")
    x, y, w, h = b
    if w <= 0 or h <= 0:
        raise _Refused(f"bbox {b} has zero or negative width or height")
    if x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
        raise _Refused(f"bbox {b} lies outside its {width}x{height} image")
    return np.array([x / width, y / height, min(1.0, (x + w) / width), min(1.0, (y + h) / height)])


def load_coco(annotations, images=None, resolution: int = 128, on_error: str = "raise") -> Detections:
    """A COCO-format detection set: ``annotations`` the JSON file, ``images`` the folder of the
    images' ``file_name`` (default: beside the JSON, in ``images/`` if that exists). Images are
    resized to ``resolution`` square; categories become labels 1..K in the order of their ids.

    ``on_error="raise"`` stops at the first bad image or annotation, naming it; ``"skip"`` warns,
    leaves it out and lists it in ``Detections.skipped``. Images without objects are kept (all
    background)."""
    fn = "load_coco"
    resolution = check_int(fn, "resolution", resolution, 32)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"{fn}: on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no annotations file at {str(path)!r}")
    if images is not None:
        folder = Path(images)
    else:
        folder = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    doc = _read_coco(path)
    cats = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise ValueError(f"{fn}: every category needs an int id and a name, got {c!r}")
        cats[c["id"]] = c["name"]
    if not cats:
        raise ValueError(f"{fn}: {str(path)!r} has no categories")
    label_of = {cid: k + 1 for k, cid in enumerate(sorted(cats))}
    skipped = []

    def refuse(what: str, why: str):
        if on_error == "raise":
            raise ValueError(f"{fn}: {what}: {why}")
        warnings.warn(f"{fn}: skipping {what}: {why}", stacklevel=3)
        skipped.append(f"{what}: {why}")

    by_image = {}
    for a in doc["annotations"]:
        aid = a.get("id") if isinstance(a, dict) else None
        if not isinstance(a, dict) or a.get("category_id") not in label_of:
            refuse(
                f"annotation {aid}",
                f"unknown category_id {a.get('category_id') if isinstance(a, dict) else a!r}",
            )
            continue
        by_image.setdefault(a.get("image_id"), []).append(a)
    image_ids = set()
    xs, boxes, labels = [], [], []
    for im in doc["images"]:
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str):
            refuse(f"image {im!r}", "needs an id and a file_name")
            continue
        image_ids.add(im.get("id"))
        file = folder / im["file_name"]
        try:
            x, width, height = _read_sized(file, resolution)
        except Exception as e:  # whatever a broken or crafted file makes Pillow raise
            refuse(f"image {str(file)!r}", str(e) or type(e).__name__)
            continue
        bs, ls = [], []
        for a in by_image.get(im.get("id"), []):
            try:
                bs.append(_checked_box(a, width, height))
                ls.append(label_of[a["category_id"]])
            except _Refused as e:
                refuse(f"annotation {a.get('id')} of {str(file)!r}", str(e))
        xs.append(x)
        boxes.append(np.array(bs).reshape(-1, 4))
        labels.append(np.array(ls, np.int64))
    for image_id in sorted(set(by_image) - image_ids, key=str):
        refuse(f"annotations of image_id {image_id!r}", "no image in the file has that id")
    if not xs:
        raise ValueError(f"{fn}: no usable image in {str(path)!r} ({len(skipped)} skipped)")
    classes = tuple(cats[cid] for cid in sorted(cats))
    return Detections(np.stack(xs), boxes, labels, classes, skipped=skipped)


def _read_sized(path: Path, resolution: int):
    """``(image (3, R, R), original width, original height)``."""
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        width, height = im.size
    return read_image(path, resolution), width, height  # which refuses oversized headers


# --- augmentation ----------------------------------------------------------------------------------


def flip(x: np.ndarray, boxes: np.ndarray):
    """A horizontal flip of one image (3, R, R) and its boxes."""
    b = boxes.copy()
    b[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
    return x[:, :, ::-1], b


def random_crop(x: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng, min_scale: float = 0.6):
    """A random crop of one image, resized back to its size: a window of side ``min_scale``..1 of
    the image's (each axis drawn alone); objects whose centre leaves the window are dropped, the
    others clipped to it."""
    min_scale = check_number("random_crop", "min_scale", min_scale, 0.05, 1.0)
    r = x.shape[1]
    cw, ch = (int(round(v * r)) for v in rng.uniform(min_scale, 1.0, 2))  # the window, in pixels
    c0, r0 = int(rng.integers(0, r - cw + 1)), int(rng.integers(0, r - ch + 1))
    x0, y0, w, h = c0 / r, r0 / r, cw / r, ch / r
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = (centre[:, 0] > x0) & (centre[:, 0] < x0 + w) & (centre[:, 1] > y0) & (centre[:, 1] < y0 + h)
    b = (boxes[keep] - [x0, y0, x0, y0]) / [w, h, w, h]
    b = np.clip(b, 0.0, 1.0)
    window = x[:, r0 : r0 + ch, c0 : c0 + cw]
    rh, rw = interp_matrix(ch, r), interp_matrix(cw, r)
    out = (rh @ window @ rw.T).astype(np.float32)  # (C, R, R): rows, then columns
    return out, b, labels[keep]
