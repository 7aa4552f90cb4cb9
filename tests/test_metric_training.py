"""Training with ArcFace's margin (loss "arcface"): one step against torch, checkpoints, a short run."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import torch_impl
from mobilenet import checkpoint
from mobilenet.training.classify import init_backbone, load_trained, make_runner, run
from mobilenet.training.config import TrainConfig
from mobilenet.training.numpy_runner import HEAD
from torch_impl.metric import arcface_logits

CFG = TrainConfig(
    width_mult=0.35, backend="numpy", dtype="float64", dropout=0.0, loss="arcface", embed_dim=16, seed=2
)


def test_one_step_gradients_match_torch():
    runner = make_runner(CFG, num_classes=7)
    captured = {}
    runner.optimizer.step = lambda grads: captured.update({k: np.array(v) for k, v in grads.items()})
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3, 32, 32)), rng.integers(0, 7, 6)
    head0 = runner.head.copy()
    model = torch_impl.mobilenet("v2", width_mult=0.35, num_classes=16, dropout=0.0).double().train()
    model.load_state_dict(torch_impl.state_dict_to_torch(runner.model.state_dict()))
    loss = runner.train_step((x, y), seed=0)["loss"]
    head = torch.tensor(head0, requires_grad=True)
    logits = arcface_logits(
        model(torch.from_numpy(x)), head, torch.from_numpy(y), CFG.arcface_scale, CFG.arcface_margin
    )
    ref = TF.cross_entropy(logits, torch.from_numpy(y), label_smoothing=CFG.label_smoothing)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-10)
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()} | {HEAD: head.grad.numpy()}
    assert captured.keys() == grads.keys()
    scale = max(np.abs(g).max() for g in grads.values())
    for name, g in grads.items():  # relative to the largest gradient: BN-fed biases are ~0 analytically
        assert np.abs(captured[name] - g).max() <= 1e-8 * scale, name


def test_arcface_run_checkpoints_its_centres_and_learns(tmp_path):
    cfg = dataclasses.replace(
        CFG, backend="numba", dtype="float32", epochs=2, lr=0.05, arcface_scale=16.0, arcface_margin=0.2
    )
    m = run(cfg, tmp_path, progress=False)
    arrays, meta = checkpoint.load(tmp_path / "checkpoint.npz")
    assert arrays[f"model/{HEAD}"].shape == (10, 16) and meta["config"]["loss"] == "arcface"
    runner, _ = load_trained(tmp_path / "checkpoint.npz")
    assert np.array_equal(runner.head, arrays[f"model/{HEAD}"])
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    assert runner.embed(x).shape == (4, 16) and runner.predict(x).shape == (4, 10)
    assert m["test_accuracy"] > 0.5  # ten digit classes by the nearest centre (chance: 0.1), two epochs


def test_arcface_settings_are_checked():
    with pytest.raises(ValueError, match="numpy and numba backends"):
        dataclasses.replace(CFG, backend="torch").validate()
    with pytest.raises(ValueError, match="loss must be"):
        dataclasses.replace(CFG, loss="triplet").validate()
    with pytest.raises(ValueError, match="arcface_margin"):
        dataclasses.replace(CFG, arcface_margin=2.0).validate()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_init_starts_the_backbone_from_a_checkpoint(tmp_path, backend):
    src = dataclasses.replace(TrainConfig(width_mult=0.35, epochs=1, train_limit=64), backend="numba")
    run(src, tmp_path / "src", progress=False)
    source, _ = checkpoint.load(tmp_path / "src" / "checkpoint.npz")
    init = str(tmp_path / "src" / "checkpoint.npz")
    loss = "arcface" if backend == "numba" else "softmax"
    cfg = dataclasses.replace(src, backend=backend, loss=loss, classes=(0, 1, 2), init=init, lr=1e-9)
    runner = make_runner(cfg, 3)
    init_backbone(runner, cfg)
    mine = runner.state_arrays()
    feats = [k for k in source if k.startswith("model/features.")]
    assert feats and all(np.array_equal(np.asarray(mine[k]), source[k]) for k in feats)
    assert not any(
        k.startswith("model/classifier")
        and mine[k].shape == source[k].shape
        and np.array_equal(mine[k], source[k])
        for k in mine
        if k in source
    )
    with pytest.raises(ValueError, match="width 0.35, this run is MobileNetV2 width 0.5"):
        init_backbone(
            make_runner(dataclasses.replace(cfg, width_mult=0.5), 3), dataclasses.replace(cfg, width_mult=0.5)
        )
