"""The backend contract (``numpy_impl.backend``): every backend offers every reference op with
the reference's parameters and declares the flags the models read."""

import inspect

import pytest

import kernels
import numpy_impl.functional as F
from numpy_impl import get_backend
from numpy_impl.backend import BACKENDS


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_offers_every_op_with_the_reference_parameters(name):
    """A backend may add keyword-only options after the reference's parameters, nothing else."""
    ops = get_backend(name)
    for op in F.OPS:
        fn = getattr(ops, op)
        ref = list(inspect.signature(getattr(F, op)).parameters.values())
        got = list(inspect.signature(fn).parameters.values())
        assert [(p.name, p.kind, p.default) for p in got[: len(ref)]] == [
            (p.name, p.kind, p.default) for p in ref
        ], (
            f"{name}.{op}{inspect.signature(fn)} differs from the reference's {inspect.signature(getattr(F, op))}"
        )
        extra = [p.name for p in got[len(ref) :] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert not extra, (
            f"{name}.{op}: options after the reference's parameters must be keyword-only: {extra}"
        )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_declares_the_flags(name):
    ops = get_backend(name)
    assert ops.MEMORY_FORMAT in ("contiguous", "channels_last")
    assert isinstance(ops.FUSED_INVERTED_RESIDUAL, bool)
    assert set(ops.FUSED_BN_ACTIVATIONS) <= {"relu", "relu6", "hardswish"}
    if ops.FUSED_BN_ACTIVATIONS:  # then batch_norm takes the activation
        assert "activation" in inspect.signature(ops.batch_norm).parameters
    assert isinstance(ops.FOLDED_CONV_BN, bool)
    if ops.FOLDED_CONV_BN:  # then both convolutions take the batch norm
        for op in (ops.conv2d, ops.pointwise_conv2d):
            assert {"bn", "eps", "activation"} <= set(inspect.signature(op).parameters)
    assert set(F.FLAGS) <= set(dir(ops))


def test_every_backward_takes_the_upstream_gradient_first_as_dout():
    backwards = [op for op in F.OPS if op.endswith("_backward")]
    assert len(backwards) == len(F.OPS) // 2  # every forward has its backward
    for op in backwards:
        assert op.removesuffix("_backward") in F.OPS
        first = next(iter(inspect.signature(getattr(F, op)).parameters))
        assert first == "dout", f"{op}: first parameter {first!r}"


def test_kernels_fall_back_to_the_reference_for_what_they_do_not_override():
    assert kernels.relu6 is F.relu6 and kernels.softmax_cross_entropy is F.softmax_cross_entropy
    assert kernels.depthwise_conv2d is not F.depthwise_conv2d
    assert set(F.OPS) <= set(kernels.__all__) and set(F.OPS) <= set(dir(kernels))
    with pytest.raises(AttributeError, match="no attribute 'relu7'"):
        kernels.relu7  # noqa: B018


def test_the_contract_check_catches_a_changed_parameter(monkeypatch):
    """The signature test above fails when a backend renames, reorders or re-defaults a parameter."""

    def relu6(y):  # renamed parameter
        return y

    monkeypatch.setattr(kernels, "relu6", relu6, raising=False)
    with pytest.raises(AssertionError, match="relu6"):
        test_every_backend_offers_every_op_with_the_reference_parameters("numba")
