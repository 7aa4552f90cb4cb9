"""The runner of the NumPy model (backends numpy and numba): a training step, predictions,
features and checkpoint arrays, with a ``numpy_impl.optim`` optimiser."""

from __future__ import annotations

import numpy as np

import numpy_impl
from mobilenet import backends as B
from numpy_impl import functional as F
from numpy_impl import optim
from numpy_impl.nn import by_part
from numpy_impl.parts import Parts

from . import distributed
from .config import TrainConfig, optimizer_kwargs


def build_model(cfg: TrainConfig, num_classes: int):
    """The NumPy model, seeded: every backend starts from these initial weights."""
    ops = B.get(cfg.backend).ops or "numpy"  # the torch runner starts from the NumPy model's weights too
    return numpy_impl.mobilenet(
        cfg.arch,
        dtype=np.dtype(cfg.dtype),
        backend=ops,
        seed=cfg.seed,
        width_mult=cfg.width_mult,
        num_classes=cfg.embed_dim if cfg.loss == "arcface" else num_classes,  # arcface: an embedding
        dropout=cfg.dropout,
    )


HEAD = "arcface.weight"  # the class centres of loss "arcface", beside the model's parameters


class Runner:
    """The NumPy model on either backend, with a ``numpy_impl.optim`` optimiser. With loss
    ``"arcface"`` the model's output is an embedding and the runner holds one learned centre
    per class (``self.head``, (num_classes, embed_dim)), trained with it."""

    def __init__(self, model, cfg: TrainConfig, num_classes=None):
        self.model, self.cfg = model, cfg
        self.head = None
        if cfg.loss == "arcface":
            if num_classes is None:
                raise ValueError("Runner: loss 'arcface' needs num_classes (the number of class centres)")
            rng = np.random.default_rng(cfg.seed + 7919)  # apart from the model's own stream
            self.head = (rng.standard_normal((num_classes, cfg.embed_dim)) * 0.01).astype(model.dtype)
        self.world = distributed.SINGLE
        self.make_optimizer()

    def make_optimizer(self):
        """(Re)build the optimiser over the trainable parameters (after freeze/replace_classifier)."""
        keep = set(self.model.trainable_names())
        groups = optim.decay_groups(self.model, self.cfg.weight_decay, self.cfg.exempt_bn_dw)
        groups = [{**g, "params": {n: p for n, p in g["params"].items() if n in keep}} for g in groups]
        if self.head is not None:  # the centres decay with the weights
            groups[0]["params"][HEAD] = self.head
        groups = [g for g in groups if g["params"]]
        cls = optim.SGD if self.cfg.optimizer == "sgd" else optim.RMSprop
        self.optimizer = cls(groups, **optimizer_kwargs(self.cfg))

    def set_lr(self, lr):
        self.optimizer.set_lr(lr)

    def distribute(self, world):
        """Train as one process of ``world``: on its rows of each batch, from rank 0's state."""
        self.world = world
        distribute_state(self, world)

    def train_step(self, batch, seed) -> dict:
        """One optimiser step on ``batch = (x, y)``: ``{"loss": mean loss, "correct": count}``.
        With ``cfg.parts`` > 1 or several processes, ``batch`` is the global batch: this process
        trains on its rows, and the loss and count are the global batch's."""
        x, y = batch
        m = self.model
        m.train()
        m.rng.bit_generator.state = np.random.PCG64(seed).state  # dropout masks of this step
        parts = parts_of(self.cfg, self.world, len(x))
        m.set_parts(parts)
        if parts is not None:
            return self._parted_step(parts, x, y)
        out = m.forward(x)  # (N, K) logits, or (N, D) embeddings
        loss, dout, dhead, correct = self._loss(out, y)
        m.backward(dout, input_grad=False)
        self.optimizer.step(m.grads if dhead is None else {**m.grads, HEAD: dhead})
        return {"loss": loss, "correct": correct}

    def _loss(self, out, y, total=None):
        """``(loss, dout, dhead, correct)`` of the model's output ``out`` for labels ``y``: softmax
        cross-entropy, or ArcFace's (``dhead`` its centres' gradient, else None). ``total``: the
        count the summed loss is divided by (a part's share of the whole batch's mean)."""
        cfg, dtype = self.cfg, self.model.dtype
        if self.head is None:
            loss, cache = F.softmax_cross_entropy(out, y, cfg.label_smoothing, total=total)
            dout = F.softmax_cross_entropy_backward(1.0, cache).astype(dtype)
            return loss, dout, None, int((out.argmax(1) == y).sum())
        logits, arc = F.arcface_logits(out, self.head, y, cfg.arcface_scale, cfg.arcface_margin)
        loss, cache = F.softmax_cross_entropy(logits, y, cfg.label_smoothing, total=total)
        dout, dhead = F.arcface_logits_backward(
            F.softmax_cross_entropy_backward(1.0, cache).astype(dtype), arc
        )
        correct = int((self._cosines(out).argmax(1) == y).sum())  # by the centres of this forward
        return loss, dout, dhead, correct

    def _parted_step(self, parts, x, y) -> dict:
        m = self.model
        x, y = parts.local(x), parts.local(y)
        out = m.forward(x)  # (n, K) logits, or (n, D) embeddings: this process's rows

        def loss_of_part(o, t):  # -> dout (rows), the head's gradient (or None), [loss, correct]
            loss, dout, dhead, correct = self._loss(o, t, total=parts.batch)
            return dout, dhead, np.array([loss, correct], np.float64)

        dout, dhead, stats = by_part(parts, loss_of_part, out, y)
        m.backward(dout, input_grad=False)
        self.optimizer.step(parts.total_grads(m.grads if dhead is None else {**m.grads, HEAD: dhead}))
        loss, correct = parts.total(stats)
        return {"loss": float(loss), "correct": int(correct)}

    def _cosines(self, emb):
        """Each embedding's cosine with each class centre, times the scale: logits without margin."""
        e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        c = self.head / np.maximum(np.linalg.norm(self.head, axis=1, keepdims=True), 1e-12)
        return self.cfg.arcface_scale * (e @ c.T)

    def predict(self, x, batch_size=256):
        out = self.embed(x, batch_size)
        return out if self.head is None else self._cosines(out)  # (N, K) logits

    def embed(self, x, batch_size=256):
        """The model's output in eval mode: the logits, or with loss "arcface" the embeddings."""
        self.model.eval()
        out = np.concatenate(
            [self.model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )
        self.model.train()
        return out

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
        return self.model.in_memory_format(x)

    def state_arrays(self) -> dict:
        out = state_arrays(self.model, self.optimizer)
        if self.head is not None:
            out[f"model/{HEAD}"] = self.head
        return out

    def load_state_arrays(self, arrays: dict):
        if self.head is not None:
            key = f"model/{HEAD}"
            if key not in arrays or arrays[key].shape != self.head.shape:
                got = arrays[key].shape if key in arrays else "none"
                raise ValueError(f"load_state_arrays: {key} must have shape {self.head.shape}, got {got}")
            self.head[...] = arrays[key]
            arrays = {k: v for k, v in arrays.items() if k != key}
        load_state_arrays(self.model, self.optimizer, arrays)

    def load_backbone(self, state: dict):
        """Some of the model's arrays (e.g. every ``features.*``) from ``state``, in place."""
        self.model.load_state_dict(state, strict=False)

    def rng_state(self) -> dict:
        return self.model.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.model.rng.bit_generator.state = state


def state_arrays(model, optimizer) -> dict:
    """A NumPy model's and its optimiser's arrays, as checkpoints store them (``model/``, ``optim/``)."""
    out = {f"model/{k}": v for k, v in model.state_dict().items()}
    out.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    return out


def load_state_arrays(model, optimizer, arrays: dict):
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})


def parts_of(cfg, world, batch: int) -> Parts | None:
    """How a step's global batch of ``batch`` rows is split (None: not at all, one process and one part)."""
    if cfg.parts == 1 and world.size == 1:
        return None
    return Parts(batch, cfg.parts, world.rank, world.size, world.gather)


def distribute_state(runner, world) -> None:
    """Every array of ``runner``'s state set to rank 0's (the processes start alike)."""
    if world.size > 1:
        arrays = world.broadcast(runner.state_arrays() if world.main else None)
        runner.load_state_arrays(arrays)
