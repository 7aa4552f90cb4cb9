"""Classification runs: training, pretraining on the glyph corpus and ArcFace, through the one
loop (:mod:`mobilenet.training.loop`).

:class:`Classification` is the loop's task: a batch is augmented images (a random shift, a flip
where the labels allow it) and their labels; evaluation is the test set's accuracy and plain
cross-entropy. The runner (``mobilenet.training.numpy_runner`` or ``torch_runner``, named by
``mobilenet.backends``) computes the loss: softmax cross-entropy, or ArcFace's.

Files in ``out``: ``checkpoint.npz`` (``checkpoint.pt`` for torch; the latest, written
atomically), ``metrics.json`` and ``training_curves.png``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from mobilenet import checkpoint as ckpt
from mobilenet import data as D
from mobilenet import registry
from numpy_impl import functional as F
from numpy_impl import optim

from . import loop
from .config import TrainConfig
from .meta import FORMAT, PARTIAL_KEYS, check_training_meta, config_from_dict


def build_model(cfg: TrainConfig, num_classes: int):
    """The run's model, built by its backend's runner module."""
    return registry.runner_module(cfg.backend).build_model(cfg, num_classes)


def make_runner(cfg: TrainConfig, num_classes: int, model=None):
    cfg.validate()
    model = build_model(cfg, num_classes) if model is None else model
    return registry.runner_module(cfg.backend).Runner(model, cfg, num_classes=num_classes)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
        return optim.CosineWithWarmup(cfg.lr, total, warm)
    if cfg.schedule == "step":  # V1-style: divide by 10 at one and two thirds of the run
        return optim.StepDecay(cfg.lr, max(1, total // 3), 0.1)
    if cfg.schedule == "exponential":  # V2 paper: 0.98 per epoch
        return optim.ExponentialDecay(cfg.lr, 0.98, every=steps_per_epoch)
    return lambda t: cfg.lr


def evaluate(runner, ds: D.Dataset, mean, std, batch_size=256) -> dict:
    x = D.normalize(ds.x, mean, std, np.dtype(runner.cfg.dtype))
    logits = runner.predict(x, batch_size).astype(np.float64)
    loss, _ = F.softmax_cross_entropy(logits, ds.y)  # plain cross-entropy, no smoothing
    pred = logits.argmax(1)
    return {"loss": float(loss), "accuracy": float((pred == ds.y).mean()), "predictions": pred}


class Classification:
    """The loop's task for a classifier (or an ArcFace embedding) on ``train``, scored on ``test``.
    ``mean``/``std`` normalise the images (default: ``train``'s channel statistics);
    ``extra_meta`` goes into every checkpoint."""

    command = "train"
    format = FORMAT
    partial_keys = PARTIAL_KEYS
    counts = ("correct",)
    times_evaluation = False
    eval_every = 1

    def __init__(
        self, cfg: TrainConfig, train: D.Dataset, test: D.Dataset, mean=None, std=None, extra_meta=None
    ):
        self.cfg, self.train, self.test = cfg.validate(), train, test
        if mean is None:
            mean, std = D.channel_stats(train.x)
        self.mean, self.std = np.asarray(mean, float).tolist(), np.asarray(std, float).tolist()
        self.extra_meta = extra_meta or {}
        self.flip = train.flips_preserve_label if cfg.flip is None else cfg.flip

    @classmethod
    def load(cls, cfg: TrainConfig, progress: bool = False) -> Classification:
        """The task of ``cfg``'s data (:func:`load_split`)."""
        return cls(cfg, *load_split(cfg))

    def make_runner(self):
        return make_runner(self.cfg, len(self.train.classes))

    def schedule(self, steps_per_epoch: int):
        return make_schedule(self.cfg, steps_per_epoch)

    def fingerprint(self) -> dict:
        return data_fingerprint(self.train, self.test)

    def batch(self, idx, rng):
        x = D.augment(self.train.x[idx], rng, self.cfg.max_shift, self.flip)
        return D.normalize(x, self.mean, self.std, np.dtype(self.cfg.dtype)), self.train.y[idx]

    def evaluate(self, runner) -> dict:
        return evaluate(runner, self.test, self.mean, self.std)

    def postfix(self, p: dict) -> dict:
        return {
            "loss": f"{p['loss'] / p['seen']:.3f}",
            "acc": f"{p['correct'] / p['seen']:.3f}",
            "img_s": f"{p['seen'] / max(p['seconds'], 1e-9):.0f}",
        }

    def row(self, p: dict, ev: dict | None) -> tuple[dict, dict]:
        """The history row of an epoch, and what the progress bar shows at its end."""
        ev = ev or {"loss": None, "accuracy": None}
        row = {
            "train_loss": p["loss"] / p["seen"],
            "train_accuracy": p["correct"] / p["seen"],
            "test_loss": ev["loss"],
            "test_accuracy": ev["accuracy"],
        }
        test = {} if ev["accuracy"] is None else {"test_acc": f"{ev['accuracy']:.3f}"}
        return row, {"loss": f"{row['train_loss']:.3f}", "acc": f"{row['train_accuracy']:.3f}", **test}

    def metrics(self, trainer: loop.Trainer) -> dict:
        history = trainer.history
        last = history[-1] if history else {}
        seen = sum(h["images_per_second"] * h["seconds"] for h in history)
        return {
            "test_accuracy": last.get("test_accuracy"),
            "test_loss": last.get("test_loss"),
            "epochs": len(history),
            "steps": trainer.step,
            "seconds": trainer.seconds,
            "images_per_second": seen / max(trainer.seconds, 1e-9),
            "config": self.cfg.to_dict(),
            "classes": list(self.train.classes),
            "history": history,
        }

    def meta(self) -> dict:
        return {"num_classes": len(self.train.classes), **self.extra_meta}

    def check_meta(self, fn: str, path, meta: dict) -> dict:
        return check_training_meta(fn, path, meta)

    def restore(self, meta: dict) -> None:
        """Nothing beyond the loop's own fields."""

    def plot(self, history: list, out):
        name = Path(str(self.cfg.data)).name
        cfg = self.cfg
        title = f"{A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px on {name} ({cfg.backend})"
        return plot_curves(history, out / "training_curves.png", title)


def plot_curves(history: list, path, title=""):
    """Loss and accuracy per epoch, train and test, in one PNG."""
    return loop.plot_curves(
        history,
        path,
        title,
        [
            (
                "loss",
                "cross-entropy",
                "log",
                None,
                [("train_loss", "train", "o-"), ("test_loss", "test", "s-")],
            ),
            (
                "accuracy",
                "accuracy",
                "linear",
                (0, 1.01),
                [("train_accuracy", "train", "o-"), ("test_accuracy", "test", "s-")],
            ),
        ],
    )


def data_fingerprint(train: D.Dataset, test: D.Dataset) -> dict:
    """What identifies a run's data: sizes, class names and a digest of every image and label."""
    h = hashlib.sha256()
    for a in (train.x, train.y, test.x, test.y):
        h.update(np.ascontiguousarray(a).data)
    return {
        "train_images": len(train),
        "test_images": len(test),
        "classes": list(train.classes),
        "sha256": h.hexdigest(),
    }


def load_split(cfg: TrainConfig) -> tuple[D.Dataset, D.Dataset]:
    """The run's training and test sets; refused here, before any training, when either is empty
    or the training set holds less than one batch."""
    train, test = D.load_data(cfg.data, cfg.resolution, seed=cfg.seed)
    if cfg.classes is not None:
        train, test = train.select_classes(cfg.classes), test.select_classes(cfg.classes)
    if cfg.train_limit:
        train = train.subset(np.arange(min(cfg.train_limit, len(train))))
    if len(test) == 0 or len(train) < cfg.batch_size:
        counts = np.bincount(np.concatenate([train.y, test.y]), minlength=len(train.classes))
        raise ValueError(
            f"the data has too few images: {len(train)} to train and {len(test)} to test "
            f"(per class: {dict(zip(train.classes, counts.tolist()))}); every class needs at least 2 "
            f"images and the training set one batch (--batch-size {cfg.batch_size})"
        )
    return train, test


def run(cfg: TrainConfig, out, resume=False, progress=True, world=None) -> dict:
    """Load the data, build the model, train (or resume), write the metrics and the plot. The
    folder ``out`` is locked for the run: a second run into it is refused at once. ``world``:
    this process's place in a data-parallel job (:mod:`mobilenet.training.distributed`)."""
    start = (lambda runner: init_backbone(runner, cfg)) if cfg.init else None
    return loop.run(Classification, cfg, out, resume, progress, start=start, world=world)


def init_backbone(runner, cfg: TrainConfig) -> None:
    """Start ``runner``'s backbone (every ``features`` weight and statistic) from the checkpoint
    ``cfg.init``, of the same architecture and width; the head keeps its fresh initialisation."""
    arrays, meta = ckpt.load(cfg.init)
    meta = check_training_meta("init", cfg.init, meta)
    src = config_from_dict(meta["config"])
    if (src.arch, src.width_mult) != (cfg.arch, cfg.width_mult):
        raise ValueError(
            f"init: {cfg.init!r} holds a {A.model_name(src.arch)} width {src.width_mult:g}, "
            f"this run is {A.model_name(cfg.arch)} width {cfg.width_mult:g}"
        )
    runner.load_backbone(
        {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/features.")}
    )


def load_trained(path, backend=None, arch=None, width_mult=None):
    """A trained model from a checkpoint: ``(runner, meta)``.

    ``arch`` / ``width_mult``, when given, must be the checkpoint's (a clear error otherwise);
    ``backend`` picks numpy or numba for a ``.npz`` checkpoint (default: the one it was trained on).
    """
    arrays, meta = ckpt.load(path)
    meta = check_training_meta("load_trained", path, meta)
    cfg = config_from_dict(meta["config"])
    got = f"{A.model_name(cfg.arch)} width {cfg.width_mult:g}"
    if arch is not None and arch != cfg.arch:
        raise ValueError(f"load_trained: {str(path)!r} holds a {got}, expected arch {arch}")
    if width_mult is not None and float(width_mult) != cfg.width_mult:
        raise ValueError(f"load_trained: {str(path)!r} holds a {got}, expected width {width_mult:g}")
    cfg = loop.on_backend(cfg, backend, path)
    runner = make_runner(cfg, meta["num_classes"])
    runner.load_state_arrays(arrays)
    return runner, meta
