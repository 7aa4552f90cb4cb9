"""Classification images that need no network: scikit-learn's digits, a generated shapes dataset,
and readers for users' own images (a folder of class subfolders, the CIFAR-10 binary format).

Every loader returns :class:`Dataset`: ``x`` (N, 3, R, R) float32 in [0, 1] (NCHW, like
torch), ``y`` (N,) int64 labels in [0, len(classes)).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numpy_impl.functional._checks import check_int, check_number

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes


@dataclass
class Dataset:
    x: np.ndarray  # (N, 3, R, R) float32 in [0, 1]
    y: np.ndarray  # (N,) int64
    classes: tuple
    flips_preserve_label: bool = False  # digits: no (a mirrored 2 is not a 2); shapes, CIFAR: yes
    skipped: list = field(default_factory=list)  # files a loader skipped (on_error="skip")

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.shape[1] != 3:
            raise ValueError(f"Dataset: x must have shape (N, 3, H, W), got {self.x.shape}")
        if self.y.shape != (len(self.x),):
            raise ValueError(f"Dataset: y must have shape ({len(self.x)},), got {self.y.shape}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise ValueError(
                f"Dataset: labels must be in [0, {len(self.classes)}), "
                f"got min {self.y.min()} max {self.y.max()}"
            )

    def __len__(self):
        return len(self.y)

    @property
    def resolution(self) -> int:
        return self.x.shape[2]

    def subset(self, idx) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.classes, self.flips_preserve_label)

    def select_classes(self, keep) -> Dataset:
        """Only the images of the classes in ``keep`` (indices), relabelled 0..len(keep)-1."""
        keep = [int(k) for k in keep]
        bad = [k for k in keep if not 0 <= k < len(self.classes)]
        if bad or not keep:
            raise ValueError(
                f"select_classes: keep must be class indices in [0, {len(self.classes)}), got {keep}"
            )
        relabel = np.full(len(self.classes), -1)
        relabel[keep] = np.arange(len(keep))
        mask = relabel[self.y] >= 0
        return Dataset(
            self.x[mask],
            relabel[self.y[mask]].astype(np.int64),
            tuple(self.classes[k] for k in keep),
            self.flips_preserve_label,
        )


# --- resizing -------------------------------------------------------------------------------


def interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights, ``align_corners=False`` (torch's ``interpolate``)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5  # centre of each output pixel in input coords
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) to (N, C, size, size), as ``F.interpolate(mode="bilinear")``."""
    _, _, h, w = check_images("resize", x).shape
    size = check_int("resize", "size", size, 1)
    if (h, w) == (size, size):
        return x.astype(np.float32)
    rh, rw = interp_matrix(h, size), interp_matrix(w, size)
    return np.einsum("oh,nchw,pw->ncop", rh, x, rw, optimize=True).astype(np.float32)  # (N, C, S, S)


def check_images(fn, x):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x must be a numpy array of shape (N, C, H, W), got {got}")
    return x


def _check_labels(fn, y):
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{fn}: y must be a 1-D array of integer labels, got shape {y.shape} dtype {y.dtype}"
        )
    return y


def _check_resolution(fn, resolution):
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise ValueError(f"{fn}: resolution must be an int >= 8, got {resolution!r}")
    return int(resolution)


# --- datasets -------------------------------------------------------------------------------


def load_digits(resolution: int = 32) -> Dataset:
    """scikit-learn's 1797 handwritten digits (8x8, values 0..16, shipped with the package),
    scaled to [0, 1], resized to ``resolution`` and repeated over 3 channels."""
    from sklearn.datasets import load_digits as _sk_digits

    resolution = _check_resolution("load_digits", resolution)
    d = _sk_digits()
    x = (d.images / 16.0)[:, None]  # (1797, 1, 8, 8)
    x = np.repeat(resize(x, resolution), 3, axis=1)  # (1797, 3, R, R)
    return Dataset(x, d.target.astype(np.int64), tuple(str(i) for i in range(10)))


def make_shapes(n: int = 2000, resolution: int = 32, seed: int = 0, noise: float = 0.1) -> Dataset:
    """A seeded dataset of coloured shapes (``SHAPES``) at random places, sizes and colours on a
    noisy background: a second domain, as many images as wanted, mirror-symmetric classes."""
    resolution = _check_resolution("make_shapes", resolution)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"make_shapes: n must be an int >= 1, got {n!r}")
    noise = check_number("make_shapes", "noise", noise, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    r = resolution
    yy, xx = np.mgrid[0:r, 0:r] + 0.5  # pixel centres
    y = np.arange(n) % len(SHAPES)
    rng.shuffle(y)
    x = np.empty((n, 3, r, r), np.float32)
    for i, k in enumerate(y):
        size = rng.uniform(0.18, 0.38) * r
        cy, cx = rng.uniform(size, r - size, 2)
        dy, dx = (yy - cy) / size, (xx - cx) / size
        mask = {
            "circle": dy**2 + dx**2 <= 1,
            "square": np.maximum(abs(dy), abs(dx)) <= 0.8,
            "triangle": (dy <= 0.8) & (dy >= 2 * abs(dx) - 1),
            "cross": ((abs(dx) <= 0.3) | (abs(dy) <= 0.3)) & (np.maximum(abs(dy), abs(dx)) <= 1),
            "ring": (dy**2 + dx**2 <= 1) & (dy**2 + dx**2 >= 0.4),
            "diamond": abs(dy) + abs(dx) <= 1,
        }[SHAPES[k]]
        bg, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        while np.abs(fg - bg).sum() < 0.8:  # keep the shape visible
            fg = rng.uniform(0, 1, 3)
        img = np.where(mask, fg[:, None, None], bg[:, None, None]) + rng.normal(0, noise, (3, r, r))
        x[i] = np.clip(img, 0, 1)
    return Dataset(x, y.astype(np.int64), SHAPES, flips_preserve_label=True)


MAX_PIXELS = 64_000_000  # a larger header is refused before decoding (decompression bombs)


def read_image(path: Path, resolution: int) -> np.ndarray:
    """(3, R, R) float32 in [0, 1]. Pillow's RGB conversion serves 8-bit images and reduces 48- and
    64-bit colour PNGs to 8 bits itself; 16-bit greyscale, which that conversion clips to white,
    is scaled by its own range (65535) instead."""
    from PIL import Image

    with Image.open(path) as im:
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(
                f"its header claims {im.width}x{im.height} pixels, more than the {MAX_PIXELS:,} allowed"
            )
        size, bilinear = (resolution, resolution), Image.Resampling.BILINEAR
        if im.mode.startswith("I;16"):
            grey = Image.fromarray(np.asarray(im, np.float32) / 65535.0, "F").resize(size, bilinear)
            return np.repeat(np.asarray(grey, np.float32)[None], 3, axis=0)
        if im.mode in ("I", "F"):
            raise ValueError(
                f"32-bit {'integer' if im.mode == 'I' else 'floating-point'} pixels have no known range; "
                "save it as an 8- or 16-bit image"
            )
        rgb = im.convert("RGB").resize(size, bilinear)
        return np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0  # (3, R, R)


def load_image_folder(path, resolution: int = 32, on_error: str = "raise") -> Dataset:
    """``path/<class>/<image>``: one subfolder per class (sorted names are the classes), PNG or
    JPEG images read with Pillow, converted to RGB and resized to ``resolution``.

    ``on_error="raise"`` stops at the first unreadable image with its file name;
    ``"skip"`` warns, leaves it out and lists it in ``Dataset.skipped``.
    """
    fn = "load_image_folder"
    resolution = _check_resolution(fn, resolution)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"{fn}: on_error must be 'raise' or 'skip', got {on_error!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{fn}: data folder {str(root)!r} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{fn}: {str(root)!r} must hold one subfolder per class, found none")
    xs, ys, skipped = [], [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"{fn}: class folder {str(root / name)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        for f in files:
            try:
                xs.append(read_image(f, resolution))
            except Exception as e:  # whatever a crafted file makes Pillow raise, the image is unreadable
                if on_error == "raise":
                    raise ValueError(f"{fn}: cannot read image {str(f)!r}: {e}") from None
                warnings.warn(f"{fn}: skipping unreadable image {str(f)!r}: {e}", stacklevel=2)
                skipped.append(str(f))
                continue
            ys.append(label)
    if not xs:
        raise ValueError(f"{fn}: no readable image under {str(root)!r} ({len(skipped)} skipped)")
    return Dataset(np.stack(xs), np.asarray(ys, np.int64), tuple(classes), skipped=skipped)


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ValueError(
            f"load_cifar10: {str(path)!r} is not a CIFAR-10 binary file: its size {raw.size} "
            f"is not a positive multiple of {CIFAR_RECORD} bytes"
        )
    rec = raw.reshape(-1, CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() >= 10:
        raise ValueError(f"load_cifar10: {str(path)!r} has label {y.max()}, CIFAR-10 labels are 0..9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_cifar10(path, resolution: int = 32) -> tuple[Dataset, Dataset]:
    """The CIFAR-10 binary version: ``data_batch_*.bin`` (train) and ``test_batch.bin`` in
    ``path`` (or its ``cifar-10-batches-bin`` subfolder). Returns ``(train, test)``."""
    resolution = _check_resolution("load_cifar10", resolution)
    root = Path(path)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    train_files = sorted(root.glob("data_batch_*.bin"))
    test_file = root / "test_batch.bin"
    if not train_files or not test_file.is_file():
        raise FileNotFoundError(f"load_cifar10: {str(root)!r} must hold data_batch_*.bin and test_batch.bin")
    out = []
    for files in (train_files, [test_file]):
        parts = [_read_cifar_file(f) for f in files]
        x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
        y = np.concatenate([p[1] for p in parts])
        out.append(Dataset(resize(x, resolution), y, CIFAR_CLASSES, flips_preserve_label=True))
    return out[0], out[1]


def is_cifar_folder(path) -> bool:
    root = Path(path)
    return any(root.glob("data_batch_*.bin")) or (root / "cifar-10-batches-bin").is_dir()


def stratified_split(
    y: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: each class split in the same proportion, shuffled with ``seed``."""
    test_fraction = check_number("stratified_split", "test_fraction", test_fraction, 0.0, 1.0)
    y = _check_labels("stratified_split", y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        if 0 < test_fraction < 1 and len(idx) >= 2:  # a tiny class keeps one image on each side
            k = min(max(k, 1), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def few_shot(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` images of each class (the first k of a seeded shuffle)."""
    y, k = _check_labels("few_shot", y), check_int("few_shot", "k", k, 1)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            raise ValueError(f"few_shot: class {c} has {len(idx)} images, fewer than k = {k}")
        picks.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picks))
