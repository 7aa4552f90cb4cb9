"""Fusion planning: which layers of a model its backend runs together, decided once, from the
architecture spec, when the model is built. The layers (:mod:`numpy_impl.nn`) carry the plan
out; nothing here computes.

Three kinds, each offered by a backend through a flag (``numpy_impl.functional.FLAGS``):

- ``FUSED_BN_ACTIVATIONS``: a batch norm applies the activation after it in the same pass; the
  activation's place in the model is taken by an ``Identity`` (:func:`plan_seq`).
- ``FOLDED_CONV_BN``: in eval mode, a convolution (not depthwise, without bias) applies the batch
  norm after it to each block of its GEMM's output while it is in cache (:func:`plan_seq`).
- ``FUSED_INVERTED_RESIDUAL``: a whole inverted-residual block is one ``inverted_residual`` call
  (:func:`plan_block`), when its layout is one the call runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import mobilenet_arch as A

from .functional.block import BLOCK_ACTIVATIONS, BLOCK_KERNEL_SIZES


@dataclass(frozen=True)
class SeqPlan:
    """What a ``Seq``'s children fuse: by the children's names."""

    bn_activation: dict  # batch norm -> the activation it applies in its own pass
    identities: frozenset  # activations applied by the batch norm before them
    folds: dict  # convolution -> the batch norm its eval-mode forward folds in (FOLDED_CONV_BN)


def plan_seq(spec: A.Seq, F) -> SeqPlan:
    """The plan of ``spec``'s children on the backend module ``F``."""
    children, fuse = list(spec), F.FUSED_BN_ACTIVATIONS
    bn_activation, identities, folds = {}, set(), {}
    for i, (name, child) in enumerate(children):
        nxt = children[i + 1][1] if i + 1 < len(children) else None
        prev = children[i - 1][1] if i > 0 else None
        if isinstance(child, A.BatchNorm) and isinstance(nxt, A.Act) and nxt.kind in fuse:
            bn_activation[name] = nxt.kind
        elif isinstance(child, A.Act) and isinstance(prev, A.BatchNorm) and child.kind in fuse:
            identities.add(name)
        pointwise = (
            isinstance(child, A.Conv) and child.kernel_size == 1 and child.stride == 1 and child.groups == 1
        )
        depthwise = (
            isinstance(child, A.Conv)
            and not pointwise
            and child.groups == child.in_channels == child.out_channels
        )
        if isinstance(child, A.Conv) and not depthwise and not child.bias and isinstance(nxt, A.BatchNorm):
            folds[name] = children[i + 1][0]
    return SeqPlan(bn_activation, frozenset(identities), folds if getattr(F, "FOLDED_CONV_BN", False) else {})


@dataclass(frozen=True)
class BlockPlan:
    """A block that runs as one ``inverted_residual`` call: its activation, and where each part's
    module sits, as a path of child names from the block's body."""

    activation: str  # "relu6", "relu" or "hardswish"
    expand: tuple | None  # the expand Seq (conv "0", batch norm "1"); None when t == 1
    depthwise: tuple  # the depthwise Seq
    se: tuple | None  # the squeeze-and-excite, if any
    project: tuple  # the projection's convolution
    project_bn: tuple  # and its batch norm


def plan_block(spec: A.Block) -> BlockPlan | None:
    """The plan of a block ``inverted_residual`` can run in one call, None for a layout it does
    not fuse. Its layout: [expand 1x1 + BN + act], depthwise 3x3 or 5x5 + BN + act, [squeeze-
    and-excite], 1x1 conv + BN (bare in MobileNetV2, a Seq in V3); one act, ReLU6, ReLU or
    hard-swish; no conv bias; one BN eps and momentum."""
    items = [((name,), c) for name, c in spec.conv]
    if items and isinstance(items[-1][1], A.Seq):  # V3: the projection is a Seq of its own
        (last, seq) = items.pop()
        items += [((*last, name), c) for name, c in seq]
    if len(items) < 3 or not isinstance(items[-2][1], A.Conv) or not isinstance(items[-1][1], A.BatchNorm):
        return None
    stages = items[:-2]
    se = [(path, c) for path, c in stages if isinstance(c, A.SqueezeExcite)]
    if se:
        if stages[-1][1] is not se[0][1] or len(se) > 1:
            return None
        stages = stages[:-1]
    if len(stages) not in (1, 2) or not all(isinstance(c, A.Seq) for _, c in stages):
        return None
    leaves = [[c for _, c in st] for _, st in stages]
    if not all(len(ls) == 3 and [type(c) for c in ls] == [A.Conv, A.BatchNorm, A.Act] for ls in leaves):
        return None
    acts = {ls[2].kind for ls in leaves}
    convs = [ls[0] for ls in leaves] + [items[-2][1]]
    bns = [ls[1] for ls in leaves] + [items[-1][1]]
    dw = convs[-2]
    if (
        len(acts) != 1
        or not acts <= set(BLOCK_ACTIVATIONS)
        or any(c.bias for c in convs)
        or len({(b.eps, b.momentum) for b in bns}) != 1
        or dw.kernel_size not in BLOCK_KERNEL_SIZES
        or dw.groups != dw.in_channels
        or dw.padding != dw.kernel_size // 2
        or any(c.kernel_size != 1 or c.stride != 1 or c.groups != 1 for c in convs if c is not dw)
    ):
        return None
    paths = [path for path, _ in stages]
    return BlockPlan(
        activation=acts.pop(),
        expand=paths[0] if len(paths) == 2 else None,
        depthwise=paths[-1],
        se=se[0][0] if se else None,
        project=items[-2][0],
        project_bn=items[-1][0],
    )


def fused_activation(spec: A.Block) -> str | None:
    """The activation of the one-call block :func:`plan_block` plans, None when there is none."""
    plan = plan_block(spec)
    return None if plan is None else plan.activation
