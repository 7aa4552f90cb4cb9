"""numpy_impl.fusion: what each backend runs together, planned from the spec."""

import kernels
import mobilenet_arch as A
from numpy_impl import functional as F
from numpy_impl.fusion import BlockPlan, fused_activation, plan_block, plan_seq


def test_the_reference_fuses_nothing_and_the_kernels_fuse_bn_activations_and_fold():
    stem = A.conv_bn_act(3, 16, 3, stride=2)  # conv "0", batch norm "1", ReLU6 "2"
    ref, fast = plan_seq(stem, F), plan_seq(stem, kernels)
    assert (ref.bn_activation, ref.identities, ref.folds) == ({}, frozenset(), {})
    assert fast.bn_activation == {"1": "relu6"} and fast.identities == {"2"} and fast.folds == {"0": "1"}


def test_a_depthwise_conv_does_not_fold_but_a_one_channel_pointwise_does():
    dw = A.conv_bn_act(8, 8, 3, groups=8)
    assert plan_seq(dw, kernels).folds == {}
    one = A.conv_bn_act(1, 1, 1)  # groups == channels == 1, but a 1x1: the pointwise op
    assert plan_seq(one, kernels).folds == {"0": "1"}


def test_block_plans_say_where_each_part_is():
    v2 = A.inverted_residual(16, 24, 2, 6)
    assert plan_block(v2) == BlockPlan("relu6", ("0",), ("1",), None, ("2",), ("3",))
    no_expand = A.inverted_residual(32, 16, 1, 1)
    assert plan_block(no_expand) == BlockPlan("relu6", None, ("0",), None, ("1",), ("2",))
    v3 = A.bneck(16, 5, 72, 24, True, "HS", 2)  # expand, depthwise, SE, then a projection Seq
    assert plan_block(v3) == BlockPlan("hardswish", ("0",), ("1",), ("2",), ("3", "0"), ("3", "1"))
    assert (
        fused_activation(v3) == "hardswish"
        and fused_activation(A.bneck(16, 3, 16, 16, True, "RE", 2)) == "relu"
    )
