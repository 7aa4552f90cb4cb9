"""The summary reproduces the papers' published parameter and multiply-add counts."""

import pytest

import mobilenet_arch as A
from mobilenet.summary import conv_output_size, ssdlite_summary, summarize, summary_dict, totals
from mobilenet_arch import make_divisible
from numpy_impl.detector import ssdlite

# (width, resolution) -> (M mult-adds, M params) from V1 paper Tables 6 and 7, rounded as published
V1_PUBLISHED = {
    (1.0, 224): (569, 4.2),
    (0.75, 224): (325, 2.6),
    (0.5, 224): (149, 1.3),
    (0.25, 224): (41, 0.5),
    (1.0, 192): (418, 4.2),
    (1.0, 160): (290, 4.2),
    (1.0, 128): (186, 4.2),
}


@pytest.mark.parametrize("width,res", list(V1_PUBLISHED))
def test_v1_matches_paper_tables_6_and_7(width, res):
    macs, params = V1_PUBLISHED[(width, res)]
    d = summary_dict("v1", width, res)
    assert round(d["macs"] / 1e6) == pytest.approx(macs, abs=1)  # the paper truncates 290.7 to 290
    assert round(d["params"] / 1e6, 1) == params


def test_v2_matches_paper_and_torchvision():
    d = summary_dict("v2", 1.0, 224)
    assert d["params"] == 3_504_872  # sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters())
    assert round(d["macs"] / 1e6) == 300 + 1  # 300.8 M; the paper prints 300


@pytest.mark.parametrize(
    "width,res,macs",
    [(0.75, 224, 209), (0.5, 224, 97), (0.35, 224, 59), (1.0, 160, 154), (1.0, 128, 99), (0.5, 160, 50)],
)
def test_v2_matches_tf_slim_sweep(width, res, macs):
    assert round(summary_dict("v2", width, res)["macs"] / 1e6) == macs


def test_multiply_adds_count_convolutions_and_the_classifier_only():
    d = summary_dict("v1", 1.0, 224)
    by_type = {}
    for layer in d["layers"]:
        by_type.setdefault(layer["type"].split("/")[0], 0)
        by_type[layer["type"].split("/")[0]] += layer["macs"]
    assert by_type["BatchNorm"] == by_type["ReLU"] == by_type["GlobalAvgPool"] == 0
    # V1 paper Table 2: conv 1x1 94.86%, depthwise 3.06%, first conv 1.19%, FC 0.18% of mult-adds.
    # Those four sum to 99.29%; the first conv's 112*112*32*27 = 10.8 M mult-adds is 1.91%,
    # which makes them sum to 100.01%: the paper's 1.19 is a transposition of 1.91.
    share = {k: 100 * v / d["macs"] for k, v in by_type.items()}
    assert share["Conv1x1"] == pytest.approx(94.86, abs=0.01)
    assert share["DWConv3x3"] == pytest.approx(3.06, abs=0.01)
    assert share["Conv3x3"] == pytest.approx(1.91, abs=0.01)
    assert share["Linear"] == pytest.approx(0.18, abs=0.01)


def test_make_divisible_is_torchvisions():
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24 * 0.5, 1280 * 1.4, 3.0)] == [
        16,
        8,
        16,
        1792,
        8,
    ]


def test_conv_output_size_formula():
    assert conv_output_size(224, 3, 2, 1) == 112
    assert conv_output_size(7, 3, 2, 1) == 4
    assert conv_output_size(10, 3, 1, 0, dilation=2) == 6


def test_v1_parameter_shares_match_paper_table_2():
    # Table 2 counts weights only: no BN parameters, no classifier bias.
    d = summary_dict("v1", 1.0, 224)
    weights = {}
    for layer in d["layers"]:
        kind = layer["type"].split("/")[0]
        if kind in ("Conv1x1", "DWConv3x3", "Conv3x3"):
            weights[kind] = weights.get(kind, 0) + layer["params"]
        elif kind == "Linear":
            weights[kind] = layer["params"] - layer["output_shape"][0]
    total = sum(weights.values())
    expected = {"Conv1x1": 74.59, "DWConv3x3": 1.06, "Conv3x3": 0.02, "Linear": 24.33}
    assert {k: round(100 * v / total, 2) for k, v in weights.items()} == expected


def test_ssdlite_summary_counts_the_built_detector():
    d = ssdlite_summary(0.5, 320, 11)
    model = ssdlite(0.5, 11)
    assert d["params"] == sum(p.size for p in model.params.values())
    assert [tuple(s[1:]) for s in d["feature_maps"]] == model.feature_sizes(320)
    assert [s[1] for s in d["feature_maps"]] == [20, 10, 5, 3, 2, 1]  # SSDLite320's maps
    assert d["macs"] == sum(layer["macs"] for layer in d["layers"])
    # the paper's point: depthwise separable heads cost a fraction of SSD's 3x3 heads
    assert d["head_macs"] < d["regular_head_macs"] / 5


def test_activation_memory_matches_shapes_worked_by_hand():
    from mobilenet.summary import activation_memory

    px = 112 * 112
    v1 = {b["name"]: b for b in activation_memory("v1")}
    # V1 features.1: 32 channels in, depthwise to 32, pointwise to 64, all at 112x112
    assert v1["features.1"]["unfused"] == 4 * px * (32 + 64) == v1["features.1"]["fused"]
    v2 = {b["name"]: b for b in activation_memory("v2")}
    # V2 features.2 (t=6, c=24, s=2): 16 in -> 96 expanded at 112^2 -> 96 at 56^2 -> 24 at 56^2
    b = v2["features.2"]
    assert b["unfused"] == 4 * max(px * (16 + 96), px * 96 + px // 4 * 96, px // 4 * (96 + 24))
    assert b["fused"] == 4 * (px * 16 + px // 4 * 24) and b["hidden"] == 96
    # features.3 keeps its shape: the residual keeps the block's input alive throughout
    s = 56 * 56
    assert v2["features.3"]["unfused"] == 4 * (s * (144 + 144) + s * 24)
    assert max(b["fused"] for b in v2.values()) < max(b["unfused"] for b in v1.values())


def test_full_convolution_mobilenet_is_the_v1_papers_table_4_baseline():
    """Conv MobileNet: each depthwise + pointwise pair of V1 as one full 3x3 convolution."""
    full = totals(summarize(A.v1_spec(separable=False), 224))
    assert abs(full["macs"] / 1e6 - 4866) < 2 and abs(full["params"] / 1e6 - 29.3) < 0.05  # paper Table 4
    convs = [leaf for _, leaf in A.walk(A.v1_spec(separable=False)) if isinstance(leaf, A.Conv)]
    assert len(convs) == 14 and all(c.groups == 1 and c.kernel_size == 3 for c in convs)
    with pytest.raises(TypeError, match="separable must be True or False"):
        A.v1_spec(separable="no")


def test_v2_without_linear_bottlenecks_puts_relu6_after_each_projection():
    plain, ablated = A.v2_spec(width_mult=0.5), A.v2_spec(width_mult=0.5, linear_bottleneck=False)
    acts = [sum(isinstance(leaf, A.Act) for _, leaf in A.walk(s)) for s in (plain, ablated)]
    assert acts[1] - acts[0] == 17  # one per block of Table 2
    assert totals(summarize(plain, 224)) == totals(summarize(ablated, 224))  # same weights and cost
    with pytest.raises(TypeError, match="linear_bottleneck must be True or False"):
        A.v2_spec(linear_bottleneck=1)


def test_v2_shortcut_placements_keep_the_layers_and_move_the_residuals():
    """The V2 paper's Figure 6b: residuals between bottlenecks, between expansions, or none."""
    specs = {s: A.v2_spec(width_mult=0.5, shortcut=s) for s in A.V2_SHORTCUTS}
    leaves = {s: [leaf for _, leaf in A.walk(spec)] for s, spec in specs.items()}
    assert leaves["expansion"] == leaves["bottleneck"] == leaves["none"]  # same layers, same order
    for s, spec in specs.items():
        blocks = [b for _, b in spec.children[0][1] if isinstance(b, A.Block)]
        joined = [b for b in blocks if b.residual]
        assert len(joined) == {"bottleneck": 10, "expansion": 10, "none": 0}[s]
        for b in joined:
            convs = [leaf for _, leaf in A.walk(b.conv) if isinstance(leaf, A.Conv)]
            width = convs[0].in_channels
            assert width == convs[-1].out_channels
            # a bottleneck residual joins thin tensors, an expansion residual the 6x wider ones
            assert (convs[0].groups > 1) == (s == "expansion")
            assert (
                6 * width == convs[0].out_channels
                if s == "bottleneck"
                else width == 6 * convs[1].out_channels
            )
    with pytest.raises(ValueError, match="shortcut must be one of bottleneck, expansion, none"):
        A.v2_spec(shortcut="between")


def test_other_families_recounted_match_their_papers():
    """docs/families.py writes VGG16, GoogLeNet, AlexNet and SqueezeNet down for the counter."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
    import families

    vgg = totals(families.vgg16())
    assert vgg["params"] == 138_357_544  # configuration D's exact count (weights and biases)
    assert abs(vgg["macs"] / 1e6 / 15300 - 1) < 0.02  # V1 paper Table 8 prints 15300 M
    alex = totals(families.alexnet())
    assert abs(alex["macs"] / 1e6 - 720) < 6 and abs(alex["params"] / 1e6 - 60) < 1.0  # Table 9: 720, 60
    goog = totals(families.googlenet())
    # Table 8 prints 1550 M and 6.8 M; the GoogLeNet paper's own Table 1 (without biases) 1.5 G, 6.8 M
    assert abs(goog["macs"] / 1e6 / 1550 - 1) < 0.03 and abs(goog["params"] / 1e6 - 6.8) < 0.25
    squeeze = totals(families.squeezenet())
    assert abs(squeeze["params"] / 1e6 - 1.25) < 0.01  # SqueezeNet v1.0: 1,248,424 parameters
