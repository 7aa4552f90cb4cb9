"""Data-parallel training jobs (mobilenet.training.distributed, mobilenet.cli.launch), as real
processes on gloo: they end with exactly the one-process weights, through torchrun and through
``--nproc``; a killed worker ends the job with a clear message and an intact checkpoint that a
job of another size resumes; what cannot run is refused before any work. (Jobs of 1, 2 and 4
workers over every layer kind are in test_parts.py, as threads.)"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mobilenet import checkpoint as ckpt
from mobilenet import cli

# 4 steps of 16 images; a checkpoint after each
ARGS = ["train", "--backend", "numba", "--width-mult", "0.25", "--epochs", "1", "--train-limit", "64"]
ARGS += ["--batch-size", "16", "--checkpoint-every", "1", "--no-progress"]
CLI = [sys.executable, "-m", "mobilenet.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _arrays(folder, suffix=".npz"):
    return ckpt.load(Path(folder) / f"checkpoint{suffix}")[0]


def _same_bits(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} arrays differ, e.g. {differ[:3]}"


def _run(cmd, timeout=300):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the job's configuration in this process (--nproc 1: 8 parts, one process)."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert cli.main([*ARGS, "--nproc", "1", "--out", str(out)]) == 0
    return _arrays(out)


def test_torchrun_runs_the_same_job_to_the_one_process_weights(one_process, tmp_path):
    run = _run(
        [*TORCHRUN, "--nproc-per-node", "2", "-m", "mobilenet.cli", *ARGS, "--out", str(tmp_path / "tr")]
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("test accuracy") == 1  # rank 0 reports, once
    _same_bits(_arrays(tmp_path / "tr"), one_process)
    history = ckpt.load(tmp_path / "tr" / "checkpoint.npz")[1]["history"][0]
    assert history["collective_calls"] > 4 and history["collective_seconds"] > 0


def _worker(launcher: int, rank: int) -> int:
    """The pid of ``launcher``'s worker of ``rank`` (read from its environment)."""
    for _ in range(200):
        kids = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        for pid in kids:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the launcher's children from /proc")
def test_a_killed_worker_ends_the_job_and_four_processes_resume_it_exactly(one_process, tmp_path):
    out = tmp_path / "run"
    job = subprocess.Popen(
        [*CLI, *ARGS, "--nproc", "2", "--out", str(out)], stderr=subprocess.PIPE, text=True
    )
    try:
        worker = _worker(job.pid, 1)
        path = out / "checkpoint.npz"
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.02)
        assert path.exists(), "no checkpoint was written"
        os.kill(worker, signal.SIGKILL)
        t0 = time.monotonic()
        _, err = job.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1
    assert took < 30, took
    assert "worker 1 of 2 was killed by SIGKILL" in err and "continue with --resume" in err, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    meta = ckpt.load(out / "checkpoint.npz")[1]  # intact: it loads, mid-epoch
    assert 1 <= meta["step"] < 4
    four = _run([*CLI, *ARGS, "--nproc", "4", "--out", str(out), "--resume"])  # 2 processes, then 4
    assert four.returncode == 0, four.stderr[-2000:]
    _same_bits(_arrays(out), one_process)


def test_torch_ddp_in_float64_matches_one_process_to_rounding(tmp_path):
    args = ["train", "--backend", "torch", "--dtype", "float64", "--dropout", "0", "--width-mult", "0.25"]
    args += ["--epochs", "1", "--train-limit", "32", "--batch-size", "16", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    two = _run([*CLI, *args, "--nproc", "2", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _arrays(tmp_path / "one", ".pt"), _arrays(tmp_path / "two", ".pt")
    assert ckpt.load(tmp_path / "one" / "checkpoint.pt")[1]["step"] == 2
    # Two steps: float64 rounding (a synchronised batch norm sums in another order) leaves 1e-13
    # after one step and grows ~100x a step in this model (batch norms over 16 values of 1x1
    # maps); the NumPy model against torch, both in one process, differ by as much (1.7e-11).
    worst = max(
        float(np.abs(a[k] - b[k]).max()) for k in a if k.startswith("model/") and a[k].dtype.kind == "f"
    )
    assert worst < 1e-9, worst
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # (it is not the same computation)


def test_what_cannot_run_is_refused_before_any_process_starts(tmp_path, capsys):
    out = str(tmp_path / "r")
    for extra, message in (
        (["--nproc", "32"], "32 processes for a global batch of 16"),
        (["--nproc", "3"], "3 processes cannot share the 8 parts"),
        (["--parts", "32"], "parts (32) must be at most batch_size (16)"),
    ):
        assert cli.main([*ARGS, *extra, "--out", out]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([*ARGS, "--nproc", "0", "--out", out])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main([*ARGS, "--nproc", "2", "--master-port", str(port), "--out", out]) == 2
    assert f"--master-port {port} is already in use" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was written


def test_a_worker_that_raises_ends_the_job_and_the_out_lock_covers_the_job(tmp_path):
    out = tmp_path / "held"
    with ckpt.exclusive(out):  # another run holds --out
        run = _run([*CLI, *ARGS, "--nproc", "2", "--out", str(out)], timeout=120)
    assert run.returncode == 1
    assert "is in use by another mobilenet run" in run.stderr
    assert "worker 0 of 2 exited with code 1, so the job was stopped" in run.stderr
    assert "Traceback" not in run.stderr
