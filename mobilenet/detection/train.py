"""Training SSDLite: ``mobilenet detect train | evaluate``, through the one loop
(:mod:`mobilenet.training.loop`).

:class:`Detection` is the loop's task. A step draws a batch, augments it (a random crop, a flip,
each half the time), matches its boxes to the default boxes (``numpy_impl.boxes.match`` and
``encode``) and takes an SGD step on the SSD loss. Evaluation runs the model on the held-out images
and scores its detections with pycocotools.

The generated scenes come from fixed seeds: ``--seed`` changes the model's initial weights and
the batch order, never the data, so runs with different seeds are scored on the same images.

Files in ``out``: ``checkpoint.npz`` (``checkpoint.pt`` for torch), ``metrics.json``
(``map_50``, ``map_50_95``, per-class AP, the history) and ``detection_curves.png``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from mobilenet import registry
from mobilenet.data import scenes as S
from mobilenet.training import loop
from mobilenet.training.meta import check_progress
from numpy_impl import boxes as Bx
from numpy_impl import optim

from .coco import coco_map
from .config import FORMAT, SCENE_SEEDS, DetectConfig, config_from_dict, default_boxes
from .predict import postprocess

PARTIAL_KEYS = ("loss", "loc_loss", "conf_loss", "seen", "seconds")


# --- data ------------------------------------------------------------------------------------------


def load_split(cfg: DetectConfig, progress: bool = False) -> tuple[S.Detections, S.Detections]:
    """The run's training and held-out sets. Generated scenes: ``train_size`` and ``test_size``
    of them. A COCO file: ``test_size`` images held out (at most a fifth), chosen by a fixed seed."""
    if str(cfg.data) == "scenes":
        if progress:
            print(f"generating {cfg.train_size} + {cfg.test_size} scenes ...", file=sys.stderr, flush=True)
        train = S.make_scenes(cfg.train_size, cfg.resolution, seed=SCENE_SEEDS[0])
        return train, S.make_scenes(cfg.test_size, cfg.resolution, seed=SCENE_SEEDS[1])
    full = S.load_coco(cfg.data, cfg.images, cfg.resolution, on_error="skip")
    if full.skipped:
        print(
            f"skipped {len(full.skipped)} images or annotations (first: {full.skipped[0]})", file=sys.stderr
        )
    held = min(cfg.test_size, len(full) // 5)
    if held < 1 or len(full) - held < cfg.batch_size:
        raise ValueError(
            f"the data has too few images: {len(full)} usable in {str(cfg.data)!r}; it needs at least "
            f"one batch (--batch-size {cfg.batch_size}) to train on and 1 in 5 held out"
        )
    order = np.random.default_rng(SCENE_SEEDS[1]).permutation(len(full))
    return full.subset(np.sort(order[held:])), full.subset(np.sort(order[:held]))


def data_fingerprint(train: S.Detections, test: S.Detections) -> dict:
    h = hashlib.sha256()
    for part in (train, test):
        h.update(np.ascontiguousarray(part.x).data)
        for b, lab in zip(part.boxes, part.labels):
            h.update(np.ascontiguousarray(b, np.float64).data)
            h.update(np.ascontiguousarray(lab, np.int64).data)
    return {
        "train_images": len(train),
        "test_images": len(test),
        "classes": list(train.classes),
        "sha256": h.hexdigest(),
    }


def targets(defaults: np.ndarray, boxes: list, labels: list, threshold: float = 0.5):
    """``(loc_target (N, D, 4), labels (N, D))`` of N images' ground truth on the default boxes."""
    locs, classes = [], []
    for b, lab in zip(boxes, labels):
        matched_labels, matched = Bx.match(b, lab, defaults, threshold)
        classes.append(matched_labels)
        locs.append(Bx.encode(matched, defaults))
    return np.stack(locs), np.stack(classes)


def batch(data: S.Detections, idx, rng: np.random.Generator, augment: bool = True):
    """``(x (B, 3, R, R), boxes, labels)`` of the images ``idx``, augmented when ``augment``."""
    xs, bs, ls = [], [], []
    for i in idx:
        x, b, lab = data.x[i], data.boxes[i], data.labels[i]
        if augment and rng.uniform() < 0.5:
            x, b, lab = S.random_crop(x, b, lab, rng)
        if augment and rng.uniform() < 0.5:
            x, b = S.flip(x, b)
        xs.append(x)
        bs.append(b)
        ls.append(lab)
    return np.stack(xs), bs, ls


def evaluate(runner, data: S.Detections, mean, std, batch_size=64) -> dict:
    """pycocotools' mAP of the runner's detections on ``data``, with the detections."""
    x = D.normalize(data.x, mean, std, np.dtype(runner.cfg.dtype))
    loc, conf = runner.predict(x, batch_size)
    preds = postprocess(loc, conf, default_boxes(runner.cfg))
    return {**coco_map(data, preds), "predictions": preds}


class Detection:
    """The loop's task for SSDLite on ``train``, scored by mAP on ``test``."""

    command = "detect train"
    format = FORMAT
    partial_keys = PARTIAL_KEYS
    counts = ()
    times_evaluation = True  # mAP takes a while: a run's seconds include it

    def __init__(self, cfg: DetectConfig, train: S.Detections, test: S.Detections):
        self.cfg, self.train, self.test = cfg.validate(), train, test
        mean, std = D.channel_stats(train.x)
        self.mean, self.std = mean.tolist(), std.tolist()
        self.eval_every = max(1, cfg.epochs // 6)  # mAP every N epochs and at the end
        self.defaults = default_boxes(cfg)
        self.last_eval = None

    @classmethod
    def load(cls, cfg: DetectConfig, progress: bool = False) -> Detection:
        return cls(cfg, *load_split(cfg, progress))

    def make_runner(self):
        return make_runner(self.cfg, len(self.train.classes))

    def schedule(self, steps_per_epoch: int):
        total = self.cfg.epochs * steps_per_epoch
        warm = min(int(round(self.cfg.warmup_epochs * steps_per_epoch)), total - 1)
        return optim.CosineWithWarmup(self.cfg.lr, total, warm)

    def fingerprint(self) -> dict:
        return data_fingerprint(self.train, self.test)

    def batch(self, idx, rng):
        x, boxes, labels = batch(self.train, idx, rng, self.cfg.augment)
        loc_t, lab = targets(self.defaults, boxes, labels)
        return D.normalize(x, self.mean, self.std, np.dtype(self.cfg.dtype)), loc_t, lab

    def evaluate(self, runner) -> dict:
        ev = evaluate(runner, self.test, self.mean, self.std)
        self.last_eval = {k: ev[k] for k in ("map_50_95", "map_50", "per_class")}
        return ev

    def postfix(self, p: dict) -> dict:
        return {"loss": f"{p['loss'] / p['seen']:.3f}", "img_s": f"{p['seen'] / max(p['seconds'], 1e-9):.0f}"}

    def row(self, p: dict, ev: dict | None) -> tuple[dict, dict]:
        if ev is not None:
            self.last_eval["seconds"] = ev["seconds"]
        seen = max(p["seen"], 1)
        row = {
            "train_loss": p["loss"] / seen,
            "train_loc_loss": p["loc_loss"] / seen,
            "train_conf_loss": p["conf_loss"] / seen,
            "map_50": None if ev is None else ev["map_50"],
            "map_50_95": None if ev is None else ev["map_50_95"],
        }
        shown = {} if ev is None else {"mAP50": f"{ev['map_50']:.3f}"}
        return row, {"loss": f"{row['train_loss']:.3f}", **shown}

    def metrics(self, trainer: loop.Trainer) -> dict:
        ev = self.last_eval or {}
        timed = sum(h["seconds"] for h in trainer.history)
        return {
            "map_50": ev.get("map_50"),
            "map_50_95": ev.get("map_50_95"),
            "per_class": ev.get("per_class"),
            "test_images": len(self.test),
            "train_images": len(self.train),
            "epochs": len(trainer.history),
            "steps": trainer.step,
            "seconds": trainer.seconds,
            "seconds_per_step": timed / max(1, len(trainer.history) * trainer.steps_per_epoch),
            "config": self.cfg.to_dict(),
            "classes": list(self.train.classes),
            "history": trainer.history,
        }

    def meta(self) -> dict:
        return {"last_eval": self.last_eval}

    def check_meta(self, fn: str, path, meta: dict) -> dict:
        return check_meta(fn, path, meta)

    def restore(self, meta: dict) -> None:
        self.last_eval = meta["last_eval"]

    def plot(self, history: list, out):
        cfg = self.cfg
        name = Path(str(cfg.data)).name
        title = f"SSDLite-MobileNetV2-{cfg.width_mult:g} {cfg.resolution}px on {name} ({cfg.backend})"
        return plot_curves(history, out / "detection_curves.png", title)


def plot_curves(history: list, path, title=""):
    """The training loss (its two terms) per epoch and the held-out mAP, in one PNG."""
    losses = [
        ("train_loss", "total", "o-"),
        ("train_loc_loss", "box (smooth L1)", "s-"),
        ("train_conf_loss", "class (cross-entropy)", "^-"),
    ]
    maps = [("map_50", "mAP@0.5", "o-"), ("map_50_95", "mAP@[.5:.95]", "s-")]
    return loop.plot_curves(
        history,
        path,
        title,
        [
            ("training loss", "SSD loss per positive", "log", None, losses),
            ("held-out mAP", "mAP (held-out)", "linear", (0, 1.01), maps),
        ],
    )


def make_runner(cfg: DetectConfig, num_classes: int):
    """The backend's runner (``mobilenet.backends`` names its module: torch is imported only for
    the torch backend)."""
    cfg.validate()
    return registry.runner_module(cfg.backend, "detect").Runner(cfg, num_classes)


def run(cfg: DetectConfig, out, resume=False, progress=True, world=None) -> dict:
    """Load the data, build the detector, train (or resume), write the metrics and the plot.
    ``out`` is locked for the run; ``world``: this process's place in a data-parallel job."""
    return loop.run(Detection, cfg, out, resume, progress, world=world)


def check_meta(fn: str, path, meta: dict) -> dict:
    """A detector checkpoint's description, checked before anything reads it: a crafted or foreign
    file gives a ValueError naming the field."""
    where = f"{fn}: {str(path)!r}"
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{where} is not a detector checkpoint (written by `mobilenet detect train`)")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{where}: classes must be a list of class names, got {classes!r}")
    check_progress(where, meta, PARTIAL_KEYS)
    if meta.get("last_eval") is not None and not isinstance(meta["last_eval"], dict):
        raise ValueError(f"{where}: last_eval must be a dict or null")
    config_from_dict(meta["config"])
    return meta


def load_trained(path, backend=None):
    """``(runner, meta)`` of a detector checkpoint; ``backend`` picks numpy or numba for a ``.npz``."""
    arrays, meta = ckpt.load(path)
    meta = check_meta("load_trained", path, meta)
    cfg = config_from_dict(meta["config"])
    cfg = loop.on_backend(cfg, backend, path)
    runner = make_runner(cfg, len(meta["classes"]))
    runner.load_state_arrays(arrays)
    return runner, meta
