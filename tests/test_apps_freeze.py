"""mobilenet.apps.freeze: freezing feature stages and replacing the classifier, on both model classes."""

import numpy as np
import pytest

from mobilenet.apps.freeze import freeze, replace_classifier, trainable_names, unfreeze
from mobilenet.training.classify import make_runner
from mobilenet.training.config import TrainConfig
from numpy_impl import mobilenet_v1, mobilenet_v2
from torch_impl import state_dict_to_numpy


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_freeze_trains_only_the_head_and_keeps_bn_statistics(kind):
    """A linear probe: one training step changes the classifier and nothing else, BN running
    statistics included (frozen parts stay in eval mode, even after ``model.train()``)."""
    cfg = TrainConfig(arch="v1", width_mult=0.25, backend=kind, batch_size=4, dropout=0.0)
    runner = make_runner(cfg, 10)
    model = replace_classifier(runner.model, 5, seed=1)
    freeze(model, upto="features")
    runner.make_optimizer()
    model.train()
    names = trainable_names(model)
    assert names == ["classifier.1.weight", "classifier.1.bias"]
    before = _state(model, kind)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    runner.train_step((x, np.array([0, 1, 2, 4])), seed=0)
    after = _state(model, kind)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {"classifier.1.weight", "classifier.1.bias"}
    assert after["classifier.1.weight"].shape == (5, 256)
    # fine-tuning the last blocks: block 13 trains, block 12 (and its BN statistics) do not
    unfreeze(model)
    freeze(model, upto=13)
    runner.make_optimizer()
    before = _state(model, kind)
    runner.train_step((x, np.array([0, 1, 2, 4])), seed=1)
    after = _state(model, kind)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert any(k.startswith("features.13.") for k in changed) and "features.13.1.1.running_mean" in changed
    assert not any(k.startswith(tuple(f"features.{i}." for i in range(13))) for k in changed)


def _state(model, kind):
    sd = model.state_dict()
    return state_dict_to_numpy(sd) if kind == "torch" else sd


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: freeze(object()), TypeError, "numpy_impl or torch_impl MobileNet"),
        (lambda: freeze(mobilenet_v2(0.35), upto=30), ValueError, r"upto must be in \[0, 19\]"),
        (lambda: freeze(mobilenet_v2(0.35), upto="head"), TypeError, "upto"),
        (lambda: replace_classifier(mobilenet_v1(0.25), 0), ValueError, "num_classes must be an int >= 1"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
