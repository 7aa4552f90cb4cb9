"""Atomic, pickle-free checkpoints."""

import os

import numpy as np
import pytest
import torch

from mobilenet import checkpoint


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_roundtrip_exact(tmp_path, suffix):
    rng = np.random.default_rng(0)
    arrays = {
        "model/w": rng.standard_normal((3, 2)).astype(np.float32),
        "optim/w/momentum_buffer": rng.random(4),
        "steps": np.asarray(7, np.int64),
        "rng": rng.integers(0, 2**63, 4, dtype=np.uint64).astype(np.int64),
    }
    meta = {"epoch": 2, "config": {"arch": "v2", "width_mult": 0.5}, "history": [{"loss": 0.25}]}
    path = checkpoint.save(tmp_path / f"ckpt{suffix}", arrays, meta)
    got, got_meta = checkpoint.load(path)
    assert got_meta == meta and got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    assert os.listdir(tmp_path) == [f"ckpt{suffix}"]  # no temporary file left behind


def test_npz_holds_no_pickle(tmp_path):
    checkpoint.save(tmp_path / "c.npz", {"a": np.zeros(2)}, {"k": 1})
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:  # would raise on an object array
        assert sorted(z.files) == ["__meta__", "a"]
    torch_file = checkpoint.save(tmp_path / "c.pt", {"a": np.zeros(2)}, {"k": 1})
    assert set(torch.load(torch_file, weights_only=True)) == {"__meta__", "a"}


def test_save_replaces_old_file_and_leaves_it_on_failure(tmp_path):
    p = tmp_path / "c.npz"
    checkpoint.save(p, {"a": np.zeros(2)}, {"v": 1})
    checkpoint.save(p, {"a": np.ones(2)}, {"v": 2})
    assert checkpoint.load(p)[1] == {"v": 2}
    with pytest.raises(TypeError):  # meta that JSON cannot hold: nothing written, old file intact
        checkpoint.save(p, {"a": np.zeros(2)}, {"v": object()})
    assert checkpoint.load(p)[1] == {"v": 2} and os.listdir(tmp_path) == ["c.npz"]


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"must end in .npz or .pt, got '.*c.json'"):
        checkpoint.save(tmp_path / "c.json", {}, {})
    with pytest.raises(ValueError, match="'__meta__' is reserved"):
        checkpoint.save(tmp_path / "c.npz", {"__meta__": np.zeros(1)}, {})
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip")
    with pytest.raises(ValueError, match="is not a checkpoint of this project"):
        checkpoint.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))  # a real npz without our meta
    with pytest.raises(ValueError, match="is not a checkpoint of this project"):
        checkpoint.load(tmp_path / "plain.npz")
