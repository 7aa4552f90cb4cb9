"""The SSD loss (Liu et al. 2016, section 2.2) and its backward, as torchvision's SSD computes it.

Per default box d of image n: a regression ``loc[n, d]`` (4 numbers, the centre-size encoding of
``numpy_impl.boxes``) and class logits ``conf[n, d]`` (K + 1, class 0 the background). With the
matched targets ``labels[n, d]`` (0 for background) and ``loc_target[n, d]``::

    P       = {(n, d): labels[n, d] > 0}                 the positives, N_pos = |P|
    ce[n,d] = -log softmax(conf[n, d])[labels[n, d]]
    H       = per image n, the r * |P_n| background boxes of largest ce (hard negatives, r = 3)
    L       = ( sum_P smooth_l1(loc - loc_target) + sum_{P + H} ce ) / max(1, N_pos)

    smooth_l1(v) = sum over the 4 numbers of 0.5 v^2 if |v| < 1 else |v| - 0.5

The selection of H is a constant of the backward (as a sort is in autograd)::

    dloc  = dout * clip(loc - loc_target, -1, 1) [P] / max(1, N_pos)
    dconf = dout * (softmax(conf) - onehot(labels)) [P + H] / max(1, N_pos)
"""

from __future__ import annotations

import numpy as np

from .functional._checks import as_float_array, check_int, check_number


def _check(fn, loc, conf, loc_target, labels):
    loc = as_float_array(fn, "loc", loc, ndim=3)
    conf = as_float_array(fn, "conf", conf, ndim=3)
    loc_target = as_float_array(fn, "loc_target", loc_target, ndim=3)
    n, d = loc.shape[:2]
    for name, a, shape in (("loc", loc, (n, d, 4)), ("loc_target", loc_target, (n, d, 4))):
        if a.shape != shape:
            raise ValueError(f"{fn}: {name} must have shape {shape}, got {a.shape}")
    if conf.shape[:2] != (n, d) or conf.shape[2] < 2:
        raise ValueError(f"{fn}: conf must have shape {(n, d)} + (K + 1 >= 2,), got {conf.shape}")
    if conf.dtype != loc.dtype or loc_target.dtype != loc.dtype:
        raise TypeError(f"{fn}: conf and loc_target must have loc's dtype {loc.dtype}")
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (n, d):
        got = f"{labels.dtype}{labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise ValueError(f"{fn}: labels must be integer class indices of shape {(n, d)}, got {got}")
    if labels.size and (labels.min() < 0 or labels.max() >= conf.shape[2]):
        raise ValueError(f"{fn}: labels must be in [0, {conf.shape[2]}), got {labels.min()}..{labels.max()}")
    return loc, conf, loc_target, labels


def hard_negatives(ce: np.ndarray, positive: np.ndarray, neg_pos_ratio: int) -> np.ndarray:
    """(N, D) mask of each image's ``neg_pos_ratio * |P_n|`` background boxes of largest ``ce``
    (ties broken by the lower index); none for an image without positives."""
    neg_loss = np.where(positive, -np.inf, ce)
    order = np.argsort(-neg_loss, axis=1, kind="stable")  # (N, D) largest first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(ce.shape[1])[None, :].repeat(len(ce), 0), axis=1)
    budget = np.minimum(neg_pos_ratio * positive.sum(1), (~positive).sum(1))  # (N,)
    return rank < budget[:, None]


def ssd_loss(loc, conf, loc_target, labels, neg_pos_ratio: int = 3, *, norm=None):
    """``(loss, cache)``: the SSD loss of the module docstring, a float; ``cache["loc_loss"]`` and
    ``cache["conf_loss"]`` hold its two terms (each already divided by max(1, N_pos)). ``norm``
    replaces max(1, N_pos) where these images are a part of a batch (its whole batch's)."""
    fn = "ssd_loss"
    loc, conf, loc_target, labels = _check(fn, loc, conf, loc_target, labels)
    neg_pos_ratio = check_int(fn, "neg_pos_ratio", neg_pos_ratio, 0)
    if norm is not None:
        norm = check_int(fn, "norm", norm, 1)
    shifted = conf - conf.max(axis=2, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))  # (N, D, K+1)
    ce = -np.take_along_axis(logp, labels[..., None], axis=2)[..., 0]  # (N, D)
    positive = labels > 0
    selected = positive | hard_negatives(ce, positive, neg_pos_ratio)
    norm = max(1, int(positive.sum())) if norm is None else norm
    diff = loc - loc_target
    a = np.abs(diff)
    smooth = np.where(a < 1, 0.5 * diff * diff, a - 0.5).sum(axis=2)  # (N, D)
    loc_loss = float(smooth[positive].sum(dtype=np.float64)) / norm
    conf_loss = float(ce[selected].sum(dtype=np.float64)) / norm
    cache = {
        "diff": diff,
        "logp": logp,
        "labels": labels,
        "positive": positive,
        "selected": selected,
        "norm": norm,
        "loc_loss": loc_loss,
        "conf_loss": conf_loss,
    }
    return loc_loss + conf_loss, cache


def ssd_loss_backward(dout, cache):
    """``(dloc (N, D, 4), dconf (N, D, K+1))`` of :func:`ssd_loss`; ``dout`` the upstream gradient
    of the scalar loss (1.0 for the loss itself)."""
    fn = "ssd_loss_backward"
    if not isinstance(cache, dict) or "selected" not in cache:
        raise TypeError(f"{fn}: cache must be the dict returned by ssd_loss, got {type(cache).__name__}")
    dout = check_number(fn, "dout", dout)
    dt = cache["diff"].dtype.type
    scale = dt(dout / cache["norm"])
    dloc = np.clip(cache["diff"], -1, 1) * (cache["positive"][..., None] * scale)
    dconf = np.exp(cache["logp"])  # softmax
    target = cache["labels"][..., None]
    np.put_along_axis(dconf, target, np.take_along_axis(dconf, target, 2) - 1, 2)  # - onehot
    dconf *= cache["selected"][..., None] * scale
    return dloc, dconf
