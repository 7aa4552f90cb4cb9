"""Using a trained detector: the heads' outputs back to boxes, detections of images, drawings.

A prediction turns the heads' outputs into boxes: softmax scores per class, decoded boxes, a
score threshold, per-class non-maximum suppression, the ``top_k`` best (SSD's evaluation
settings, as torchvision's SSDLite uses them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from numpy_impl import boxes as Bx

from .config import default_boxes


def softmax(conf: np.ndarray) -> np.ndarray:
    e = np.exp(conf - conf.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def postprocess(loc, conf, defaults, score_threshold=0.01, iou_threshold=0.45, top_k=100) -> list:
    """One ``(boxes (k, 4), scores (k,), labels (k,) in 1..K)`` per image from the heads' outputs
    ``loc (N, D, 4)`` and ``conf (N, D, K + 1)``; boxes clipped to the image."""
    out = []
    probs = softmax(np.asarray(conf, np.float64))
    for n in range(len(loc)):
        boxes = np.clip(Bx.decode(np.asarray(loc[n], np.float64), defaults), 0.0, 1.0)
        scores = probs[n, :, 1:]  # (D, K) the object classes
        d, k = np.nonzero(scores > score_threshold)
        s = scores[d, k]
        if len(s) > 20 * top_k:  # NMS on the best candidates only, as torchvision's SSD
            best = np.argpartition(-s, 20 * top_k)[: 20 * top_k]
            d, k, s = d[best], k[best], s[best]
        b = boxes[d]
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s, k = b[valid], s[valid], k[valid]
        keep = Bx.batched_nms(b, s, k, iou_threshold)[:top_k]
        out.append((b[keep], s[keep], k[keep].astype(np.int64) + 1))
    return out


def detect_images(runner, meta: dict, x: np.ndarray, batch_size: int = 64) -> list:
    """Detections ``(boxes, scores, labels)`` per image of ``x`` (N, 3, R, R) in [0, 1]."""
    cfg = runner.cfg
    if x.ndim != 4 or x.shape[1:] != (3, cfg.resolution, cfg.resolution):
        raise ValueError(
            f"detect_images: x must be (N, 3, {cfg.resolution}, {cfg.resolution}), got {x.shape}"
        )
    loc, conf = runner.predict(D.normalize(x, meta["mean"], meta["std"], np.dtype(cfg.dtype)), batch_size)
    return postprocess(loc, conf, default_boxes(cfg))


def read_image(path, resolution: int):
    """``(model input (3, R, R) in [0, 1], the image as RGB uint8 (H, W, 3))``; a clear error for a
    file that is not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {str(path)!r} does not exist or is not a file")
    try:
        x = D.read_image(path, resolution)
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"--image {str(path)!r} is not an image Pillow can read ({e})") from None
    return x, rgb


def draw(rgb: np.ndarray, detections, classes, path, min_score: float = 0.5, truth=None, ax=None):
    """The image with its detections of score >= ``min_score``: a box, the class name and the
    score each; ``truth``, ground-truth boxes (k, 4), drawn dashed. Written to ``path`` (PNG)
    unless ``ax`` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = rgb.shape[:2]
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 6 * h / w))
    ax.imshow(rgb)
    colours = plt.get_cmap("tab10")
    if truth is not None:
        for b in truth:
            ax.add_patch(
                plt.Rectangle(
                    (b[0] * w, b[1] * h),
                    (b[2] - b[0]) * w,
                    (b[3] - b[1]) * h,
                    fill=False,
                    ls="--",
                    lw=1,
                    ec="white",
                )
            )
    boxes, scores, labels = detections
    for b, s, lab in zip(boxes, scores, labels):
        if s < min_score:
            continue
        c = colours((int(lab) - 1) % 10)
        ax.add_patch(
            plt.Rectangle((b[0] * w, b[1] * h), (b[2] - b[0]) * w, (b[3] - b[1]) * h, fill=False, lw=2, ec=c)
        )
        ax.text(
            b[0] * w,
            b[1] * h,
            f"{classes[int(lab) - 1]} {s:.2f}",
            color="white",
            fontsize=8,
            va="bottom",
            bbox={"facecolor": c, "pad": 1, "lw": 0},
        )
    ax.set_axis_off()
    if own:
        fig.tight_layout(pad=0)
        ckpt.save_figure(fig, path)
        plt.close(fig)
    return path
