"""Layers with state: a forward that keeps what backward needs, and a backward that
fills ``grads`` and returns the input gradient (CS231n's cache pattern, as objects).

Each layer is built from a spec leaf of ``mobilenet_arch`` and calls the ops of
one backend module ``F`` (``numpy_impl.functional`` or ``kernels``), so the same
layer runs on either. Children are named like ``nn.Sequential``'s so parameter
names are those of the torch mirror. Which layers a backend runs together is planned
in :mod:`numpy_impl.fusion`; the layers here carry the plan out.
"""

from __future__ import annotations

import numpy as np

import mobilenet_arch as A

from .fusion import BlockPlan, plan_block, plan_seq
from .parts import Partials


class Module:
    """Parameters, gradients and buffers by local name; children by name."""

    def __init__(self):
        self.training = True
        self.frozen = False  # set by mobilenet.transfer.freeze: no gradients, BN in eval
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}
        self.parts = None  # a numpy_impl.parts.Parts: training sums over a global batch, part by part

    def _parted(self) -> bool:
        return self.parts is not None and self.training

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def _named(self, attr):
        # torch's state_dict order: a module's own parameters, its buffers, then its children
        for prefix, m in self.named_modules():
            for name, a in getattr(m, attr).items():
                yield prefix + name, a

    def named_parameters(self):
        return self._named("_params")

    def named_buffers(self):
        return self._named("_buffers")

    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            m.training = bool(mode) and not m.frozen
        return self

    def eval(self):
        return self.train(False)

    def set_parts(self, parts):
        """Take every sum over the batch in training part by part (a :class:`numpy_impl.parts.Parts`;
        None: over the whole batch at once). Gradients of weights then come out as
        :class:`~numpy_impl.parts.Partials`, for ``parts.total_grads``."""
        for _, m in self.named_modules():
            m.parts = parts
        return self

    def __call__(self, x):
        return self.forward(x)


class Sequential(Module):
    """Children in order. ``folds`` maps a convolution's name to the batch norm after it that
    an eval-mode forward folds into the convolution's op (a backend with ``FOLDED_CONV_BN``):
    the norm and its activation are applied to the output as the GEMM makes it, not in a pass
    of their own; the batch norm's own forward is then skipped."""

    def __init__(self, children, folds=None):
        super().__init__()
        self._children = dict(children)
        self._folds = dict(folds or {})
        self._folded_from = None  # the input of the last forward, when it folded (for backward)

    def forward(self, x):
        self._folded_from = None
        if self._folds and not self.training:
            return self._forward_folded(x)
        for child in self._children.values():
            x = child.forward(x)
        return x

    def _forward_folded(self, x):
        x0, skip, folded = x, None, False
        for name, child in self._children.items():
            if name == skip:
                continue
            bn = self._children.get(self._folds.get(name))
            if bn is not None and not child.training and not bn.training:
                x, skip, folded = child.forward_folded(x, bn), self._folds[name], True
            else:
                x = child.forward(x)
        self._folded_from = x0 if folded else None
        return x

    def backward(self, dout):
        """Returns None once it reaches a frozen child: freezing is by prefix, so nothing
        before it needs a gradient (``mobilenet.transfer.freeze``)."""
        if self._folded_from is not None and not all(self._children[b].frozen for b in self._folds.values()):
            # a folded forward left the batch norms without their input: rerun it unfolded
            x, self._folded_from = self._folded_from, None
            for child in self._children.values():
                x = child.forward(x)
        for child in reversed(self._children.values()):
            if child.frozen:
                return None
            dout = child.backward(dout)
            if dout is None:
                return None
        return dout


class InvertedResidual(Module):
    """``conv(x) + x`` when the block keeps its shape (stride 1, same channels).

    A backend that declares ``FUSED_INVERTED_RESIDUAL`` runs the whole block in one
    ``inverted_residual`` call (MobileNetV2's block, and V3's with its activation and
    squeeze-and-excite) when ``plan`` (:func:`numpy_impl.fusion.plan_block`) says where its
    parts are; otherwise (and for a backward after an eval-mode fused forward, which keeps no
    cache) the children run one by one.
    """

    def __init__(self, conv: Sequential, residual: bool, F=None, body="conv", plan: BlockPlan | None = None):
        super().__init__()
        self.body = body  # torchvision's name of the body: "conv" (V2), "block" (V3)
        self._children = {body: conv}
        self.residual = residual
        self.plan = plan
        self.activation = None if plan is None else plan.activation  # of the fused call
        fused = plan is not None and F is not None and F.FUSED_INVERTED_RESIDUAL
        self.fused = F.inverted_residual if fused else None
        self.fused_backward = F.inverted_residual_backward if self.fused is not None else None
        self.cache, self.ran_fused = None, False

    def _at(self, path):
        m = self._children[self.body]
        for name in path:
            m = m._children[name]
        return m

    def _fused_args(self):
        """The block's parts as the fused call takes them: (convolutions, batch norms, their
        weights, their (weight, bias, running mean, running var), the squeeze-and-excite)."""
        plan = self.plan
        expand = None if plan.expand is None else self._at(plan.expand)
        dw = self._at(plan.depthwise)
        convs = (None if expand is None else expand._children["0"], dw._children["0"], self._at(plan.project))
        bns = (
            None if expand is None else expand._children["1"],
            dw._children["1"],
            self._at(plan.project_bn),
        )
        weights = tuple(None if c is None else c._params["weight"] for c in convs)
        bn_params = tuple(
            None
            if b is None
            else (
                b._params["weight"],
                b._params["bias"],
                b._buffers["running_mean"],
                b._buffers["running_var"],
            )
            for b in bns
        )
        return convs, bns, weights, bn_params, None if plan.se is None else self._at(plan.se)

    def forward(self, x):
        self.cache, self.x, self.ran_fused = None, x, False
        if self.fused is None or self._parted():  # the fused call takes its sums over x alone
            y = self._children[self.body].forward(x)
            return y + x if self.residual else y
        self.ran_fused = True
        convs, bns, weights, bn_params, se = self._fused_args()
        spec = bns[-1].spec
        stride = convs[1].spec.stride
        y, self.cache = self.fused(
            x,
            weights,
            bn_params,
            stride,
            self.residual,
            self.training,
            spec.momentum,
            spec.eps,
            activation=self.activation,
            se=None if se is None else se._weights(),
        )
        if self.training:
            for b in bns:
                if b is not None:
                    b._buffers["num_batches_tracked"] += 1
        return y

    def backward(self, dout):
        if self.fused is not None and self.cache is not None:
            dx, dweights, dbns, *dse = self.fused_backward(dout, self.cache)
            convs, bns, _, _, se = self._fused_args()
            for conv, dw, bn, dbn in zip(convs, dweights, bns, dbns):
                if conv is not None:
                    conv._grads["weight"] = dw
                    bn._grads["weight"], bn._grads["bias"] = dbn
            if se is not None:
                fc1, fc2 = se._children["fc1"]._grads, se._children["fc2"]._grads
                fc1["weight"], fc1["bias"], fc2["weight"], fc2["bias"] = dse[0]
            return dx
        if self.ran_fused:  # an eval-mode fused forward kept nothing: rerun the children
            self._children[self.body].forward(self.x)
        dx = self._children[self.body].backward(dout)
        return dx + dout if self.residual else dx


class Conv2d(Module):
    """A convolution that calls the specialised op its shape allows: pointwise for a
    stride-1 1x1, depthwise for groups == in == out channels, general otherwise."""

    def __init__(self, spec: A.Conv, F, dtype, rng):
        super().__init__()
        self.spec, self.F = spec, F
        k, cin, cout, g = spec.kernel_size, spec.in_channels, spec.out_channels, spec.groups
        # torchvision: kaiming_normal_(mode="fan_out"), fan_out = C_out * kh * kw
        std = np.sqrt(2.0 / (cout * k * k))
        self._params["weight"] = (rng.standard_normal((cout, cin // g, k, k)) * std).astype(dtype)
        if spec.bias:
            self._params["bias"] = np.zeros(cout, dtype)
        if k == 1 and spec.stride == 1 and g == 1:
            self.kind = "pointwise"
        elif g == cin == cout:
            self.kind = "depthwise"
        else:
            self.kind = "conv"

    def _geometry(self):
        s = self.spec
        if self.kind == "conv":
            return {"stride": s.stride, "padding": s.padding, "groups": s.groups}
        return {} if self.kind == "pointwise" else {"stride": s.stride, "padding": s.padding}

    def forward(self, x):
        self.x = x
        if self._parted():  # a GEMM's rows may round by the shape of their block: a part's own
            return by_part(self.parts, lambda xp: (self._forward(xp),), x)[0]
        return self._forward(x)

    def _forward(self, x):
        w, b = self._params["weight"], self._params.get("bias")
        if self.kind == "conv":
            return self.F.conv2d(x, w, b, **self._geometry())
        out = getattr(self.F, f"{self.kind}_conv2d")(x, w, **self._geometry())
        return out if b is None else out + b[:, None, None]

    def forward_folded(self, x, bn):
        """forward followed by ``bn`` (an eval-mode BatchNorm2d, with its fused activation), in
        one op: the backend's ``FOLDED_CONV_BN`` convolutions."""
        self.x = x
        p, b = bn._params, bn._buffers
        fold = {
            "bn": (p["weight"], p["bias"], b["running_mean"], b["running_var"]),
            "eps": bn.spec.eps,
            "activation": bn.activation,
        }
        if self.kind == "conv":
            return self.F.conv2d(
                x, self._params["weight"], self._params.get("bias"), **self._geometry(), **fold
            )
        return self.F.pointwise_conv2d(x, self._params["weight"], **fold)

    input_grad = True  # False: the weight gradients only (the model's first layer, when asked)

    def backward(self, dout):
        if not self._parted():
            dx, self._grads["weight"], db = self._backward(dout, self.x)
        else:  # each part's weight gradient on its own rows, added up later in part order
            dx, dw, db = by_part(self.parts, self._backward, dout, self.x)
            self._grads["weight"] = dw
        if "bias" in self._params:
            self._grads["bias"] = db
        return dx

    def _backward(self, dout, x):
        w = self._params["weight"]
        if self.kind == "conv":
            geometry = {**self._geometry(), "input_grad": self.input_grad}
            return self.F.conv2d_backward(dout, x, w, **geometry)
        dx, dw = getattr(self.F, f"{self.kind}_conv2d_backward")(dout, x, w, **self._geometry())
        db = dout.sum(axis=(0, 2, 3)) if "bias" in self._params else None  # a full pass: only if used
        return dx, dw, db


class BatchNorm2d(Module):
    """Batch norm; with ``activation`` ("relu"/"relu6") it also applies the activation that
    follows it in the same pass (when the backend lists it in ``FUSED_BN_ACTIVATIONS``; the activation
    module itself then becomes an :class:`Identity`)."""

    def __init__(self, spec: A.BatchNorm, F, dtype, rng=None, activation=None):
        super().__init__()
        self.spec, self.F, self.activation = spec, F, activation
        c = spec.num_features
        self._params.update(weight=np.ones(c, dtype), bias=np.zeros(c, dtype))
        self._buffers.update(
            running_mean=np.zeros(c, dtype),
            running_var=np.ones(c, dtype),
            num_batches_tracked=np.zeros((), np.int64),
        )

    def forward(self, x):
        p, b = self._params, self._buffers
        if self.training:
            b["num_batches_tracked"] += 1
        args = (
            x,
            p["weight"],
            p["bias"],
            b["running_mean"],
            b["running_var"],
            self.training,
            self.spec.momentum,
            self.spec.eps,
        )
        kw = {} if self.activation is None else {"activation": self.activation}
        if self._parted():
            kw["parts"] = self.parts
        y, self.cache = self.F.batch_norm(*args, **kw)
        return y

    def backward(self, dout):
        dx, self._grads["weight"], self._grads["bias"] = self.F.batch_norm_backward(dout, self.cache)
        return dx


class Activation(Module):
    def __init__(self, spec: A.Act, F, dtype=None, rng=None):
        super().__init__()
        self.fwd = getattr(F, spec.kind)
        self.bwd = getattr(F, f"{spec.kind}_backward")

    def forward(self, x):
        self.x = x
        return self.fwd(x)

    def backward(self, dout):
        return self.bwd(dout, self.x)


class SqueezeExcite(Module):
    """MobileNetV3's squeeze-and-excite (``functional.squeeze_excite``); parameters ``fc1.*``
    and ``fc2.*`` as torchvision's, initialised as its 1x1 convolutions."""

    def __init__(self, spec: A.SqueezeExcite, F, dtype, rng):
        super().__init__()
        self.F = F
        self._children = {name: Conv2d(conv, F, dtype, rng) for name, conv in spec}  # holds the weights

    def _weights(self):
        fc1, fc2 = self._children["fc1"]._params, self._children["fc2"]._params
        return fc1["weight"], fc1["bias"], fc2["weight"], fc2["bias"]

    def forward(self, x):
        if not self._parted():
            y, self.cache = self.F.squeeze_excite(x, *self._weights())
            return y
        y, caches = by_part(self.parts, lambda xp: self.F.squeeze_excite(xp, *self._weights()), x)
        self.cache = list(caches)  # one per part, for backward part by part
        return y

    def backward(self, dout):
        if isinstance(self.cache, list):
            it = iter(self.cache)
            dx, *grads = by_part(
                self.parts,
                lambda d: self.F.squeeze_excite_backward(d, next(it)),
                dout,
                rows=(True,) + (False,) * 4,
            )
        else:
            dx, *grads = self.F.squeeze_excite_backward(dout, self.cache)
        fc1, fc2 = self._children["fc1"]._grads, self._children["fc2"]._grads
        fc1["weight"], fc1["bias"], fc2["weight"], fc2["bias"] = grads
        return dx


class Identity(Module):
    """Stands in for an activation fused into the batch norm before it."""

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Dropout(Module):
    def __init__(self, spec: A.Dropout, F, dtype, rng):
        super().__init__()
        self.p, self.F, self.rng = spec.p, F, rng

    def forward(self, x):
        if not self._parted():
            y, self.mask = self.F.dropout(x, self.p, self.training, self.rng)
            return y
        # each part's mask from a stream of its own (the step's draw and the part's index), so
        # that a row gets its mask whichever process holds it
        step = int(self.rng.integers(2**63))
        first = self.parts.first
        masks = [
            self.F.dropout(x[s], self.p, True, np.random.default_rng([step, first + i]))[1]
            for i, s in enumerate(self.parts.slices)
        ]
        self.mask = np.concatenate(masks)
        return x * self.mask

    def backward(self, dout):
        return self.F.dropout_backward(dout, self.mask)


class GlobalAvgPool(Module):
    def __init__(self, spec: A.Pool, F, dtype=None, rng=None):
        super().__init__()
        self.F = F

    def forward(self, x):
        self.shape = x.shape
        if self._parted():
            return by_part(self.parts, lambda xp: (self.F.global_avg_pool2d(xp),), x)[0]
        return self.F.global_avg_pool2d(x)  # (N, C, H, W) -> (N, C)

    def backward(self, dout):
        return self.F.global_avg_pool2d_backward(dout, self.shape)


class Linear(Module):
    def __init__(self, spec: A.Linear, F, dtype, rng):
        super().__init__()
        self.F = F
        # torchvision's MobileNetV2 classifier init: normal(0, 0.01), bias 0
        w = rng.normal(0.0, 0.01, (spec.out_features, spec.in_features))
        self._params.update(weight=w.astype(dtype), bias=np.zeros(spec.out_features, dtype))

    def forward(self, x):
        self.x = x
        w, b = self._params["weight"], self._params["bias"]
        if self._parted():
            return by_part(self.parts, lambda xp: (self.F.linear(xp, w, b),), x)[0]
        return self.F.linear(x, w, b)

    def backward(self, dout):
        w = self._params["weight"]
        if self._parted():
            dx, dw, db = by_part(self.parts, lambda d, x: self.F.linear_backward(d, x, w), dout, self.x)
        else:
            dx, dw, db = self.F.linear_backward(dout, self.x, w)
        self._grads["weight"], self._grads["bias"] = dw, db
        return dx


def by_part(parts, f, *arrays, rows=(True, False, False)):
    """``f`` on each local part's rows of ``arrays``. Its results are gathered by position: where
    ``rows`` is True an array over the rows, the parts' results stacked back in order (in their
    memory format); otherwise the parts' values as :class:`Partials` (a gradient, to be added
    up over the global batch). None where ``f`` gave None."""
    outs = [f(*(a[s] for a in arrays)) for s in parts.slices]
    n = sum(s.stop - s.start for s in parts.slices)
    result = []
    for got, over_rows in zip(zip(*outs), rows):
        if got[0] is None:
            result.append(None)
        elif over_rows:
            out = np.empty_like(got[0], shape=(n, *got[0].shape[1:]))  # (N_local, ...)
            for s, g in zip(parts.slices, got):
                out[s] = g
            result.append(out)
        else:
            result.append(Partials(got))
    return result


LEAVES = {
    A.Conv: Conv2d,
    A.BatchNorm: BatchNorm2d,
    A.Act: Activation,
    A.Dropout: Dropout,
    A.Pool: GlobalAvgPool,
    A.Linear: Linear,
}


def _build_seq(spec: A.Seq, F, dtype, rng) -> Sequential:
    plan = plan_seq(spec, F)
    built = []
    for name, child in spec:
        if name in plan.bn_activation:
            built.append((name, BatchNorm2d(child, F, dtype, rng, activation=plan.bn_activation[name])))
        elif name in plan.identities:
            built.append((name, Identity()))
        else:
            built.append((name, build(child, F, dtype, rng)))
    return Sequential(built, plan.folds or None)


def build(spec, F, dtype, rng) -> Module:
    """Turn a spec tree into a module tree (depth first, so initialisation is seeded in order)."""
    if isinstance(spec, A.Seq):
        return _build_seq(spec, F, dtype, rng)
    if isinstance(spec, A.Block):
        body = build(spec.conv, F, dtype, rng)
        return InvertedResidual(body, spec.residual, F, spec.body, plan=plan_block(spec))
    if isinstance(spec, A.SqueezeExcite):
        return SqueezeExcite(spec, F, dtype, rng)
    return LEAVES[type(spec)](spec, F, dtype, rng)
