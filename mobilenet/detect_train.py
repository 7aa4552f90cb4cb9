"""Training and using SSDLite: ``mobilenet detect train | evaluate | predict``.

The loop is the classification trainer's (``mobilenet.train``) for boxes: every random choice a
function of ``(seed, epoch, step)``, atomic checkpoints, ``--resume`` refused unless the
configuration and the data are the checkpoint's. A step draws a batch, augments it (a random
crop, a flip), matches its boxes to the default boxes and takes an SGD step on the SSD loss.
Evaluation runs the model on the held-out images and scores its detections with pycocotools.

The generated scenes come from fixed seeds: ``--seed`` changes the model's initial weights and
the batch order, never the data, so runs with different seeds are scored on the same images.

Files in ``out``: ``checkpoint.npz`` (``checkpoint.pt`` for torch), ``metrics.json``
(``map_50``, ``map_50_95``, per-class AP, the history) and ``detection_curves.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from numpy_impl import detection as Dt
from numpy_impl import optim
from numpy_impl.detector import SSDLite, ssdlite, ssdlite_default_boxes
from numpy_impl.functional._checks import check_int, check_number

from . import backends as B
from . import checkpoint as ckpt
from . import data as D
from . import detect, numpy_runner
from . import scenes as S
from .coco_eval import coco_map
from .train import check_out_folder, check_progress, step_seed

FORMAT = "mobilenet-from-scratch/detector/1"
SCENE_SEEDS = (1, 2)  # training and held-out scenes: fixed, whatever the run's --seed
PARTIAL_KEYS = ("loss", "loc_loss", "conf_loss", "seen", "seconds")


@dataclass
class DetectConfig:
    """Everything that defines a detection run (a resumed run must have the same)."""

    width_mult: float = 0.5
    resolution: int = 128
    data: str = "scenes"  # "scenes" (generated) or a COCO-format annotations JSON
    images: str | None = None  # the COCO file's image folder (default: beside the JSON)
    train_size: int = 3000  # generated training scenes (a COCO file: all but the held-out images)
    test_size: int = 500  # held-out images: generated scenes, or images held out of a COCO file
    backend: str = "numba"
    dtype: str = "float32"
    epochs: int = 24
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5  # the V2 paper's
    warmup_epochs: float = 1.0
    augment: bool = True  # random crops and horizontal flips
    neg_pos_ratio: int = 3  # hard negatives per positive (SSD's 3:1)
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: after each epoch only)

    def validate(self):
        fn = "DetectConfig"
        B.get(self.backend, fn)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"{fn}: dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name, lo in (("epochs", 1), ("batch_size", 2), ("resolution", A.MIN_RESOLUTION)):
            check_int(fn, name, getattr(self, name), lo)  # batch_size >= 2: batch norm in training
        for name, lo in (("train_size", 2), ("test_size", 1), ("neg_pos_ratio", 0), ("seed", 0)):
            check_int(fn, name, getattr(self, name), lo)
        check_int(fn, "checkpoint_every", self.checkpoint_every, 0)
        check_number(fn, "width_mult", self.width_mult, 1e-3, A.MAX_WIDTH_MULT)
        check_number(fn, "lr", self.lr, 1e-12, 1e3)
        check_number(fn, "momentum", self.momentum, 0.0, 1.0)
        check_number(fn, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_number(fn, "warmup_epochs", self.warmup_epochs, 0.0, 1e6)
        for name in ("nesterov", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{fn}: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("data", "images"):
            v = getattr(self, name)
            if not (isinstance(v, (str, os.PathLike)) or (name == "images" and v is None)):
                raise TypeError(f"{fn}: {name} must be a path, got {type(v).__name__}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = str(self.data)
        d["images"] = None if self.images is None else str(self.images)
        return d


def config_from_dict(d: dict) -> DetectConfig:
    names = {f.name for f in dataclasses.fields(DetectConfig)}
    if not isinstance(d, dict) or set(d) - names:
        unknown = sorted(set(d) - names) if isinstance(d, dict) else d
        raise ValueError(f"config_from_dict: not a detection configuration (unknown settings {unknown})")
    return DetectConfig(**d).validate()


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


# --- runners ---------------------------------------------------------------------------------------


def build_numpy(cfg: DetectConfig, num_classes: int) -> SSDLite:
    """The seeded NumPy detector: every backend starts from these weights. ``num_classes`` counts
    the object classes (the background is added)."""
    ops = B.get(cfg.backend).ops or "numpy"
    return ssdlite(cfg.width_mult, num_classes + 1, np.dtype(cfg.dtype), ops, cfg.seed)


class NumpyRunner:
    """The NumPy detector (backends numpy and numba) with a ``numpy_impl.optim`` SGD."""

    def __init__(self, cfg: DetectConfig, num_classes: int):
        self.cfg, self.model = cfg, build_numpy(cfg, num_classes)
        groups = optim.decay_groups(self.model, cfg.weight_decay)
        self.optimizer = optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )

    def set_lr(self, lr):
        self.optimizer.set_lr(lr)

    def train_step(self, x, loc_target, labels):
        m = self.model
        m.train()
        loc, conf = m.forward(x)
        loss, cache = Dt.ssd_loss(loc, conf, loc_target.astype(m.dtype), labels, self.cfg.neg_pos_ratio)
        dloc, dconf = Dt.ssd_loss_backward(1.0, cache)
        m.backward(dloc, dconf)
        self.optimizer.step(m.grads)
        return loss, cache["loc_loss"], cache["conf_loss"]

    def predict(self, x, batch_size=64):
        """``(loc, conf)`` in eval mode, float64."""
        self.model.eval()
        outs = [self.model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        self.model.train()
        return (np.concatenate([o[k] for o in outs]).astype(np.float64) for k in (0, 1))

    def state_arrays(self) -> dict:
        return numpy_runner.state_arrays(self.model, self.optimizer)

    def load_state_arrays(self, arrays: dict):
        numpy_runner.load_state_arrays(self.model, self.optimizer, arrays)


def make_runner(cfg: DetectConfig, num_classes: int):
    """The backend's runner; torch is imported only for the torch backend (its thread pool would
    share the two cores with Numba's)."""
    cfg.validate()
    if B.get(cfg.backend).model == "torch_impl":
        return importlib.import_module("mobilenet.detect_torch").TorchRunner(cfg, num_classes)
    return NumpyRunner(cfg, num_classes)


# --- the loop --------------------------------------------------------------------------------------


def evaluate(runner, data: S.Detections, mean, std, batch_size=64) -> dict:
    """pycocotools' mAP of the runner's detections on ``data``, with the detections."""
    x = D.normalize(data.x, mean, std, np.dtype(runner.cfg.dtype))
    loc, conf = runner.predict(x, batch_size)
    defaults = default_boxes(runner.cfg)
    preds = detect.postprocess(loc, conf, defaults)
    return {**coco_map(data, preds), "predictions": preds}


def default_boxes(cfg: DetectConfig) -> np.ndarray:
    return ssdlite_default_boxes(cfg.resolution)


class DetectTrainer:
    """``DetectTrainer(cfg, runner, train, test, out).fit()``."""

    def __init__(self, cfg: DetectConfig, runner, train, test, out=None, progress=True, eval_every=0):
        self.cfg, self.runner, self.train, self.test = cfg.validate(), runner, train, test
        if len(train) < cfg.batch_size:
            raise ValueError(
                f"DetectTrainer: the training set ({len(train)} images) is smaller than one batch "
                f"(batch_size {cfg.batch_size})"
            )
        self.out = None if out is None else Path(out)
        mean, std = D.channel_stats(train.x)
        self.mean, self.std = mean.tolist(), std.tolist()
        self.progress = progress
        self.eval_every = eval_every or max(1, cfg.epochs // 6)  # mAP every N epochs and at the end
        self.defaults = default_boxes(cfg)
        self.steps_per_epoch = len(D.batch_indices(len(train), cfg.batch_size, cfg.seed, 0))
        total = cfg.epochs * self.steps_per_epoch
        warm = min(int(round(cfg.warmup_epochs * self.steps_per_epoch)), total - 1)
        self.schedule = optim.CosineWithWarmup(cfg.lr, total, warm)
        self.data_fingerprint = data_fingerprint(train, test)
        self.epoch, self.step, self.history, self.seconds = 0, 0, [], 0.0
        self.last_eval = None
        self.partial = dict.fromkeys(PARTIAL_KEYS, 0.0)

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / f"checkpoint{B.get(self.cfg.backend).checkpoint}"

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "classes": list(self.train.classes),
            "mean": self.mean,
            "std": self.std,
            "data": self.data_fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial,
            "history": self.history,
            "seconds": self.seconds,
            "last_eval": self.last_eval,
        }

    def save(self):
        if self.out is not None:
            ckpt.save(self.checkpoint_path, self.runner.state_arrays(), self.meta())

    def resume(self):
        path = self.checkpoint_path
        if path is None or not path.is_file():
            raise FileNotFoundError(f"resume: no checkpoint to resume from at {str(path)!r}")
        arrays, meta = ckpt.load(path)
        meta = check_meta("resume", path, meta)
        mine, theirs = self.cfg.to_dict(), meta["config"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff[:4])
            raise ValueError(
                f"resume: the checkpoint in {str(self.out)!r} is of another configuration ({detail})"
            )
        if meta.get("data") != self.data_fingerprint:
            raise ValueError(
                "resume: the data changed since the checkpoint was written: resume with the data it "
                "was trained on, or start a new run in another --out"
            )
        self.runner.load_state_arrays(arrays)
        for key in ("epoch", "step", "history", "seconds", "partial", "mean", "std", "last_eval"):
            setattr(self, key, meta[key])
        return self

    def _batch(self, idx, epoch, i):
        rng = np.random.default_rng(step_seed(self.cfg.seed, epoch, i, 0))
        x, boxes, labels = detect.batch(self.train, idx, rng, self.cfg.augment)
        loc_t, lab = detect.targets(self.defaults, boxes, labels)
        return D.normalize(x, self.mean, self.std, np.dtype(self.cfg.dtype)), loc_t, lab

    def fit(self) -> dict:
        cfg, bar = self.cfg, None
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            batches = D.batch_indices(len(self.train), cfg.batch_size, cfg.seed, epoch)
            start = self.step - epoch * self.steps_per_epoch  # > 0 when resuming mid-epoch
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=len(batches),
                    initial=start,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    unit="batch",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            for i in range(start, len(batches)):
                t0 = time.perf_counter()
                x, loc_t, labels = self._batch(batches[i], epoch, i)
                self.runner.set_lr(self.schedule(self.step))
                loss, loc_loss, conf_loss = self.runner.train_step(x, loc_t, labels)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged: loss {loss} at epoch {epoch + 1} step {i + 1}; "
                        f"lower --lr (now {cfg.lr})"
                    )
                p = self.partial
                for key, v in (("loss", loss), ("loc_loss", loc_loss), ("conf_loss", conf_loss)):
                    p[key] += v * len(x)
                p["seen"] += len(x)
                p["seconds"] += time.perf_counter() - t0
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{p['loss'] / p['seen']:.3f}",
                        img_s=f"{p['seen'] / max(p['seconds'], 1e-9):.0f}",
                    )
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and i + 1 < len(batches):
                    self.save()
            self._end_epoch(bar)
        return self.metrics()

    def _end_epoch(self, bar):
        p, last = self.partial, self.epoch + 1 == self.cfg.epochs
        ev = None
        if last or (self.epoch + 1) % self.eval_every == 0:
            t0 = time.perf_counter()
            ev = evaluate(self.runner, self.test, self.mean, self.std)
            self.last_eval = {k: ev[k] for k in ("map_50_95", "map_50", "per_class")}
            self.last_eval["seconds"] = time.perf_counter() - t0
        self.seconds += p["seconds"] + (0.0 if ev is None else self.last_eval["seconds"])
        seen = max(p["seen"], 1)
        row = {
            "epoch": self.epoch + 1,
            "train_loss": p["loss"] / seen,
            "train_loc_loss": p["loc_loss"] / seen,
            "train_conf_loss": p["conf_loss"] / seen,
            "map_50": None if ev is None else ev["map_50"],
            "map_50_95": None if ev is None else ev["map_50_95"],
            "lr": float(self.schedule(self.step - 1)),
            "seconds": p["seconds"],
            "images_per_second": p["seen"] / max(p["seconds"], 1e-9),
        }
        self.history.append(row)
        if bar is not None:
            shown = {} if ev is None else {"mAP50": f"{ev['map_50']:.3f}"}
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", **shown)
            bar.close()
        self.epoch += 1
        self.partial = dict.fromkeys(PARTIAL_KEYS, 0.0)
        self.save()
        if self.out is not None:
            ckpt.write_text(self.out / "metrics.json", json.dumps(self.metrics(), indent=2) + "\n")

    def metrics(self) -> dict:
        ev = self.last_eval or {}
        timed = sum(h["seconds"] for h in self.history)
        return {
            "map_50": ev.get("map_50"),
            "map_50_95": ev.get("map_50_95"),
            "per_class": ev.get("per_class"),
            "test_images": len(self.test),
            "train_images": len(self.train),
            "epochs": len(self.history),
            "steps": self.step,
            "seconds": self.seconds,
            "seconds_per_step": timed / max(1, len(self.history) * self.steps_per_epoch),
            "config": self.cfg.to_dict(),
            "classes": list(self.train.classes),
            "history": self.history,
        }


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


def plot_curves(history: list, path, title=""):
    """The training loss (its two terms) per epoch and the held-out mAP, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="total")
    a.plot(ep, [h["train_loc_loss"] for h in history], "s-", label="box (smooth L1)")
    a.plot(ep, [h["train_conf_loss"] for h in history], "^-", label="class (cross-entropy)")
    a.set(xlabel="epoch", ylabel="SSD loss per positive", yscale="log", title="training loss")
    done = [h for h in history if h["map_50"] is not None]
    b.plot([h["epoch"] for h in done], [h["map_50"] for h in done], "o-", label="mAP@0.5")
    b.plot([h["epoch"] for h in done], [h["map_50_95"] for h in done], "s-", label="mAP@[.5:.95]")
    b.set(xlabel="epoch", ylabel="mAP (held-out)", title="held-out mAP", ylim=(0, 1.01))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    ckpt.save_figure(fig, path)
    plt.close(fig)
    return path


def run(cfg: DetectConfig, out, resume=False, progress=True) -> dict:
    """Load the data, build the detector, train (or resume), write the metrics and the plot.
    ``out`` is locked for the run."""
    cfg.validate()
    out = Path(out)
    if resume and not out.is_dir():
        raise FileNotFoundError(
            f"resume: {str(out)!r} does not exist, so there is nothing to resume; drop --resume to start"
        )
    with ckpt.exclusive(out):
        check_out_folder(out, cfg.backend, resume, "detect train")
        train, test = load_split(cfg, progress)
        runner = make_runner(cfg, len(train.classes))
        trainer = DetectTrainer(cfg, runner, train, test, out, progress=progress)
        if resume:
            trainer.resume()
        metrics = trainer.fit()
        ckpt.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        name = Path(str(cfg.data)).name
        title = f"SSDLite-MobileNetV2-{cfg.width_mult:g} {cfg.resolution}px on {name} ({cfg.backend})"
        plot_curves(trainer.history, out / "detection_curves.png", title)
        return metrics


def load_trained(path, backend=None):
    """``(runner, meta)`` of a detector checkpoint; ``backend`` picks numpy or numba for a ``.npz``."""
    arrays, meta = ckpt.load(path)
    meta = check_meta("load_trained", path, meta)
    cfg = config_from_dict(meta["config"])
    if backend is not None:
        if not B.compatible(cfg.backend, B.get(backend, "load_trained").name):
            raise ValueError(
                f"load_trained: {str(path)!r} was written by the {cfg.backend} backend; "
                f"it cannot be loaded on the {backend} backend"
            )
        cfg = dataclasses.replace(cfg, backend=backend)
    runner = make_runner(cfg, len(meta["classes"]))
    runner.load_state_arrays(arrays)
    return runner, meta


# --- using a trained detector ----------------------------------------------------------------------


def detect_images(runner, meta: dict, x: np.ndarray, batch_size: int = 64) -> list:
    """Detections ``(boxes, scores, labels)`` per image of ``x`` (N, 3, R, R) in [0, 1]."""
    cfg = runner.cfg
    if x.ndim != 4 or x.shape[1:] != (3, cfg.resolution, cfg.resolution):
        raise ValueError(
            f"detect_images: x must be (N, 3, {cfg.resolution}, {cfg.resolution}), got {x.shape}"
        )
    loc, conf = runner.predict(D.normalize(x, meta["mean"], meta["std"], np.dtype(cfg.dtype)), batch_size)
    return detect.postprocess(loc, conf, default_boxes(cfg))


def read_image(path, resolution: int):
    """``(model input (3, R, R) in [0, 1], the image as RGB uint8 (H, W, 3))``; a clear error for a
    file that is not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {str(path)!r} does not exist or is not a file")
    try:
        x = D._read_image(path, resolution)
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
