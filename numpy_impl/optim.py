"""Optimisers and learning-rate schedules for the NumPy models, with ``torch.optim``'s exact
semantics (same update order, same first-step rules), so a NumPy run and a torch run from
the same weights and batches stay together step for step.

An optimiser holds *live references* to the parameter arrays (``model.params``) and
updates them in place from a dict of gradients (``model.grads``) of the same names.
A parameter without a gradient (frozen) is skipped, as torch skips ``p.grad is None``.

Equations (g: gradient, p: parameter, lambda: weight decay, all elementwise)::

    SGD (torch.optim.SGD)
        g <- -g                                  maximize only (both optimisers)
        g <- g + lambda p
        b <- g                                   first step (the buffer starts as a copy of g)
        b <- mu b + (1 - dampening) g            later steps
        g <- g + mu b   (nesterov)   or   g <- b
        p <- p - lr g

    RMSprop (torch.optim.RMSprop; the MobileNet papers' optimiser)
        g <- g + lambda p
        v <- alpha v + (1 - alpha) g^2
        m <- alpha m + (1 - alpha) g             centered only
        d <- sqrt(v - m^2) + eps   (centered)  or  sqrt(v) + eps
        b <- mu b + g / d ;  p <- p - lr b       momentum mu > 0
        p <- p - lr g / d                        otherwise

Note torch's eps sits outside the square root; TensorFlow's RMSProp (the papers') puts it
inside, which matters only while v is tiny.
"""

from __future__ import annotations

import math

import numpy as np

from .functional._checks import check_int, check_number


def _check_params(fn, params):
    """``params`` -> list of groups ``[{"params": {name: array}, **options}]``."""
    if isinstance(params, dict):
        params = [{"params": params}]
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(
            f"{fn}: params must be a dict name -> array or a non-empty list of groups, got "
            f"{type(params).__name__}"
        )
    groups, seen = [], set()
    for i, g in enumerate(params):
        if not isinstance(g, dict) or not isinstance(g.get("params"), dict):
            raise TypeError(f"{fn}: group {i} must be a dict with a 'params' dict, got {type(g).__name__}")
        for name, a in g["params"].items():
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise TypeError(
                    f"{fn}: parameter {name!r} must be a float32/float64 numpy array, "
                    f"got {getattr(a, 'dtype', type(a).__name__)}"
                )
            if name in seen:
                raise ValueError(f"{fn}: parameter {name!r} appears in more than one group")
            seen.add(name)
        groups.append(dict(g))
    return groups


class Optimizer:
    """Parameter groups, per-parameter state, ``step(grads)`` and a ``state_dict`` of arrays."""

    defaults: dict = {}
    _bounds: dict = {}

    def __init__(self, params, **defaults):
        fn = type(self).__name__
        self.param_groups = _check_params(fn, params)
        for g in self.param_groups:
            for key, value in defaults.items():
                g.setdefault(key, value)
            for key, (lo, hi) in self._bounds.items():
                g[key] = check_number(fn, key, g[key], lo, hi)
        self._validate_groups()
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    def _validate_groups(self):
        fn = type(self).__name__
        for g in self.param_groups:
            for key in ("nesterov", "centered", "maximize"):
                if key in g and not isinstance(g[key], (bool, np.bool_)):
                    raise TypeError(f"{fn}: {key} must be a bool, got {type(g[key]).__name__}")

    def set_lr(self, lr):
        """Set every group's learning rate (a group's ``lr_scale``, default 1, multiplies it)."""
        lr = check_number(type(self).__name__, "lr", lr, 0.0, None)
        for g in self.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self, grads: dict):
        if not isinstance(grads, dict):
            raise TypeError(
                f"{type(self).__name__}.step: grads must be a dict name -> array, got {type(grads).__name__}"
            )
        for g in self.param_groups:
            for name, p in g["params"].items():
                grad = grads.get(name)
                if grad is None:
                    continue
                if grad.shape != p.shape:
                    raise ValueError(
                        f"{type(self).__name__}.step: gradient {name!r} must have shape "
                        f"{p.shape}, got {grad.shape}"
                    )
                self._update(name, p, grad.astype(p.dtype, copy=False), g, self.state.setdefault(name, {}))
        self.steps += 1

    def state_dict(self) -> dict:
        """Flat dict of arrays (``'<param>/<buffer>'`` and ``'steps'``), for ``np.savez``."""
        out = {f"{name}/{k}": v.copy() for name, s in self.state.items() for k, v in s.items()}
        out["steps"] = np.asarray(self.steps, np.int64)
        return out

    def load_state_dict(self, d: dict):
        fn = f"{type(self).__name__}.load_state_dict"
        params = {n: p for g in self.param_groups for n, p in g["params"].items()}
        state = {}
        for key, v in d.items():
            if key == "steps":
                continue
            name, _, buf = key.rpartition("/")
            if name not in params:
                raise ValueError(f"{fn}: state for unknown parameter {name!r}")
            if np.shape(v) != params[name].shape:
                raise ValueError(f"{fn}: {key} must have shape {params[name].shape}, got {np.shape(v)}")
            state.setdefault(name, {})[buf] = np.array(v, dtype=params[name].dtype)
        self.state, self.steps = state, int(d.get("steps", 0))
        return self


class SGD(Optimizer):
    """``torch.optim.SGD``: momentum, dampening, nesterov, L2 weight decay, ``maximize``; torch's
    defaults (``lr=0.001``)."""

    _bounds = {
        "lr": (0.0, None),
        "momentum": (0.0, None),
        "dampening": (0.0, 1.0),
        "weight_decay": (0.0, None),
    }

    def __init__(
        self,
        params,
        lr=0.001,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        *,
        maximize=False,
    ):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )

    def _validate_groups(self):
        super()._validate_groups()
        for g in self.param_groups:
            if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
                raise ValueError(
                    "SGD: nesterov needs momentum > 0 and dampening 0, "
                    f"got momentum {g['momentum']} dampening {g['dampening']}"
                )

    @staticmethod
    def _update(name, p, grad, g, state):
        if g["maximize"]:
            grad = -grad
        if g["weight_decay"]:
            grad = grad + g["weight_decay"] * p
        mu = g["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= mu
                buf += (1 - g["dampening"]) * grad
            grad = grad + mu * buf if g["nesterov"] else buf
        p -= g["lr"] * grad


class RMSprop(Optimizer):
    """``torch.optim.RMSprop``: smoothing ``alpha``, ``eps`` outside the root, momentum, centered,
    ``maximize``; torch's defaults (``lr=0.01``)."""

    _bounds = {
        "lr": (0.0, None),
        "alpha": (0.0, 1.0),
        "eps": (0.0, None),
        "weight_decay": (0.0, None),
        "momentum": (0.0, None),
    }

    def __init__(
        self,
        params,
        lr=0.01,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        *,
        maximize=False,
    ):
        super().__init__(
            params,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )

    @staticmethod
    def _update(name, p, grad, g, state):
        if g["maximize"]:
            grad = -grad
        if g["weight_decay"]:
            grad = grad + g["weight_decay"] * p
        a = g["alpha"]
        v = state.setdefault("square_avg", np.zeros_like(p))
        v *= a
        v += (1 - a) * grad * grad
        if g["centered"]:
            m = state.setdefault("grad_avg", np.zeros_like(p))
            m += (1 - a) * (grad - m)  # torch's lerp: m + (1 - alpha) (g - m)
            d = np.sqrt(v - m * m) + g["eps"]
        else:
            d = np.sqrt(v) + g["eps"]
        if g["momentum"] > 0:
            buf = state.setdefault("momentum_buffer", np.zeros_like(p))
            buf *= g["momentum"]
            buf += grad / d
            p -= g["lr"] * buf
        else:
            p -= g["lr"] * (grad / d)


def decay_groups(model, weight_decay: float, exempt_bn_and_depthwise: bool = True) -> list[dict]:
    """Parameter groups for a NumPy model: ``[decayed, exempt]``.

    The V1 paper (section 3.2) puts "very little or no weight decay" on the depthwise
    filters; the usual practice (and torchvision's recipes) also exempts BN's weight and bias.
    """
    from .nn import BatchNorm2d, Conv2d

    weight_decay = check_number("decay_groups", "weight_decay", weight_decay, 0.0, None)
    decay, exempt = {}, {}
    for prefix, m in model.named_modules():
        for name, p in m._params.items():
            no = isinstance(m, BatchNorm2d) or (isinstance(m, Conv2d) and m.kind == "depthwise")
            (exempt if exempt_bn_and_depthwise and no else decay)[prefix + name] = p
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return groups


# --- learning-rate schedules: pure functions of the step ---------------------------------


class CosineWithWarmup:
    """Linear warm-up from ``warmup_start * base_lr`` over ``warmup_steps``, then a half cosine
    down to ``min_lr`` at ``total_steps`` (torch: ``SequentialLR([LinearLR, CosineAnnealingLR])``).

    Equations (t the step, W the warm-up, T the total)::

        lr(t) = base (s + (1 - s) t / W)                                   t < W
        lr(t) = min + (base - min) (1 + cos(pi (t - W) / (T - W))) / 2     W <= t <= T
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, min_lr=0.0, warmup_start=0.1):
        fn = "CosineWithWarmup"
        self.base_lr = check_number(fn, "base_lr", base_lr, 0.0, None)
        self.total = check_int(fn, "total_steps", total_steps, 1)
        self.warmup = check_int(fn, "warmup_steps", warmup_steps, 0)
        if self.warmup >= self.total:
            raise ValueError(f"{fn}: warmup_steps must be < total_steps ({self.total}), got {self.warmup}")
        self.min_lr = check_number(fn, "min_lr", min_lr, 0.0, self.base_lr)
        self.start = check_number(fn, "warmup_start", warmup_start, 0.0, 1.0)

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.base_lr * (self.start + (1 - self.start) * t / self.warmup)
        frac = min(t - self.warmup, self.total - self.warmup) / (self.total - self.warmup)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * frac)) / 2


class StepDecay:
    """``lr(t) = base * gamma ** (t // step_size)`` (torch's ``StepLR``)."""

    def __init__(self, base_lr, step_size, gamma=0.1):
        self.base_lr = check_number("StepDecay", "base_lr", base_lr, 0.0, None)
        self.step_size = check_int("StepDecay", "step_size", step_size, 1)
        self.gamma = check_number("StepDecay", "gamma", gamma, 0.0, None)

    def __call__(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class ExponentialDecay:
    """``lr(t) = base * gamma ** (t / every)`` (torch's ``ExponentialLR`` stepped every ``every``
    steps when ``staircase``; the V2 paper: 0.98 per epoch)."""

    def __init__(self, base_lr, gamma, every=1, staircase=True):
        self.base_lr = check_number("ExponentialDecay", "base_lr", base_lr, 0.0, None)
        self.gamma = check_number("ExponentialDecay", "gamma", gamma, 0.0, None)
        self.every = check_int("ExponentialDecay", "every", every, 1)
        self.staircase = bool(staircase)

    def __call__(self, t: int) -> float:
        e = t // self.every if self.staircase else t / self.every
        return self.base_lr * self.gamma**e
