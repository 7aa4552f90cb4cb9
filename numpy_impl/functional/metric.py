"""Metric learning: the additive angular margin of ArcFace (Deng et al. 2019), forward and backward.

An embedding ``x`` (N, D) and one learned centre per class ``weight`` (K, D) are both scaled to
unit length, so their dot product is the cosine of the angle between them. The target class's
angle is widened by a margin ``m`` before the softmax::

    cos[n, k] = <x[n] / |x[n]|, w[k] / |w[k]|>
    phi       = cos(theta + m) = cos * cos(m) - sin * sin(m)    (theta = arccos cos, sin >= 0)
                where theta + m would pass pi, phi = cos - m * sin(m) instead (monotone in theta,
                as InsightFace's reference implementation)
    logits    = s * (phi at the target class, cos elsewhere)

and the loss is the softmax cross-entropy of ``logits`` (:func:`softmax_cross_entropy`). A class
wins only when its embedding is nearer its centre, in angle, than every other centre by ``m``:
embeddings of one class cluster on the sphere, so the cosine between two embeddings verifies
identity, including for classes never trained on (the face-recognition pattern).
"""

from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_number, check_shape, same_dtype


def _unit(a):
    norm = np.sqrt((a * a).sum(axis=1, keepdims=True))
    return a / np.maximum(norm, np.finfo(a.dtype).tiny), norm


def _unit_backward(du, u, norm):
    """Gradient through ``u = a / |a|``: ``(du - u <u, du>) / |a|``."""
    return (du - u * (u * du).sum(axis=1, keepdims=True)) / np.maximum(norm, np.finfo(u.dtype).tiny)


def arcface_logits(x, weight, target, scale=30.0, margin=0.5):
    """ArcFace logits ``(N, K)`` and the cache for :func:`arcface_logits_backward`.

    x : (N, D) float embeddings (any length: they are normalised here)
    weight : (K, D) float, one centre per class, same dtype as ``x``
    target : (N,) integer class indices in [0, K)
    scale : s > 0, the radius of the sphere the logits live on
    margin : m in [0, pi/2), the additive angular margin (radians)
    """
    fn = "arcface_logits"
    x = as_float_array(fn, "x", x, ndim=2)
    weight = as_float_array(fn, "weight", weight, ndim=2)
    same_dtype(fn, "x", x, weight=weight)
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"{fn}: x must be a non-empty (N, D) array, got shape {x.shape}")
    check_shape(fn, "weight", weight, (weight.shape[0], d))
    k = weight.shape[0]
    if k == 0:
        raise ValueError(f"{fn}: weight must hold at least one class, got shape {weight.shape}")
    target = np.asarray(target)
    if target.shape != (n,) or target.dtype.kind not in "iu":
        raise ValueError(
            f"{fn}: target must be ({n},) integer class indices, got {target.dtype} {target.shape}"
        )
    if n and (target.min() < 0 or target.max() >= k):
        raise ValueError(f"{fn}: target must be in [0, {k}), got min {target.min()} max {target.max()}")
    s = check_number(fn, "scale", scale, np.finfo(np.float64).tiny)
    m = check_number(fn, "margin", margin, 0.0, np.pi / 2)
    if m >= np.pi / 2:
        raise ValueError(f"{fn}: margin must be < pi/2, got {m}")
    if not (np.isfinite(x).all() and np.isfinite(weight).all()):
        raise ValueError(f"{fn}: x and weight must be finite")
    xu, xn = _unit(x)
    wu, wn = _unit(weight)
    cos = np.clip(xu @ wu.T, -1.0, 1.0)  # (N, K)
    rows = np.arange(n)
    c = cos[rows, target]
    sin = np.sqrt(np.maximum(1.0 - c * c, 0.0))
    wide = c > np.cos(np.pi - m)  # theta + m < pi
    phi = np.where(wide, c * np.cos(m) - sin * np.sin(m), c - m * np.sin(m))
    logits = cos.copy()
    logits[rows, target] = phi
    logits *= x.dtype.type(s)
    cache = {"xu": xu, "xn": xn, "wu": wu, "wn": wn, "c": c, "sin": sin, "wide": wide, "target": target}
    cache.update(s=s, m=m)
    return logits.astype(x.dtype, copy=False), cache


def arcface_logits_backward(dlogits, cache):
    """Gradients ``(dx, dweight)`` of :func:`arcface_logits` for an upstream ``dlogits`` (N, K).

    ``d phi / d cos = cos(m) + sin(m) cos / sin`` where the margin applies (1 where it does not);
    at sin = 0 (an embedding exactly on its centre) the derivative is unbounded, so it is taken
    with sin floored at the dtype's resolution.
    """
    fn = "arcface_logits_backward"
    if not isinstance(cache, dict) or "xu" not in cache:
        raise TypeError(
            f"{fn}: cache must be the dict returned by arcface_logits, got {type(cache).__name__}"
        )
    xu, wu, target = cache["xu"], cache["wu"], cache["target"]
    dlogits = as_float_array(fn, "dlogits", dlogits, ndim=2)
    check_shape(fn, "dlogits", dlogits, (xu.shape[0], wu.shape[0]))
    s, m, c, wide = cache["s"], cache["m"], cache["c"], cache["wide"]
    sin = np.maximum(cache["sin"], np.finfo(xu.dtype).eps)
    dcos = dlogits * s  # (N, K)
    rows = np.arange(len(target))
    dphi_dcos = np.where(wide, np.cos(m) + np.sin(m) * c / sin, 1.0)
    dcos[rows, target] *= dphi_dcos
    dxu, dwu = dcos @ wu, dcos.T @ xu
    dx = _unit_backward(dxu, xu, cache["xn"])
    dw = _unit_backward(dwu, wu, cache["wn"])
    return dx.astype(xu.dtype, copy=False), dw.astype(xu.dtype, copy=False)
