"""Hostile input, as an attacker or an unlucky user would give it: crafted and odd images, extreme
values, empty batches and tiny datasets. Each case either gives the right answer or a clear error;
none may crash, print a traceback, or quietly give a wrong answer."""

import contextlib
import errno
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image

import kernels as K
import numpy_impl
from mobilenet import checkpoint, cli
from mobilenet import data as D
from mobilenet.cli import summary as cli_summary
from numpy_impl import functional as F


def write_png(path, pixels: np.ndarray, bit_depth: int, color_type: int, size=None):
    """A PNG written by hand, so that it can be anything a file may claim: 16 bits per sample
    (which Pillow cannot write in colour) or a header whose size is not its data's."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = size or pixels.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\0" + pixels[i].astype(sample).tobytes() for i in range(pixels.shape[0]))
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, color_type",
    [(None, 0), (3, 2), (2, 4), (4, 6)],  # grey, RGB (48-bit), grey+alpha, RGBA (64-bit)
)
def test_16_bit_pngs_are_scaled_by_their_range(tmp_path, channels, color_type):
    value = np.random.default_rng(channels or 1).integers(0, 65536)
    shape = (6, 6) if channels is None else (6, 6, channels)
    write_png(tmp_path / "a.png", np.full(shape, value, np.uint16), 16, color_type)
    x = D.read_image(tmp_path / "a.png", 8)
    assert x.shape == (3, 8, 8)
    # 8-bit reductions (Pillow's, for colour) keep the high byte: within 1/255 of value / 65535
    np.testing.assert_allclose(x, value / 65535, atol=1 / 255)


def test_images_without_a_known_range_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 7, np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ValueError, match="32-bit integer pixels have no known range"):
        D.read_image(tmp_path / "i.tif", 8)


def test_a_decompression_bomb_is_refused_and_skippable(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((5, 5), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    # headers claiming 900 M pixels (beyond Pillow's own limit) and 81 M (beyond ours), with no data
    write_png(tmp_path / "a" / "huge.png", np.zeros((1, 1), np.uint8), 8, 0, size=(30000, 30000))
    write_png(tmp_path / "b" / "big.png", np.zeros((1, 1), np.uint8), 8, 0, size=(9000, 9000))
    with pytest.raises(ValueError, match=r"cannot read image .*huge\.png"):
        D.load_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        ds = D.load_image_folder(tmp_path, on_error="skip")
    assert len(ds) == 6 and sorted(p.rsplit("/", 1)[1] for p in ds.skipped) == ["big.png", "huge.png"]


# --- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("target", [0, 1, 2])
def test_cross_entropy_with_minus_inf_logits_is_torchs(smoothing, target):
    logits = np.array([[0.5, -np.inf, 1.0], [-np.inf, 2.0, -1.0]])
    t = np.array([target, 1])
    loss, cache = F.softmax_cross_entropy(logits, t, smoothing)
    lt = torch.tensor(logits, requires_grad=True)
    want = TF.cross_entropy(lt, torch.tensor(t), label_smoothing=smoothing)
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)  # inf where torch's is (the -inf class's own target)
    np.testing.assert_allclose(F.softmax_cross_entropy_backward(1.0, cache), lt.grad.numpy(), rtol=1e-12)


# --- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_an_empty_batch_in_eval_mode_gives_empty_outputs(backend, arch):
    m = numpy_impl.mobilenet(arch, width_mult=0.25, num_classes=5, backend=backend).eval()
    for memory in ("nchw", "channels_last"):
        x = np.zeros((0, 3, 32, 32), np.float32)
        x = x if memory == "nchw" else np.zeros((0, 32, 32, 3), np.float32).transpose(0, 3, 1, 2)
        assert m(x).shape == (0, 5)
        assert m.backward(np.zeros((0, 5), np.float32)).shape == (0, 3, 32, 32)


def test_kernels_batch_norm_takes_an_empty_nchw_batch_in_eval():
    p = np.linspace(0.5, 1.5, 4).astype(np.float32)
    y, cache = K.batch_norm(np.zeros((0, 4, 3, 3), np.float32), p, p, p.copy(), p.copy(), False)
    dx, dw, db = K.batch_norm_backward(np.zeros((0, 4, 3, 3), np.float32), cache)
    assert y.shape == dx.shape == (0, 4, 3, 3) and np.all(dw == 0) and np.all(db == 0)


# --- files that claim to be checkpoints --------------------------------------------------------

QUICK = ["--arch", "v2", "--width-mult", "0.35", "--batch-size", "16", "--train-limit", "48", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _evaluate(path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["evaluate", "--checkpoint", str(path)])
    return code, capsys.readouterr().err


class _Payload:
    def __reduce__(self):  # unpickling this would create a file
        return (open, ("/tmp/mobilenet-hostile-pwned", "w"))


def _crafted(tmp_path) -> dict:
    """name -> (path, what the error must say)."""
    files = {}
    torch.save({"__meta__": "{}", "w": _Payload()}, tmp_path / "payload.pt")
    files["payload"] = ("payload.pt", "never loaded")
    (tmp_path / "empty.npz").write_bytes(b"")
    files["empty"] = ("empty.npz", "EOFError")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    files["tensor"] = ("tensor.pt", "of type Tensor, not a checkpoint's dict")
    torch.save({"__meta__": "{}", "w": 5}, tmp_path / "int.pt")
    files["int"] = ("int.pt", "'w' is of type int, not a tensor")
    torch.save({"__meta__": "{}", "w": torch.zeros(2, dtype=torch.bfloat16)}, tmp_path / "bf16.pt")
    files["bf16"] = ("bf16.pt", "dtype torch.bfloat16")
    np.savez(tmp_path / "meta5.npz", __meta__=np.array("5"), w=np.zeros(2))
    files["meta5"] = ("meta5.npz", "description is of type int")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    files["npy"] = ("one.npz", "single .npy array")
    (tmp_path / "truncated.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    files["truncated"] = ("truncated.npz", "not a checkpoint of this project")
    np.savez(tmp_path / "objects.npz", __meta__=np.array("{}"), w=np.array([{"a": 1}], dtype=object))
    files["objects"] = ("objects.npz", "never loaded")
    return files


def test_crafted_checkpoints_are_refused_without_running_anything(tmp_path, capsys):
    pwned = Path("/tmp/mobilenet-hostile-pwned")
    pwned.unlink(missing_ok=True)
    for name, (file, says) in _crafted(tmp_path).items():
        code, err = _evaluate(tmp_path / file, capsys)
        assert code == 2 and says in err and "Traceback" not in err, (name, err)
        assert "weights_only" not in err and "allow_pickle" not in err, (name, err)  # never advise it
    assert not pwned.exists()


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m.update(mean=[0, 0]), "mean must be 3 finite numbers"),
        (lambda m: m.update(std=[1.0, 0.0, 1.0]), "std must be 3 finite numbers > 0"),
        (lambda m: m.update(std=[1.0, float("nan"), 1.0]), "std must be 3 finite numbers > 0"),
        (lambda m: m.pop("std"), "std must be 3 finite numbers > 0, got None"),
        (lambda m: m.update(classes=5), "classes must be 10 class names"),
        (lambda m: m.update(num_classes=True), "num_classes must be an int >= 1"),
        (lambda m: m["config"].update(classes=5), "classes must be a list"),
        (lambda m: m["config"].update(width_mult="wide"), "width_mult must be a real number"),
        (lambda m: m["config"].update(width_mult=1e300), "width_mult must be in"),
        (lambda m: m["config"].update(tune="fast"), "unknown settings ['tune']"),
        (lambda m: m.update(config=5), "not a training checkpoint"),
    ],
)
def test_crafted_descriptions_are_refused_by_field(run_dir, tmp_path, capsys, change, says):
    arrays, meta = checkpoint.load(run_dir / "checkpoint.npz")
    change(meta)
    checkpoint.save(tmp_path / "c.npz", arrays, meta)
    code, err = _evaluate(tmp_path / "c.npz", capsys)
    assert code == 2 and says in err and "Traceback" not in err, err


def test_evaluate_refuses_data_with_other_class_names(run_dir, tmp_path, capsys):
    for name in "abcdefghij":  # ten classes, as the checkpoint's, but not its names
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    capsys.readouterr()
    assert (
        cli.main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.npz"), "--data", str(tmp_path)]) == 2
    )
    assert "--data has classes ['a', 'b'" in capsys.readouterr().err


# --- the output folder ---------------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused_at_once(tmp_path, capsys):
    with checkpoint.exclusive(tmp_path / "out"):  # as a run in another process holds it
        code = cli.main(["train", *QUICK, "--epochs", "1", "--out", str(tmp_path / "out")])
    assert code == 1
    assert f"is in use by another mobilenet run (PID {os.getpid()})" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


def test_two_processes_into_one_folder_one_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "mobilenet.cli", "train", *QUICK, "--epochs", "2", "--out", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    # one run wins; the other is refused: at once by the lock, or (had the first already
    # finished, on a loaded machine) by the checkpoint it left. Never both "wrote the checkpoint".
    assert results[0][0] == 0 and results[1][0] in (1, 2), results
    refused = results[1][1]
    assert "is in use by another mobilenet run (PID" in refused or "already holds a checkpoint" in refused


def test_stale_temporary_files_are_removed_and_modes_agree(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    (out / ".checkpoint.npz.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out), "--resume"]) == 0
    assert not list(out.glob("*.tmp"))
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir() if f.name != ".lock"}
    assert len(set(modes.values())) == 1, modes  # the checkpoint as metrics.json, not mkstemp's 0600


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["--resume"], 2, "does not exist, so there is nothing to resume"),
        (["--width-mult", "inf"], 2, "must be a finite number > 0"),
        (["--width-mult", "1e300"], 2, "must be <= 100"),
        (["--lr", "nan"], 2, "must be a finite number > 0"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, capsys, args, code, says):
    with pytest.raises(SystemExit) if "--resume" not in args else contextlib.nullcontext():
        assert cli.main(["train", *QUICK, "--out", str(tmp_path / "new"), *args]) == code
    assert says in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    for out, says in [("file", "is a file, not a folder"), ("file/sub", "a part of the path is a file")]:
        assert cli.main(["train", *QUICK, "--out", str(tmp_path / out)]) == 2
        assert says in capsys.readouterr().err


def _small_tmpfs(path: Path, size: str) -> bool:
    """A tmpfs of ``size`` at ``path`` where the platform lets us mount one (root on Linux)."""
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder whose device is full: a 1 MB tmpfs, or (where mounting is not allowed) writes that
    fail as a full disk does."""
    disk = tmp_path / "disk"
    if _small_tmpfs(disk, "1m"):
        yield disk
        subprocess.run(["umount", str(disk)], check=False)
        return

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    yield disk


def test_a_full_disk_is_a_clear_error_and_leaves_no_temporary_file(full_disk, capsys):
    out = full_disk / "run"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err
    assert not list(out.glob(".checkpoint*")) and not (out / "checkpoint.npz").exists()


@pytest.mark.parametrize(
    "error, says",
    [
        (
            OSError(errno.EROFS, "Read-only file system", "x/checkpoint.npz"),
            "read-only file system (x/checkpoint.npz)",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "x"), "permission denied (x): choose a folder"),
        (MemoryError(), "out of memory: lower --batch-size"),
        (KeyError("surprise"), "internal error (KeyError: 'surprise'); rerun with --debug"),
    ],
)
def test_environment_errors_are_messages_and_debug_shows_the_traceback(monkeypatch, capsys, error, says):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli_summary, "summary_dict", broken)
    assert cli.main(["summary"]) == 1
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    with pytest.raises(type(error)):
        cli.main(["summary", "--debug"])


# --- data ----------------------------------------------------------------------------------------


def _folder(root: Path, per_class: int, classes="ab") -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), (20 * i + ord(c)) % 256, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_a_tiny_folder_is_refused_before_training(tmp_path, capsys):
    data = _folder(tmp_path / "tiny", 2)
    out = tmp_path / "out"
    assert cli.main(["train", *QUICK, "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "too few images: 2 to train and 2 to test" in err and "--batch-size 16" in err
    assert not (out / "checkpoint.npz").exists()


def test_resume_names_changed_data_and_accepts_the_same_folder_spelled_otherwise(
    tmp_path, capsys, monkeypatch
):
    data = _folder(tmp_path / "g2", 12)
    out = tmp_path / "out"
    args = ["train", *QUICK, "--batch-size", "4", "--epochs", "1", "--out", str(out)]
    assert cli.main([*args, "--data", str(data)]) == 0
    monkeypatch.chdir(tmp_path)
    for spelled in ("g2", "./g2", "g2/../g2"):  # the same folder
        capsys.readouterr()
        assert cli.main([*args, "--data", spelled, "--resume"]) == 0, capsys.readouterr().err
    (data / "a" / "0.png").unlink()
    assert cli.main([*args, "--data", "g2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the data changed since the checkpoint was written" in err and "resume with the data" in err


# --- threads ---------------------------------------------------------------------------------------


def test_training_is_bit_identical_on_any_number_of_numba_threads(tmp_path):
    """The kernels' reductions split into fixed parts, summed in a fixed order: the weights, the
    optimiser state and the recorded losses of a run do not depend on the thread count."""
    runs = {}
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "mobilenet.cli", "train", *QUICK, "--epochs", "2", "--out", str(out)]
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        runs[threads] = checkpoint.load(out / "checkpoint.npz")
    a, meta_a = runs[1]
    for threads in (2, 3):
        b, meta_b = runs[threads]
        assert a.keys() == b.keys()
        assert [k for k in a if not np.array_equal(a[k], b[k])] == [], threads
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert [h[key] for h in meta_a["history"]] == [h[key] for h in meta_b["history"]], threads


@pytest.mark.parametrize("value", ["0", "abc", "-2", " "])
def test_a_bad_thread_count_in_the_environment_is_named(monkeypatch, capsys, value):
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    assert cli.main(["summary"]) == 2
    assert "the environment variable NUMBA_NUM_THREADS must be a whole number >= 1" in capsys.readouterr().err
