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
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import mobilenet_arch as A

from . import backends as B
from . import checkpoint as ckpt
from . import data as D

BACKENDS = B.NAMES


@dataclass
class TrainConfig:
    """Everything that defines a run (a resumed run must have the same)."""

    arch: str = "v2"
    width_mult: float = 0.5
    resolution: int = 32
    data: str = "digits"
    classes: tuple | None = None  # keep only these class indices (e.g. digits 0-4), relabelled
    backend: str = "numba"
    dtype: str = "float32"
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "sgd"  # "sgd" or "rmsprop"
    lr: float = 0.01  # at 0.05 and above the first epochs diverge (docs/05-training.md)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    exempt_bn_dw: bool = True  # no weight decay on BN and depthwise weights (V1 paper, 3.2)
    schedule: str = "cosine"  # "cosine" (with warm-up), "step", "exponential", "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    dropout: float = 0.2
    max_shift: int = 2  # augmentation: random shift in px (0: none)
    flip: bool | None = None  # None: flip when the dataset's labels allow it
    train_limit: int = 0  # use only the first N training images (quick runs); 0: all
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch only)

    def validate(self):
        fn = "TrainConfig"
        if self.arch not in A.ARCHS:
            raise ValueError(f"{fn}: arch must be one of {tuple(A.ARCHS)}, got {self.arch!r}")
        B.get(self.backend, fn)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"{fn}: dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"{fn}: optimizer must be 'sgd' or 'rmsprop', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "exponential", "constant"):
            raise ValueError(
                f"{fn}: schedule must be cosine, step, exponential or constant, got {self.schedule!r}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{fn}: {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"{fn}: batch_size must be >= 2 (batch norm in training), got {self.batch_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{fn}: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_smoothing <= 1:
            raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {self.label_smoothing}")
        if self.lr <= 0 or self.width_mult <= 0:
            raise ValueError(f"{fn}: lr and width_mult must be > 0, got {self.lr} and {self.width_mult}")
        if self.resolution < 32:
            raise ValueError(f"{fn}: resolution must be >= 32, got {self.resolution}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = None if self.classes is None else list(self.classes)
        d["data"] = str(self.data)
        return d


# --- runners --------------------------------------------------------------------------------


def _optimizer_kwargs(cfg):
    if cfg.optimizer == "sgd":
        return {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0}
    return {
        "lr": cfg.lr,
        "alpha": 0.9,
        "eps": 1.0,
        "momentum": cfg.momentum,
    }  # V2 paper: decay and momentum 0.9


class NumpyRunner:
    """The NumPy model on either backend, with a ``numpy_impl.optim`` optimiser."""

    suffix = ".npz"

    def __init__(self, model, cfg: TrainConfig):
        self.model, self.cfg = model, cfg
        self.make_optimizer()

    def make_optimizer(self):
        """(Re)build the optimiser over the trainable parameters (after freeze/replace_classifier)."""
        from numpy_impl import optim

        from .transfer import trainable_names

        keep = set(trainable_names(self.model))
        groups = optim.decay_groups(self.model, self.cfg.weight_decay, self.cfg.exempt_bn_dw)
        groups = [{**g, "params": {n: p for n, p in g["params"].items() if n in keep}} for g in groups]
        groups = [g for g in groups if g["params"]]
        cls = optim.SGD if self.cfg.optimizer == "sgd" else optim.RMSprop
        self.optimizer = cls(groups, **_optimizer_kwargs(self.cfg))

    def set_lr(self, lr):
        self.optimizer.set_lr(lr)

    def train_step(self, x, y, step_seed):
        from numpy_impl import functional as F

        m = self.model
        m.train()
        m.rng.bit_generator.state = np.random.PCG64(step_seed).state  # dropout masks of this step
        logits = m.forward(x)  # (N, K)
        loss, cache = F.softmax_cross_entropy(logits, y, self.cfg.label_smoothing)
        m.backward(F.softmax_cross_entropy_backward(1.0, cache).astype(m.dtype), input_grad=False)
        self.optimizer.step(m.grads)
        return loss, int((logits.argmax(1) == y).sum())

    def predict(self, x, batch_size=256):
        self.model.eval()
        out = np.concatenate(
            [self.model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )
        self.model.train()
        return out  # (N, K) logits

    def features(self, x, batch_size=256, every_stage=False):
        """Penultimate features (after global pooling), eval mode: (N, C_last). With
        ``every_stage``, a list: the globally pooled output of each ``features`` entry."""
        m = self.model
        m.eval()
        stages = m.stages()
        out = []
        for i in range(0, len(x), batch_size):
            h, pooled = self._prepare(x[i : i + batch_size]), []
            for stage in stages:
                h = stage.forward(h)
                if every_stage or stage is stages[-1]:
                    pooled.append(np.asarray(h).mean(axis=(2, 3)))  # (B, C_i)
            out.append(pooled)
        m.train()
        per_stage = [np.concatenate([o[j] for o in out]) for j in range(len(out[0]))]
        return per_stage if every_stage else per_stage[-1]

    def _prepare(self, x):
        if self.model.F.MEMORY_FORMAT == "channels_last":
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return x

    def state_arrays(self) -> dict:
        out = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"optim/{k}": v for k, v in self.optimizer.state_dict().items()})
        return out

    def load_state_arrays(self, arrays: dict):
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
        self.optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})

    def rng_state(self) -> dict:
        return self.model.rng.bit_generator.state


class TorchRunner:
    """The torch model with a ``torch.optim`` optimiser of the same settings."""

    suffix = ".pt"

    def __init__(self, model, cfg: TrainConfig):
        self.model, self.cfg = model, cfg
        self.make_optimizer()

    def make_optimizer(self):
        import torch

        from .transfer import trainable_names

        keep = set(trainable_names(self.model))
        decay, exempt = [], []
        for mname, m in self.model.named_modules():
            is_exempt = isinstance(m, torch.nn.BatchNorm2d) or (
                isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            )
            for pname, p in m.named_parameters(recurse=False):
                name = f"{mname}.{pname}" if mname else pname
                if name in keep:
                    (exempt if is_exempt and self.cfg.exempt_bn_dw else decay).append((name, p))
        self.names = [n for n, _ in decay + exempt]
        groups = [{"params": [p for _, p in decay], "weight_decay": self.cfg.weight_decay}]
        if exempt:
            groups.append({"params": [p for _, p in exempt], "weight_decay": 0.0})
        cls = torch.optim.SGD if self.cfg.optimizer == "sgd" else torch.optim.RMSprop
        self.optimizer = cls(groups, **_optimizer_kwargs(self.cfg))

    def set_lr(self, lr):
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def train_step(self, x, y, step_seed):
        import torch
        import torch.nn.functional as TF

        torch.manual_seed(step_seed)  # dropout masks of this step
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        yt = torch.from_numpy(y)
        logits = self.model(torch.from_numpy(x))
        loss = TF.cross_entropy(logits, yt, label_smoothing=self.cfg.label_smoothing)
        loss.backward()
        self.optimizer.step()
        return loss.item(), int((logits.argmax(1) == yt).sum())

    def predict(self, x, batch_size=256):
        import torch

        self.model.eval()
        with torch.no_grad():
            out = [
                self.model(torch.from_numpy(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
        self.model.train()
        return np.concatenate(out)

    def features(self, x, batch_size=256, every_stage=False):
        import torch

        m = self.model
        m.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                h, pooled = torch.from_numpy(x[i : i + batch_size]), []
                for j, stage in enumerate(m.features):
                    h = stage(h)
                    if every_stage or j == len(m.features) - 1:
                        pooled.append(h.mean(dim=(2, 3)).numpy())  # (B, C_i)
                out.append(pooled)
        m.train()
        per_stage = [np.concatenate([o[j] for o in out]) for j in range(len(out[0]))]
        return per_stage if every_stage else per_stage[-1]

    def state_arrays(self) -> dict:
        out = {f"model/{k}": v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}
        params = dict(self.model.named_parameters())
        for name in self.names:
            for k, v in self.optimizer.state.get(params[name], {}).items():
                out[f"optim/{name}/{k}"] = v.detach().cpu().numpy().copy()
        return out

    def load_state_arrays(self, arrays: dict):
        import torch

        self.model.load_state_dict({k[6:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                    if k.startswith("model/")})  # fmt: skip
        params = dict(self.model.named_parameters())
        self.optimizer.state.clear()
        for key, v in arrays.items():
            if key.startswith("optim/"):
                name, _, buf = key[6:].rpartition("/")
                if name not in params:
                    raise ValueError(f"load_state_arrays: optimiser state for unknown parameter {name!r}")
                self.optimizer.state[params[name]][buf] = torch.from_numpy(np.array(v))

    def rng_state(self) -> dict:
        return {}


def build_model(cfg: TrainConfig, num_classes: int):
    """The run's model. Every backend starts from the NumPy model's seeded initial weights,
    so runs with the same seed start identical whatever the backend."""
    import numpy_impl

    dtype = np.dtype(cfg.dtype)
    make = numpy_impl.mobilenet_v1 if cfg.arch == "v1" else numpy_impl.mobilenet_v2
    backend = B.get(cfg.backend)
    ops = backend.ops or "numpy"  # the torch model starts from the NumPy model's weights
    model = make(cfg.width_mult, num_classes, dropout=cfg.dropout, dtype=dtype, backend=ops, seed=cfg.seed)
    if backend.model == "numpy_impl":
        return model
    import torch

    import torch_impl

    tmake = torch_impl.mobilenet_v1 if cfg.arch == "v1" else torch_impl.mobilenet_v2
    tmodel = tmake(cfg.width_mult, num_classes, dropout=cfg.dropout).to(
        torch.float64 if dtype == np.float64 else torch.float32
    )
    tmodel.load_state_dict(torch_impl.state_dict_to_torch(model.state_dict()))
    return tmodel


def make_runner(cfg: TrainConfig, num_classes: int, model=None):
    cfg.validate()
    model = build_model(cfg, num_classes) if model is None else model
    return {"numpy_impl": NumpyRunner, "torch_impl": TorchRunner}[B.get(cfg.backend).model](model, cfg)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    from numpy_impl import optim

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
    from numpy_impl import functional as F

    logits = runner.predict(x, batch_size).astype(np.float64)
    loss, _ = F.softmax_cross_entropy(logits, ds.y)  # plain cross-entropy, no smoothing
    pred = logits.argmax(1)
    return {"loss": float(loss), "accuracy": float((pred == ds.y).mean()), "predictions": pred}


class Trainer:
    """``Trainer(cfg, runner, train, test, out).fit()``: epochs of seeded batches, evaluation
    after each epoch, checkpoints, ``metrics.json`` and a curve plot in ``out``."""

    def __init__(self, cfg: TrainConfig, runner, train: D.Dataset, test: D.Dataset, out=None,
                 mean=None, std=None, progress=True, extra_meta=None, eval_every=1):  # fmt: skip
        self.cfg, self.runner, self.train, self.test = cfg.validate(), runner, train, test
        if len(train) < cfg.batch_size:
            raise ValueError(f"Trainer: the training set ({len(train)} images) is smaller than one batch "
                             f"(batch_size {cfg.batch_size})")  # fmt: skip
        self.out = None if out is None else Path(out)
        if mean is None:
            mean, std = D.channel_stats(train.x)
        self.mean, self.std = np.asarray(mean, float).tolist(), np.asarray(std, float).tolist()
        self.progress, self.extra_meta = progress, extra_meta or {}
        self.eval_every = eval_every  # evaluate on the test set every N epochs (and always after the last)
        self.steps_per_epoch = len(D.batch_indices(len(train), cfg.batch_size, cfg.seed, 0))
        self.schedule = make_schedule(cfg, self.steps_per_epoch)
        self.flip = train.flips_preserve_label if cfg.flip is None else cfg.flip
        self.epoch, self.step, self.history, self.seconds = 0, 0, [], 0.0
        self.step_losses = []  # this process's per-step training losses (for plots; not checkpointed)
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    # --- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / f"checkpoint{self.runner.suffix}"

    def meta(self) -> dict:
        return {
            "format": "mobilenet-from-scratch/checkpoint/1",
            "config": self.cfg.to_dict(),
            "num_classes": len(self.train.classes),
            "classes": list(self.train.classes),
            "mean": self.mean,
            "std": self.std,
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
        mine, theirs = self.cfg.to_dict(), meta.get("config", {})
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff[:4])
            raise ValueError(
                f"resume: the checkpoint in {str(self.out)!r} is of another configuration ({detail})"
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
            self.runner.model.rng.bit_generator.state = meta["rng_state"]
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

                bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch", leave=True, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
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
        self.partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.save()
        if self.out is not None:
            (self.out / "metrics.json").write_text(json.dumps(self.metrics(), indent=2) + "\n")

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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_split(cfg: TrainConfig) -> tuple[D.Dataset, D.Dataset]:
    train, test = D.load_data(cfg.data, cfg.resolution, seed=cfg.seed)
    if cfg.classes is not None:
        train, test = train.select_classes(cfg.classes), test.select_classes(cfg.classes)
    if cfg.train_limit:
        train = train.subset(np.arange(min(cfg.train_limit, len(train))))
    return train, test


def run(cfg: TrainConfig, out, resume=False, progress=True) -> dict:
    """Load the data, build the model, train (or resume), write the metrics and the plot."""
    cfg.validate()
    out = Path(out)
    suffix = B.get(cfg.backend).checkpoint
    others = [out / f"checkpoint{b.checkpoint}" for b in B.BACKENDS.values() if b.checkpoint != suffix]
    if not resume and (out / f"checkpoint{suffix}").exists():
        raise FileExistsError(
            f"train: {str(out)!r} already holds a checkpoint: "
            "pass --resume to continue it, or choose another --out"
        )
    other = next((o for o in others if o.exists()), None)
    if resume and not (out / f"checkpoint{suffix}").exists() and other is not None:
        theirs = ckpt.load(other)[1].get("config", {}).get("backend")
        raise ValueError(f"resume: {str(out)!r} holds a checkpoint of the {theirs} backend, "
                         f"this run's backend is {cfg.backend}")  # fmt: skip
    train, test = load_split(cfg)
    runner = make_runner(cfg, len(train.classes))
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, runner, train, test, out, progress=progress)
    if resume:
        trainer.resume()
    metrics = trainer.fit()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if trainer.history:
        name = Path(str(cfg.data)).name
        title = f"MobileNet{cfg.arch.upper()}-{cfg.width_mult:g} {cfg.resolution}px on {name} ({cfg.backend})"
        plot_curves(trainer.history, out / "training_curves.png", title)
    return metrics


def config_from_dict(d: dict) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint's meta."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config_from_dict: unknown settings {unknown}")
    d = dict(d)
    if d.get("classes") is not None:
        d["classes"] = tuple(d["classes"])
    return TrainConfig(**d).validate()


def load_trained(path, backend=None, arch=None, width_mult=None):
    """A trained model from a checkpoint: ``(runner, meta)``.

    ``arch`` / ``width_mult``, when given, must be the checkpoint's (a clear error otherwise);
    ``backend`` picks numpy or numba for a ``.npz`` checkpoint (default: the one it was trained on).
    """
    arrays, meta = ckpt.load(path)
    if "config" not in meta or "num_classes" not in meta:
        raise ValueError(f"load_trained: {str(path)!r} is not a training checkpoint (no config in its meta)")
    cfg = config_from_dict(meta["config"])
    got = f"MobileNet{cfg.arch.upper()} width {cfg.width_mult:g}"
    if arch is not None and arch != cfg.arch:
        raise ValueError(f"load_trained: {str(path)!r} holds a {got}, expected arch {arch}")
    if width_mult is not None and float(width_mult) != cfg.width_mult:
        raise ValueError(f"load_trained: {str(path)!r} holds a {got}, expected width {width_mult:g}")
    if backend is not None:
        if not B.compatible(cfg.backend, B.get(backend, "load_trained").name):
            raise ValueError(f"load_trained: {str(path)!r} was written by the {cfg.backend} backend; "
                             f"it cannot be loaded on the {backend} backend")  # fmt: skip
        cfg = dataclasses.replace(cfg, backend=backend)
    runner = make_runner(cfg, meta["num_classes"])
    runner.load_state_arrays(arrays)
    return runner, meta
