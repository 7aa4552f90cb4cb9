"""The inverted-residual block as a composite of the reference ops: the readable reference
that a fused kernel (``kernels.inverted_residual``) is tested against. MobileNetV2's block
by default; MobileNetV3's with ``activation`` and ``se``.

::

    h = act(bn0(expand(x)))          1x1 convolution to t*C channels (absent when t == 1)
    h = act(bn1(depthwise(h)))       kxk depthwise (k = 3 or 5), stride 1 or 2, padding k // 2
    h = squeeze_excite(h)            MobileNetV3, where the block has one
    y = bn2(project(h))              1x1 convolution to C_out channels: linear, no activation
    y = y + x                        when the block keeps its shape (the residual)

``act`` is ReLU6 (V2), ReLU or hard-swish (V3). Backward unwinds the same steps in reverse,
each op's backward taking what its forward saved.
"""

from __future__ import annotations

from ._checks import as_float_array, same_dtype
from .basic import hardswish, hardswish_backward, relu, relu6, relu6_backward, relu_backward
from .conv import depthwise_conv2d, depthwise_conv2d_backward, pointwise_conv2d, pointwise_conv2d_backward
from .norm import batch_norm, batch_norm_backward
from .se import squeeze_excite, squeeze_excite_backward

BLOCK_ACTIVATIONS = {
    "relu6": (relu6, relu6_backward),
    "relu": (relu, relu_backward),
    "hardswish": (hardswish, hardswish_backward),
}
BLOCK_KERNEL_SIZES = (3, 5)


def _check_shape(fn, name, a, want, x):
    # the passing case without generators or keyword dicts: a fused block checks seven arrays
    # per call, and the generic checks took a tenth of a small V3 block's time
    as_float_array(fn, name, a, ndim=len(want))
    if a.dtype != x.dtype:
        same_dtype(fn, "x", x, **{name.replace(" ", "_"): a})
    for wd, got in zip(want, a.shape):
        if wd is not None and wd != got:
            shown = (
                "("
                + ", ".join("*" if d is None else str(d) for d in want)
                + ("," if len(want) == 1 else "")
                + ")"
            )
            raise ValueError(f"{fn}: {name} must have shape {shown}, got {a.shape}")


def check_bn_dtypes(fn, x, bns) -> None:
    """Each batch norm array floats of x's dtype (what ``batch_norm`` checks): for a caller that
    skips the batch norms' own checks (the fused block in training)."""
    for i, bn in enumerate(bns):
        for name, a in zip(("weight", "bias", "running_mean", "running_var"), bn or ()):
            _check_shape(fn, f"bns[{i}] {name}", a, a.shape, x)


def check_inverted_residual(fn, x, weights, bns, stride, residual, activation="relu6", se=None):
    """Validated ``(x, residual)``: the shapes of every weight, BN tuple and squeeze-and-excite
    array, the stride, the activation, and ``residual`` (default: stride 1 and as many output
    channels as input channels)."""
    x = as_float_array(fn, "x", x, ndim=4)
    if not isinstance(weights, (tuple, list)) or len(weights) != 3:
        raise TypeError(
            f"{fn}: weights must be (expand or None, depthwise, project), got {type(weights).__name__}"
        )
    if not isinstance(bns, (tuple, list)) or len(bns) != 3:
        raise TypeError(f"{fn}: bns must be three (weight, bias, running_mean, running_var) tuples")
    if not isinstance(activation, str) or activation not in BLOCK_ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be one of {sorted(BLOCK_ACTIVATIONS)}, got {activation!r}")
    expand_w, dw_w, project_w = weights
    cin = x.shape[1]
    hidden = cin if expand_w is None else getattr(expand_w, "shape", (None,))[0]
    if expand_w is not None:
        _check_shape(fn, "expand weight", expand_w, (hidden, cin, 1, 1), x)
    k = getattr(dw_w, "shape", (0, 0, 0))[-1] if getattr(dw_w, "ndim", 0) == 4 else None
    if k not in BLOCK_KERNEL_SIZES:
        k = 3  # the message below names the expected shape
    _check_shape(fn, "depthwise weight", dw_w, (hidden, 1, k, k), x)
    _check_shape(fn, "project weight", project_w, (None, hidden, 1, 1), x)
    for i, bn in enumerate(bns):
        if (bn is None) != (i == 0 and expand_w is None):
            raise ValueError(f"{fn}: bns[{i}] must be {'None' if i == 0 and expand_w is None else 'a tuple'}")
        if bn is not None:
            want = (weights[i].shape[0],)
            if len(bn) != 4 or any(getattr(a, "shape", None) != want for a in bn):
                raise ValueError(f"{fn}: bns[{i}] must be 4 arrays of shape ({weights[i].shape[0]},)")
    if se is not None:
        if not isinstance(se, (tuple, list)) or len(se) != 4:
            raise TypeError(f"{fn}: se must be None or (w1, b1, w2, b2), got {type(se).__name__}")
        cr = getattr(se[0], "shape", (0,))[0]
        if cr == 0:
            raise ValueError(f"{fn}: se w1 must have at least one output channel")
        wants = ((cr, hidden, 1, 1), (cr,), (hidden, cr, 1, 1), (hidden,))
        for name, a, want in zip(("se w1", "se b1", "se w2", "se b2"), se, wants):
            _check_shape(fn, name, a, want, x)
    if stride not in (1, 2):
        raise ValueError(f"{fn}: stride must be 1 or 2, got {stride!r}")
    cout = project_w.shape[0]
    if residual is None:
        residual = stride == 1 and cout == cin
    if residual and (stride != 1 or cout != cin):
        raise ValueError(
            f"{fn}: residual needs stride 1 and C_out == C_in, got stride {stride}, C_out {cout}, C_in {cin}"
        )
    return x, bool(residual)


def inverted_residual(
    x,
    weights,
    bns,
    stride=1,
    residual=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
    *,
    activation="relu6",
    se=None,
):
    """The inverted-residual block, op by op.

    Parameters
    ----------
    x : (N, C, H, W)
    weights : (expand (t*C, C, 1, 1) or None when t == 1, depthwise (t*C, 1, k, k) with k 3 or 5,
               project (C_out, t*C, 1, 1))
    bns : three (weight, bias, running_mean, running_var) tuples, the first None when t == 1;
          running statistics are updated in place in training
    stride : 1 or 2; residual : add x (default: stride == 1 and C_out == C)
    training, momentum, eps : as :func:`batch_norm`
    activation : after the expand and depthwise batch norms: "relu6" (V2), "relu" or "hardswish"
    se : None, or squeeze-and-excite's (w1, b1, w2, b2) (see :func:`squeeze_excite`), applied
         to the depthwise output

    Returns
    -------
    y : (N, C_out, H_out, W_out)
    cache : for :func:`inverted_residual_backward` (in either mode)
    """
    x, residual = check_inverted_residual(
        "inverted_residual", x, weights, bns, stride, residual, activation, se
    )
    act = BLOCK_ACTIVATIONS[activation][0]
    expand_w, dw_w, project_w = weights
    steps, h = [], x
    if expand_w is not None:
        e = pointwise_conv2d(h, expand_w)
        a, c0 = batch_norm(e, *bns[0], training, momentum, eps)
        h = act(a)
        steps.append(("expand", x, c0, a))
    d_in = h
    d = depthwise_conv2d(d_in, dw_w, stride, dw_w.shape[-1] // 2)
    a, c1 = batch_norm(d, *bns[1], training, momentum, eps)
    h = act(a)
    steps.append(("depthwise", d_in, c1, a))
    if se is not None:
        h, se_cache = squeeze_excite(h, *se)
        steps.append(("se", None, se_cache, None))
    p = pointwise_conv2d(h, project_w)
    y, c2 = batch_norm(p, *bns[2], training, momentum, eps)
    steps.append(("project", h, c2, None))
    if residual:
        y = y + x
    cache = {"steps": steps, "weights": tuple(weights), "stride": stride, "residual": residual}
    return y, {**cache, "activation": activation}


def inverted_residual_backward(dout, cache):
    """Gradients of :func:`inverted_residual`: ``(dx, dweights, dbns)``, dweights like
    ``weights`` and dbns three (dweight, dbias) pairs, the first None when t == 1; with a
    squeeze-and-excite, ``(dx, dweights, dbns, dse)``, dse its (dw1, db1, dw2, db2)."""
    fn = "inverted_residual_backward"
    if not isinstance(cache, dict) or "steps" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by inverted_residual, got {type(cache).__name__}"
        )
    expand_w, dw_w, project_w = cache["weights"]
    act_backward = BLOCK_ACTIVATIONS[cache["activation"]][1]
    dweights, dbns, dse = [None, None, None], [None, None, None], None
    g = dout
    for name, inp, bn_cache, pre_act in reversed(cache["steps"]):
        if name == "se":
            g, *dse = squeeze_excite_backward(g, bn_cache)
            continue
        i = ("expand", "depthwise", "project").index(name)
        if pre_act is not None:  # the activation after this step's batch norm
            g = act_backward(g, pre_act)
        g, dbw, dbb = batch_norm_backward(g, bn_cache)
        dbns[i] = (dbw, dbb)
        if name == "depthwise":
            g, dweights[i] = depthwise_conv2d_backward(g, inp, dw_w, cache["stride"], dw_w.shape[-1] // 2)
        else:
            g, dweights[i] = pointwise_conv2d_backward(g, inp, expand_w if name == "expand" else project_w)
    if cache["residual"]:
        g = g + dout
    if dse is not None:
        return g, tuple(dweights), tuple(dbns), tuple(dse)
    return g, tuple(dweights), tuple(dbns)
