"""``mobilenet quantize`` and integer checkpoints (mobilenet.deploy.quantize)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mobilenet import checkpoint, cli

RUN = ["--arch", "v2", "--width-mult", "0.35", "--resolution", "32", "--data", "digits", "--batch-size", "16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A short float run and its integer checkpoint."""
    root = tmp_path_factory.mktemp("quant")
    args = ["train", *RUN, "--train-limit", "192", "--epochs", "2", "--no-progress", "--backend", "numpy"]
    assert cli.main([*args, "--out", str(root / "float")]) == 0
    q = ["quantize", "--checkpoint", str(root / "float" / "checkpoint.npz"), "--calibration", "64", "--json"]
    assert cli.main([*q, "--out", str(root / "int8")]) == 0
    return root


def test_quantize_writes_metrics_that_evaluate_reproduces(runs, capsys):
    m = json.loads((runs / "int8" / "metrics.json").read_text())
    assert m["calibration_images"] == 64 and m["quantization"]["bits"] == 8
    assert m["int8_bytes"] < 0.3 * m["float_bytes"]  # int8 weights, a few scales, no BN buffers
    assert m["agreement"] >= 0.9 and abs(m["int8_accuracy"] - m["float_accuracy"]) <= 0.05
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(runs / "int8" / "checkpoint.npz"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["quantized"] and ev["accuracy"] == m["int8_accuracy"] and ev["images"] == m["test_images"]


def _fails(args, capsys, says):
    capsys.readouterr()
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err, err


def test_float_and_integer_checkpoints_are_not_confused(runs, capsys):
    int8 = str(runs / "int8" / "checkpoint.npz")
    _fails(
        ["quantize", "--checkpoint", int8, "--out", str(runs / "again")],
        capsys,
        "already an integer checkpoint",
    )
    _fails(["evaluate", "--checkpoint", int8, "--backend", "numba"], capsys, "runs on NumPy's integer ops")
    _fails(["evaluate", "--checkpoint", int8, "--arch", "v1"], capsys, "not --arch v1")
    _fails(
        ["train", *RUN, "--out", str(runs / "int8"), "--resume", "--no-progress"],
        capsys,
        "it can be evaluated, not trained",
    )


@pytest.mark.parametrize(
    "change, says",
    [
        (
            lambda a: a.update(
                {"qmodel/features.0.0.weight_q": a["qmodel/features.0.0.weight_q"].astype(np.int32)}
            ),
            "must be int8",
        ),
        (
            lambda a: a.update({"qmodel/features.0.0.weight_scale": -a["qmodel/features.0.0.weight_scale"]}),
            "finite and > 0",
        ),
        (
            lambda a: a.update({"qmodel/features.1.conv.1.out_scale": np.float32(0)}),
            "scale must be finite and > 0",
        ),
        (
            lambda a: a.update({"qmodel/features.1.conv.1.out_zero_point": np.int32(300)}),
            "zero_point must be in",
        ),
        (lambda a: a.pop("qmodel/classifier.1.bias_q"), "missing ['classifier.1.bias_q']"),
    ],
)
def test_crafted_integer_checkpoints_are_refused(runs, tmp_path, capsys, change, says):
    arrays, meta = checkpoint.load(runs / "int8" / "checkpoint.npz")
    change(arrays)
    checkpoint.save(tmp_path / "c.npz", arrays, meta)
    _fails(["evaluate", "--checkpoint", str(tmp_path / "c.npz")], capsys, says)


def _folder(root, classes, value=None):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((8, 8), value if value is not None else 40 * i, np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def test_calibration_data_must_hold_the_same_classes(runs, tmp_path, capsys):
    other = _folder(tmp_path / "other", "abcdefghij")
    args = ["quantize", "--checkpoint", str(runs / "float" / "checkpoint.npz"), "--data", str(other)]
    _fails([*args, "--out", str(tmp_path / "q")], capsys, "--data has classes ['a', 'b'")


def test_constant_calibration_images_give_a_working_model(runs, tmp_path, capsys):
    """A range of width 0 must give a tiny scale, not 0 or inf: the model still runs."""
    same = _folder(tmp_path / "constant", [str(d) for d in range(10)], value=0)
    args = ["quantize", "--checkpoint", str(runs / "float" / "checkpoint.npz"), "--data", str(same), "--json"]
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "q")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert 0.0 <= m["int8_accuracy"] <= 1.0


def test_export_and_verify_the_integer_model(runs, tmp_path, capsys):
    onnx_file = tmp_path / "int8.onnx"
    assert (
        cli.main(["export", "--checkpoint", str(runs / "int8" / "checkpoint.npz"), "--onnx", str(onnx_file)])
        == 0
    )
    capsys.readouterr()
    assert cli.main(["verify", "--onnx", str(onnx_file), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ok"] and r["max_units"] <= 1 and r["resolution"] == 32


def test_bench_times_the_integer_checkpoint(runs, capsys):
    args = ["bench", "--checkpoint", str(runs / "int8" / "checkpoint.npz"), "--backends", "numba-int8"]
    capsys.readouterr()
    assert cli.main([*args, "--rounds", "1", "--min-time", "0.01", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["results"]) == ["numba-int8"] and res["cases"] == ["v2 0.35 32px b1 infer"]
    _fails(["bench", "--checkpoint", str(runs / "float" / "checkpoint.npz")], capsys, "is a float checkpoint")
