"""Whole models: NumPy against the torch mirror with the same weights; state dicts; torchvision layout."""

import numpy as np
import pytest
import torch

import numpy_impl
import torch_impl
from mobilenet.verify import FLOAT64_TOL, QUANTITIES, compare
from numpy_impl.models import channels_last

CASES = [
    # arch, width, resolution (W), height, batch, training
    ("v1", 1.0, 64, 64, 3, True),
    ("v1", 0.25, 32, 32, 4, True),
    ("v1", 0.5, 97, 71, 2, True),  # odd, non-square: the resolution multiplier is any size >= 32
    ("v1", 0.75, 64, 64, 2, False),
    ("v2", 1.0, 64, 64, 3, True),
    ("v2", 0.35, 32, 32, 4, True),
    ("v2", 0.5, 45, 77, 2, True),
    ("v2", 1.4, 64, 64, 2, True),
    ("v2", 0.75, 64, 64, 1, False),
]


@pytest.mark.parametrize("arch,width,res,height,batch,training", CASES)
def test_numpy_model_matches_torch_float64(arch, width, res, height, batch, training):
    r = compare(arch, width, "float64", res, batch, seed=3, training=training, height=height)
    for q in QUANTITIES:
        assert r[q] <= FLOAT64_TOL, f"{q}: relative error {r[q]:.3e} > {FLOAT64_TOL} ({r})"


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_numpy_model_float32_is_as_accurate_as_torch_float32(arch):
    r = compare(arch, 0.5, "float32", 64, 3, seed=5)
    assert r["ok"], r


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_names_and_shapes_match_torch(arch):
    ours = getattr(numpy_impl, f"mobilenet_{arch}")(width_mult=0.5, num_classes=7)
    ref = getattr(torch_impl, f"mobilenet_{arch}")(width_mult=0.5, num_classes=7)
    assert [(k, v.shape) for k, v in ours.params.items()] == [
        (k, tuple(p.shape)) for k, p in ref.named_parameters()
    ]
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref.state_dict().items()
    ]


def test_v2_state_dict_has_torchvisions_layout():
    """Facts about torchvision.models.mobilenet_v2() (torchvision is not importable here)."""
    sd = torch_impl.mobilenet_v2().state_dict()
    params = sum(p.numel() for p in torch_impl.mobilenet_v2().parameters())
    assert params == 3_504_872
    expected_shapes = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.num_batches_tracked": (),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.0.1.running_var": (32,),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.bias": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.running_mean": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.weight": (1280,),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert len([k for k in sd if k.startswith("features.") and k.split(".")[1] == "18"]) == 6
    # the last conv is not thinned below 1280 (torchvision's max(1.0, width_mult))
    assert tuple(torch_impl.mobilenet_v2(0.5).state_dict()["classifier.1.weight"].shape) == (1000, 1280)
    assert tuple(torch_impl.mobilenet_v2(1.4).state_dict()["classifier.1.weight"].shape) == (1000, 1792)


@pytest.mark.parametrize("arch", ["v1", "v2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_is_lossless(arch, dtype):
    ours = getattr(numpy_impl, f"mobilenet_{arch}")(width_mult=0.35, num_classes=5, dtype=dtype, seed=11)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(dtype)
    ours.forward(x)  # moves the running statistics and num_batches_tracked away from their init
    sd = ours.state_dict()
    ref = getattr(torch_impl, f"mobilenet_{arch}")(width_mult=0.35, num_classes=5).to(
        getattr(torch, np.dtype(dtype).name)
    )
    ref.load_state_dict(torch_impl.state_dict_to_torch(sd), strict=True)
    back = getattr(numpy_impl, f"mobilenet_{arch}")(width_mult=0.35, num_classes=5, dtype=dtype, seed=99)
    back.load_state_dict(ref.state_dict())  # torch tensors accepted directly
    for key, value in back.state_dict().items():
        assert value.dtype == sd[key].dtype, key
        np.testing.assert_array_equal(value, sd[key], err_msg=key)
    assert int(sd["features.0.1.num_batches_tracked"]) == 1


def test_init_is_seeded_and_follows_torchvision():
    a = numpy_impl.mobilenet_v2(width_mult=0.5, seed=1)
    b = numpy_impl.mobilenet_v2(width_mult=0.5, seed=1)
    c = numpy_impl.mobilenet_v2(width_mult=0.5, seed=2)
    w = "features.2.conv.0.0.weight"
    np.testing.assert_array_equal(a.params[w], b.params[w])
    assert not np.array_equal(a.params[w], c.params[w])
    big = a.params["features.18.0.weight"]  # (1280, 160, 1, 1): kaiming normal, fan_out = 1280
    assert big.std() == pytest.approx(np.sqrt(2 / 1280), rel=0.02)
    assert a.params["classifier.1.weight"].std() == pytest.approx(0.01, rel=0.02)
    np.testing.assert_array_equal(a.params["features.0.1.weight"], 1)
    np.testing.assert_array_equal(a.params["classifier.1.bias"], 0)


def test_dropout_is_active_only_in_training():
    model = numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=4, dropout=0.5, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    model.eval()
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    model.train()
    assert not np.array_equal(model.forward(x), model.forward(x))


def test_grads_are_filled_and_params_are_live_references():
    model = numpy_impl.mobilenet_v1(width_mult=0.25, num_classes=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    out = model.forward(x)
    model.backward(np.random.default_rng(1).standard_normal(out.shape))
    assert model.grads.keys() == model.params.keys()
    for k in model.params:
        assert model.grads[k].shape == model.params[k].shape
    model.params["classifier.1.bias"][...] = 5.0
    assert model.state_dict()["classifier.1.bias"][0] == 5.0


def test_non_contiguous_input_gives_the_same_answer():
    model = numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=4, dtype=np.float64).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 36))
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last memory
    assert not x_cl.flags.c_contiguous
    np.testing.assert_allclose(model.forward(x_cl), model.forward(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_channels_last_keeps_the_values_in_nhwc_memory(layout):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 5)).astype(np.float32)
    given = {
        "nchw": x,
        "channels_last": np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
        "strided": np.random.default_rng(1).standard_normal((2, 3, 14, 5)).astype(np.float32)[:, :, ::2],
    }[layout]
    got = channels_last(given)
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous and got.dtype == given.dtype
    np.testing.assert_array_equal(got, given)
    if layout == "channels_last":
        assert got is given  # no copy


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backward_without_the_input_gradient(backend):
    """``input_grad=False`` (training: the data needs no gradient) returns None and leaves every
    parameter gradient exactly as the full backward computes it."""
    m = numpy_impl.mobilenet_v2(width_mult=0.25, num_classes=5, dropout=0.0, seed=3, backend=backend)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    d = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    m.forward(x)
    dx = m.backward(d)
    full = {k: v.copy() for k, v in m.grads.items()}
    m.forward(x)
    assert m.backward(d, input_grad=False) is None
    assert dx is not None and dx.shape == x.shape
    for k, v in m.grads.items():
        np.testing.assert_array_equal(v, full[k], err_msg=k)
    m.forward(x)
    np.testing.assert_array_equal(m.backward(d), dx)  # the flag does not stick


@pytest.mark.parametrize("upto", [0, 5, "features"])
def test_both_model_classes_freeze_and_replace_the_classifier_alike(upto):
    """stages / freeze / trainable_names / replace_classifier / unfreeze: the same names on
    both sides, frozen batch norms stay in eval after train(), the new head is the one asked for."""
    npm = numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=4, seed=0)
    tm = torch_impl.mobilenet_v2(width_mult=0.35, num_classes=4)
    assert len(npm.stages()) == len(tm.stages()) == 19
    names = []
    for m in (npm, tm):
        m.replace_classifier(7, seed=3).freeze(upto).train()
        names.append(m.trainable_names())
    assert names[0] == names[1]
    n = 19 if upto == "features" else upto
    assert not any(f"features.{i}." in name for name in names[0] for i in range(n))
    assert "classifier.1.weight" in names[0] and (n == 19 or f"features.{n}." in " ".join(names[0]))
    assert not any(b.training for s in tm.stages()[:n] for b in s.modules())
    assert not any(mod.training for s in npm.stages()[:n] for _, mod in s.named_modules())
    assert npm.params["classifier.1.weight"].shape == tuple(tm.classifier[-1].weight.shape) == (7, 1280)
    for m in (npm, tm):
        m.unfreeze()
    assert len(npm.trainable_names()) == len(list(tm.parameters()))


@pytest.mark.parametrize(
    "arch, kw", [("v1", {"width_mult": 0.5, "dropout": 0.1}), ("v2", {"round_nearest": 4})]
)
def test_build_by_name_is_the_named_builder(arch, kw):
    by_name = numpy_impl.mobilenet(arch, num_classes=7, seed=3, **kw).state_dict()
    named = getattr(numpy_impl, f"mobilenet_{arch}")(num_classes=7, seed=3, **kw).state_dict()
    assert by_name.keys() == named.keys() and all(np.array_equal(by_name[k], named[k]) for k in named)
    t_by_name = torch_impl.mobilenet(arch, num_classes=7, **kw)
    t_named = getattr(torch_impl, f"mobilenet_{arch}")(num_classes=7, **kw)
    assert str(t_by_name) == str(t_named)


def test_build_by_name_refuses_unknown_names():
    with pytest.raises(
        ValueError, match=r"arch must be one of \('v1', 'v2', 'v3-large', 'v3-small'\), got 'v9'"
    ):
        numpy_impl.mobilenet("v9")
    with pytest.raises(
        TypeError, match="v1 takes width_mult, num_classes, dropout, act, separable; got round_nearest"
    ):
        torch_impl.mobilenet("v1", round_nearest=8)


@pytest.mark.parametrize(
    "variant,backend",
    [
        ({"linear_bottleneck": False}, "numpy"),
        ({"shortcut": "expansion"}, "numba"),
        ({"shortcut": "none"}, "numpy"),
    ],
)
def test_v2_ablation_variants_match_torch_float64(variant, backend):
    """The V2 paper's Figure 6 variants (chapter 3's ablation) train the same maths in both
    models: a training-mode step, logits, input gradient and every parameter gradient."""
    kw = {"width_mult": 0.35, "num_classes": 5, "dropout": 0.0, **variant}
    m = numpy_impl.mobilenet("v2", dtype=np.float64, backend=backend, seed=4, **kw)
    t = torch_impl.mobilenet("v2", **kw).double()
    t.load_state_dict(torch_impl.state_dict_to_torch(m.state_dict()))
    rng = np.random.default_rng(2)
    x, dlogits = rng.standard_normal((2, 3, 32, 40)), rng.standard_normal((2, 5))
    y, dx = m.forward(x), m.backward(dlogits)
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    yt.backward(torch.tensor(dlogits))

    def err(a, b):
        return np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)

    assert err(y, yt.detach().numpy()) < 1e-10 and err(dx, xt.grad.numpy()) < 1e-9
    # Against the largest gradient of the model, not each one's own: a batch-norm bias whose
    # output reaches the next batch norm through a linear 1x1 conv alone (every projection
    # without a shortcut after it) has an exact gradient of 0, and holds rounding noise only.
    scale = max(np.abs(p.grad.numpy()).max() for p in t.parameters())
    for name, p in t.named_parameters():
        assert np.abs(m.grads[name] - p.grad.numpy()).max() < 1e-9 * scale, name
