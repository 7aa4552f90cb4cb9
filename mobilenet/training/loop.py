"""The one training loop: classification, pretraining, ArcFace and detection all run through it.

The loop owns what every run shares. Everything random is a function of ``(seed, epoch,
step)``: the batch order of an epoch, the augmentation of a batch and the dropout masks of a
step, so a run killed at any moment resumes from its last checkpoint and, on the numpy backend,
ends with exactly the weights of an uninterrupted run. It also owns the learning-rate schedule's
clock, the progress bar, checkpoints (written atomically after each epoch and every
``checkpoint_every`` steps), resume (refused when the configuration or the data differ), the
history, ``metrics.json`` and the lock on the run's folder.

What differs between kinds of run comes from two objects:

- a :class:`Task` (``mobilenet.training.classify.Classification``,
  ``mobilenet.detection.train.Detection``): how a batch is assembled, evaluation, the history
  row, the metrics and the checkpoint's own fields;
- a :class:`Runner` (one per model kind, named by ``mobilenet.backends``): the model and its
  optimiser. ``train_step(batch, seed)`` returns per-example means (the loss, its terms) and,
  under the task's ``counts``, totals (correct predictions); the loop adds them up.

A quantisation-aware fine-tune is a runner whose ``train_step`` quantises in its forward; a
data-parallel step is a runner whose ``train_step`` sums its gradients across processes before
the optimiser's step. Neither needs another loop.

Data-parallel (:mod:`mobilenet.training.distributed`): every process runs this loop over the
same global batches, built the same way from the same seeds; the runner trains on the process's
own rows of each and returns the global batch's loss and counts. Rank 0 alone evaluates,
shows progress and writes the checkpoints and metrics; a resume reads the checkpoint on rank 0
and hands it to the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mobilenet import backends as B
from mobilenet import checkpoint as ckpt
from mobilenet import data as D

from . import distributed
from .meta import describe_data, same_data


@runtime_checkable
class Runner(Protocol):
    """A model and its optimiser, as the loop drives them."""

    cfg: Any
    model: Any

    def set_lr(self, lr: float) -> None: ...

    def train_step(self, batch: tuple, seed: int) -> dict: ...

    def predict(self, x: np.ndarray, batch_size: int): ...

    def state_arrays(self) -> dict: ...

    def load_state_arrays(self, arrays: dict) -> None: ...

    def rng_state(self) -> dict: ...

    def set_rng_state(self, state: dict) -> None: ...

    def distribute(self, world: distributed.World) -> None: ...


class Task(Protocol):
    """What a kind of run supplies to the loop."""

    command: str  # in messages: "train", "detect train"
    format: str  # the checkpoint's "format" field
    partial_keys: tuple  # the running sums of an epoch in progress
    counts: tuple  # keys of a step's output that are totals, not per-example means
    times_evaluation: bool  # whether a run's "seconds" include its evaluations
    eval_every: int  # evaluate every N epochs (and always after the last)
    cfg: Any
    train: Any
    test: Any
    mean: list
    std: list

    def schedule(self, steps_per_epoch: int) -> Callable[[int], float]: ...

    def fingerprint(self) -> dict: ...

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple: ...

    def evaluate(self, runner: Runner) -> dict: ...

    def postfix(self, partial: dict) -> dict: ...

    def row(self, partial: dict, ev: dict | None) -> tuple[dict, dict]: ...

    def metrics(self, trainer: Trainer) -> dict: ...

    def meta(self) -> dict: ...

    def check_meta(self, fn: str, path, meta: dict) -> dict: ...

    def restore(self, meta: dict) -> None: ...


def step_seed(seed: int, epoch: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (epoch, step) and purpose: 0 augmentation, 1 dropout."""
    return int(np.random.SeedSequence([seed, epoch, step, stream]).generate_state(2, np.uint64)[0] >> 1)


class Trainer:
    """``Trainer(task, runner, out).fit()``: epochs of seeded batches, evaluation, checkpoints,
    ``metrics.json`` in ``out`` (when given)."""

    def __init__(self, task: Task, runner: Runner, out=None, progress=True, eval_every=None, world=None):
        self.task, self.runner, self.cfg = task, runner, task.cfg.validate()
        self.world = distributed.SINGLE if world is None else world
        if self.world.size > 1:
            runner.distribute(self.world)  # the processes' rows, and rank 0's weights everywhere
        self._spent = dict(self.world.spent)  # collectives counted from the first step
        if len(task.train) < self.cfg.batch_size:
            raise ValueError(
                f"{task.command}: the training set ({len(task.train)} images) is smaller than one batch "
                f"(batch_size {self.cfg.batch_size})"
            )
        self.out = None if out is None else Path(out)
        self.progress = progress and self.world.main
        self.eval_every = task.eval_every if eval_every is None else eval_every
        self.steps_per_epoch = len(D.batch_indices(len(task.train), self.cfg.batch_size, self.cfg.seed, 0))
        self.schedule = task.schedule(self.steps_per_epoch)
        self.data_fingerprint = task.fingerprint()
        self.epoch, self.step, self.history, self.seconds = 0, 0, [], 0.0
        self.step_losses = []  # this process's per-step training losses (for plots; not checkpointed)
        self.partial = self._fresh_partial()

    def _fresh_partial(self) -> dict:
        return {k: 0 if k in self.task.counts or k == "seen" else 0.0 for k in self.task.partial_keys}

    # --- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / f"checkpoint{B.get(self.cfg.backend).checkpoint}"

    def meta(self) -> dict:
        t = self.task
        return {
            "format": t.format,
            "config": self.cfg.to_dict(),
            "classes": list(t.train.classes),
            "mean": t.mean,
            "std": t.std,
            "data": self.data_fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial,
            "history": self.history,
            "seconds": self.seconds,
            "rng_state": self.runner.rng_state(),
            **t.meta(),
        }

    def save(self):
        if self.out is not None and self.world.main:
            ckpt.save(self.checkpoint_path, self.runner.state_arrays(), self.meta())

    def _read(self, path):
        """The checkpoint's ``(arrays, meta)``: read by rank 0, handed to the other ranks."""
        got = None
        if self.world.main:
            got = ckpt.load(path) if path is not None and path.is_file() else None
        got = self.world.broadcast(got)
        if got is None:
            raise FileNotFoundError(f"resume: no checkpoint to resume from at {str(path)!r}")
        return got

    def resume(self):
        """Continue from ``out``'s checkpoint; its configuration and data must be this run's."""
        path = self.checkpoint_path
        arrays, meta = self._read(path)
        meta = self.task.check_meta("resume", path, meta)
        mine = self.cfg.to_dict()
        theirs = {**type(self.cfg)().to_dict(), **meta["config"]}  # settings added since: their defaults
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if "data" in diff and same_data(mine["data"], theirs.get("data")):
            diff.remove("data")  # the same folder, spelled another way
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff[:4])
            hint = f"; resume with --parts {theirs['parts']}" if "parts" in diff else ""
            raise ValueError(
                f"resume: the checkpoint in {str(self.out)!r} is of another configuration ({detail}){hint}"
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
        self.seconds, self.partial = meta["seconds"], meta["partial"]
        self.task.mean, self.task.std = meta["mean"], meta["std"]
        self.task.restore(meta)
        if meta.get("rng_state"):
            try:
                self.runner.set_rng_state(meta["rng_state"])
            except (TypeError, ValueError, KeyError):
                raise ValueError(f"resume: {str(path)!r} holds a broken random generator state") from None
        return self

    # --- training ----------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            batches = D.batch_indices(len(self.task.train), cfg.batch_size, cfg.seed, epoch)
            start = self.step - epoch * self.steps_per_epoch  # > 0 when resuming mid-epoch
            bar = self._bar(len(batches), start) if self.progress else None
            for i in range(start, len(batches)):
                self._step(epoch, i, batches[i], bar)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and i + 1 < len(batches):
                    self.save()
            self._end_epoch(bar)
        return self.task.metrics(self)

    def _bar(self, total: int, start: int):
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=start,
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            leave=True,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def _step(self, epoch: int, i: int, idx: np.ndarray, bar) -> None:
        t0 = time.perf_counter()
        batch = self.task.batch(idx, np.random.default_rng(step_seed(self.cfg.seed, epoch, i, 0)))
        self.runner.set_lr(self.schedule(self.step))
        out = self.runner.train_step(batch, step_seed(self.cfg.seed, epoch, i, 1))
        if not math.isfinite(out["loss"]):
            raise FloatingPointError(
                f"training diverged: loss {out['loss']} at epoch {epoch + 1} step {i + 1}; "
                f"lower --lr (now {self.cfg.lr})"
            )
        self.step_losses.append(float(out["loss"]))
        n, p = len(batch[0]), self.partial
        for key, v in out.items():
            p[key] += v if key in self.task.counts else v * n
        p["seen"] += n
        p["seconds"] += time.perf_counter() - t0
        self.step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(**self.task.postfix(p))

    def _collectives(self) -> dict:
        """In a data-parallel run, this process's time in collectives since the last call."""
        if self.world.size == 1:
            return {}
        spent, before = dict(self.world.spent), self._spent
        self._spent = spent
        return {
            "collective_seconds": spent["seconds"] - before["seconds"],
            "collective_calls": spent["calls"] - before["calls"],
        }

    def _end_epoch(self, bar):
        p = self.partial
        ev = None
        last = self.epoch + 1 == self.cfg.epochs
        if self.world.main and (last or (self.epoch + 1) % self.eval_every == 0):
            t0 = time.perf_counter()
            ev = {**self.task.evaluate(self.runner), "seconds": time.perf_counter() - t0}
        self.seconds += p["seconds"] + (
            ev["seconds"] if ev is not None and self.task.times_evaluation else 0.0
        )
        row, shown = self.task.row(p, ev)
        self.history.append(
            {
                "epoch": self.epoch + 1,
                **row,
                "lr": float(self.schedule(self.step - 1)),
                "seconds": p["seconds"],
                "images_per_second": p["seen"] / max(p["seconds"], 1e-9),
                **self._collectives(),
            }
        )
        if bar is not None:
            bar.set_postfix(**shown)
            bar.close()
        self.epoch += 1
        self.partial = self._fresh_partial()
        self.save()
        if self.out is not None and self.world.main:
            ckpt.write_text(self.out / "metrics.json", json.dumps(self.task.metrics(self), indent=2) + "\n")


# --- a run, start to end ---------------------------------------------------------------------


def run(kind, cfg, out, resume=False, progress=True, start=None, world=None) -> dict:
    """Check the folder, load the data (``kind.load(cfg, progress)``: the task), build the runner,
    train (or resume), write the metrics and the task's plot. The folder ``out`` is locked for
    the run: a second run into it is refused at once. ``start(runner)``, when given, runs on a
    fresh (not resumed) run before the first step. ``world``: this process's place in a
    data-parallel job (rank 0 holds the lock and writes; the others only train)."""
    cfg.validate()
    world = distributed.SINGLE if world is None else world
    check_world(cfg, world)
    out = Path(out)
    if resume and world.main and not out.is_dir():
        raise FileNotFoundError(
            f"resume: {str(out)!r} does not exist, so there is nothing to resume; drop --resume to start"
        )
    with ckpt.exclusive(out) if world.main else contextlib.nullcontext(out):
        if world.main:
            check_out_folder(out, cfg.backend, resume, kind.command)
        task = kind.load(cfg, progress and world.main)
        trainer = Trainer(task, task.make_runner(), out, progress=progress, world=world)
        if resume:
            trainer.resume()
        elif start is not None:
            start(trainer.runner)
            if world.size > 1:
                trainer.runner.distribute(world)  # rank 0's start, everywhere
        metrics = trainer.fit()
        if world.main:
            ckpt.write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
            if trainer.history:
                task.plot(trainer.history, out)
        return metrics


def check_world(cfg, world) -> None:
    """Refuse a job whose processes cannot split the global batch (before any work)."""
    parts = getattr(cfg, "parts", 1)
    if world.size > cfg.batch_size:
        raise ValueError(
            f"{world.size} processes for a global batch of {cfg.batch_size} images: each needs at least "
            f"one; use at most {cfg.batch_size} processes or a larger --batch-size"
        )
    if B.get(cfg.backend).ops is not None and parts % world.size:
        raise ValueError(
            f"{world.size} processes cannot share the {parts} parts of a batch evenly (--parts {parts}): "
            f"use a process count that divides {parts}, or --parts a multiple of {world.size}"
        )


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


# --- what a checkpoint says about its run ----------------------------------------------------


def on_backend(cfg, backend: str | None, path):
    """``cfg`` of the checkpoint at ``path``, to run on ``backend`` (None: the one it was trained
    on); refused when that backend runs another model (numpy and numba share the NumPy one)."""
    if backend is None:
        return cfg
    if not B.compatible(cfg.backend, B.get(backend, "load_trained").name):
        raise ValueError(
            f"load_trained: {str(path)!r} was written by the {cfg.backend} backend; "
            f"it cannot be loaded on the {backend} backend"
        )
    return dataclasses.replace(cfg, backend=backend)


def plot_curves(history: list, path, title: str, panels: list) -> Path:
    """One PNG of the history: ``panels`` is ``[(title, ylabel, yscale, ylim, [(key, label, marker)])]``;
    epochs where a key is None (not evaluated) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(9, 4.0))
    for ax, (name, ylabel, yscale, ylim, lines) in zip(axes, panels):
        for key, label, marker in lines:
            done = [h for h in history if h.get(key) is not None]
            ax.plot([h["epoch"] for h in done], [h[key] for h in done], marker, label=label)
        ax.set(xlabel="epoch", ylabel=ylabel, yscale=yscale, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        if yscale == "log":  # ticks at 1, 2, 5 per decade as plain numbers (0.5, not 5x10^-1)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        # below the axes, off the curves
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(lines))
    fig.suptitle(title)
    fig.tight_layout()
    ckpt.save_figure(fig, path)
    plt.close(fig)
    return Path(path)
