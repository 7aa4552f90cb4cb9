"""``mobilenet verify``: the NumPy model against the torch model with identical weights.

One training-mode step (forward, backward with a random upstream gradient) on
random data; report the largest relative error of the logits, the input
gradient, every parameter gradient and every updated buffer.

Relative error of a tensor ``a`` against the reference ``b``::

    err = max|a - b| / max(max|b|, FLOOR * max over the group of max|b|)

The floor matters for tensors that are zero analytically and hold rounding
noise only: the bias gradient of a BN that feeds a conv and another training
mode BN (the second BN subtracts the mean, so the first BN's bias cannot move
the loss), and the running mean of a BN whose input is a normalised, hence
zero-mean, activation through a 1x1 conv. Noise against noise is O(1); against
the group's scale it is ~1e-16.
"""

from __future__ import annotations

import numpy as np
import torch

import numpy_impl
import torch_impl

FLOOR = 1e-3
QUANTITIES = ("logits", "input_grad", "param_grad", "buffers")
FLOAT64_TOL = 1e-9
# float32: a training-mode backward through ~50 BN layers is ill-conditioned (each BN
# backward subtracts two large means), so even torch float32 lands 1e-4..1e-1 away from
# float64 (measured). The bar is torch's own float32 error, with a margin for the
# different rounding order, and a floor for the well-conditioned cases.
FLOAT32_FACTOR = 8.0
FLOAT32_FLOOR = 1e-4


def rel_err(a, b, scale=0.0) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = max(float(np.abs(b).max(initial=0.0)), FLOOR * scale, np.finfo(np.float64).tiny)
    return float(np.abs(a - b).max(initial=0.0) / denom)


def group_errors(ours: dict, ref: dict) -> dict:
    """Per-key relative error, floored by the group's largest reference magnitude."""
    scale = max(float(np.abs(np.asarray(v, np.float64)).max(initial=0.0)) for v in ref.values())
    return {k: rel_err(ours[k], ref[k], scale) for k in ref}


def errors(ours: dict, ref: dict) -> dict:
    """Largest relative error of each quantity of two :func:`_step_*` results."""
    grads = group_errors(ours["param_grad"], ref["param_grad"])
    bufs = group_errors(ours["buffers"], ref["buffers"])
    return {
        "logits": rel_err(ours["logits"], ref["logits"]),
        "input_grad": rel_err(ours["input_grad"], ref["input_grad"]),
        "param_grad": max(grads.values()),
        "buffers": max(bufs.values()),
        "param_grad_worst": max(grads, key=grads.get),
        "buffers_worst": max(bufs, key=bufs.get),
    }


def _step_numpy(model, x, dlogits) -> dict:
    logits = model.forward(x)
    dx = model.backward(dlogits)
    bufs = {k: v for k, v in model.named_buffers() if not k.endswith("num_batches_tracked")}
    return {"logits": logits, "input_grad": dx, "param_grad": model.grads, "buffers": bufs}


def _step_torch(model, x, dlogits) -> dict:

    dtype = next(model.parameters()).dtype
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    logits = model(xt)
    logits.backward(torch.tensor(dlogits, dtype=dtype))
    return {
        "logits": logits.detach().numpy(),
        "input_grad": xt.grad.numpy(),
        "param_grad": {k: p.grad.numpy() for k, p in model.named_parameters()},
        "buffers": {k: b.numpy() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked")},
    }


def compare(
    arch="v2",
    width_mult=1.0,
    dtype="float64",
    resolution=96,
    batch=4,
    seed=0,
    training=True,
    height=None,
    backend="numpy",
) -> dict:
    """Build the NumPy and torch models with identical weights, run one forward and
    backward (training mode unless ``training=False``), return the errors against
    torch float64 and whether they are within tolerance. ``height`` defaults to
    ``resolution`` (a square input)."""

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    kw = {"width_mult": width_mult, "num_classes": 10, "dropout": 0.0}  # dropout masks: different RNGs
    ours = numpy_impl.mobilenet(arch, dtype=dtype, seed=seed, backend=backend, **kw)
    state = torch_impl.state_dict_to_torch(ours.state_dict())

    def torch_model(torch_dtype):
        m = torch_impl.mobilenet(arch, **kw).to(torch_dtype)
        m.load_state_dict(state)  # after .to(): loading into float32 would round float64 weights
        return m.train(training)

    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, 3, height or resolution, resolution)).astype(dtype)
    dlogits = rng.standard_normal((batch, 10)).astype(dtype)
    truth = _step_torch(torch_model(torch.float64), x, dlogits)
    result = {
        "arch": arch,
        "width_mult": width_mult,
        "dtype": dtype,
        "resolution": resolution,
        "batch": batch,
        "training": training,
        "backend": backend,
    }
    result.update(errors(_step_numpy(ours.train(training), x, dlogits), truth))
    if dtype == "float64":
        result["tolerance"] = dict.fromkeys(QUANTITIES, FLOAT64_TOL)
    else:
        baseline = errors(_step_torch(torch_model(torch.float32), x, dlogits), truth)
        result["torch_float32"] = {q: baseline[q] for q in QUANTITIES}
        result["tolerance"] = {q: max(FLOAT32_FACTOR * baseline[q], FLOAT32_FLOOR) for q in QUANTITIES}
    result["ok"] = all(result[q] <= result["tolerance"][q] for q in QUANTITIES)
    return result
