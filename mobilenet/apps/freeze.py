"""Transfer learning for the NumPy and the torch models alike: functions over the methods
both model classes offer (``stages``, ``freeze``, ``unfreeze``, ``trainable_names``,
``replace_classifier``).

* :func:`freeze` stops gradients (and optimiser updates) for a prefix of the network and
  keeps its batch norms in eval mode, so their running statistics stay those of the
  pretraining data (a linear probe is ``freeze(model, upto="features")``).
* :func:`replace_classifier` swaps the last Linear for a fresh one with ``num_classes``
  outputs, initialised like torchvision's (normal(0, 0.01), bias 0).
"""

from __future__ import annotations

import mobilenet_arch as A

_METHODS = ("stages", "freeze", "unfreeze", "trainable_names", "replace_classifier")


def _check_model(fn, model):
    if not all(callable(getattr(model, m, None)) for m in _METHODS):
        got = type(model).__name__
        raise TypeError(f"{fn}: model must be a numpy_impl or torch_impl MobileNet, got {got}")
    return model


def frozen_modules(model, upto):
    """The top-level parts that ``freeze(model, upto)`` freezes, in order."""
    stages = _check_model("freeze", model).stages()
    return stages[: A.frozen_stages(upto, len(stages))]


def freeze(model, upto="features"):
    """Freeze ``features[:upto]`` (``upto`` an int), or the whole backbone (``"features"``).

    Frozen parts get no gradient and keep BN in eval mode, also after ``model.train()``.
    Returns the model; :func:`unfreeze` undoes it.
    """
    return _check_model("freeze", model).freeze(upto)


def unfreeze(model):
    return _check_model("unfreeze", model).unfreeze()


def trainable_names(model) -> list[str]:
    """Names of the parameters an optimiser should update."""
    return _check_model("trainable_names", model).trainable_names()


def replace_classifier(model, num_classes: int, seed: int = 0):
    """Replace the final Linear by a fresh ``in_features -> num_classes`` one (seeded)."""
    return _check_model("replace_classifier", model).replace_classifier(num_classes, seed)
