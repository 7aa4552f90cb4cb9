"""One trainer for the NumPy model (numpy or numba backend) and the torch model.

The loop is the same for both; a *runner* hides the model kind (``train_step``, ``predict``,
``state_arrays``). Everything random is a function of ``(seed, epoch, step)``: the batch
order of an epoch, the augmentation of a batch and the dropout masks of a step. A run
killed at any moment therefore resumes from its last checkpoint and, on the numpy backend,
ends with exactly the weights of an uninterrupted run.

Files in ``out``: ``checkpoint.npz`` (``checkpoint.pt`` for torch; the latest, written
atomically), ``metrics.json`` and ``training_curves.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import mobilenet_arch as A
from numpy_impl import functional as F
from numpy_impl import optim

from . import backends as B
from . import checkpoint as ckpt
from . import data as D
from .config import TrainConfig

PARTIAL_KEYS = ("loss", "correct", "seen", "seconds")  # the running sums of an epoch in progress

# --- runners: one module per model (mobilenet.backends names it) ----------------------------


def build_model(cfg: TrainConfig, num_classes: int):
    """The run's model, built by its backend's runner module."""
    return B.runner_module(cfg.backend).build_model(cfg, num_classes)


def make_runner(cfg: TrainConfig, num_classes: int, model=None):
    cfg.validate()
    model = build_model(cfg, num_classes) if model is None else model
    return B.runner_module(cfg.backend).Runner(model, cfg, num_classes=num_classes)


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


# --- the loop -------------------------------------------------------------------------------


def step_seed(seed: int, epoch: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (epoch, step) and purpose: 0 augmentation, 1 dropout."""
    return int(np.random.SeedSequence([seed, epoch, step, stream]).generate_state(2, np.uint64)[0] >> 1)


def evaluate(runner, ds: D.Dataset, mean, std, batch_size=256) -> dict:
    x = D.normalize(ds.x, mean, std, np.dtype(runner.cfg.dtype))
    logits = runner.predict(x, batch_size).astype(np.float64)
    loss, _ = F.softmax_cross_entropy(logits, ds.y)  # plain cross-entropy, no smoothing
    pred = logits.argmax(1)
    return {"loss": float(loss), "accuracy": float((pred == ds.y).mean()), "predictions": pred}


class Trainer:
    """``Trainer(cfg, runner, train, test, out).fit()``: epochs of seeded batches, evaluation
    after each epoch, checkpoints, ``metrics.json`` and a curve plot in ``out``."""

    def __init__(
        self,
        cfg: TrainConfig,
        runner,
        train: D.Dataset,
        test: D.Dataset,
        out=None,
        mean=None,
        std=None,
        progress=True,
        extra_meta=None,
        eval_every=1,
    ):
        self.cfg, self.runner, self.train, self.test = cfg.validate(), runner, train, test
        if len(train) < cfg.batch_size:
            raise ValueError(
                f"Trainer: the training set ({len(train)} images) is smaller than one batch "
                f"(batch_size {cfg.batch_size})"
            )
        self.out = None if out is None else Path(out)
        if mean is None:
            mean, std = D.channel_stats(train.x)
        self.mean, self.std = np.asarray(mean, float).tolist(), np.asarray(std, float).tolist()
        self.progress, self.extra_meta = progress, extra_meta or {}
        self.eval_every = eval_every  # evaluate on the test set every N epochs (and always after the last)
        self.steps_per_epoch = len(D.batch_indices(len(train), cfg.batch_size, cfg.seed, 0))
        self.schedule = make_schedule(cfg, self.steps_per_epoch)
        self.flip = train.flips_preserve_label if cfg.flip is None else cfg.flip
        self.data_fingerprint = data_fingerprint(train, test)
        self.epoch, self.step, self.history, self.seconds = 0, 0, [], 0.0
        self.step_losses = []  # this process's per-step training losses (for plots; not checkpointed)
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}  # PARTIAL_KEYS

    # --- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / f"checkpoint{B.get(self.cfg.backend).checkpoint}"

    def meta(self) -> dict:
        return {
            "format": "mobilenet-from-scratch/checkpoint/1",
            "config": self.cfg.to_dict(),
            "num_classes": len(self.train.classes),
            "classes": list(self.train.classes),
            "mean": self.mean,
            "std": self.std,
            "data": self.data_fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial,
            "history": self.history,
            "seconds": self.seconds,
            "rng_state": self.runner.rng_state(),
            **self.extra_meta,
        }

    def save(self):
        if self.out is not None:
            ckpt.save(self.checkpoint_path, self.runner.state_arrays(), self.meta())

    def resume(self):
        """Continue from ``out``'s checkpoint; its configuration must be this run's."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            raise FileNotFoundError(f"resume: no checkpoint to resume from at {str(path)!r}")
        arrays, meta = ckpt.load(path)
        meta = check_training_meta("resume", path, meta)
        mine = self.cfg.to_dict()
        theirs = {**TrainConfig().to_dict(), **meta["config"]}  # settings added since: their defaults
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if "data" in diff and same_data(mine["data"], theirs.get("data")):
            diff.remove("data")  # the same folder, spelled another way
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff[:4])
            raise ValueError(
                f"resume: the checkpoint in {str(self.out)!r} is of another configuration ({detail})"
            )
        theirs = meta.get("data")
        if theirs is not None and theirs != self.data_fingerprint:
            raise ValueError(
                f"resume: the data changed since the checkpoint was written (then {describe_data(theirs)}, "
                f"now {describe_data(self.data_fingerprint)}): resume with the data it was trained on, "
                "or start a new run in another --out"
            )
        self.runner.load_state_arrays(arrays)
        self.epoch, self.step, self.history = meta["epoch"], meta["step"], meta["history"]
        self.seconds, self.partial, self.mean, self.std = (
            meta["seconds"],
            meta["partial"],
            meta["mean"],
            meta["std"],
        )
        if meta.get("rng_state") and hasattr(self.runner.model, "rng"):
            try:
                self.runner.model.rng.bit_generator.state = meta["rng_state"]
            except (TypeError, ValueError, KeyError):
                raise ValueError(f"resume: {str(path)!r} holds a broken random generator state") from None
        return self

    # --- training --------------------------------------------------------------------------------
    def _batch(self, idx, epoch, i):
        rng = np.random.default_rng(step_seed(self.cfg.seed, epoch, i, 0))
        x = D.augment(self.train.x[idx], rng, self.cfg.max_shift, self.flip)
        return D.normalize(x, self.mean, self.std, np.dtype(self.cfg.dtype)), self.train.y[idx]

    def fit(self) -> dict:
        cfg = self.cfg
        bar = None
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
                    leave=True,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            for i in range(start, len(batches)):
                t0 = time.perf_counter()
                x, y = self._batch(batches[i], epoch, i)
                self.runner.set_lr(self.schedule(self.step))
                loss, correct = self.runner.train_step(x, y, step_seed(cfg.seed, epoch, i, 1))
                if not math.isfinite(loss):
                    where = f"epoch {epoch + 1} step {i + 1}"
                    raise FloatingPointError(
                        f"training diverged: loss {loss} at {where}; lower --lr (now {cfg.lr})"
                    )
                self.step_losses.append(float(loss))
                p = self.partial
                p["loss"] += loss * len(y)
                p["correct"] += correct
                p["seen"] += len(y)
                p["seconds"] += time.perf_counter() - t0
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{p['loss'] / p['seen']:.3f}",
                        acc=f"{p['correct'] / p['seen']:.3f}",
                        img_s=f"{p['seen'] / max(p['seconds'], 1e-9):.0f}",
                    )
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and i + 1 < len(batches):
                    self.save()
            self._end_epoch(bar)
        return self.metrics()

    def _end_epoch(self, bar):
        p = self.partial
        last = self.epoch + 1 == self.cfg.epochs
        if last or (self.epoch + 1) % self.eval_every == 0:
            ev = evaluate(self.runner, self.test, self.mean, self.std)
        else:
            ev = {"loss": None, "accuracy": None}
        self.seconds += p["seconds"]
        row = {
            "epoch": self.epoch + 1,
            "train_loss": p["loss"] / p["seen"],
            "train_accuracy": p["correct"] / p["seen"],
            "test_loss": ev["loss"],
            "test_accuracy": ev["accuracy"],
            "lr": float(self.schedule(self.step - 1)),
            "seconds": p["seconds"],
            "images_per_second": p["seen"] / max(p["seconds"], 1e-9),
        }
        self.history.append(row)
        if bar is not None:
            test = {} if ev["accuracy"] is None else {"test_acc": f"{ev['accuracy']:.3f}"}
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_accuracy']:.3f}", **test)
            bar.close()
        self.epoch += 1
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}  # PARTIAL_KEYS
        self.save()
        if self.out is not None:
            ckpt.write_text(self.out / "metrics.json", json.dumps(self.metrics(), indent=2) + "\n")

    def metrics(self) -> dict:
        last = self.history[-1] if self.history else {}
        seen = sum(h["images_per_second"] * h["seconds"] for h in self.history)
        return {
            "test_accuracy": last.get("test_accuracy"),
            "test_loss": last.get("test_loss"),
            "epochs": len(self.history),
            "steps": self.step,
            "seconds": self.seconds,
            "images_per_second": seen / max(self.seconds, 1e-9),
            "config": self.cfg.to_dict(),
            "classes": list(self.train.classes),
            "history": self.history,
        }


def plot_curves(history: list, path, title=""):
    """Loss and accuracy per epoch, train and test, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["test_loss"] for h in history], "s-", label="test")
    a.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    b.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    b.plot(ep, [h["test_accuracy"] for h in history], "s-", label="test")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.01))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    ckpt.save_figure(fig, path)
    plt.close(fig)
    return path


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


def describe_data(f: dict) -> str:
    return f"{f.get('train_images')} training and {f.get('test_images')} test images of {f.get('classes')}"


def same_data(a, b) -> bool:
    """Whether two ``data`` settings name the same thing (``g2``, ``./g2`` and its absolute path do)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str) or {"digits", "shapes", "glyphs"} & {a, b}:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def _is_number(v, lo=-math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= lo


def check_training_meta(fn: str, path, meta: dict) -> dict:
    """A training checkpoint's description, checked before anything reads it: a crafted or
    foreign file gives a ValueError naming the field, never a KeyError or a wrong model."""
    where = f"{fn}: {str(path)!r}"
    if not isinstance(meta.get("config"), dict) or "num_classes" not in meta:
        raise ValueError(f"{where} is not a training checkpoint (no config in its meta)")
    n = meta["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: num_classes must be an int >= 1, got {n!r}")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and len(classes) == n and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{where}: classes must be {n} class names, got {classes!r}")
    check_progress(where, meta, PARTIAL_KEYS)
    return meta


def check_progress(where: str, meta: dict, partial_keys) -> None:
    """The fields every run's checkpoint shares (normalisation, position, running sums, history),
    each a ValueError naming the field when it is not what the trainer wrote."""
    for key, lo, what in (("mean", -math.inf, ""), ("std", 1e-12, " > 0")):
        v = meta.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(_is_number(a, lo) for a in v)):
            raise ValueError(f"{where}: {key} must be 3 finite numbers{what}, got {v!r}")
    for key in ("epoch", "step"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{where}: {key} must be an int >= 0, got {v!r}")
    partial = meta.get("partial")
    if not (isinstance(partial, dict) and all(_is_number(partial.get(k), 0) for k in partial_keys)):
        raise ValueError(f"{where}: partial must hold {', '.join(partial_keys)}, got {partial!r}")
    if not isinstance(meta.get("history"), list) or not _is_number(meta.get("seconds"), 0):
        raise ValueError(f"{where}: history must be a list and seconds a number >= 0")


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


def run(cfg: TrainConfig, out, resume=False, progress=True) -> dict:
    """Load the data, build the model, train (or resume), write the metrics and the plot. The
    folder ``out`` is locked for the run: a second run into it is refused at once."""
    cfg.validate()
    out = Path(out)
    if resume and not out.is_dir():
        raise FileNotFoundError(
            f"resume: {str(out)!r} does not exist, so there is nothing to resume; drop --resume to start"
        )
    with ckpt.exclusive(out):
        return _run_locked(cfg, out, resume, progress)


def check_out_folder(out: Path, backend: str, resume: bool, command: str) -> None:
    """Refuse a new run into a folder that holds a checkpoint, and a resume from another
    backend's checkpoint, before anything is loaded or written."""
    suffix = B.get(backend).checkpoint
    others = [out / f"checkpoint{b.checkpoint}" for b in B.BACKENDS.values() if b.checkpoint != suffix]
    if not resume and (out / f"checkpoint{suffix}").exists():
        raise FileExistsError(
            f"{command}: {str(out)!r} already holds a checkpoint: "
            "pass --resume to continue it, or choose another --out"
        )
    other = next((o for o in others if o.exists()), None)
    if resume and not (out / f"checkpoint{suffix}").exists() and other is not None:
        theirs = ckpt.load(other)[1].get("config", {})
        raise ValueError(
            f"resume: {str(out)!r} holds a checkpoint of the {theirs.get('backend')} backend, "
            f"this run's backend is {backend}"
        )


def _run_locked(cfg: TrainConfig, out: Path, resume: bool, progress: bool) -> dict:
    check_out_folder(out, cfg.backend, resume, "train")
    train, test = load_split(cfg)
    runner = make_runner(cfg, len(train.classes))
    trainer = Trainer(cfg, runner, train, test, out, progress=progress)
    if resume:
        trainer.resume()
    elif cfg.init:
        init_backbone(runner, cfg)
    metrics = trainer.fit()
    ckpt.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if trainer.history:
        name = Path(str(cfg.data)).name
        title = f"{A.model_name(cfg.arch)}-{cfg.width_mult:g} {cfg.resolution}px on {name} ({cfg.backend})"
        plot_curves(trainer.history, out / "training_curves.png", title)
    return metrics


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


def config_from_dict(d: dict) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint's meta."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config_from_dict: unknown settings {unknown}")
    d = dict(d)
    if d.get("classes") is not None:
        if not isinstance(d["classes"], list):
            raise ValueError(f"config_from_dict: classes must be a list, got {d['classes']!r}")
        d["classes"] = tuple(d["classes"])
    return TrainConfig(**d).validate()


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
    if backend is not None:
        if not B.compatible(cfg.backend, B.get(backend, "load_trained").name):
            raise ValueError(
                f"load_trained: {str(path)!r} was written by the {cfg.backend} backend; "
                f"it cannot be loaded on the {backend} backend"
            )
        cfg = dataclasses.replace(cfg, backend=backend)
    runner = make_runner(cfg, meta["num_classes"])
    runner.load_state_arrays(arrays)
    return runner, meta
