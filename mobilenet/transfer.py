"""Transfer-learning helpers for the NumPy and the torch models alike.

* :func:`freeze` stops gradients (and optimiser updates) for a prefix of the network and
  keeps its batch norms in eval mode, so their running statistics stay those of the
  pretraining data (a linear probe is ``freeze(model, upto="features")``).
* :func:`replace_classifier` swaps the last Linear for a fresh one with ``num_classes``
  outputs, initialised like torchvision's (normal(0, 0.01), bias 0).
"""

from __future__ import annotations

import numpy as np

import mobilenet_arch as A


def _is_torch(model) -> bool:
    return hasattr(model, "parameters") and hasattr(model, "state_dict") and hasattr(model, "modules")


def _features(model):
    return list(model.features) if _is_torch(model) else list(model._children["features"]._children.values())


def _check_model(fn, model):
    from numpy_impl.models import MobileNet as NumpyMobileNet

    if isinstance(model, NumpyMobileNet):
        return
    try:
        from torch_impl.models import MobileNet as TorchMobileNet
    except ImportError:  # torch is an optional extra
        TorchMobileNet = ()
    if not isinstance(model, TorchMobileNet):
        raise TypeError(
            f"{fn}: model must be a numpy_impl or torch_impl MobileNet, got {type(model).__name__}"
        )


def frozen_modules(model, upto):
    """The top-level parts that ``freeze(model, upto)`` freezes, in order."""
    feats = _features(model)
    if upto == "features":
        return feats
    if isinstance(upto, bool) or not isinstance(upto, (int, np.integer)):
        raise TypeError(f"freeze: upto must be an int (leading feature blocks) or 'features', got {upto!r}")
    if not 0 <= upto <= len(feats):
        raise ValueError(
            f"freeze: upto must be in [0, {len(feats)}] (the model's feature blocks), got {upto}"
        )
    return feats[:upto]


def freeze(model, upto="features"):
    """Freeze ``features[:upto]`` (``upto`` an int), or the whole backbone (``"features"``).

    Frozen parts get no gradient and keep BN in eval mode, also after ``model.train()``.
    Returns the model; :func:`unfreeze` undoes it.
    """
    _check_model("freeze", model)
    unfreeze(model)
    for part in frozen_modules(model, upto):
        if _is_torch(model):
            part.frozen = True
            for p in part.parameters():
                p.requires_grad_(False)
                p.grad = None
        else:
            for _, m in part.named_modules():
                m.frozen = True
                m._grads.clear()
    return model.train(model.training)  # re-applies "frozen parts stay in eval"


def unfreeze(model):
    _check_model("unfreeze", model)
    if _is_torch(model):
        for m in model.modules():
            m.frozen = False
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        for _, m in model.named_modules():
            m.frozen = False
    return model


def trainable_names(model) -> list[str]:
    """Names of the parameters an optimiser should update."""
    if _is_torch(model):
        return [n for n, p in model.named_parameters() if p.requires_grad]
    return [prefix + n for prefix, m in model.named_modules() if not m.frozen for n in m._params]


def replace_classifier(model, num_classes: int, seed: int = 0):
    """Replace the final Linear by a fresh ``in_features -> num_classes`` one (seeded)."""
    _check_model("replace_classifier", model)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"replace_classifier: num_classes must be an int >= 1, got {num_classes!r}")
    num_classes = int(num_classes)
    if _is_torch(model):
        import torch
        from torch import nn

        old = model.classifier[-1]
        new = nn.Linear(old.in_features, num_classes).to(old.weight.dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            new.weight.copy_(torch.randn(new.weight.shape, generator=g, dtype=new.weight.dtype) * 0.01)
            new.bias.zero_()
        model.classifier[-1] = new
    else:
        from numpy_impl.nn import Linear

        head = model._children["classifier"]._children
        key = list(head)[-1]
        old = head[key]
        spec = A.Linear(old._params["weight"].shape[1], num_classes)
        head[key] = Linear(spec, old.F, model.dtype, np.random.default_rng(seed))
        model.num_classes = num_classes
    return model
