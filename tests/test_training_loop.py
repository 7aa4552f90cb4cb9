"""mobilenet.training.loop: every runner satisfies the loop's Runner protocol (the same methods,
the same parameters), and both tasks the Task protocol."""

import dataclasses
import importlib
import inspect

import numpy as np
import pytest

from mobilenet import data as D
from mobilenet import registry
from mobilenet.detection.config import DetectConfig
from mobilenet.detection.train import Detection
from mobilenet.detection.train import make_runner as make_detect_runner
from mobilenet.training import loop
from mobilenet.training.classify import Classification, make_runner
from mobilenet.training.config import TrainConfig


def _members(protocol):
    return [n for n in dir(protocol) if not n.startswith("_") and callable(getattr(protocol, n, None))]


def _parameters(f):
    return [p.name for p in inspect.signature(f).parameters.values()][1:]  # without self


@pytest.mark.parametrize("key", sorted(registry.RUNNERS))
def test_every_runner_has_the_protocols_methods(key):
    runner = importlib.import_module(registry.RUNNERS[key]).Runner
    for name in _members(loop.Runner):
        assert callable(getattr(runner, name, None)), f"{key}: no {name}"
        ours, theirs = _parameters(getattr(runner, name)), _parameters(getattr(loop.Runner, name))
        assert ours[: len(theirs)] == theirs, f"{key}.{name}{ours} is not the protocol's {theirs}"


def test_runners_and_tasks_are_instances_of_the_protocols():
    cfg = TrainConfig(backend="numpy", width_mult=0.25, epochs=1, batch_size=2)
    runner = make_runner(cfg, 3)
    assert isinstance(runner, loop.Runner)
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 32, 32), dtype=np.float32)
    ds = Classification(cfg, *(dataclasses.replace(_digits(), x=x, y=np.array([0, 1, 2, 0])),) * 2)
    dcfg = DetectConfig(
        backend="numpy", width_mult=0.25, resolution=64, train_size=4, test_size=1, batch_size=2
    )
    assert isinstance(make_detect_runner(dcfg, 6), loop.Runner)
    for task in (ds, Detection.load(dcfg)):
        missing = [n for n in _members(loop.Task) if not callable(getattr(task, n, None))]
        fields = (
            "command",
            "format",
            "partial_keys",
            "counts",
            "times_evaluation",
            "eval_every",
            "mean",
            "std",
        )
        assert not missing and all(hasattr(task, f) for f in fields), missing


def _digits():
    return D.Dataset(np.zeros((1, 3, 32, 32), np.float32), np.zeros(1, np.int64), ("0", "1", "2"))


def test_a_step_output_adds_means_times_the_batch_and_counts_as_they_are():
    cfg = TrainConfig(backend="numpy", width_mult=0.25, epochs=1, batch_size=2)
    x = np.zeros((2, 3, 32, 32), np.float32)
    ds = dataclasses.replace(_digits(), x=np.concatenate([x, x]), y=np.array([0, 1, 2, 0]))
    task = Classification(cfg, ds, ds)

    class Fixed:
        cfg, model = task.cfg, None

        def set_lr(self, lr):
            pass

        def train_step(self, batch, seed):
            return {"loss": 0.5, "correct": 1}

    trainer = loop.Trainer(task, Fixed(), progress=False)
    trainer._step(0, 0, np.array([0, 1]), None)
    trainer._step(0, 1, np.array([2, 3]), None)
    assert trainer.partial["loss"] == 2.0 and trainer.partial["correct"] == 2 and trainer.partial["seen"] == 4
