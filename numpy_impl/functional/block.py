"""The MobileNetV2 inverted-residual block as a composite of the reference ops: the readable
reference that a fused kernel (``kernels.inverted_residual``) is tested against.

::

    h = relu6(bn0(expand(x)))        1x1 convolution to t*C channels (absent when t == 1)
    h = relu6(bn1(depthwise(h)))     3x3 depthwise, stride 1 or 2, padding 1
    y = bn2(project(h))              1x1 convolution to C_out channels: linear, no activation
    y = y + x                        when the block keeps its shape (the residual)

Backward unwinds the same steps in reverse, each op's backward taking what its forward saved.
"""

from __future__ import annotations

from ._checks import as_float_array, same_dtype
from .basic import relu6, relu6_backward
from .conv import depthwise_conv2d, depthwise_conv2d_backward, pointwise_conv2d, pointwise_conv2d_backward
from .norm import batch_norm, batch_norm_backward


def check_inverted_residual(fn, x, weights, bns, stride, residual):
    """Validated ``(x, residual)``: the shapes of every weight and BN tuple, the stride, and
    ``residual`` (default: stride 1 and as many output channels as input channels)."""
    x = as_float_array(fn, "x", x, ndim=4)
    if not isinstance(weights, (tuple, list)) or len(weights) != 3:
        raise TypeError(
            f"{fn}: weights must be (expand or None, depthwise, project), got {type(weights).__name__}"
        )
    if not isinstance(bns, (tuple, list)) or len(bns) != 3:
        raise TypeError(f"{fn}: bns must be three (weight, bias, running_mean, running_var) tuples")
    expand_w, dw_w, project_w = weights
    cin = x.shape[1]
    hidden = cin if expand_w is None else expand_w.shape[0]
    shapes = [
        ("depthwise weight", dw_w, (hidden, 1, 3, 3)),
        ("project weight", project_w, (None, hidden, 1, 1)),
    ]
    if expand_w is not None:
        shapes.insert(0, ("expand weight", expand_w, (hidden, cin, 1, 1)))
    for name, a, want in shapes:
        as_float_array(fn, name, a, ndim=4)
        same_dtype(fn, "x", x, **{name.replace(" ", "_"): a})
        if any(wd is not None and wd != got for wd, got in zip(want, a.shape)):
            shown = "(" + ", ".join("*" if d is None else str(d) for d in want) + ")"
            raise ValueError(f"{fn}: {name} must have shape {shown}, got {a.shape}")
    for i, bn in enumerate(bns):
        if (bn is None) != (i == 0 and expand_w is None):
            raise ValueError(f"{fn}: bns[{i}] must be {'None' if i == 0 and expand_w is None else 'a tuple'}")
        if bn is not None and (len(bn) != 4 or any(a.shape != (weights[i].shape[0],) for a in bn)):
            raise ValueError(f"{fn}: bns[{i}] must be 4 arrays of shape ({weights[i].shape[0]},)")
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


def inverted_residual(x, weights, bns, stride=1, residual=None, training=False, momentum=0.1, eps=1e-5):
    """The MobileNetV2 block, op by op.

    Parameters
    ----------
    x : (N, C, H, W)
    weights : (expand (t*C, C, 1, 1) or None when t == 1, depthwise (t*C, 1, 3, 3),
               project (C_out, t*C, 1, 1))
    bns : three (weight, bias, running_mean, running_var) tuples, the first None when t == 1;
          running statistics are updated in place in training
    stride : 1 or 2; residual : add x (default: stride == 1 and C_out == C)
    training, momentum, eps : as :func:`batch_norm`

    Returns
    -------
    y : (N, C_out, H_out, W_out)
    cache : for :func:`inverted_residual_backward` (in either mode)
    """
    x, residual = check_inverted_residual("inverted_residual", x, weights, bns, stride, residual)
    expand_w, dw_w, project_w = weights
    steps, h = [], x
    if expand_w is not None:
        e = pointwise_conv2d(h, expand_w)
        a, c0 = batch_norm(e, *bns[0], training, momentum, eps)
        h = relu6(a)
        steps.append(("expand", x, c0, a))
    d_in = h
    d = depthwise_conv2d(d_in, dw_w, stride, 1)
    a, c1 = batch_norm(d, *bns[1], training, momentum, eps)
    h = relu6(a)
    steps.append(("depthwise", d_in, c1, a))
    p = pointwise_conv2d(h, project_w)
    y, c2 = batch_norm(p, *bns[2], training, momentum, eps)
    steps.append(("project", h, c2, None))
    if residual:
        y = y + x
    return y, {"steps": steps, "weights": tuple(weights), "stride": stride, "residual": residual}


def inverted_residual_backward(dout, cache):
    """Gradients of :func:`inverted_residual`: ``(dx, dweights, dbns)``, dweights like
    ``weights`` and dbns three (dweight, dbias) pairs, the first None when t == 1."""
    fn = "inverted_residual_backward"
    if not isinstance(cache, dict) or "steps" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by inverted_residual, got {type(cache).__name__}"
        )
    expand_w, dw_w, project_w = cache["weights"]
    dweights, dbns = [None, None, None], [None, None, None]
    g = dout
    for name, inp, bn_cache, pre_act in reversed(cache["steps"]):
        i = ("expand", "depthwise", "project").index(name)
        if pre_act is not None:  # the ReLU6 after this step's batch norm
            g = relu6_backward(g, pre_act)
        g, dbw, dbb = batch_norm_backward(g, bn_cache)
        dbns[i] = (dbw, dbb)
        if name == "depthwise":
            g, dweights[i] = depthwise_conv2d_backward(g, inp, dw_w, cache["stride"], 1)
        else:
            g, dweights[i] = pointwise_conv2d_backward(g, inp, expand_w if name == "expand" else project_w)
    if cache["residual"]:
        g = g + dout
    return g, tuple(dweights), tuple(dbns)
