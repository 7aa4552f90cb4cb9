"""Whole training runs: NumPy vs torch, kill-and-resume, checkpoints."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mobilenet import checkpoint, cli
from mobilenet import data as D
from mobilenet.training.classify import Classification, load_split, load_trained, make_runner
from mobilenet.training.config import TrainConfig
from mobilenet.training.loop import Trainer, step_seed
from torch_impl import state_dict_to_numpy

# Small and quick, but the real thing: V2 blocks with and without residuals, BN, augmentation.
TINY = [
    "--arch",
    "v2",
    "--width-mult",
    "0.35",
    "--resolution",
    "32",
    "--data",
    "digits",
    "--batch-size",
    "16",
    "--train-limit",
    "96",
    "--lr",
    "0.02",
    "--seed",
    "3",
    "--no-progress",
]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _warm_start():
    """Weights after 200 float32 torch steps on digits (lr 0.02), as float64 arrays.

    Why not torchvision's initial weights: at that init a BN network's gradients explode with
    depth (Yang et al. 2019, "A mean field theory of batch normalization"): here a 1e-13
    perturbation of a *torch* float64 run grows to O(1) within 50 steps even at lr 1e-5, so no
    two implementations can agree to 1e-8 from there. After 200 warm-up steps the same
    perturbation stays at ~1e-12 over the 50 steps below (measured with lr 1e-3).
    """
    cfg = TrainConfig(
        arch="v2",
        width_mult=0.35,
        resolution=32,
        backend="torch",
        dtype="float32",
        epochs=1,
        batch_size=8,
        lr=0.02,
        dropout=0.0,
        train_limit=1600,
        seed=1,
    )
    train, test = load_split(cfg)
    runner = make_runner(cfg, 10)
    Trainer(Classification(cfg, train, test.subset(np.arange(8))), runner, progress=False).fit()
    return {
        k: v.astype(np.float64) if v.dtype.kind == "f" else v
        for k, v in state_dict_to_numpy(runner.model.state_dict()).items()
    }


def test_whole_run_float64_numpy_and_torch_stay_together():
    """50 SGD steps (momentum 0.9, nesterov, weight decay with BN/depthwise exempt, cosine
    schedule, label smoothing 0.1, shifted batches, train-mode BN) from the same weights:
    every parameter and buffer of the NumPy model agrees with torch's to 1e-8 relative."""
    warm = _warm_start()
    cfg = TrainConfig(
        arch="v2",
        width_mult=0.35,
        resolution=32,
        backend="numpy",
        dtype="float64",
        epochs=1,
        batch_size=8,
        lr=1e-3,
        warmup_epochs=0,
        dropout=0.0,
        label_smoothing=0.1,
        train_limit=400,
        seed=2,
    )
    train, test = load_split(cfg)
    test = test.subset(np.arange(64))
    results = {}
    for backend in ("numpy", "torch"):
        c = dataclasses.replace(cfg, backend=backend)
        runner = make_runner(c, len(train.classes))
        runner.model.load_state_dict(
            warm if backend == "numpy" else {k: torch.from_numpy(v) for k, v in warm.items()}
        )
        m = Trainer(Classification(c, train, test), runner, progress=False).fit()
        assert m["steps"] == 50
        sd = runner.model.state_dict()
        results[backend] = (m, sd if backend == "numpy" else state_dict_to_numpy(sd))
    (m_np, sd_np), (m_t, sd_t) = results["numpy"], results["torch"]
    assert sd_np.keys() == sd_t.keys() == warm.keys()
    errors = {k: _rel(sd_np[k], sd_t[k]) for k in sd_np}
    # A running mean is used as (x - mean) / sqrt(var): its error counts in units of the running
    # std. Relative to itself it can be meaningless: the BN after a 1x1 conv whose input is a
    # training-mode BN output has a running mean of pure rounding noise (~1e-8 here, since the
    # input's batch mean is 0), which two correct implementations do not share to 1e-8.
    for k in errors:
        if k.endswith("running_mean"):
            std = np.sqrt(sd_t[k.replace("running_mean", "running_var")])
            errors[k] = float(np.max(np.abs(sd_np[k] - sd_t[k]) / std))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-8, (worst, errors[worst])  # measured: 2.4e-10 (a BN bias), median 3e-16
    # the run must have moved the weights far more than 1e-8, or agreeing proves nothing
    moved = {k: _rel(sd_t[k], warm[k]) for k in sd_t if k.endswith("weight")}
    assert np.median(list(moved.values())) > 1e-4, moved
    h_np, h_t = m_np["history"][0], m_t["history"][0]
    assert abs(h_np["train_loss"] - h_t["train_loss"]) <= 1e-8 * h_t["train_loss"]
    assert abs(h_np["test_loss"] - h_t["test_loss"]) <= 1e-8 * h_t["test_loss"]


def _weights(path):
    arrays, meta = checkpoint.load(path)
    return arrays, meta


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path, backend):
    args = [*TINY, "--backend", backend, "--epochs", "2", "--checkpoint-every", "2"]
    # numba: on a fresh clone the killed run compiles the kernels the earlier tests did not and
    # the resumed runs load them from the cache; the same bits either way (kernels._threads.FASTMATH)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mobilenet.cli", "train", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.npz").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    time.sleep(0.15)  # somewhere inside the next steps (or the next checkpoint write)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed: the test proves nothing"
    _, meta = _weights(killed / "checkpoint.npz")
    assert meta["step"] < 12  # 6 steps per epoch, 2 epochs
    assert not [f for f in os.listdir(killed) if f.endswith(".tmp") and not f.startswith(".checkpoint")]

    # Both runs in fresh processes, as a user resumes: nothing this test process did before
    # (compiled specialisations, thread pools) can make them agree or disagree.
    for extra in (["--out", str(killed), "--resume"], ["--out", str(tmp_path / "straight")]):
        done = subprocess.run(
            [sys.executable, "-m", "mobilenet.cli", "train", *args, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert done.returncode == 0, done.stderr.decode()
    a, meta_a = _weights(killed / "checkpoint.npz")
    b, meta_b = _weights(tmp_path / "straight" / "checkpoint.npz")
    assert meta_a["step"] == meta_b["step"] == 12 and a.keys() == b.keys()
    for k in b:  # model weights, BN statistics and optimiser buffers, bit for bit
        assert np.array_equal(a[k], b[k]), k
    ma = json.loads((killed / "metrics.json").read_text())
    mb = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert [h["test_accuracy"] for h in ma["history"]] == [h["test_accuracy"] for h in mb["history"]]
    assert (killed / "training_curves.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", *TINY, "--backend", "numba", "--epochs", "1", "--out", str(out)]) == 0
    return out


def test_metrics_file_and_evaluate_agree(trained, capsys):
    m = json.loads((trained / "metrics.json").read_text())
    for key in ("test_accuracy", "epochs", "seconds", "images_per_second"):
        assert key in m
    assert m["epochs"] == 1 and m["steps"] == 6 and m["config"]["backend"] == "numba"
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(trained / "checkpoint.npz"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == 359 and ev["accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-12)
    # the same weights on the numpy backend
    assert (
        cli.main(
            ["evaluate", "--checkpoint", str(trained / "checkpoint.npz"), "--backend", "numpy", "--json"]
        )
        == 0
    )
    acc_numpy = json.loads(capsys.readouterr().out)["accuracy"]
    # The two backends round differently in float32 (a few 1e-6 of the logits' scale), so an image
    # whose two top logits are closer than that may change class; no other may.
    cfg = load_trained(trained / "checkpoint.npz")[0].cfg
    test = D.load_data("digits", cfg.resolution, seed=cfg.seed)[1]
    logits = {}
    for backend in ("numba", "numpy"):
        runner, meta = load_trained(trained / "checkpoint.npz", backend=backend)
        x = D.normalize(test.x, meta["mean"], meta["std"], np.dtype(cfg.dtype))
        logits[backend] = runner.predict(x).astype(np.float64)
    diff = np.abs(logits["numba"] - logits["numpy"]).max()
    assert diff <= 1e-4 * np.abs(logits["numpy"]).max()  # float32 eval bound of test_backend_numba
    top2 = np.sort(logits["numpy"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * diff
    pred = {k: v.argmax(1) for k, v in logits.items()}
    assert np.array_equal(pred["numba"][clear], pred["numpy"][clear])
    assert acc_numpy == pytest.approx(float(np.mean(pred["numpy"] == test.y)), abs=1e-12)
    assert m["test_accuracy"] == pytest.approx(float(np.mean(pred["numba"] == test.y)), abs=1e-12)


def test_bad_resumes_and_checkpoints_are_clear_errors(trained, tmp_path, capsys):
    ckpt_bytes = (trained / "checkpoint.npz").read_bytes()
    base = ["train", *TINY, "--backend", "numba", "--epochs", "1", "--out", str(trained)]
    assert cli.main(base) == 2
    assert "already holds a checkpoint: pass --resume" in capsys.readouterr().err
    assert cli.main([*base[:-2], "--lr", "0.5", "--out", str(trained), "--resume"]) == 2
    assert "another configuration (lr: checkpoint 0.02, now 0.5)" in capsys.readouterr().err
    args = [*TINY, "--epochs", "1", "--out", str(trained), "--resume"]
    assert cli.main(["train", *args, "--backend", "torch"]) == 2
    assert "checkpoint of the numba backend, this run's backend is torch" in capsys.readouterr().err
    assert (trained / "checkpoint.npz").read_bytes() == ckpt_bytes  # nothing overwritten
    assert cli.main(["train", *TINY, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "does not exist, so there is nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # not created empty
    ck = str(trained / "checkpoint.npz")
    assert cli.main(["evaluate", "--checkpoint", ck, "--arch", "v1"]) == 2
    assert "holds a MobileNetV2 width 0.35, expected arch v1" in capsys.readouterr().err
    assert cli.main(["evaluate", "--checkpoint", ck, "--width-mult", "1.0"]) == 2
    assert "expected width 1" in capsys.readouterr().err
    assert cli.main(["evaluate", "--checkpoint", ck, "--backend", "torch"]) == 2
    assert "cannot be loaded on the torch backend" in capsys.readouterr().err
    assert cli.main(["train", *TINY, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_empty_data_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert cli.main(["train", *TINY, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")]) == 2
    assert "one subfolder per class, found none" in capsys.readouterr().err


def test_step_seeds_are_distinct_and_stable():
    seeds = {step_seed(0, e, s, k) for e in range(3) for s in range(50) for k in range(2)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(0, 1, 2, 1) == step_seed(0, 1, 2, 1)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: TrainConfig(backend="jax").validate(), ValueError, "backend must be one of"),
        (lambda: TrainConfig(batch_size=1).validate(), ValueError, "batch_size must be >= 2"),
        (
            lambda: Trainer(
                Classification(TrainConfig(), D.load_digits(32).subset(np.arange(8)), None), None
            ),
            ValueError,
            "smaller than one batch",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_load_trained_rejects_a_plain_checkpoint(tmp_path):
    checkpoint.save(tmp_path / "c.npz", {"a": np.zeros(1)}, {"something": 1})
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_trained(tmp_path / "c.npz")
    torch.manual_seed(0)  # keep later tests' global torch RNG independent of this one


def test_torch_backend_resumes_mid_epoch_with_rmsprop_state(tmp_path, monkeypatch):
    """The torch runner's checkpoint (``.pt``, weights_only) carries RMSprop's buffers and
    step counts: a run interrupted mid-epoch and resumed ends where an uninterrupted one does."""
    from mobilenet.training import classify as T
    from mobilenet.training import torch_runner

    cfg = TrainConfig(
        width_mult=0.35,
        backend="torch",
        batch_size=16,
        train_limit=96,
        epochs=2,
        optimizer="rmsprop",
        lr=1e-3,
        momentum=0.9,
        checkpoint_every=2,
        seed=4,
    )
    T.run(cfg, tmp_path / "straight", progress=False)
    calls = {"n": 0}
    original = torch_runner.Runner.train_step

    def interrupted(self, batch, step_seed):
        calls["n"] += 1
        if calls["n"] == 9:  # epoch 2, step 3: the last checkpoint is from step 8
            raise KeyboardInterrupt
        return original(self, batch, step_seed)

    monkeypatch.setattr(torch_runner.Runner, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.run(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(torch_runner.Runner, "train_step", original)
    assert checkpoint.load(tmp_path / "resumed" / "checkpoint.pt")[1]["step"] == 8
    T.run(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, meta_a = checkpoint.load(tmp_path / "resumed" / "checkpoint.pt")
    b, meta_b = checkpoint.load(tmp_path / "straight" / "checkpoint.pt")
    assert meta_a["step"] == meta_b["step"] == 12 and a.keys() == b.keys()
    assert any(k.endswith("/square_avg") for k in a) and any(k.endswith("/step") for k in a)
    for k in b:
        # bit-identical here, but torch does not promise deterministic CPU kernels; a lost
        # RMSprop buffer or step count would be off by orders of magnitude more than this
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_shapes_data_trains_with_flips(tmp_path, capsys):
    out = tmp_path / "shapes"
    args = [
        "train",
        "--arch",
        "v1",
        "--width-mult",
        "0.25",
        "--data",
        "shapes",
        "--backend",
        "torch",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == list(D.SHAPES) and m["steps"] == 4 and m["config"]["arch"] == "v1"
    assert (out / "checkpoint.pt").exists() and not (out / "checkpoint.npz").exists()
