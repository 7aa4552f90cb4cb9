"""mobilenet.backends: the one registry the CLI, the trainer and the apps read."""

import pytest

import mobilenet_arch as A
from mobilenet import backends as B
from mobilenet.cli import build_parser
from mobilenet.training.config import TrainConfig
from numpy_impl.backend import BACKENDS as OPS_BACKENDS


def test_registry_covers_every_ops_backend_and_the_torch_model():
    assert set(B.NUMPY_MODEL) == set(OPS_BACKENDS)
    assert {b.model for b in B.BACKENDS.values()} == {"numpy_impl", "torch_impl"}
    assert B.compatible("numpy", "numba") and not B.compatible("numba", "torch")
    with pytest.raises(
        ValueError, match=r"train: backend must be one of \('numpy', 'numba', 'torch'\), got 'jax'"
    ):
        B.get("jax", "train")


def _choices(parser, command, option):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_cli_choices_come_from_the_registry_and_the_spec():
    p = build_parser()
    for command in ("train", "evaluate", "transfer", "embed"):
        assert _choices(p, command, "--backend") == B.NAMES
    assert _choices(p, "verify", "--backend") == B.NUMPY_MODEL
    assert _choices(p, "summary", "--arch") == (*A.ARCHS, "ssdlite")  # the detector: summary only
    assert _choices(p, "verify", "--arch") == (*A.ARCHS, "all")
    detect = next(a for a in p._actions if a.dest == "command").choices["detect"]
    nested = next(a for a in detect._actions if a.dest == "detect_command").choices
    for command in ("train", "evaluate", "predict"):
        option = next(a for a in nested[command]._actions if "--backend" in a.option_strings)
        assert tuple(option.choices) == B.NAMES


def test_config_validation_reads_the_registry():
    with pytest.raises(ValueError, match="backend must be one of"):
        TrainConfig(backend="jax").validate()
    with pytest.raises(ValueError, match=r"arch must be one of \('v1', 'v2', 'v3-large', 'v3-small'\)"):
        TrainConfig(arch="v3").validate()
