"""mobilenet.detection.train and ``mobilenet detect``: the detection trainer, its runners, checkpoints,
resume, the COCO data path, and the command line on good and bad input."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from mobilenet import checkpoint, cli
from mobilenet.data.scenes import make_scenes, write_coco
from mobilenet.detection import config as DC
from mobilenet.detection import train as DT
from mobilenet.detection.numpy_runner import Runner as NumpyDetectRunner
from mobilenet.verify import group_errors

TINY = DC.DetectConfig(
    width_mult=0.25,
    resolution=64,
    train_size=24,
    test_size=6,
    backend="numpy",
    epochs=2,
    batch_size=8,
    checkpoint_every=2,
)
TINY_ARGS = ["--width-mult", "0.25", "--resolution", "64", "--train-size", "24", "--test-size", "6"]
TINY_ARGS += ["--epochs", "1", "--batch-size", "8", "--no-progress"]


def test_numpy_and_torch_runners_take_the_same_step_in_float64():
    cfg = dataclasses.replace(TINY, dtype="float64", weight_decay=1e-3, lr=0.1)
    train, _ = DT.load_split(dataclasses.replace(cfg, train_size=8, test_size=1))
    x, loc_t, labels = DT.Detection(cfg, train, train).batch(np.arange(8), np.random.default_rng(0))
    assert (labels > 0).any() and (labels == 0).any()
    a = NumpyDetectRunner(cfg, len(train.classes))
    b = DT.make_runner(dataclasses.replace(cfg, backend="torch"), len(train.classes))
    start = {k: v.copy() for k, v in a.model.state_dict().items()}
    for runner in (a, b):
        runner.set_lr(0.1)
    # One step: a second one can select other hard negatives on a near-tie of two losses (the
    # selection is a discontinuity), which moves the weights by ~1e-7 relative: not a bug.
    sa, sb = a.train_step((x, loc_t, labels), 0), b.train_step((x, loc_t, labels), 0)
    assert sa.keys() == sb.keys() == {"loss", "loc_loss", "conf_loss"}
    np.testing.assert_allclose([sa[k] for k in sa], [sb[k] for k in sa], rtol=1e-12)
    sa = {k[6:]: v for k, v in a.state_arrays().items() if k.startswith("model/")}
    sb = {k[6:]: v for k, v in b.state_arrays().items() if k.startswith("model/")}
    assert sa.keys() == sb.keys() == start.keys()
    # the updates (lr, nesterov momentum, decay on the right groups), floored by the largest as
    # mobilenet verify floors gradients: a BN bias before a residual sum moves by rounding noise
    errs = group_errors({k: sa[k] - start[k] for k in sa}, {k: sb[k] - start[k] for k in sa})
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-9, (worst, errs[worst])
    assert any(np.abs(sa[k] - start[k]).max() > 1e-3 for k in sa)  # it did move


def test_numpy_and_torch_runners_predict_alike_in_float64():
    cfg = dataclasses.replace(TINY, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64))
    a, b = NumpyDetectRunner(cfg, 6), DT.make_runner(dataclasses.replace(cfg, backend="torch"), 6)
    for u, v in zip(a.predict(x), b.predict(x)):  # eval mode: the running statistics, both heads
        assert np.abs(u - v).max() <= 1e-9 * np.abs(v).max()


def _interrupt_after(monkeypatch, steps):
    """Make the NumPy runner raise KeyboardInterrupt once it has taken ``steps`` steps."""
    real, count = NumpyDetectRunner.train_step, {"n": 0}

    def step(self, *a):
        if count["n"] == steps:
            raise KeyboardInterrupt
        count["n"] += 1
        return real(self, *a)

    monkeypatch.setattr(NumpyDetectRunner, "train_step", step)


def test_interrupted_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_after(m, 5)  # mid-epoch 2 (3 steps per epoch), after the checkpoint at step 4
        with pytest.raises(KeyboardInterrupt):
            DT.run(TINY, tmp_path / "cut", progress=False)
    assert checkpoint.load(tmp_path / "cut" / "checkpoint.npz")[1]["step"] == 4
    resumed = DT.run(TINY, tmp_path / "cut", resume=True, progress=False)
    straight = DT.run(TINY, tmp_path / "straight", progress=False)
    a = checkpoint.load(tmp_path / "cut" / "checkpoint.npz")[0]
    b = checkpoint.load(tmp_path / "straight" / "checkpoint.npz")[0]
    assert a.keys() == b.keys()
    for k in a:  # weights, BN statistics and momentum buffers, bit for bit
        assert np.array_equal(a[k], b[k]), k
    timeless = [
        {k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in straight["history"]
    ]
    assert resumed["map_50"] == straight["map_50"]
    assert [{k: h[k] for k in t} for h, t in zip(resumed["history"], timeless)] == timeless
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["map_50"] == straight["map_50"] and 0 <= metrics["map_50"] <= 1
    assert set(metrics["per_class"]) == set(make_scenes(1, 64).classes)
    assert (tmp_path / "straight" / "detection_curves.png").stat().st_size > 1000


def test_refused_resume_overwrites_nothing(tmp_path):
    out = tmp_path / "run"
    DT.run(dataclasses.replace(TINY, epochs=1), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="another configuration.*lr"):
        DT.run(dataclasses.replace(TINY, epochs=1, lr=0.2), out, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        DT.run(dataclasses.replace(TINY, epochs=1), out, progress=False)
    with pytest.raises(ValueError, match="checkpoint of the numpy backend, this run's backend is torch"):
        DT.run(dataclasses.replace(TINY, epochs=1, backend="torch"), out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_coco_file_trains_with_a_held_out_fifth(tmp_path):
    ann = write_coco(tmp_path / "coco", make_scenes(30, 64, seed=5))
    cfg = dataclasses.replace(TINY, data=str(ann), test_size=100)
    train, test = DT.load_split(cfg)
    assert (len(train), len(test)) == (24, 6)  # at most a fifth held out
    fp_train = {arr.tobytes() for arr in train.x}
    assert not any(arr.tobytes() in fp_train for arr in test.x)
    with pytest.raises(ValueError, match="too few images"):
        DT.load_split(dataclasses.replace(cfg, batch_size=32))


@pytest.mark.parametrize(
    "change, exc, match",
    [
        ({"backend": "jax"}, ValueError, "backend must be one of"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"train_size": 1}, ValueError, "train_size"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"augment": "yes"}, TypeError, "augment must be True or False"),
        ({"data": 3}, TypeError, "data must be a path"),
    ],
)
def test_bad_config(change, exc, match):
    with pytest.raises(exc, match=match):
        dataclasses.replace(TINY, **change).validate()


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    assert cli.main(["detect", "train", *TINY_ARGS, "--backend", "numba", "--out", str(out)]) == 0
    return out


def test_cli_train_evaluate_and_predict(detector, tmp_path, capsys):
    capsys.readouterr()
    metrics = json.loads((detector / "metrics.json").read_text())
    ckpt = str(detector / "checkpoint.npz")
    assert cli.main(["detect", "evaluate", "--checkpoint", ckpt, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == 6 and ev["map_50"] == pytest.approx(metrics["map_50"], abs=1e-12)
    argv = [
        "detect",
        "scenes",
        "--count",
        "2",
        "--resolution",
        "96",
        "--seed",
        "9",
        "--out",
        str(tmp_path / "s"),
    ]
    assert cli.main(argv) == 0
    scenes = tmp_path / "s" / "annotations.json"
    assert len(json.loads(scenes.read_text())["images"]) == 2
    assert "wrote 2 scenes" in capsys.readouterr().out
    image = next((tmp_path / "s" / "images").iterdir())
    out = tmp_path / "pred.png"
    args = ["detect", "predict", "--checkpoint", ckpt, "--image", str(image), "--out", str(out)]
    assert cli.main([*args, "--min-score", "0.01", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["detections"]
    assert found and all(d["score"] >= 0.01 and d["class"] in metrics["classes"] for d in found)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a COCO file as the evaluation data
    assert cli.main(["detect", "evaluate", "--checkpoint", ckpt, "--data", str(scenes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2


def test_cli_bad_input_is_a_message_not_a_traceback(detector, tmp_path, capsys):
    ckpt = str(detector / "checkpoint.npz")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all")
    out = str(tmp_path / "o.png")
    cases = [
        (["detect", "predict", "--checkpoint", ckpt, "--image", str(fake), "--out", out], "not an image"),
        (
            ["detect", "predict", "--checkpoint", ckpt, "--image", str(tmp_path / "no.png"), "--out", out],
            "does not exist",
        ),
        (["detect", "evaluate", "--checkpoint", str(fake)], "fake.png"),
        (["detect", "evaluate", "--checkpoint", ckpt, "--backend", "torch"], "cannot be loaded on the torch"),
        (["detect", "train", *TINY_ARGS, "--data", str(fake), "--out", str(tmp_path / "r")], "fake.png"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    # a detector's description over arrays that are not its weights
    meta = checkpoint.load(ckpt)[1]
    for suffix in (".npz", ".pt"):
        crafted = tmp_path / f"crafted{suffix}"
        backend = "numba" if suffix == ".npz" else "torch"
        crafted_meta = {**meta, "config": {**meta["config"], "backend": backend}}
        checkpoint.save(crafted, {"model/body1.0.0.weight": np.zeros((2, 3, 3, 3))}, crafted_meta)
        assert cli.main(["detect", "evaluate", "--checkpoint", str(crafted)]) == 2
        err = capsys.readouterr().err
        assert "body1" in err and "Traceback" not in err, err
    # a classification checkpoint is not a detector
    other = tmp_path / "cls.npz"
    checkpoint.save(other, {"model/w": np.zeros(2)}, {"config": {"arch": "v2"}, "num_classes": 2})
    assert (
        cli.main(["detect", "predict", "--checkpoint", str(other), "--image", str(fake), "--out", out]) == 2
    )
    assert "not a detector checkpoint" in capsys.readouterr().err


def test_summary_counts_the_detector(capsys):
    assert (
        cli.main(
            [
                "summary",
                "--arch",
                "ssdlite",
                "--width-mult",
                "1",
                "--resolution",
                "320",
                "--num-classes",
                "91",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["arch"] == "ssdlite" and d["regular_head_macs"] > 5 * d["head_macs"]
    assert cli.main(["summary", "--arch", "ssdlite"]) == 0
    assert "SSD's regular 3x3 heads" in capsys.readouterr().out


def test_torch_runner_state_round_trips():
    cfg = dataclasses.replace(TINY, backend="torch")
    train, _ = DT.load_split(dataclasses.replace(cfg, train_size=8, test_size=1))
    batch = DT.Detection(cfg, train, train).batch(np.arange(8), np.random.default_rng(0))
    a = DT.make_runner(cfg, 6)
    a.train_step(batch, 0)
    b = DT.make_runner(cfg, 6)
    b.load_state_arrays(a.state_arrays())
    assert a.train_step(batch, 0) == b.train_step(batch, 0)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
