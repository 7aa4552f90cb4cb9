"""Deployment: ONNX export checked by onnxruntime, and torchvision-format state_dicts in and out."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import torch_impl
from mobilenet import cli
from mobilenet.deploy import onnx_export, state_dicts


def _export(tmp_path, arch="v2", **kw):
    kw = {"width_mult": 0.35, "num_classes": 5, "resolution": 32, "seed": 3, **kw}
    path = tmp_path / f"{arch}.onnx"
    onnx_export.export_onnx(path, arch=arch, **kw)
    return path


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_export_then_verify_within_tolerance(tmp_path, arch):
    r = onnx_export.verify_onnx(_export(tmp_path, arch))
    assert r["ok"] and r["rel_err"] <= onnx_export.ONNX_TOL and r["batch"] != 1  # the dynamic batch is used
    assert (r["arch"], r["width_mult"], r["num_classes"]) == (arch, 0.35, 5)


def test_verify_fails_on_a_tampered_weight(tmp_path):
    path = _export(tmp_path)
    proto = onnx.load(path)
    init = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))  # the classifier or a 1x1 conv
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.05 * np.abs(w).max()
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(proto, path)
    r = onnx_export.verify_onnx(path)
    assert not r["ok"] and r["rel_err"] > onnx_export.ONNX_TOL


def test_exported_batch_dimension_is_dynamic(tmp_path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(_export(tmp_path)), providers=["CPUExecutionProvider"])
    for n in (1, 4):
        x = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
        assert sess.run(None, {"input": x})[0].shape == (n, 5)


def test_export_from_checkpoint_and_verify_follows_the_file(tmp_path):
    m = torch_impl.mobilenet_v2(width_mult=0.5, num_classes=7)
    torch.save(m.state_dict(), tmp_path / "w.pth")
    state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz")
    onnx_path = tmp_path / "c.onnx"
    onnx_export.export_onnx(onnx_path, checkpoint=tmp_path / "c.npz", resolution=32)
    assert onnx_export.verify_onnx(onnx_path)["ok"]
    (tmp_path / "c.npz").rename(tmp_path / "moved.npz")
    with pytest.raises(FileNotFoundError, match="pass --checkpoint"):
        onnx_export.verify_onnx(onnx_path)
    assert onnx_export.verify_onnx(onnx_path, checkpoint=tmp_path / "moved.npz")["ok"]
    torch.save(torch_impl.mobilenet_v2(width_mult=0.5, num_classes=7).state_dict(), tmp_path / "x.pth")
    state_dicts.convert(tmp_path / "x.pth", tmp_path / "other.npz")
    with pytest.raises(ValueError, match="SHA-256"):
        onnx_export.verify_onnx(onnx_path, checkpoint=tmp_path / "other.npz")


def test_verify_refuses_files_that_are_not_our_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ValueError, match="not an ONNX model|not written by"):
        onnx_export.verify_onnx(bad)
    proto = onnx.load(_export(tmp_path))
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="not written by `mobilenet export`"):
        onnx_export.verify_onnx(tmp_path / "plain.onnx")


def _torchvision_like(width, classes, seed=0):
    """A MobileNetV2 with non-trivial BN statistics, saved as torchvision's state_dicts are."""
    torch.manual_seed(seed)
    m = torch_impl.mobilenet_v2(width_mult=width, num_classes=classes)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
                mod.num_batches_tracked.fill_(1234)
    return m.eval()


@pytest.mark.parametrize("width", [0.35, 0.75, 1.4])
def test_convert_round_trips_and_infers_width_and_classes(tmp_path, width):
    m = _torchvision_like(width, 11)
    torch.save(m.state_dict(), tmp_path / "w.pth")
    r = state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz")
    assert (r["width_mult"], r["num_classes"]) == (width, 11)
    state, meta = state_dicts.read_checkpoint(tmp_path / "c.npz")
    ours = state_dicts.source_model("v2", width, 11, state, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        ref = m.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    state_dicts.convert(tmp_path / "c.npz", tmp_path / "back.pth")
    back, orig = torch.load(tmp_path / "back.pth", weights_only=True), torch.load(tmp_path / "w.pth")
    assert list(back) == list(orig)
    assert all(back[k].dtype == orig[k].dtype and torch.equal(back[k], orig[k]) for k in orig)


def test_convert_accepts_wrapped_and_dataparallel_state_dicts(tmp_path):
    sd = _torchvision_like(0.5, 3).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    assert state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz")["width_mult"] == 0.5


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda sd: sd.pop("features.3.conv.1.1.running_var"),
            "missing keys: features.3.conv.1.1.running_var",
        ),
        (
            lambda sd: sd.__setitem__("features.99.weight", torch.zeros(3)),
            "unexpected keys: features.99.weight",
        ),
        (
            lambda sd: sd.__setitem__("features.2.conv.2.weight", torch.zeros(24, 95, 1, 1)),
            r"wrong shapes: features.2.conv.2.weight \(24, 95, 1, 1\)",
        ),
    ],
)
def test_convert_refuses_mismatches_naming_them(tmp_path, edit, message):
    sd = dict(_torchvision_like(1.0, 4).state_dict())
    edit(sd)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=message):
        state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz", width_mult=1.0)
    with pytest.raises(ValueError, match=message):
        state_dicts.convert(tmp_path / "w.pth", tmp_path / "c.npz")  # inferring: the same names


def test_convert_refuses_pickled_modules_and_other_files(tmp_path):
    torch.save(torch_impl.mobilenet_v2(width_mult=0.35), tmp_path / "module.pth")
    with pytest.raises(ValueError, match="never loaded"):
        state_dicts.convert(tmp_path / "module.pth", tmp_path / "c.npz")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a state_dict file"):
        state_dicts.convert(tmp_path / "junk.pth", tmp_path / "c.npz")
    with pytest.raises(ValueError, match="must end in .npz"):
        state_dicts.convert(tmp_path / "junk.pth", tmp_path / "c.txt")


def test_cli_export_verify_convert(tmp_path, capsys):
    onnx_path = str(tmp_path / "m.onnx")
    assert cli.main(["export", "--onnx", onnx_path, "--width-mult", "0.35", "--resolution", "32"]) == 0
    assert cli.main(["verify", "--onnx", onnx_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 2)[-1])["ok"]
    torch.save(_torchvision_like(0.5, 3).state_dict(), tmp_path / "w.pth")
    assert cli.main(["convert", str(tmp_path / "w.pth"), "--out", str(tmp_path / "c.npz")]) == 0
    assert "width 0.5, 3 classes" in capsys.readouterr().out
    assert cli.main(["convert", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "c2.npz")]) == 2
    assert "no file at" in capsys.readouterr().err
    args = ["export", "--onnx", onnx_path, "--checkpoint", str(tmp_path / "c.npz"), "--arch", "v2"]
    assert cli.main(args) == 2
    assert "come from the checkpoint" in capsys.readouterr().err


def test_verify_refuses_metadata_that_does_not_describe_the_graph(tmp_path):
    path = _export(tmp_path)
    for key, value, message in (
        ("width_mult", "100.0", "the file was altered"),
        ("num_classes", "1000000", "the file was altered"),
        ("resolution", "100000", "verify runs 32-1024 px"),
        ("arch", "v9", "malformed"),
    ):
        proto = onnx.load(path)
        for p in proto.metadata_props:
            if p.key == f"mobilenet.{key}":
                p.value = value
        onnx.save(proto, tmp_path / "crafted.onnx")
        with pytest.raises(ValueError, match=message):
            onnx_export.verify_onnx(tmp_path / "crafted.onnx")
