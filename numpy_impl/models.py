"""MobileNetV1, V2 and V3 (Large and Small) in NumPy, built from the specs in ``mobilenet_arch``."""

from __future__ import annotations

import dataclasses

import numpy as np

import mobilenet_arch as A

from .backend import get_backend
from .functional._checks import check_rng
from .nn import BatchNorm2d, Conv2d, Linear, Sequential, build

_DTYPES = {np.dtype(np.float32), np.dtype(np.float64)}


def _to_numpy(name, v):
    """A numpy array from a numpy array, a torch tensor (without importing torch) or a scalar."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        if getattr(v, "is_meta", False):
            raise ValueError(
                f"load_state_dict: {name} is a meta tensor (a shape, no data); load real weights"
            )
        try:
            v = v.detach().cpu().numpy()
        except TypeError:  # bfloat16 and the like
            raise TypeError(
                f"load_state_dict: {name} has dtype {v.dtype}, which numpy cannot hold; convert with .float()"
            ) from None
    if isinstance(v, (int, float, np.number)):
        v = np.asarray(v)
    if not isinstance(v, np.ndarray):
        raise TypeError(
            f"load_state_dict: {name} must be a numpy array or torch tensor, got {type(v).__name__}"
        )
    return v


def channels_last(x: np.ndarray) -> np.ndarray:
    """The (N, C, H, W) array ``x`` with NHWC memory (``x`` itself if it has it already).

    Channel by channel: numpy's copy of a whole transposed array reads the input with a
    stride of C elements for every value it writes, several times slower for an image's
    three channels than three strided channel copies."""
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x
    out = np.empty((x.shape[0], *x.shape[2:], x.shape[1]), dtype=x.dtype)
    for c in range(x.shape[1]):
        out[..., c] = x[:, c]
    return out.transpose(0, 3, 1, 2)


class Model(Sequential):
    """What every model of this package shares: built from a spec on a backend, seeded, with
    parameters, gradients and state by torch name."""

    def __init__(self, spec: A.Seq, arch: str, dtype, backend: str, seed):
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.F = get_backend(backend)
        self.rng = check_rng(type(self).__name__, "seed", seed)
        super().__init__((name, build(child, self.F, dtype, self.rng)) for name, child in spec)
        self.spec, self.arch, self.dtype, self.backend = spec, arch, dtype, backend

    # --- parameters and state -------------------------------------------------------
    @property
    def params(self) -> dict:
        """Parameter arrays by torch name (live references: update them in place)."""
        return dict(self.named_parameters())

    @property
    def grads(self) -> dict:
        """Gradients of the last backward by torch name."""
        return dict(self._named("_grads"))

    def state_dict(self) -> dict:
        """Copies of parameters and buffers in torch's key order."""
        out = {}
        for prefix, m in self.named_modules():
            for name, a in {**m._params, **m._buffers}.items():
                out[prefix + name] = a.copy()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values (numpy arrays or torch tensors) into the model, checking keys and shapes.

        Nothing is changed unless every key and shape matches.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: state_dict must be a mapping, got {type(state_dict).__name__}")
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        unknown = sorted(set(state_dict) - set(own))
        missing = sorted(set(own) - set(state_dict))
        if unknown or (strict and missing):
            raise ValueError(
                f"load_state_dict: keys do not match this {self.arch} model: "
                f"unexpected {unknown[:5]}{'...' if len(unknown) > 5 else ''}, "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            )
        staged = {}
        for key, v in state_dict.items():
            v = _to_numpy(key, v)
            if v.shape != own[key].shape:
                raise ValueError(f"load_state_dict: {key} must have shape {own[key].shape}, got {v.shape}")
            if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
                raise TypeError(f"load_state_dict: {key} must hold numbers, got dtype {v.dtype}")
            staged[key] = v
        for key, v in staged.items():
            own[key][...] = v  # in place: references from .params stay valid
        return self

    def in_memory_format(self, x):
        """``x`` in the memory format the backend runs (``MEMORY_FORMAT``)."""
        return channels_last(x) if self.F.MEMORY_FORMAT == "channels_last" else x


class MobileNet(Model):
    """A MobileNet whose parameter and buffer names are those of the torch mirror.

    ``forward(x)`` takes (N, 3, H, W) in the model's dtype, H and W >= 32, and
    returns logits (N, num_classes); ``backward(dlogits)`` returns dx and fills
    ``grads`` (overwritten by each backward, not accumulated).
    """

    def __init__(self, spec: A.Seq, arch: str, dtype, backend: str, seed):
        super().__init__(spec, arch, dtype, backend, seed)
        self.num_classes = spec.children[-1][1].children[-1][1].out_features
        self._forward_batch = None

    # --- transfer learning ----------------------------------------------------------
    def stages(self) -> list:
        """The entries of ``features``, in order (the units ``freeze(upto)`` counts)."""
        return list(self._children["features"]._children.values())

    def freeze(self, upto="features"):
        """Freeze ``features[:upto]`` (an int) or the whole backbone (``"features"``): no
        gradients, BN kept in eval mode (also after ``train()``). Undoes any earlier freeze."""
        stages = self.stages()
        n = A.frozen_stages(upto, len(stages))
        self.unfreeze()
        for stage in stages[:n]:
            for _, m in stage.named_modules():
                m.frozen = True
                m._grads.clear()
        return self.train(self.training)

    def unfreeze(self):
        for _, m in self.named_modules():
            m.frozen = False
        return self.train(self.training)

    def trainable_names(self) -> list[str]:
        """Names of the parameters an optimiser should update (those not frozen)."""
        return [prefix + n for prefix, m in self.named_modules() if not m.frozen for n in m._params]

    def replace_classifier(self, num_classes: int, seed: int = 0):
        """A fresh final Linear ``in_features -> num_classes`` (normal(0, 0.01), bias 0, seeded)."""
        num_classes = A.check_num_classes("replace_classifier", num_classes)
        head = self._children["classifier"]._children
        key = list(head)[-1]
        spec = A.Linear(head[key]._params["weight"].shape[1], num_classes)
        head[key] = Linear(spec, self.F, self.dtype, check_rng("replace_classifier", "seed", seed))
        self.num_classes = num_classes
        return self

    def reestimate_batch_norm(self, batches):
        """Set every batch norm's running statistics to the mean and (unbiased) variance of its
        input over ``batches`` (arrays (N, 3, H, W)), averaged over the batches as torch's
        ``momentum=None`` does; parameters unchanged. A freshly initialised model's statistics
        (0 and 1) shrink its activations layer by layer to nothing; these keep them realistic."""
        bns = [m for _, m in self.named_modules() if isinstance(m, BatchNorm2d)]
        specs, training = [m.spec for m in bns], self.training
        self.train()
        try:
            for k, x in enumerate(batches):
                for m, spec in zip(bns, specs):
                    m.spec = dataclasses.replace(spec, momentum=1.0 / (k + 1))  # cumulative average
                self.forward(x)
        finally:
            for m, spec in zip(bns, specs):
                m.spec = spec
            self.train(training)
        return self

    # --- running --------------------------------------------------------------------
    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"forward: x must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(f"forward: x must have the model's dtype {self.dtype}, got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"forward: x must have shape (N, 3, H, W), got {x.shape}")
        if min(x.shape[2:]) < A.MIN_RESOLUTION:
            raise ValueError(
                f"forward: input resolution must be >= {A.MIN_RESOLUTION} px, got {x.shape[2]}x{x.shape[3]}"
            )
        logits = super().forward(self.in_memory_format(x))
        self._forward_batch = logits.shape
        return logits

    def backward(self, dlogits, input_grad=True):
        """Gradients into every parameter's ``grads``; returns the input's gradient, or
        None with ``input_grad=False`` (training: the data needs none, and the first
        convolution's input gradient is the costliest part of its backward)."""
        if self._forward_batch is None:
            raise RuntimeError("backward: call forward first")
        if not isinstance(dlogits, np.ndarray) or dlogits.dtype != self.dtype:
            got = getattr(dlogits, "dtype", type(dlogits).__name__)
            raise TypeError(f"backward: dlogits must be a numpy.ndarray of dtype {self.dtype}, got {got}")
        if dlogits.shape != self._forward_batch:
            raise ValueError(f"backward: dlogits must have shape {self._forward_batch}, got {dlogits.shape}")
        first = next(m for _, m in self.named_modules() if not m._children)  # the first layer
        skip = not input_grad and isinstance(first, Conv2d)
        first.input_grad = not skip
        try:
            dx = super().backward(dlogits)
        finally:
            first.input_grad = True
        return dx if input_grad else None


def _build(arch, spec_kwargs, dtype, backend, seed):
    return MobileNet(A.build_spec(arch, **spec_kwargs), arch, dtype, backend, seed)


def mobilenet(arch, dtype=np.float32, backend="numpy", seed=0, **spec_kwargs):
    """Any architecture of ``mobilenet_arch.ARCHS`` by name: ``mobilenet("v2", width_mult=0.5)``.
    ``spec_kwargs`` are its builder's (``mobilenet_v1``, ``mobilenet_v2``); the rest as theirs."""
    return _build(arch, spec_kwargs, dtype, backend, seed)


def mobilenet_v1(width_mult=1.0, num_classes=1000, dropout=1e-3, dtype=np.float32, backend="numpy", seed=0):
    """MobileNetV1 (Howard et al. 2017) in NumPy.

    ``width_mult`` is the paper's alpha; the resolution multiplier rho is the
    input size you feed (any H, W >= 32). Initialised as torchvision's MobileNetV2,
    seeded by ``seed``.
    """
    kw = {"width_mult": width_mult, "num_classes": num_classes, "dropout": dropout}
    return _build("v1", kw, dtype, backend, seed)


def mobilenet_v2(
    width_mult=1.0, num_classes=1000, dropout=0.2, round_nearest=8, dtype=np.float32, backend="numpy", seed=0
):
    """MobileNetV2 (Sandler et al. 2018) in NumPy, layer for layer torchvision's."""
    kw = {
        "width_mult": width_mult,
        "num_classes": num_classes,
        "dropout": dropout,
        "round_nearest": round_nearest,
    }
    return _build("v2", kw, dtype, backend, seed)


def mobilenet_v3_large(
    width_mult=1.0, num_classes=1000, dropout=0.2, dtype=np.float32, backend="numpy", seed=0
):
    """MobileNetV3-Large (Howard et al. 2019) in NumPy, layer for layer torchvision's."""
    kw = {"width_mult": width_mult, "num_classes": num_classes, "dropout": dropout}
    return _build("v3-large", kw, dtype, backend, seed)


def mobilenet_v3_small(
    width_mult=1.0, num_classes=1000, dropout=0.2, dtype=np.float32, backend="numpy", seed=0
):
    """MobileNetV3-Small (Howard et al. 2019) in NumPy, layer for layer torchvision's."""
    kw = {"width_mult": width_mult, "num_classes": num_classes, "dropout": dropout}
    return _build("v3-small", kw, dtype, backend, seed)
